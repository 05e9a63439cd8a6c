"""Fitting on many labels: distinct rows featurised once in parallel chunks (float32), a log-loss SGD fit, and Platt
calibration on a held-out slice, giving the same one-linear-model-plus-one-sigmoid pipeline as the exact fit.

The exact fit in training.model (liblinear, C and calibration by cross-validation) costs some thirty solver runs of
seconds to minutes each, and its float64 matrix plus liblinear's copy grow with every label; above EXACT_MAX
labels this path takes over. Up to IN_MEMORY_MAX distinct rows the chunks stay in memory and SGD makes several
passes; beyond that they are re-featurised whenever needed and the fit is one pass of averaged SGD, so memory
stays bounded by a few chunks whatever the number of labels.

EXACT_MAX covers the accuracy benchmark's largest training set (YouTube plus SMS, about 6k rows): there the SGD
path scored a leave-one-video-out MCC of 0.841 against the exact fit's 0.859, so small data stays exact.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier

from training.features import FeatureConfig, Featurizer

EXACT_MAX = 8_000          # up to this many labels training.model fits exactly (liblinear); see the note above
IN_MEMORY_MAX = 150_000    # distinct rows kept featurised in memory (~7 KB each as float32 + int32)
CHUNK = 2_500              # rows per featurisation task
C_SAMPLE = 10_000          # rows the regularisation is chosen on
C_FOLDS = 3
EPOCHS = 10                # SGD passes over in-memory rows, fewer on more rows (one pass, averaged, when streamed)
PASS_ROWS = 500_000        # ...so that the passes visit about this many rows, but at least MIN_EPOCHS times
MIN_EPOCHS = 3             # (at 20k rows three passes already matched liblinear's held-out MCC within 0.001)
CAL_SHARE = 0.1            # held-out calibration slice: this share of the rows, within CAL_MIN..CAL_MAX
CAL_MIN, CAL_MAX = 500, 20_000
PARALLEL_MIN = 4 * CHUNK   # fewer rows than this are featurised in-process


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _featurize(items: Sequence[Any], config: FeatureConfig) -> sp.csr_matrix:
    X = Featurizer(config).transform(items)
    # float32 values and int32 columns halve the rows' size; the model's weights stay float64
    return sp.csr_matrix((X.data.astype(np.float32), X.indices.astype(np.int32), X.indptr), shape=X.shape)


class Featurized:
    """The distinct (comment, label) rows of a training set, featurised once; a training set over them is a weight
    vector (duplicates add their weights up, zero leaves a row out).

    `inverse[i]` is the distinct row of input row i. Chunks hold distinct rows in a random order, so one pass of
    SGD over them is a shuffled pass."""

    def __init__(self, comments: Sequence[Any], y: np.ndarray, config: FeatureConfig, *, seed: int = 0,
                 keep: bool | None = None, n_jobs: int | None = None):
        index: dict[Any, int] = {}
        inverse = np.empty(len(comments), dtype=np.int64)
        items: list[Any] = []
        labels: list[int] = []
        for i, (c, label) in enumerate(zip(comments, y)):
            key = (c, int(label))
            try:
                j = index.setdefault(key, len(items))
            except TypeError:  # an unhashable comment is simply its own row
                j = len(items)
            if j == len(items):
                items.append(c)
                labels.append(int(label))
            inverse[i] = j
        self.config = config
        self.items = items
        self.inverse = inverse
        self.y = np.asarray(labels, dtype=np.int64)
        self.n = len(items)
        self.n_jobs = workers() if n_jobs is None else n_jobs
        self.keep = self.n <= IN_MEMORY_MAX if keep is None else keep
        order = np.random.default_rng(seed).permutation(self.n)
        self._order = [order[i:i + CHUNK] for i in range(0, self.n, CHUNK)]
        self._chunks: list[sp.csr_matrix] | None = None
        if self.keep:
            self._chunks = [X for _, X in self._featurize_chunks(self._order)]

    def weights(self, rows: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> np.ndarray:
        """Per distinct row: the summed weights of the given input rows (all when None)."""
        rows = np.arange(len(self.inverse)) if rows is None else np.asarray(rows)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[rows]
        return np.bincount(self.inverse[rows], weights=w, minlength=self.n).astype(np.float64)

    def chunks(self) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        if self._chunks is not None:
            yield from zip(self._order, self._chunks)
        else:
            yield from self._featurize_chunks(self._order)

    def rows(self, ids: np.ndarray) -> sp.csr_matrix:
        """The feature rows of the given distinct rows, in that order."""
        ids = np.asarray(ids)
        if self._chunks is None:
            return sp.vstack([X for _, X in self._featurize_chunks([ids[i:i + CHUNK] for i in
                                                                    range(0, len(ids), CHUNK)])], format="csr")
        where = np.full(self.n, -1, dtype=np.int64)
        where[ids] = np.arange(len(ids))
        parts, positions = [], []
        for order, X in zip(self._order, self._chunks):
            pos = where[order]
            mask = pos >= 0
            if mask.any():
                parts.append(X[mask])
                positions.append(pos[mask])
        X = sp.vstack(parts, format="csr")
        return X[np.argsort(np.concatenate(positions))]

    def _featurize_chunks(self, orders: list[np.ndarray]) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        if self.n_jobs <= 1 or sum(len(o) for o in orders) < PARALLEL_MIN:
            for order in orders:
                yield order, _featurize([self.items[i] for i in order], self.config)
            return
        from joblib import Parallel, delayed

        # A generator with bounded dispatch: at most a few chunks wait in memory however many rows there are.
        results = Parallel(n_jobs=self.n_jobs, return_as="generator", pre_dispatch="2*n_jobs")(
            delayed(_featurize)([self.items[i] for i in order], self.config) for order in orders)
        yield from zip(orders, results)


def _sgd(alpha: float, average: bool, seed: int) -> SGDClassifier:
    return SGDClassifier(loss="log_loss", alpha=alpha, average=average, learning_rate="optimal", random_state=seed,
                         tol=None, max_iter=1)


def sgd_fit(batches, n_rows: int, C: float, epochs: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Weights minimising the same L2-penalised log loss as LogisticRegression(C) over `n_rows` rows:
    alpha = 1 / (C * n_rows). `batches()` yields (X, y, weights) once per call, one call per epoch."""
    clf = _sgd(1.0 / (C * max(1, n_rows)), average=epochs == 1, seed=seed)
    with warnings.catch_warnings():
        # partial_fit of one batch holding a single class is fine here: classes are given
        warnings.simplefilter("ignore", category=UserWarning)
        for _ in range(epochs):
            for X, y, w in batches():
                clf.partial_fit(X, y, classes=np.array([0, 1]), sample_weight=w)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def _batches(data: Featurized, weights: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)

    def batches():
        # kept chunks are visited in a new order each pass; streamed ones come as featurised
        pairs = data.chunks()
        if data.keep:
            pairs = list(pairs)
            pairs = [pairs[k] for k in rng.permutation(len(pairs))]
        for order, X in pairs:
            w = weights[order]
            mask = w > 0
            if mask.any():
                yield X[mask], data.y[order][mask], w[mask]
    return batches


