"""The model: calibrated probabilities, explanations that add up, incremental updates, sensible verdicts."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from tests.conftest import require_datasets
from training.model import C_GRID, NB_CHOICES, SVM_C_GRID, Model, Verdict, encode_labels, train

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
    assert m.meta["classifier"]["C"] in SVM_C_GRID and m.meta["classifier"]["nb_mix"] in NB_CHOICES
    assert set(m.meta["classifier"]["C_cv_log_loss"]) == {str(c) for c in SVM_C_GRID} | {f"{c} nb" for c in SVM_C_GRID}
    assert m.meta["classifier"]["cv"] == "stratified"
    # With three or more sources the folds leave whole sources out.
    grouped = train(texts, labels, sources=["a", "b", "c"] * 8)
    assert grouped.meta["sources"] == {s: {"spam": 4, "ham": 4} for s in "abc"}
    assert grouped.meta["classifier"]["cv"] == "sources left out"


def test_exact_fit_in_worker_processes_is_the_fit_made_in_turn(youtube, monkeypatch):
    from training import fitting, model as model_module
    from training.features import Featurizer

    rows = youtube[:600]
    X = Featurizer().transform([r["text"] for r in rows])
    y = np.array([1 if r["label"] == "spam" else 0 for r in rows])
    calls = []
    real_parallel = fitting.parallel

    def parallel(fn, tasks, n_jobs):
        calls.append(n_jobs)
        return real_parallel(fn, tasks, n_jobs)

    monkeypatch.setattr(fitting, "parallel", parallel)
    monkeypatch.setattr(model_module, "CHOOSE_PARALLEL_NNZ", 10**12)
    in_turn = model_module.choose(X, y, grid=(1.0, 10.0))
    monkeypatch.setattr(model_module, "CHOOSE_PARALLEL_NNZ", 0)
    monkeypatch.setattr(fitting, "workers", lambda: 2)
    in_workers = model_module.choose(X, y, grid=(1.0, 10.0))
    assert calls == [1, 2]
    assert in_workers == in_turn
    # the whole exact fit
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    monkeypatch.setattr(model_module, "CHOOSE_PARALLEL_NNZ", 10**12)
    alone = train(texts, labels)._scorer
    monkeypatch.setattr(model_module, "CHOOSE_PARALLEL_NNZ", 0)
    shared = train(texts, labels)._scorer
    assert np.array_equal(alone.coef, shared.coef) and (alone.intercept, alone.a, alone.b) == \
        (shared.intercept, shared.a, shared.b)


@pytest.fixture()
def many_labels_path(monkeypatch):
    """The many-labels path (training.fitting) on small data: thresholds lowered, chunks small."""
    from training import fitting

    monkeypatch.setattr(fitting, "EXACT_MAX", 100)
    monkeypatch.setattr(fitting, "CHUNK", 64)
    monkeypatch.setattr(fitting, "CAL_MIN", 60)
    return fitting


def test_many_labels_path_is_one_linear_model_and_one_sigmoid(many_labels_path, youtube):
    from sklearn.frozen import FrozenEstimator

    rows = youtube[::3]
    m = train([r["text"] for r in rows], [r["label"] for r in rows], C=10.0)
    calibrated = m.pipeline.named_steps["classifier"]
    assert len(calibrated.calibrated_classifiers_) == 1
    assert isinstance(calibrated.calibrated_classifiers_[0].estimator, FrozenEstimator)
    assert m.meta["classifier"]["solver"].startswith("sgd") and "held-out slice" in m.meta["classifier"]["calibration"]
    held_out = youtube[1::3][:300]
    p = m.predict_proba([r["text"] for r in held_out])
    assert max(abs(m.score(r["text"], top=0).score - q) for r, q in zip(held_out, p)) <= 1e-9
    y = encode_labels([r["label"] for r in held_out])
    assert np.mean((p >= 0.5) == y) > 0.85
    # partial_fit moves the weights the pipeline uses, through the frozen wrapper
    text = "lovely tune, greetings from Brazil"
    before = m.predict_proba([text])[0]
    m.partial_fit([text] * 3, ["spam"] * 3)
    assert m.predict_proba([text])[0] > before and abs(m.predict_proba([text])[0] - m.score(text).score) <= 1e-9
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.score(text).score == m.score(text).score


def test_many_labels_path_dedupes_and_streams(many_labels_path, youtube, monkeypatch):
    rows = youtube[::4]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    doubled = train(texts * 2, labels * 2, C=10.0)
    assert doubled.meta["classifier"]["distinct_rows"] == len(set(zip(texts, labels)))
    assert doubled.meta["counts"]["spam"] + doubled.meta["counts"]["ham"] == 2 * len(texts)
    # Beyond IN_MEMORY_MAX rows are re-featurised per pass and fitted by one averaged pass; C still by CV.
    monkeypatch.setattr(many_labels_path, "IN_MEMORY_MAX", 50)
    streamed = train(texts, labels)
    assert "averaged" in streamed.meta["classifier"]["solver"]
    assert streamed.meta["classifier"]["C"] in C_GRID
    assert set(streamed.meta["classifier"]["C_cv_log_loss"]) == {str(c) for c in C_GRID}
    assert streamed.score(SPAMMY).score > 0.5 > streamed.score(HAMMY).score


def test_featurized_rows_and_weights(many_labels_path):
    from training.features import DEFAULT_CONFIG, Featurizer

    texts = [f"comment number {i} about things" for i in range(150)] + ["same text"] * 3
    y = np.array([i % 2 for i in range(150)] + [1, 1, 0])
    data = many_labels_path.Featurized(texts, y, DEFAULT_CONFIG, n_jobs=1)
    assert data.n == 152 and data.inverse[150] == data.inverse[151] != data.inverse[152]
    w = data.weights(np.array([150, 151, 152, 0]))
    assert w[data.inverse[150]] == 2 and w[data.inverse[152]] == 1 and w.sum() == 4
    ids = np.array([data.inverse[152], data.inverse[3], data.inverse[0]])
    X = data.rows(ids)
    assert X.dtype == np.float32 and X.indices.dtype == np.int32
    expected = Featurizer(DEFAULT_CONFIG).transform(["same text", texts[3], texts[0]])
    assert abs(X - expected).max() < 1e-6


def test_partial_fit_defaults_are_gentle():
    import inspect

    params = inspect.signature(Model.partial_fit).parameters
    assert params["epochs"].default * params["learning_rate"].default <= 0.2


def test_nb_scaled_columns_fold_into_one_linear_model(youtube):
    import scipy.sparse as sp
    from sklearn.svm import LinearSVC

    from training.features import Featurizer
    from training.model import HashedLinearSVC, nb_ratios

    rows = youtube[:300]
    X = Featurizer().transform([r["text"] for r in rows])
    y = encode_labels([r["label"] for r in rows])
    clf = HashedLinearSVC(C=1.0, nb_mix=0.5).fit(X, y)
    used = np.unique(X.indices)
    scale = 0.5 + 0.5 * np.abs(nb_ratios(X[:, used], y, n_features=X.shape[1]))
    svm = LinearSVC(C=1.0, dual=True, max_iter=5000, random_state=0).fit(X[:, used] @ sp.diags(scale), y)
    # The SVM fitted on scaled columns and the one set of weights over the hashed columns decide alike.
    expected = (X[:, used] @ sp.diags(scale)) @ svm.coef_[0] + svm.intercept_[0]
    assert np.allclose(clf.decision_function(X), expected, atol=1e-9)
    assert clf.coef_.shape == (1, X.shape[1]) and np.count_nonzero(clf.coef_[0][np.setdiff1d(
        np.arange(X.shape[1]), used)]) == 0
    # NB ratios: any column used only by spam rows leans further to spam than any used only by ham rows.
    r = nb_ratios(X, y)
    X.eliminate_zeros()  # (a collision may cancel two entries out: a stored zero is no use)
    spam_cols, ham_cols = np.unique(X[y == 1].indices), np.unique(X[y == 0].indices)
    assert r[np.setdiff1d(spam_cols, ham_cols)].min() > r[np.setdiff1d(ham_cols, spam_cols)].max()


def test_given_settings_skip_the_cross_validation(youtube):
    rows = youtube[::4]
    m = train([r["text"] for r in rows], [r["label"] for r in rows], C=1.0, nb_mix=None)
    assert m.meta["classifier"]["C"] == 1.0 and m.meta["classifier"]["nb_mix"] is None
    assert m.meta["classifier"]["C_cv_log_loss"] is None
    # A given C alone still lets the cross-validation choose the column scaling.
    m = train([r["text"] for r in rows], [r["label"] for r in rows], C=1.0)
    assert set(m.meta["classifier"]["C_cv_log_loss"]) == {"1.0", "1.0 nb"}
