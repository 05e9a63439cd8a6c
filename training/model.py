"""The spam model: hashed features into a logistic regression with Platt-calibrated probabilities.

A full fit (`train`) picks the regularisation by cross-validation inside the training data, then calibrates with
out-of-fold decision values; `Model.partial_fit` nudges the weights with a few SGD passes over new labels and
keeps the calibration. `Model.score` is the fast path for one comment and explains itself; `predict_proba` goes
through the scikit-learn pipeline. Nothing here knows about Flask or Redis.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import secrets
import threading
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from training import fitting
from training.features import DEFAULT_CONFIG, FeatureConfig, Featurizer, as_comment, extract
from training.schema import Comment
from training.scorer import Scorer, sigmoid, top_reasons, word_highlights

C_GRID = (3.0, 10.0, 30.0, 100.0)
UPDATE_EPOCHS = 3
UPDATE_LEARNING_RATE = 0.05
SPAM, HAM = 1, 0


@dataclasses.dataclass
class Verdict:
    score: float  # calibrated probability that the comment is spam
    decision: str  # "spam" when score >= 0.5, else "ham"; sites apply their own thresholds to `score`
    reasons: list[dict[str, Any]]  # {"signal", "weight"}: top contributions, "(bias)", "(other signals)"
    decision_value: float  # calibrated log-odds; the reasons' weights add up to it
    highlights: list[dict[str, Any]] | None = None  # {"start", "end", "weight"} over the original content

    def to_dict(self) -> dict[str, Any]:
        out = {"score": self.score, "decision": self.decision, "decision_value": self.decision_value,
               "reasons": self.reasons}
        if self.highlights is not None:
            out["highlights"] = self.highlights
        return out


def encode_labels(labels: Iterable[Any]) -> np.ndarray:
    """'spam'/'ham' (any case), 1/0 or True/False to 1/0; anything else is a ValueError naming its position."""
    out = []
    for i, v in enumerate(labels):
        if isinstance(v, str):
            s = v.strip().lower()
            if s == "spam":
                out.append(SPAM)
                continue
            if s == "ham":
                out.append(HAM)
                continue
        elif isinstance(v, (bool, int, np.integer)) and int(v) in (0, 1):
            out.append(int(v))
            continue
        raise ValueError(f"labels[{i}]: must be \"spam\" or \"ham\" (or 1/0), got {v!r}")
    return np.asarray(out, dtype=np.int64)


def library_versions() -> dict[str, str]:
    import joblib

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "joblib": joblib.__version__}


def new_version_id(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


class Model:
    """A fitted pipeline plus its metadata. Safe to share between threads: `score` reads one immutable Scorer,
    which `partial_fit` replaces whole."""

    def __init__(self, pipeline: Pipeline, meta: dict[str, Any]):
        self.pipeline = pipeline
        self.meta = meta
        self._lock = threading.Lock()
        self._scorer = self._make_scorer()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def config(self) -> FeatureConfig:
        return self.pipeline.named_steps["features"].config or DEFAULT_CONFIG

    @property
    def version(self) -> str:
        return self.meta.get("version", "")

    def _parts(self):
        calibrated = self.pipeline.named_steps["classifier"]
        inner = calibrated.calibrated_classifiers_[0]
        estimator = inner.estimator
        if isinstance(estimator, FrozenEstimator):  # a fit calibrated on a held-out slice (training.fitting)
            estimator = estimator.estimator
        return estimator, inner.calibrators[0]

    def _make_scorer(self) -> Scorer:
        estimator, calibrator = self._parts()
        return Scorer(self.config, estimator.coef_[0], estimator.intercept_[0], calibrator.a_, calibrator.b_)

    def __getstate__(self):
        return {"pipeline": self.pipeline, "meta": self.meta}

    def __setstate__(self, state):
        self.__init__(state["pipeline"], state["meta"])

    # -- scoring ---------------------------------------------------------------------------------------------
    def predict_proba(self, comments: Iterable[Comment | dict | str]) -> np.ndarray:
        """Spam probability of each comment, through the scikit-learn pipeline (batch path)."""
        items = [as_comment(c) for c in comments]
        if not items:
            return np.empty(0)
        with self._lock:
            return self.pipeline.predict_proba(items)[:, 1]

    def score(self, comment: Comment | dict | str, top: int = 8, explain: bool = False) -> Verdict:
        """One comment's verdict through the fast scorer. `top` reasons are always given (0 for none);
        `explain` adds word highlights over the original content."""
        comment = as_comment(comment)
        scorer = self._scorer
        if top <= 0 and not explain:
            z = scorer.decision_value(extract(comment, scorer.config))
            bias = -(scorer.a * scorer.intercept + scorer.b)
            reasons = [{"signal": "(bias)", "weight": bias}, {"signal": "(other signals)", "weight": z - bias}]
            p = sigmoid(z)
            return Verdict(p, "spam" if p >= 0.5 else "ham", reasons, z)
        contributions = scorer.contributions(extract(comment, scorer.config, explain=True), per_token=explain)
        z = contributions.decision_value
        p = sigmoid(z)
        highlights = word_highlights(comment.content, contributions, scorer.config) if explain else None
        return Verdict(p, "spam" if p >= 0.5 else "ham", top_reasons(contributions, top), z, highlights)

    # -- learning --------------------------------------------------------------------------------------------
    def partial_fit(self, comments: Sequence[Comment | dict | str], labels: Sequence[Any],
                    sample_weight: Sequence[float] | None = None, epochs: int = UPDATE_EPOCHS,
                    learning_rate: float = UPDATE_LEARNING_RATE) -> "Model":
        """Move the weights towards new labels with a few passes of plain SGD on the log loss, starting from the
        current weights; the calibration is kept. In place; returns self.

        The defaults are gentle on purpose: five passes at step 0.2 over forty ordinary labels pulled a well-fitted
        model off (out-of-fold MCC 0.95 -> 0.87), while three at 0.05 still learn a new campaign from a few dozen.

        scikit-learn's SGDClassifier cannot start from given weights on a batch holding one class without its
        private attributes, and a moderator's correction is usually one comment of one class, so the few lines
        of SGD are written out here. A full `train` remains the way to refit and recalibrate."""
        items = [as_comment(c) for c in comments]
        y = encode_labels(labels)
        if len(items) != len(y):
            raise ValueError("comments and labels differ in length")
        if not items:
            return self
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        rows = [extract(c, self.config) for c in items]
        with self._lock:
            estimator, _ = self._parts()
            coef = estimator.coef_[0].copy()
            intercept = float(estimator.intercept_[0])
            rng = np.random.default_rng(len(y))
            for epoch in range(epochs):
                for i in rng.permutation(len(y)):
                    ex = rows[i]
                    d = float(coef[ex.indices] @ ex.values) + intercept
                    g = (sigmoid(d) - y[i]) * w[i] * learning_rate / (1 + epoch)
                    np.subtract.at(coef, ex.indices, g * ex.values)
                    intercept -= g
            estimator.coef_ = coef.reshape(1, -1)
            estimator.intercept_ = np.array([intercept])
            self._scorer = self._make_scorer()
            counts = Counter("spam" if v == SPAM else "ham" for v in y)
            upd = self.meta.setdefault("updates", {"spam": 0, "ham": 0})
            for k, v in counts.items():
                upd[k] = upd.get(k, 0) + v
        return self


def _cv_folds(y: np.ndarray, max_folds: int = 5) -> int:
    smallest = int(min(np.sum(y == SPAM), np.sum(y == HAM)))
    if smallest < 2:
        raise ValueError("training needs at least 2 spam and 2 ham examples")
    return max(2, min(max_folds, smallest))


def choose_c(X, y: np.ndarray, sample_weight=None, grid: Sequence[float] = C_GRID, seed: int = 0,
             groups: Sequence[str] | None = None) -> tuple[float, dict]:
    """The inverse regularisation strength with the best out-of-fold log loss (inside the given data only).

    With three or more groups (sources: videos, sites) the folds leave whole groups out, which is what a model
    meets in service (a new site, a new page); otherwise they are stratified random folds."""
    if groups is not None and len(set(groups)) >= 3 and all(
            len(set(y[np.asarray(groups) == g])) == 2 for g in set(groups)):
        folds = GroupKFold(min(5, len(set(groups))))
        split = list(folds.split(X, y, groups=np.asarray(groups)))
    else:
        split = list(StratifiedKFold(_cv_folds(y, 3), shuffle=True, random_state=seed).split(X, y))
    wts = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight)
    scores = {}
    for c in grid:
        p = cross_val_predict(_classifier(c), X, y, cv=split, method="predict_proba",
                              params={"sample_weight": sample_weight} if sample_weight is not None else None)[:, 1]
        p = np.clip(p, 1e-12, 1 - 1e-12)
        scores[c] = float(-np.sum(wts * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(wts))
    best = min(scores, key=lambda c: (scores[c], c))
    return best, {str(c): round(v, 5) for c, v in scores.items()}


class HashedLogisticRegression(LogisticRegression):
    """LogisticRegression fitted on the columns the data actually uses, then widened back to all hashed columns.

    With 2**20 hashed columns most are empty; liblinear's cost grows with the column count, and an L2-penalised
    weight of a column that is zero in every row is zero at the optimum anyway, so the result is the same model
    for a fraction of the time."""

    def fit(self, X, y, sample_weight=None):
        X = sp.csr_matrix(X)
        used = np.unique(X.indices)
        super().fit(X[:, used], y, sample_weight=sample_weight)
        coef = np.zeros((self.coef_.shape[0], X.shape[1]))
        coef[:, used] = self.coef_
        self.coef_ = coef
        self.n_features_in_ = X.shape[1]
        return self


def _classifier(c: float) -> LogisticRegression:
    return HashedLogisticRegression(C=c, solver="liblinear", max_iter=1000)


def train(comments: Sequence[Comment | dict | str], labels: Sequence[Any], sample_weight: Sequence[float] | None = None,
          config: FeatureConfig | None = None, progress: bool = False, *, C: float | None = None,
          sources: Sequence[str] | None = None, seed: int = 0) -> Model:
    """Fit a calibrated model. `C` None picks it by cross-validation inside this data. `sources` (one per comment,
    e.g. "youtube:Psy"; default each comment's `site`) feed the metadata's counts and, when there are three or
    more, make that cross-validation leave whole sources out.

    Up to fitting.EXACT_MAX labels the fit is exact (liblinear, out-of-fold calibration); above, distinct rows are
    featurised in parallel and fitted by SGD with a held-out calibration slice (training.fitting)."""
    config = config or DEFAULT_CONFIG
    items = [as_comment(c) for c in comments]
    y = encode_labels(labels)
    if len(items) != len(y):
        raise ValueError("comments and labels differ in length")
    _cv_folds(y)  # both classes present, or a clear error
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    featurizer = Featurizer(config)
    srcs = list(sources) if sources is not None else [c.site or "unknown" for c in items]
    if len(items) > fitting.EXACT_MAX:
        return train_featurized(fitting.Featurized(items, y, config, seed=seed), sample_weight=sw, C=C,
                                sources=srcs, seed=seed)
    if progress:
        from tqdm import tqdm

        X = featurizer.transform(tqdm(items, desc="features", unit="comment"))
    else:
        X = featurizer.transform(items)
    cv_scores = None
    if C is None:
        C, cv_scores = choose_c(X, y, sw, seed=seed, groups=srcs)
    calibrated = CalibratedClassifierCV(
        _classifier(C), method="sigmoid", ensemble=False,
        cv=StratifiedKFold(_cv_folds(y), shuffle=True, random_state=seed),
    )
    calibrated.fit(X, y, sample_weight=sw)
    details = {"type": "LogisticRegression", "solver": "liblinear", "C": C,
               "calibration": "sigmoid (Platt), out-of-fold", "C_cv_log_loss": cv_scores}
    return _model(featurizer, calibrated, details, y, srcs, config)


def train_featurized(data: fitting.Featurized, rows: np.ndarray | None = None,
                     sample_weight: np.ndarray | None = None, *, C: float | None = None,
                     sources: Sequence[str] | None = None, seed: int = 0) -> Model:
    """The many-labels fit (training.fitting) on input `rows` (default all) of rows featurised once, so several
    fits over one label set (a holdout fit, then the final one) extract each comment's features once."""
    rows = np.arange(len(data.inverse)) if rows is None else np.asarray(rows)
    items = [data.items[j] for j in data.inverse[rows]]
    srcs = [sources[i] for i in rows] if sources is not None else [c.site or "unknown" for c in items]
    groups = np.empty(data.n, dtype=object)
    groups[data.inverse[rows][::-1]] = srcs[::-1]  # a distinct row's source: that of its first input row
    calibrated, details = fitting.fit(data, data.weights(rows, sample_weight), C=C, grid=C_GRID, seed=seed,
                                      groups=groups)
    return _model(Featurizer(data.config), calibrated, details, data.y[data.inverse[rows]], srcs, data.config)


def _model(featurizer: Featurizer, calibrated, details: dict, y: np.ndarray, srcs: Sequence[str],
           config: FeatureConfig) -> Model:
    pipeline = Pipeline([("features", featurizer), ("classifier", calibrated)])

    by_source: dict[str, dict[str, int]] = {}
    for s, v in zip(srcs, y):
        d = by_source.setdefault(s, {"spam": 0, "ham": 0})
        d["spam" if v == SPAM else "ham"] += 1
    meta = {
        "version": new_version_id(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": {"spam": int(np.sum(y == SPAM)), "ham": int(np.sum(y == HAM))},
        "sources": by_source,
        "features": config.to_dict(),
        "classifier": details,
        "metrics": {},
        "libraries": library_versions(),
    }
    return Model(pipeline, meta)
