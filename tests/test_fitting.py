"""The many-labels fitting path: training matrices built without sorting, and the one-pass retrain's honesty."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier

from bench.loop_data import campaign, generic
from training import fitting
from training.features import DEFAULT_CONFIG, FeatureConfig, Featurizer, extract
from training.model import train

GRID = (3.0, 30.0)


def rows(n: int, seed: int = 0):
    out = list(campaign(n // 2, seed=seed)) + list(generic(n - n // 2, seed=seed + 1))
    np.random.default_rng(seed).shuffle(out)
    return [c for c, _ in out], np.array([label == "spam" for _, label in out], dtype=np.int8)


def test_training_matrix_is_the_canonical_matrix_unsorted():
    comments, _ = rows(300)
    comments.append("aaa aaa aaa bbb aaa aaa")  # repeated words and character n-grams within one row
    X = fitting.training_matrix(comments, DEFAULT_CONFIG)
    assert X.dtype == np.float32 and X.indices.dtype == np.int32 and X.shape == (301, DEFAULT_CONFIG.n_features)
    assert not X.has_canonical_format  # entries as extract gives them: repeats and unsorted columns kept
    assert X[300].nnz == len(extract(comments[300]).indices)
    canonical = Featurizer(DEFAULT_CONFIG).transform(comments)
    assert abs(X - canonical).max() < 1e-6
    v = np.random.default_rng(1).normal(size=X.shape[1])
    assert np.allclose(X @ v, canonical @ v, rtol=1e-5, atol=1e-5)
    assert fitting.training_matrix([], DEFAULT_CONFIG).shape == (0, DEFAULT_CONFIG.n_features)


@pytest.mark.parametrize("average", [False, True])
def test_sgd_learns_the_same_model_from_the_unsorted_matrix(average):
    # The same entries, once as built and once summed and sorted: SGD adds repeated entries up, so the fits agree
    # to rounding. (A learning rate this gentle keeps rounding from growing; the product's rate does not change
    # the arithmetic, only how far a last-bit difference travels.)
    comments, y = rows(400, seed=2)
    comments[:20] = [c.replace(content=f"{c.content} {c.content} la la la la") for c in comments[:20]]
    X = fitting.training_matrix(comments, DEFAULT_CONFIG)
    # (scipy's astype would sum the duplicates itself)
    unsorted = sp.csr_matrix((X.data.astype(np.float64), X.indices, X.indptr), shape=X.shape)
    canonical = unsorted.copy()
    canonical.sum_duplicates()
    assert canonical.nnz < unsorted.nnz
    coefs = []
    for X in (unsorted, canonical):
        clf = SGDClassifier(loss="log_loss", alpha=1e-5, learning_rate="constant", eta0=0.05, average=average,
                            tol=None, max_iter=1, random_state=0)
        for _ in range(3):
            clf.partial_fit(X, y, classes=np.array([0, 1]))
        coefs.append((clf.coef_[0], clf.intercept_[0]))
    (a, b), (c, d) = coefs
    assert np.abs(a).max() > 0.1
    assert np.abs(a - c).max() <= 1e-10 * np.abs(a).max() and abs(b - d) <= 1e-10


def batches_of(comments, y, weights=None, groups=None):
    weights = np.ones(len(y)) if weights is None else weights
    groups = ["site"] * len(y) if groups is None else groups

    def batch(positions):
        return fitting.Items(tuple(comments[i] for i in positions), tuple(int(y[i]) for i in positions),
                             tuple(float(weights[i]) for i in positions), tuple(groups[i] for i in positions))
    return batch


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(fitting, "CHUNK", 64)
    monkeypatch.setattr(fitting, "CAL_MIN", 40)
    monkeypatch.setattr(fitting, "C_SAMPLE", 150)
    return fitting


def test_single_pass_judges_a_model_that_never_saw_the_newest_rows(small_chunks):
    comments, y = rows(700, seed=3)
    n, n_eval = len(y), 140
    # Only the newest rows carry this word: a model that never met them has a zero weight on its columns.
    marker = "zqxvortmarkel"
    for i in range(n - n_eval, n):
        if y[i]:
            comments[i] = comments[i].replace(content=f"{comments[i].content} {marker}")
    older_X = fitting.training_matrix(comments[:n - n_eval], DEFAULT_CONFIG)
    columns = np.setdiff1d(extract(marker).indices, older_X.indices)
    assert len(columns) > 5
    champion = train(*rows(200, seed=9))
    result = fitting.single_pass(batches_of(comments, y), np.arange(n - n_eval), np.arange(n - n_eval, n), y,
                                 DEFAULT_CONFIG, grid=GRID, n_jobs=1,
                                 champion=(champion.pipeline.named_steps["classifier"], champion.config))
    challenger_coef = result.challenger.calibrated_classifiers_[0].estimator.estimator.coef_[0]
    final_coef = result.final.calibrated_classifiers_[0].estimator.estimator.coef_[0]
    assert np.all(challenger_coef[columns] == 0) and np.any(final_coef[columns] != 0)

    # The gate's scores are the newest rows' own under each model (in the order the pass visited them).
    newest = comments[n - n_eval:]
    assert len(result.y_eval) == n_eval and sorted(result.y_eval) == sorted(y[n - n_eval:])
    expected = result.challenger.predict_proba(Featurizer(DEFAULT_CONFIG).transform(newest))[:, 1]
    assert np.allclose(np.sort(result.challenger_scores), np.sort(expected), atol=1e-9)
    assert np.allclose(np.sort(result.champion_scores), np.sort(champion.predict_proba(newest)), atol=1e-9)
    assert np.mean((result.challenger_scores >= 0.5) == result.y_eval) > 0.9
    cal = int(result.details["calibration"].split("slice of ")[1].split()[0])
    assert cal >= 40 and result.details["rows_fitted"] == n - cal
    assert result.details["C"] in GRID and set(result.details["C_cv_log_loss"]) == {str(c) for c in GRID}
    assert sum(result.counts.values()) == n and result.counts[("site", 1)] == int(y.sum())


def test_feature_workers_give_the_same_pass_and_a_champion_with_other_features_is_scored_on_its_own(small_chunks):
    comments, y = rows(500, seed=4)
    n, n_eval = len(y), 100
    champion = train(*rows(200, seed=10), config=FeatureConfig(char_ngrams=(2, 4)))
    args = (batches_of(comments, y), np.arange(n - n_eval), np.arange(n - n_eval, n), y, DEFAULT_CONFIG)
    kwargs = dict(grid=GRID, champion=(champion.pipeline.named_steps["classifier"], champion.config))
    here = fitting.single_pass(*args, n_jobs=1, **kwargs)
    there = fitting.single_pass(*args, n_jobs=2, **kwargs)
    for a, b in ((here.challenger, there.challenger), (here.final, there.final)):
        assert np.array_equal(a.calibrated_classifiers_[0].estimator.estimator.coef_,
                              b.calibrated_classifiers_[0].estimator.estimator.coef_)
    assert np.array_equal(here.challenger_scores, there.challenger_scores)
    assert np.array_equal(here.champion_scores, there.champion_scores)
    newest = comments[n - n_eval:]
    assert np.allclose(np.sort(here.champion_scores), np.sort(champion.predict_proba(newest)), atol=1e-9)


def test_parallel_keeps_order_and_submits_only_a_few_tasks_ahead():
    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield (i,)

    got = []
    for value in fitting.parallel(abs, tasks(), n_jobs=2):
        got.append(value)
        assert len(pulled) - len(got) <= fitting.AHEAD * 2
    assert got == list(range(40))
    assert list(fitting.parallel(abs, ((-i,) for i in range(5)), n_jobs=1)) == list(range(5))


def test_chunks_handed_over_in_shared_memory_are_the_same_matrix_and_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(fitting, "SPOOL_ROOT", str(tmp_path))
    stale = tmp_path / "winnow-features-999999999-abc"  # a run whose process is gone
    stale.mkdir()
    (stale / "chunk").write_bytes(b"x")
    comments, _ = rows(120, seed=5)
    with fitting.spooling() as spool:
        assert not stale.exists() and spool.startswith(str(tmp_path))
        handle = fitting.training_matrix(comments, DEFAULT_CONFIG, spool)
        assert isinstance(handle, fitting.Spooled)
        X = handle.open()
        assert os.listdir(spool) == []  # the file goes when it is opened; the mapping keeps the matrix
        expected = fitting.training_matrix(comments, DEFAULT_CONFIG)
        assert (X != expected).nnz == 0 and np.array_equal(X.indices, expected.indices)
        assert X.dtype == np.float32 and X.indices.dtype == np.int32
        empty = fitting.training_matrix([], DEFAULT_CONFIG, spool).open()
        assert empty.shape == (0, DEFAULT_CONFIG.n_features)
        fitting.training_matrix(comments[:3], DEFAULT_CONFIG, spool)  # never opened: a stopped run's leftover
    assert list(tmp_path.iterdir()) == []


KILLED_PARENT = """
import os, sys, time
from training import fitting
def slow_pid():
    time.sleep(0.3)
    return os.getpid()
pids = sorted(set(fitting.parallel(slow_pid, [()] * 8, 2)))
print(" ".join(map(str, pids)), flush=True)
time.sleep(120)
"""


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_feature_workers_exit_when_the_retrain_that_started_them_is_killed():
    """The OOM killer's SIGKILL gives a retrain no chance to shut its workers down: they go by themselves."""
    root = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        workers = set(map(int, parent.stdout.readline().split()))
        assert len(workers) == 2 and workers <= _descendants(parent.pid)
        left = _descendants(parent.pid)  # the workers and loky's helpers
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_running(p) for p in left):
            time.sleep(0.2)
        alive = [p for p in left if _running(p)]
        assert alive == [], f"still running after their parent was killed: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
