"""A generated, review-like sentiment data set (seed 000's Yelp reviews, offline): short restaurant and shop
reviews, each labelled `positive` or `negative`, written as Parquet (or any format the engine reads).

The words carry the sentiment the way real reviews do (adjectives, verbs of recommendation), mixed with
neutral sentences, so a pretrained encoder reaches a high accuracy after a short fine-tuning while an
untrained head is at chance.
"""

from __future__ import annotations

import random
from pathlib import Path

PLACES = ["restaurant", "cafe", "bakery", "pizza place", "bar", "diner", "hotel", "bookshop", "salon", "food truck"]
THINGS = ["food", "service", "coffee", "staff", "pasta", "room", "dessert", "music", "price", "atmosphere"]
GOOD = ["wonderful", "delicious", "friendly", "excellent", "amazing", "lovely", "fantastic", "great", "perfect"]
BAD = ["awful", "terrible", "rude", "disgusting", "horrible", "bland", "dirty", "disappointing", "overpriced"]
GOOD_END = ["I will definitely come back.", "Highly recommended!", "Five stars from me.", "We loved every minute."]
BAD_END = ["Never again.", "I would not recommend it.", "A complete waste of money.", "Avoid this place."]
NEUTRAL = [
    "We went there on a Tuesday.",
    "It is close to the station.",
    "We were a group of four.",
    "Parking was easy.",
]


def review(rng: random.Random, positive: bool) -> str:
    words, ends = (GOOD, GOOD_END) if positive else (BAD, BAD_END)
    place, thing, other = rng.choice(PLACES), rng.choice(THINGS), rng.choice(THINGS)
    sentences = [
        f"The {thing} at this {place} was {rng.choice(words)}.",
        rng.choice(NEUTRAL),
        f"The {other} was {rng.choice(words)} too.",
        rng.choice(ends),
    ]
    rng.shuffle(sentences)
    return " ".join(sentences)


def reviews(count: int, seed: int = 0) -> list[dict]:
    """`count` rows {"review": text, "sentiment": "positive"|"negative"}, balanced, shuffled."""
    rng = random.Random(seed)
    rows = [
        {"review": review(rng, index % 2 == 0), "sentiment": "positive" if index % 2 == 0 else "negative"}
        for index in range(count)
    ]
    rng.shuffle(rows)
    return rows


def write_reviews(path: Path, count: int = 400, seed: int = 0) -> Path:
    """Write the reviews as Parquet (`.parquet`), CSV, JSON or JSONL, by `path`'s extension."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_list(reviews(count, seed))
    writer = {".parquet": dataset.to_parquet, ".csv": lambda p: dataset.to_csv(p, index=False)}.get(path.suffix)
    if writer is None:
        dataset.to_json(str(path), lines=path.suffix == ".jsonl")
    else:
        writer(str(path))
    return path
