"""The spam model: hashed features into one linear model with Platt-calibrated probabilities.

A full fit (`train`) is a linear SVM (squared hinge) on plain or NB-scaled columns; the regularisation and the
column scaling are chosen together by cross-validation inside the training data (whole sources left out when
there are several), then probabilities are calibrated with out-of-fold decision values. Whatever is chosen, the
result is one weight per hashed column, an intercept and one sigmoid. `Model.partial_fit` nudges the weights with a
few SGD passes over new labels and keeps the calibration. `Model.score` is the fast path for one comment and
explains itself; `predict_proba` goes through the scikit-learn pipeline. Nothing here knows about Flask or Redis.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import secrets
import threading
import warnings
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.pipeline import Pipeline

from training import fitting
from training.features import DEFAULT_CONFIG, FeatureConfig, Featurizer, as_comment, extract
from training.schema import Comment
from training.scorer import Scorer, sigmoid, top_reasons, word_highlights

C_GRID = (3.0, 10.0, 30.0, 100.0)  # the many-labels path's logistic regression (training.fitting)
SVM_C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)  # the exact fit's linear SVM
NB_MIX = 0.5  # NB-scaled columns: scale mix + (1 - mix) * |log-count ratio|
NB_CHOICES = (None, NB_MIX)  # plain or NB-scaled columns, chosen by cross-validation with C
SVM_MAX_ITER = 5000
CHOOSE_PARALLEL_NNZ = 200_000  # feature entries (about 300 comments) from which choose() fits settings in parallel
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
        """Move the weights towards new labels with a few passes of plain SGD on the log loss of the served
        (calibrated) probability, starting from the current weights; the calibration is kept. In place; returns
        self.

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
            estimator, calibrator = self._parts()
            coef = estimator.coef_[0].copy()
            intercept = float(estimator.intercept_[0])
            a, b = float(calibrator.a_), float(calibrator.b_)
            # The served log-odds are z = -(a * d + b) for the decision value d. Steps follow the log loss of the
            # served probability, and are taken per unit of z (divided by -a), so they move a margin-scaled model
            # (a linear SVM) as much as a log-odds-scaled one.
            slope = -a if a < 0 else 1.0
            rng = np.random.default_rng(len(y))
            for epoch in range(epochs):
                for i in rng.permutation(len(y)):
                    ex = rows[i]
                    d = float(coef[ex.indices] @ ex.values) + intercept
                    g = (sigmoid(-(a * d + b)) - y[i]) * w[i] * learning_rate / (1 + epoch) / slope
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


def _selection_split(y: np.ndarray, groups: Sequence[str] | None, seed: int) -> tuple[list, str]:
    """Folds for choosing settings: whole groups (sources: videos, sites) left out when there are three or more
    and each holds both classes, which is what a model meets in service (a new site, a new page); otherwise
    stratified random folds."""
    if groups is not None:
        g = np.asarray(groups)
        names = set(g.tolist())
        if len(names) >= 3 and all(len(set(y[g == k].tolist())) == 2 for k in names):
            folds = GroupKFold(min(5, len(names)))
            return list(folds.split(np.zeros(len(y)), y, groups=g)), "sources left out"
    folds = StratifiedKFold(_cv_folds(y, 3), shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(y)), y)), "stratified"


