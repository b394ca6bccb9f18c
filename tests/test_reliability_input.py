"""Hostile and odd input against the real server: blank text (every whitespace character there
is), a 2 MB text, invalid UTF-8, control characters, emoji, right-to-left scripts, CJK, only
punctuation, 10,000-item batches, wrong content types, nested junk. Each gets the model's own
answer (checked against the same artifacts run in-process) or a clear 4xx that says what to fix,
small, without echoing the input; afterwards the server is healthy and answers correctly.

(test_service_errors.py covers the basic 4xx contract; these go further.)"""

from __future__ import annotations

import json
import re
import sys

import httpx
import numpy as np
import pytest

from service.runtime.sentiment import SentimentModel

S, T = "/v1/sentiment", "/v1/translate"
DE = {"target_lang": "de"}
WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]  # what the server strips

ODD_SCRIPTS = {
    "emoji": "😀😂🤣 great 👍🏽 film 👨‍👩‍👧‍👦 🏳️‍🌈 🇩🇪",
    "emoji only": "🎬🍿😍",
    "arabic": "هذا الفيلم رائع جدا، أحببته",
    "hebrew with direction marks": "\u202bסרט נהדר\u202c \u200f!",
    "rtl override": "\u202edoog yrev saw mlif ehT\u202c",
    "mixed bidi": "The film \u05e1\u05e8\u05d8 was \u0631\u0627\u0626\u0639 great",
    "chinese": "这部电影非常好看，演员演得很棒。",
    "japanese": "この映画は本当に素晴らしかった！",
    "korean": "정말 지루한 영화였다",
    "combining marks": "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349a\u0310\u0313lgo film",
    "only punctuation": "?!?!... ,,, ;;; --- ''' \"\"\" ((( )))",
    "only symbols": "$%^&*@#~`|\\/<>[]{}+=_",
    "only digits": "1234567890 3.14159 1e10",
    "html": "<script>alert('x')</script><br /><br />&amp;&lt;",
    "zero-width": "a\u200bb\u200cc\u200dd\ufeffe",
    "c0 controls": "bad\x00film\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x7f end",
    "c1 controls": "ok\x80\x81\x9f\x9a movie",
    "private use and noncharacters": "\ue000\uf8ff\ufdd0\ufffe\U0010fffd film",
    "lone surrogates": "\ud800 awful \udfff",
    "replacement char": "\ufffd\ufffd boring",
}


def post(
    server, path: str, body=None, *, content: bytes | None = None, ctype: str | None = "application/json"
) -> httpx.Response:
    headers = {"content-type": ctype} if ctype else {}
    data = content if content is not None else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=data, headers=headers, timeout=120)


