"""Labelled comments for exercising the learning loop: a synthetic spam campaign the starter model cannot know,
and texts resampled from the shared corpora for sizing runs.

The campaign is made of ordinary-looking sentences whose only tell is a made-up product name, so a model can only
call it spam after moderators taught it to.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Iterator

from training.schema import Comment

TOPICS = ["sourdough starters", "the new bike lanes", "your garden photos", "the chess opening", "this recipe",
          "the library renovation", "the hiking trail", "the conference talk", "your cat", "the book review",
          "the tax explanation", "the guitar lesson", "the bird feeder", "the city council vote", "the knitting pattern"]
OPENERS = ["I loved the part about", "Thanks for writing about", "Really useful notes on", "My family enjoyed",
           "Great explanation of", "I never thought much about", "We tried what you said about",
           "Could you write more on", "Interesting take on", "I shared your post about"]
CLOSERS = ["thanks!", "keep it up.", "see you next week.", "looking forward to more.", "very helpful.",
           "my neighbour agrees.", "nice work.", "cheers.", "well written.", "bookmarked."]
CAMPAIGN = ["glimmerwave tonic", "glimmerwave drops", "glimmerwave capsules"]
CAMPAIGN_TAILS = ["changed my life", "is what I use now", "works better than anything", "try it today",
                  "my aunt swears by it", "is on sale this week"]


def campaign(n: int, seed: int = 0, start: int = 0) -> Iterator[tuple[Comment, str]]:
    """n comments, about half ham about everyday topics and half spam pushing the made-up campaign."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        who = f"reader{rng.randrange(10**6)}"
        if i % 2:
            text = f"{rng.choice(OPENERS)} {rng.choice(TOPICS)}, {rng.choice(CAMPAIGN)} {rng.choice(CAMPAIGN_TAILS)}"
            label = "spam"
        else:
            text = f"{rng.choice(OPENERS)} {rng.choice(TOPICS)}, {rng.choice(CLOSERS)}"
            label = "ham"
        yield Comment(content=f"{text} #{i}", author=who, author_email=f"{who}@example.org"), label


LINK_SPAM = ["Buy cheap pills now at {u}", "Click {u} to win a free phone", "Earn money fast from home {u}",
             "Free followers for your channel {u}", "Cheap watches and bags, visit {u}", "Hot singles near you {u}"]


def generic(n: int, seed: int = 0) -> Iterator[tuple[Comment, str]]:
    """Everyday ham and the link spam every filter knows: what a model knows before a site teaches it anything."""
    rng = random.Random(seed)
    for i in range(n):
        if i % 2:
            url = f"http://{rng.choice(['deal', 'win', 'promo', 'cash'])}{rng.randrange(1000)}.example.com"
            yield Comment(content=rng.choice(LINK_SPAM).format(u=url)), "spam"
        else:
            yield Comment(content=f"{rng.choice(OPENERS)} {rng.choice(TOPICS)}, {rng.choice(CLOSERS)}"), "ham"


def corpus_texts(datasets: Path) -> list[tuple[str, str]]:
    """(text, label) from the shared corpora, without fields that leak the label."""
    out: list[tuple[str, str]] = []
    for name in ("youtube", "sms-spam", "spamassassin"):
        path = Path(datasets) / name / f"{name}.jsonl"
        if not path.exists():
            continue
        with path.open() as fh:
            for line in fh:
                row = json.loads(line)
                text = (row.get("text") or row.get("body") or "")[:4000]
                if text.strip() and row.get("label") in ("spam", "ham"):
                    out.append((text, row["label"]))
    return out


NAMES = ["Anna", "Ben", "Chloe", "Dmitri", "Esther", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kasia", "Liam",
         "Maya", "Nils", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yara", "Zoe"]
GREETINGS = ["Hi {n},", "Hey {n}!", "{n}:", "Dear {n},", "@{n}"]
SIGNOFFS = ["- {n}", "cheers, {n}", "({n}, {k})", "{n} #{k}", "-- {n} from room {k}"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"\d+")


def resampled(texts: list[tuple[str, str]], n: int, seed: int = 0,
              seen: set[int] | None = None) -> Iterator[tuple[Comment, str]]:
    """n distinct comments made from `texts`: each draws a text, may splice in a sentence of another text with the
    same label, renumbers its digits, drops or swaps a word and adds a name, so no two come out equal (checked;
    a rare collision gets one more random token; pass the same `seen` to keep several batches apart). The label
    stays that of the texts it was made from."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in texts:
        by_label.setdefault(label, []).append(text)
    seen = set() if seen is None else seen
    for _ in range(n):
        text, label = texts[rng.randrange(len(texts))]
        text = _perturb(text, by_label[label], rng)
        while hash(text) in seen:
            text = f"{text} {rng.choice(NAMES).lower()}{rng.randrange(10**6)}"
        seen.add(hash(text))
        yield Comment(content=text), label


def _perturb(text: str, same_label: list[str], rng: random.Random) -> str:
    if rng.random() < 0.5:
        other = [s for s in _SENTENCE.split(same_label[rng.randrange(len(same_label))]) if s.strip()]
        if other:
            piece = rng.choice(other)
            text = f"{piece} {text}" if rng.random() < 0.5 else f"{text} {piece}"
    text = _NUMBER.sub(lambda m: str(rng.randrange(10 ** len(m.group())) if rng.random() < 0.7 else m.group()), text)
    words = text.split(" ")
    if len(words) > 3:
        i = rng.randrange(len(words) - 1)
        if rng.random() < 0.5:
            del words[i]
        else:
            words[i], words[i + 1] = words[i + 1], words[i]
    text = " ".join(words)
    name, k = rng.choice(NAMES), rng.randrange(1000)
    roll = rng.random()
    if roll < 0.35:
        text = f"{rng.choice(GREETINGS).format(n=name)} {text}"
    elif roll < 0.7:
        text = f"{text} {rng.choice(SIGNOFFS).format(n=name, k=k)}"
    return text
