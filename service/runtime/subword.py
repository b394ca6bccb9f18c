"""Subword tokenization for translation (SentencePiece), shared by training and the service.

An artifact ships one SentencePiece model per side (`spm.src.model`, `spm.tgt.model`); a joint
vocabulary ships the same model under both names. Ids: 0 <pad>, 1 <unk>, 2 <s>, 3 </s>.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def clean(text: str) -> str:
    """NFKC, control characters to spaces, whitespace collapsed (the training data's shape)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(text.split())


class Subword:
    def __init__(self, model_file: Path):
        self.path = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"{model_file}: special ids must be pad=0 unk=1 bos=2 eos=3")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(clean(text), out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode([clean(t) for t in texts], out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > EOS_ID or i == UNK_ID])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]


def train_sentencepiece(
    texts: list[str],
    prefix: Path,
    vocab_size: int,
    model_type: str = "unigram",
    *,
    byte_fallback: bool = False,
    split_digits: bool = False,
    character_coverage: float = 1.0,
    user_symbols: list[str] | tuple[str, ...] = (),
) -> Path:
    """Train a SentencePiece model on `texts` (train split only); returns the .model path.

    `byte_fallback`: a character outside the vocabulary is encoded as its UTF-8 bytes (256 byte
    pieces) instead of <unk>, so no input ever produces <unk>; rare characters can then be left to
    bytes (`character_coverage` < 1). `split_digits`: every digit is its own piece, so numbers are
    copied digit by digit rather than through whatever multi-digit pieces the corpus happened to
    contain. `user_symbols`: pieces always kept whole (the copy-through placeholders)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([clean(t) for t in texts]),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        split_digits=split_digits,
        user_defined_symbols=list(user_symbols),
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=2,
        hard_vocab_limit=False,  # tiny corpora (tests) get what they can hold
        minloglevel=2,
    )
    return Path(f"{prefix}.model")