def assert_4xx(r: httpx.Response, status: int, *needles: str, max_bytes: int = 2000) -> str:
    """A clear client error: the status, JSON {"detail": ...} that says what is wrong, an X-Request-ID,
    and short (never the input echoed back)."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    assert len(r.content) <= max_bytes, f"{len(r.content)} bytes of error"
    text = json.dumps(r.json()["detail"])
    for n in needles:
        assert n in text, (n, text)
    return text


def assert_sentiment_is_the_models(r: httpx.Response, texts: list[str], model: SentimentModel) -> None:
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert len(results) == len(texts)
    expected = model.predict(texts)
    for res, probs in zip(results, expected, strict=True):
        np.testing.assert_allclose([res["probabilities"][k] for k in model.labels], probs, atol=1e-5)
        assert res["label"] == model.labels[int(np.argmax(probs))]


# --------------------------------------------------------------------------------------------- blank text


@pytest.mark.parametrize("path, extra", [(S, {}), (T, DE)])
def test_every_whitespace_character_alone_is_blank_and_the_schema_says_so(server, path, extra):
    """All 29 characters str.isspace() knows (the server strips them), alone and all together: 422
    naming the text. The pattern /openapi.json documents for a text agrees on every one of them."""
    pattern = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]["SentimentRequest"]["properties"][
        "texts"
    ]["items"]["pattern"]
    for ws in [*WHITESPACE, "".join(WHITESPACE), "\t\n\x0b\x0c\r \x85\xa0" * 100]:
        assert re.search(pattern, ws) is None, hex(ord(ws[0]))
        assert_4xx(post(server, path, {"texts": ["fine", ws], **extra}), 422, "texts[1] is empty or whitespace only")
    # The characters that look blank but are not whitespace are text: answered.
    for visible in ("\u200b", "\ufeff", "\u180e", "\u2800"):
        assert re.search(pattern, visible)
        assert post(server, path, {"texts": [visible], **extra}).status_code == 200


# --------------------------------------------------------------------------------------------- size


def test_a_2mb_text(server, sentiment_model):
    two_mb = "a" * 2_000_000
    assert_4xx(post(server, S, {"texts": [two_mb]}), 413, "the limit is 2000000")
    # Just under the byte limit: refused for its length, at once, without inference.
    big = "word " * 390_000
    r = post(server, S, {"texts": [big]})
    assert_4xx(r, 422, f"texts[0] has {len(big)} characters; the limit is 20000")
    # 2 MB of padding around a small request is still a small request.
    padded = b'{"texts": ["a fine film"]' + b" " * 1_990_000 + b"}"
    assert_sentiment_is_the_models(post(server, S, content=padded), ["a fine film"], sentiment_model)
    # The longest text allowed, in 4-byte characters (80 kB of UTF-8): answered.
    longest = ("😀 great " * 2500)[:20_000]
    assert_sentiment_is_the_models(post(server, S, {"texts": [longest, "ok"]}), [longest, "ok"], sentiment_model)


def test_10000_item_batches_are_refused_in_one_short_message(server):
    for path, extra in ((S, {}), (T, DE)):
        for items in (["ok"] * 10_000, [""] * 10_000, [1] * 10_000, [None] * 10_000, [["x"]] * 10_000):
            r = post(server, path, {"texts": items, **extra})
            assert_4xx(r, 422, "at most 64 texts per request (got 10000); split the request", max_bytes=400)
    # 64 texts of the wrong type: 64 errors would be noise; the first few and a count.
    r = post(server, S, {"texts": [7] * 64})
    text = assert_4xx(r, 422, "valid string", "and 54 more errors")
    assert len(r.json()["detail"]) == 11, text


# --------------------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "raw",
    [
        b'{"texts": ["\xc0\xaf"]}',  # overlong encoding of "/"
        b'{"texts": ["\xf8\x88\x80\x80\x80"]}',  # 5-byte sequence
        b'{"texts": ["caf\xc3"]}',  # truncated multi-byte sequence
        b'{"texts": ["\x80 lone continuation"]}',
        b'{"texts": ["\xf4\x90\x80\x80"]}',  # above U+10FFFF
        '{"texts": ["café"]}'.encode("latin-1"),
        '{"texts": ["a film"]}'.encode("utf-16"),  # with its BOM
    ],
    ids=["overlong", "5-byte", "truncated", "continuation", "above-max", "latin-1", "utf-16"],
)
def test_invalid_utf8(server, raw):
    assert_4xx(post(server, S, content=raw), 422, "not valid UTF-8", "encode text as UTF-8")


def test_raw_control_characters_inside_json_strings_are_malformed_json(server):
    """JSON forbids raw control characters in strings (escaped they are fine, see below)."""
    for c in ("\x00", "\x01", "\x1f", "\n"):
        raw = b'{"texts": ["bad' + c.encode() + b'film"]}'
        assert_4xx(post(server, S, content=raw), 422, "not valid JSON")


# --------------------------------------------------------------------------------------------- scripts


def test_odd_scripts_get_the_models_sentiment(server, sentiment_model):
    texts = list(ODD_SCRIPTS.values())
    assert_sentiment_is_the_models(post(server, S, {"texts": texts}), texts, sentiment_model)
    for name, text in ODD_SCRIPTS.items():  # and alone, the same numbers
        r = post(server, S, {"texts": [text]})
        assert r.status_code == 200, (name, r.text)
        assert_sentiment_is_the_models(r, [text], sentiment_model)


def test_odd_scripts_get_the_models_translation(server, translator):
    texts = list(ODD_SCRIPTS.values())
    r = post(server, T, {"texts": texts, **DE, "beam_size": 3, "return_alignments": True})
    assert r.status_code == 200, r.text[:500]
    expected = translator.translate_texts(texts, beam_size=3)  # as served: split into sentences, joined
    for res, t, text in zip(r.json()["results"], expected, texts, strict=True):
        assert res["translation"] == t.text, text
        a = res["alignments"]
        assert len(a["weights"]) == len(a["target_tokens"])
        assert all(len(row) == len(a["source_tokens"]) for row in a["weights"])
    json.dumps(r.json(), ensure_ascii=False).encode("utf-8")  # the answer itself is valid UTF-8 JSON


# --------------------------------------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "ctype, status",
    [
        ("text/json", 415),
        ("application/json-seq", 415),
        ("application/jsonx", 415),
        ("application/x-json", 415),
        ("application/vnd.api+json", 415),
        ("", 415),
        ("*/*", 415),
        ("application/json, text/plain", 415),
        ("APPLICATION/JSON", 200),
        ("application/json;charset=utf-8", 200),
        ("Application/Json ; charset=UTF-8", 200),
    ],
)
def test_content_types(server, ctype, status):
    r = httpx.post(
        f"{server.url}{S}", content=b'{"texts": ["a fine film"]}', headers={"content-type": ctype}, timeout=60
    )
    if status == 415:
        assert_4xx(r, 415, "Content-Type must be application/json")
    else:
        assert r.status_code == 200, r.text


def test_a_json_file_sent_as_multipart_is_415(server):
    r = httpx.post(f"{server.url}{S}", files={"file": ("r.json", b'{"texts": ["ok"]}', "application/json")}, timeout=60)
    assert_4xx(r, 415, "Content-Type must be application/json")


# --------------------------------------------------------------------------------------------- nested junk


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"[" * 200_000, "not valid JSON"),
        (b'{"texts": ["a"], "x": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}", "nested too deeply"),
        (b'{"texts": ["a"], "beam_size": ' + b"9" * 5_000 + b"}", "a number has too many digits"),
        (b'{"texts": [' + b"9" * 5_000 + b"]}", "a number has too many digits"),
        (b'{"texts": ["a"], "extra": ' + b"[" * 900 + b"]" * 900 + b"}", "unknown field extra"),
        (b'{"texts": [{"text": "a"}]}', "valid string"),
        (b'{"texts": [["a", ["b"]]]}', "valid string"),
        (b'{"texts": {"0": "a"}}', "valid list"),
        (b'{"texts": ["a"], "__proto__": {"admin": true}}', "unknown field __proto__"),
        (b'{"texts": ["a"], "constructor": {"prototype": {}}}', "unknown field constructor"),
        (b'{"texts": NaN}', "valid list"),
        (b'{"texts": ["a"], "beam_size": NaN, "target_lang": "de"}', "valid integer"),
        (b'{"texts": ["a"], "beam_size": -Infinity, "target_lang": "de"}', "valid integer"),
        (b'{"texts": ["a"], "beam_size": 1e400, "target_lang": "de"}', "valid integer"),
        (b'{"texts": ["a"], "beam_size": "3", "target_lang": "de"}', "valid integer"),
        (b'{"texts": ["a"], "beam_size": true, "target_lang": "de"}', "valid integer"),
        (b'{"texts": ["a"], "return_alignments": 1, "target_lang": "de"}', "valid boolean"),
        (b'{"texts": ["a"], "return_alignments": "yes", "target_lang": "de"}', "valid boolean"),
        (b'{"texts": ["a"]}' * 3, "not valid JSON"),
        (b"null" + b" " * 100, "must be a JSON object"),
        (b'"' + b"a" * 100_000 + b'"', "must be a JSON object"),
    ],
    ids=lambda v: v.decode(errors="replace")[:30] if isinstance(v, bytes) else None,
)
def test_nested_junk(server, raw, needle):
    path = T if b"beam_size" in raw or b"return_alignments" in raw else S
    assert_4xx(post(server, path, content=raw), 422, needle)


def test_numbers_json_calls_integers_are_integers(server):
    """JSON Schema counts 3.0 as an integer: so does the server (as documented in /openapi.json)."""
    r = post(server, T, {"texts": ["A dog runs."], **DE, "beam_size": 3.0, "n_best": 2.0, "max_length": 5.0})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"][0]["alternatives"]) == 1


# --------------------------------------------------------------------------------------------- afterwards


def test_afterwards_the_server_is_healthy_and_correct(server, sentiment_model, translator):
    """Runs after everything above, on the same server."""
    assert httpx.get(f"{server.url}/health").status_code == 200
    texts = ["A wonderful, moving film.", "Awful and boring."]
    assert_sentiment_is_the_models(post(server, S, {"texts": texts}), texts, sentiment_model)
    r = post(server, T, {"texts": ["A dog runs in the park."], **DE})
    assert r.json()["results"][0]["translation"] == translator.detok(
        translator.translate(["A dog runs in the park."])[0][0]
    )
