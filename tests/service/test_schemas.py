"""Request limits travel with the request (schemas.REQUEST_LIMITS), not in a global: validators and
the JSON schema read the limits of the server handling the request; outside one, the defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.schemas import REQUEST_LIMITS, Limits, SentimentRequest, TranslateRequest
from service.settings import Settings


def _with(limits: Limits):
    token = REQUEST_LIMITS.set(limits)
    return lambda: REQUEST_LIMITS.reset(token)


def test_validators_read_the_limits_in_the_context():
    SentimentRequest(texts=["a"] * 64)  # the defaults
    done = _with(Limits(max_texts=2, max_text_chars=5, max_translate_chars=3, pairs=("en-fr",)))
    try:
        with pytest.raises(ValidationError, match="at most 2 texts per request"):
            SentimentRequest(texts=["a", "b", "c"])
        with pytest.raises(ValidationError, match="the limit is 5"):
            SentimentRequest(texts=["toolong"])
        with pytest.raises(ValidationError, match="unsupported language pair en-de; supported: en-fr"):
            TranslateRequest(texts=["a"], target_lang="de")
        assert TranslateRequest(texts=["abc"], target_lang="fr").target_lang == "fr"
    finally:
        done()
    assert TranslateRequest(texts=["a"], target_lang="de").target_lang == "de"  # back to the defaults


def test_the_json_schema_says_the_limits_in_the_context():
    done = _with(Limits(max_texts=3, max_text_chars=9, max_translate_chars=4, pairs=("en-fr",)))
    try:
        s, t = SentimentRequest.model_json_schema(), TranslateRequest.model_json_schema()
    finally:
        done()
    assert s["properties"]["texts"]["maxItems"] == 3 and s["properties"]["texts"]["items"]["maxLength"] == 9
    assert t["properties"]["texts"]["items"]["maxLength"] == 4
    assert t["properties"]["target_lang"]["enum"] == ["fr"] and "en-fr" in t["properties"]["target_lang"]["description"]


def test_settings_make_the_limits_for_the_pairs_served():
    s = Settings(max_texts=5, max_text_chars=6, max_translate_chars=7)
    assert s.limits(["en-de"]) == Limits(5, 6, 7, ("en-de",))
    assert s.limits().pairs == Limits().pairs
