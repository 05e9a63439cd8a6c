"""The accuracy benchmark's own arithmetic (its figures are reported, so they are checked like any other)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.accuracy import hindsight


def _brute_force(labels, scores):
    best = max(np.mean([(s >= t) == (y == "spam") for y, s in zip(labels, scores)])
               for t in list(scores) + [float("inf")])
    return float(best)


@pytest.mark.parametrize("labels,scores", [
    (["spam", "ham", "spam", "ham"], [0.9, 0.8, 0.7, 0.1]),
    (["ham", "ham"], [0.9, 0.8]),
    (["spam", "ham"], [0.5, 0.5]),  # tied scores cannot be split by any threshold
    (["spam", "spam", "ham", "ham", "spam"], [0.3, 0.3, 0.3, 0.2, 0.9]),
])
def test_hindsight_is_the_best_accuracy_of_any_threshold(labels, scores):
    accuracy, threshold = hindsight(labels, np.array(scores))
    assert accuracy == pytest.approx(_brute_force(labels, scores))
    flagged = np.array(scores) >= threshold
    assert np.mean(flagged == (np.array(labels) == "spam")) == pytest.approx(accuracy)


def test_hindsight_matches_brute_force_on_random_folds():
    rng = np.random.default_rng(7)
    for n in itertools.chain(range(1, 12), [50, 200]):
        labels = list(rng.choice(["spam", "ham"], size=n))
        scores = np.round(rng.random(n), 1)  # rounded: plenty of ties
        accuracy, threshold = hindsight(labels, scores)
        assert accuracy == pytest.approx(_brute_force(labels, scores))
        assert np.mean((scores >= threshold) == (np.array(labels) == "spam")) == pytest.approx(accuracy)


def test_the_http_ceiling_app_does_the_scoring_winnow_does():
    """bench/bare_app.py is the ceiling Winnow's check is measured against: it must score the comment for real,
    with the same model, features and reasons, or the comparison means nothing."""
    from bench.bare_app import create_app
    from bench.http import COMMENTS, _COMMON
    from training.schema import Comment
    from training.starter import load_starter

    client = create_app().test_client()
    assert client.get("/ping").data == b"pong"
    model = load_starter()
    for comment in COMMENTS:
        body = {**_COMMON, **comment}
        expected = model.score(Comment.from_dict(body))
        answer = client.post("/check", json=body).get_json()
        assert answer == {"verdict": expected.decision, "score": expected.score, "reasons": expected.reasons}
        plain = client.post("/check?reasons=0", json=body).get_json()
        assert plain["score"] == expected.score and [r["signal"] for r in plain["reasons"]] == [
            "(bias)", "(other signals)"]
    verdicts = {client.post("/check", json={**_COMMON, **c}).get_json()["verdict"] for c in COMMENTS}
    assert verdicts == {"ham", "spam"}  # the benchmark's comments exercise both answers