def calibrated_log_loss(d: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Log loss of decision values after one Platt sigmoid fitted to them, so models whose decision values are
    on different scales (margins, log-odds) compare by the probabilities they would serve."""
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    cal = _SigmoidCalibration().fit(d, y, sample_weight=w)
    z = -(cal.a_ * d + cal.b_)
    return float(np.sum(w * np.logaddexp(0.0, np.where(y == SPAM, -z, z))) / np.sum(w))


def _setting_name(c: float, nb_mix: float | None) -> str:
    return str(float(c)) if nb_mix is None else f"{float(c)} nb"


def choose(X, y: np.ndarray, sample_weight=None, grid: Sequence[float] = SVM_C_GRID,
           nb_choices: Sequence[float | None] = NB_CHOICES, seed: int = 0,
           groups: Sequence[str] | None = None) -> tuple[float, float | None, dict, str]:
    """(C, nb_mix, scores, folds): the regularisation and the column scaling (plain or NB-scaled) whose out-of-fold
    decision values have the best calibrated log loss, inside the given data only. Ties go to the stronger
    regularisation, then to plain columns."""
    split, how = _selection_split(y, groups, seed)
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    settings = [(float(c), nb_mix) for nb_mix in nb_choices for c in grid]
    tasks = [(X, y, sw, split, c, nb_mix) for c, nb_mix in settings]
    # The settings are independent fits: on enough data they run in worker processes, one per core. Not threads:
    # liblinear draws from one random generator per process, so concurrent fits would not repeat.
    n_jobs = min(len(tasks), fitting.workers()) if X.nnz >= CHOOSE_PARALLEL_NNZ else 1
    decisions = list(fitting.parallel(_out_of_fold, tasks, n_jobs))
    scores = {k: calibrated_log_loss(d, y, sw) for k, d in zip(settings, decisions)}
    best = min(scores, key=lambda k: (round(scores[k], 12), k[0], k[1] is not None))
    return best[0], best[1], {_setting_name(c, nb): round(v, 5) for (c, nb), v in scores.items()}, how


def _out_of_fold(X, y: np.ndarray, sw: np.ndarray | None, split: list, c: float, nb_mix: float | None) -> np.ndarray:
    """Decision values of every row from the fit that left its fold out."""
    d = np.empty(len(y))
    for tr, te in split:
        clf = _classifier(c, nb_mix).fit(X[tr], y[tr], sample_weight=None if sw is None else sw[tr])
        d[te] = clf.decision_function(X[te])
    return d


def nb_ratios(X, y: np.ndarray, sample_weight=None, n_features: int | None = None, alpha: float = 1.0) -> np.ndarray:
    """Per column of X: log of (smoothed share of spam rows' column uses) over (the same for ham), rows counted
    once per column they use and by weight; the shares are over `n_features` columns (default X's)."""
    B = sp.csr_matrix(X, copy=True)
    B.eliminate_zeros()
    B.data = np.ones_like(B.data)
    w = np.ones(B.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    spam = alpha + B.T @ (w * (y == SPAM))
    ham = alpha + B.T @ (w * (y == HAM))
    n = B.shape[1] if n_features is None else n_features
    # columns X does not hold (all unused) each add alpha to both totals
    spam_total = spam.sum() + alpha * (n - B.shape[1])
    ham_total = ham.sum() + alpha * (n - B.shape[1])
    return np.log(spam / spam_total) - np.log(ham / ham_total)


class HashedLinearSVC(LinearClassifierMixin, BaseEstimator):
    """A linear SVM (squared hinge, L2) over hashed features, stated as one weight per hashed column so the fast
    scorer needs nothing else.

    liblinear's dual solver is fitted on the columns the data actually uses: with 2**20 hashed columns most are
    empty, and a column empty in every row gets weight zero anyway. With `nb_mix` set, used column j is first
    scaled by nb_mix + (1 - nb_mix) * |r_j|, r_j its spam/ham log-count ratio (NBSVM: Wang and Manning, 2012),
    and the scale is folded back into the weights, so the result is still one linear model over the columns."""

    def __init__(self, C: float = 1.0, nb_mix: float | None = None):
        self.C = C
        self.nb_mix = nb_mix

    def fit(self, X, y, sample_weight=None):
        X = sp.csr_matrix(X)
        y = np.asarray(y)
        used = used_columns(X)
        Xu = X[:, used]
        scale = None
        if self.nb_mix is not None:
            r = nb_ratios(Xu, y, sample_weight, n_features=X.shape[1])
            scale = self.nb_mix + (1.0 - self.nb_mix) * np.abs(r)
            Xu = sp.csr_matrix(Xu @ sp.diags(scale))
        svm = LinearSVC(C=self.C, loss="squared_hinge", dual=True, max_iter=SVM_MAX_ITER, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            svm.fit(Xu, y, sample_weight=sample_weight)
        coef = svm.coef_[0] if scale is None else svm.coef_[0] * scale
        self.coef_ = np.zeros((1, X.shape[1]))
        self.coef_[0, used] = coef
        self.intercept_ = np.asarray(svm.intercept_, dtype=np.float64)
        self.classes_ = svm.classes_
        self.n_features_in_ = X.shape[1]
        self.n_iter_ = svm.n_iter_
        return self


def used_columns(X: sp.csr_matrix) -> np.ndarray:
    """The sorted columns that hold an entry: np.unique(X.indices), by counting instead of sorting (ten times
    faster on a few thousand comments' entries)."""
    return np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]))


class HashedLogisticRegression(LogisticRegression):
    """LogisticRegression fitted on the columns the data actually uses, then widened back to all hashed columns.

    The classifier of models trained before the linear SVM; kept so their artifacts still load."""

    def fit(self, X, y, sample_weight=None):
        X = sp.csr_matrix(X)
        used = used_columns(X)
        super().fit(X[:, used], y, sample_weight=sample_weight)
        coef = np.zeros((self.coef_.shape[0], X.shape[1]))
        coef[:, used] = self.coef_
        self.coef_ = coef
        self.n_features_in_ = X.shape[1]
        return self


def _classifier(c: float, nb_mix: float | None = None) -> HashedLinearSVC:
    return HashedLinearSVC(C=c, nb_mix=nb_mix)


AUTO = "auto"


def train(comments: Sequence[Comment | dict | str], labels: Sequence[Any], sample_weight: Sequence[float] | None = None,
          config: FeatureConfig | None = None, progress: bool = False, *, C: float | None = None,
          nb_mix: float | None | str = AUTO, sources: Sequence[str] | None = None, seed: int = 0) -> Model:
    """Fit a calibrated model. `C` None picks the regularisation, and `nb_mix` "auto" the column scaling (plain or
    NB-scaled, NB_MIX), by cross-validation inside this data; a given `C` fixes the one, a given `nb_mix` (None for
    plain) the other. `sources` (one per comment, e.g. "youtube:Psy"; default each comment's `site`) feed the
    metadata's counts and, when there are three or more, make that cross-validation leave whole sources out.

    Up to fitting.EXACT_MAX labels the fit is exact (liblinear, out-of-fold calibration); above, distinct rows are
    featurised in parallel and fitted by SGD on the log loss with a held-out calibration slice (training.fitting),
    where `C` is that logistic regression's and `nb_mix` does not apply."""
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
    selection = None
    if C is None or nb_mix == AUTO:
        C, nb_mix, cv_scores, selection = choose(X, y, sw, grid=SVM_C_GRID if C is None else (C,),
                                      nb_choices=NB_CHOICES if nb_mix == AUTO else (nb_mix,), seed=seed, groups=srcs)
    calibrated = CalibratedClassifierCV(
        _classifier(C, nb_mix), method="sigmoid", ensemble=False,
        cv=StratifiedKFold(_cv_folds(y), shuffle=True, random_state=seed),
    )
    calibrated.fit(X, y, sample_weight=sw)
    details = {"type": "LinearSVC", "loss": "squared hinge", "solver": "liblinear (dual)", "C": C,
               "columns": "plain" if nb_mix is None else f"NB-scaled (mix {nb_mix})", "nb_mix": nb_mix,
               "calibration": "sigmoid (Platt), out-of-fold",
               "C_cv_log_loss": cv_scores, "cv": selection}
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