def choose_c(data: Featurized, weights: np.ndarray, grid: Sequence[float], seed: int = 0,
             groups: np.ndarray | None = None) -> tuple[float, dict]:
    """C with the best out-of-fold log loss of SGD fits on a sample of at most C_SAMPLE rows. With three or more
    groups (sources) each holding both classes the folds leave whole groups out, as the exact fit's do."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    ids = np.flatnonzero(weights > 0)
    rng = np.random.default_rng(seed)
    if len(ids) > C_SAMPLE:
        ids = np.sort(rng.choice(ids, size=C_SAMPLE, replace=False))
    X, y, w = data.rows(ids), data.y[ids], weights[ids]
    g = None if groups is None else np.asarray(groups)[ids]
    if g is not None and len(set(g)) >= 3 and all(len(set(y[g == k])) == 2 for k in set(g)):
        split = list(GroupKFold(min(5, len(set(g)))).split(np.zeros(len(y)), y, groups=g))
    else:
        folds = max(2, min(C_FOLDS, int(min(np.sum(y == 1), np.sum(y == 0)))))
        split = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    scores = {}
    for c in grid:
        loss = 0.0
        for tr, te in split:
            coef, b = sgd_fit(lambda tr=tr: iter([(X[tr], y[tr], w[tr])]), len(tr), c, EPOCHS, seed)
            z = X[te] @ coef + b
            # log(1 + exp(-z)) for spam, log(1 + exp(z)) for ham, computed stably
            loss += float(np.sum(w[te] * np.logaddexp(0.0, np.where(y[te] == 1, -z, z))))
        scores[c] = loss / float(np.sum(w))
    best = min(scores, key=lambda c: (scores[c], c))
    return best, {str(c): round(v, 5) for c, v in scores.items()}


def linear(coef: np.ndarray, intercept: float) -> LogisticRegression:
    """A fitted LogisticRegression carrying the given weights, so the pipeline looks the same as an exact fit's."""
    lr = LogisticRegression()
    lr.coef_ = np.asarray(coef, dtype=np.float64).reshape(1, -1)
    lr.intercept_ = np.array([float(intercept)])
    lr.classes_ = np.array([0, 1])
    lr.n_features_in_ = lr.coef_.shape[1]
    lr.n_iter_ = np.array([0], dtype=np.int32)
    return lr


