"""The fast scorer equals the scikit-learn pipeline on every comment of the shared corpora."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tests.conftest import require_datasets
from training.model import train
from training.schema import Comment


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def corpora():
    root = require_datasets()
    return {name: read_jsonl(root / name / f"{name}.jsonl") for name in ("youtube", "sms-spam", "spamassassin")}


@pytest.fixture(scope="module")
def model(corpora):
    rows = corpora["youtube"][::4] + corpora["sms-spam"][::10]
    return train([r["text"] for r in rows], [r["label"] for r in rows], C=10.0)


@pytest.mark.parametrize("name, step", [("youtube", 1), ("sms-spam", 1), ("spamassassin", 4)])
def test_fast_scorer_equals_pipeline_on_every_comment(model, corpora, name, step):
    # Every comment of the comment corpora; every 4th message of the (long, email) SpamAssassin set keeps the
    # suite fast while still covering long multi-part texts.
    comments = [Comment(content=r["text"], author=r.get("author", "")) for r in corpora[name][::step]]
    batch = model.predict_proba(comments)
    fast = np.array([model.score(c, top=0).score for c in comments])
    assert len(batch) == len(comments)
    assert np.max(np.abs(batch - fast)) <= 1e-9


def test_explained_score_equals_plain_score(model, corpora):
    for r in corpora["youtube"][:200]:
        plain = model.score(r["text"], top=0)
        explained = model.score(r["text"], top=8, explain=True)
        assert abs(plain.score - explained.score) <= 1e-12
        assert abs(sum(x["weight"] for x in explained.reasons) - explained.decision_value) <= 1e-9


def test_concurrent_scoring_gives_the_same_answers(model, corpora):
    texts = [r["text"] for r in corpora["youtube"][:300]]
    expected = [model.score(t).score for t in texts]
    results: dict[int, list[float]] = {}

    def work(k):
        results[k] = [model.score(t).score for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))
