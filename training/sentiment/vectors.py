"""Word vectors pre-trained on the training side of the sentiment corpus (word2vec, gensim).

The labelled sets hold ~12M words of reviews, tweets and phrases; skip-gram vectors learned on
them (labels unused) give the classifier a start on words it sees rarely with a label. Only the
training splits are read: validation and test text never reaches the vectors.

    python -m training.sentiment.vectors --out runs/sentiment/vectors.pt --dim 128
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from gensim.models import Word2Vec
from tqdm import tqdm

from service.runtime.text import tokenize
from training.data import default_data_dir
from training.sentiment.corpus import load_corpus
from training.sentiment.model import SentimentConfig

# The recipe's defaults, one place for the function and the command line. 15 epochs, not 5: chosen on
# validation (docs/history.md, runs I and J).
DIM = SentimentConfig.embed_dim  # vectors initialize the model's embeddings
EPOCHS = 15
WORKERS = 2


def train_vectors(
    data_dir: Path,
    out: Path,
    *,
    dim: int = DIM,
    epochs: int = EPOCHS,
    min_count: int = 2,
    workers: int = WORKERS,
    seed: int = 13,
) -> dict:
    t0 = time.time()
    corpus = load_corpus(data_dir)
    sentences = [
        tokenize(r.text)
        for rows in corpus.train.values()
        for r in tqdm(rows, desc="tokenize", unit="text", leave=False)
    ]
    n_tokens = sum(map(len, sentences))
    print(f"{len(sentences)} texts, {n_tokens} tokens")
    w2v = Word2Vec(
        sentences,
        vector_size=dim,
        window=5,
        min_count=min_count,
        sg=1,  # skip-gram: better vectors for rare words than CBOW
        negative=10,
        epochs=epochs,
        workers=workers,
        seed=seed,
    )
    words = list(w2v.wv.index_to_key)
    vecs = np.asarray(w2v.wv.vectors, dtype=np.float32)
    # Match nn.Embedding's N(0, 1) scale, so the pre-trained and the random rows start alike.
    vecs = vecs / vecs.std()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"words": words, "vectors": torch.from_numpy(vecs)}, out)
    report = {"texts": len(sentences), "tokens": n_tokens, "words": len(words), "dim": dim, "seconds": time.time() - t0}
    print(report)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--dim", type=int, default=DIM)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--workers", type=int, default=WORKERS)
    a = p.parse_args(argv)
    train_vectors(a.data_dir or default_data_dir(), a.out, dim=a.dim, epochs=a.epochs, workers=a.workers)


if __name__ == "__main__":
    main()