def calibrate(estimator: LogisticRegression, X, y: np.ndarray, w: np.ndarray | None) -> CalibratedClassifierCV:
    """One Platt sigmoid fitted on the decision values of held-out rows; the estimator is left as it is."""
    calibrated = CalibratedClassifierCV(FrozenEstimator(estimator), method="sigmoid")
    with warnings.catch_warnings():
        # The frozen estimator takes no sample_weight (it is not refitted); the weights serve the sigmoid itself,
        # which is what is wanted here.
        warnings.filterwarnings("ignore", message="Since FrozenEstimator does not appear to accept sample_weight")
        calibrated.fit(X, y, sample_weight=w)
    return calibrated


def calibration_slice(weights: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Distinct rows held out of the fit for calibration: CAL_SHARE of them, stratified, within CAL_MIN..CAL_MAX."""
    rng = np.random.default_rng(seed + 1)
    ids = np.flatnonzero(weights > 0)
    size = int(min(CAL_MAX, max(CAL_MIN, CAL_SHARE * len(ids))))
    out = []
    for label in (0, 1):
        of = ids[y[ids] == label]
        take = min(len(of) // 2, max(2, round(size * len(of) / max(1, len(ids)))))
        out.append(rng.choice(of, size=take, replace=False))
    return np.sort(np.concatenate(out))


def fit(data: Featurized, weights: np.ndarray, *, C: float | None, grid: Sequence[float], seed: int = 0,
        groups: np.ndarray | None = None):
    """(calibrated classifier, details) fitted on the distinct rows with weight > 0; `groups` (one per distinct
    row) make the choice of C leave whole sources out."""
    cv_scores = None
    if C is None:
        C, cv_scores = choose_c(data, weights, grid, seed, groups)
    cal = calibration_slice(weights, data.y, seed)
    train_w = weights.copy()
    train_w[cal] = 0.0
    n_train = int(np.count_nonzero(train_w))
    epochs = min(EPOCHS, max(MIN_EPOCHS, -(-PASS_ROWS // max(1, n_train)))) if data.keep else 1
    coef, intercept = sgd_fit(_batches(data, train_w, seed), n_train, C, epochs, seed)
    estimator = linear(coef, intercept)
    calibrated = calibrate(estimator, data.rows(cal), data.y[cal], weights[cal])
    details = {"type": "LogisticRegression", "solver": f"sgd (log loss, {epochs} pass{'es' if epochs > 1 else ''}"
                                                      f"{', averaged' if epochs == 1 else ''})",
               "C": C, "calibration": f"sigmoid (Platt) on a held-out slice of {len(cal)} rows",
               "C_cv_log_loss": cv_scores, "distinct_rows": data.n, "rows_fitted": n_train}
    return calibrated, details


def predict_proba(classifier: CalibratedClassifierCV, data: Featurized, rows: np.ndarray) -> np.ndarray:
    """Spam probability of the given input rows from the featurised distinct rows (no re-extraction)."""
    ids = data.inverse[np.asarray(rows)]
    uniq, back = np.unique(ids, return_inverse=True)
    step = 8 * CHUNK  # bounded memory when the rows are re-featurised
    p = np.concatenate([classifier.predict_proba(data.rows(uniq[i:i + step]))[:, 1]
                        for i in range(0, len(uniq), step)]) if len(uniq) else np.empty(0)
    return p[back]
