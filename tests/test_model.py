"""The model: calibrated probabilities, explanations that add up, incremental updates, sensible verdicts."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from tests.conftest import require_datasets
from training.model import C_GRID, Model, Verdict, encode_labels, train

SPAMMY = "Check out my channel and SUBSCRIBE!!! http://bit.ly/free-money win cash now"
HAMMY = "This song brings back so many memories, I love the chorus"


@pytest.fixture(scope="module")
def youtube():
    root = require_datasets()
    with open(root / "youtube" / "youtube.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def model(youtube):
    rows = youtube[::2]
    return train([r["text"] for r in rows], [r["label"] for r in rows], C=10.0,
                 sources=[r["source"] for r in rows])


def test_probabilities_are_calibrated_and_bounded(model, youtube):
    held_out = youtube[1::2]
    p = model.predict_proba([r["text"] for r in held_out])
    assert p.shape == (len(held_out),)
    assert np.all((p >= 0) & (p <= 1))
    y = encode_labels([r["label"] for r in held_out])
    assert np.mean((p >= 0.5) == y) > 0.85


def test_clear_verdicts(model):
    spam = model.score(SPAMMY)
    ham = model.score(HAMMY)
    assert isinstance(spam, Verdict)
    assert spam.score > 0.8 and spam.decision == "spam"
    assert ham.score < 0.2 and ham.decision == "ham"


def test_reasons_add_up_to_the_decision_value(model, youtube):
    for r in youtube[:100]:
        v = model.score(r["text"], top=5)
        assert [x["signal"] for x in v.reasons[-2:]] == ["(bias)", "(other signals)"]
        assert len(v.reasons) <= 7
        assert abs(sum(x["weight"] for x in v.reasons) - v.decision_value) <= 1e-9
        assert abs(1 / (1 + np.exp(-v.decision_value)) - v.score) <= 1e-12


def test_reasons_name_words_and_signals(model):
    v = model.score(SPAMMY, top=20)
    names = [x["signal"] for x in v.reasons]
    assert "word:subscribe" in names
    assert any(n.startswith("links:") for n in names)
    top = max(v.reasons[:-2], key=lambda x: x["weight"])
    assert top["weight"] > 0


def test_highlights_cover_original_offsets(model):
    content = "Please SUBSCRIBE to my channel"
    v = model.score(content, explain=True)
    spans = {content[h["start"]:h["end"]]: h["weight"] for h in v.highlights}
    assert "SUBSCRIBE" in spans and spans["SUBSCRIBE"] > 0
    assert model.score(content).highlights is None


def test_partial_fit_moves_predictions_and_keeps_paths_equal(model):
    m = pickle.loads(pickle.dumps(model))
    text = "lovely tune, greetings from Brazil"
    before = m.score(text).score
    m.partial_fit([text] * 3, ["spam"] * 3)
    after = m.score(text).score
    assert after > before + 0.05
    assert abs(m.predict_proba([text])[0] - after) <= 1e-9
    assert m.meta["updates"]["spam"] == 3
    assert model.score(text).score == before  # the original is untouched


def test_meta_describes_the_training(model):
    meta = model.meta
    assert meta["counts"]["spam"] + meta["counts"]["ham"] == 793
    assert set(meta["sources"]) == {"youtube:Psy", "youtube:KatyPerry", "youtube:LMFAO", "youtube:Eminem"}
    assert meta["features"]["n_features"] == 2**20
    assert meta["libraries"]["scikit-learn"]
    assert meta["version"] and meta["created_at"]


def test_model_is_picklable(model):
    m = pickle.loads(pickle.dumps(model))
    assert isinstance(m, Model)
    assert m.score(SPAMMY).score == model.score(SPAMMY).score


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        encode_labels(["spam", "maybe"])
    with pytest.raises(ValueError, match="at least 2 spam and 2 ham"):
        train(["a", "b", "c"], ["spam", "ham", "ham"])


def test_choosing_c_by_cross_validation():
    texts = ["win free money now", "cheap pills online", "click here for prizes", "earn cash fast",
             "lovely song", "great video", "nice voice", "beautiful melody"] * 3
    labels = (["spam"] * 4 + ["ham"] * 4) * 3
    m = train(texts, labels)
    assert m.meta["classifier"]["C"] in C_GRID
    assert set(m.meta["classifier"]["C_cv_log_loss"]) == {str(c) for c in C_GRID}
    # With three or more sources the folds leave whole sources out.
    grouped = train(texts, labels, sources=["a", "b", "c"] * 8)
    assert grouped.meta["sources"] == {s: {"spam": 4, "ham": 4} for s in "abc"}
