"""Fitting on many labels: rows featurised in parallel chunks (float32), a log-loss SGD fit, and Platt calibration
on a held-out slice, giving the same one-linear-model-plus-one-sigmoid pipeline as the exact fit.

The exact fit in training.model (liblinear, C and calibration by cross-validation) costs some thirty solver runs of
seconds to minutes each, and its float64 matrix plus liblinear's copy grow with every label; above EXACT_MAX
labels this path takes over. Up to IN_MEMORY_MAX distinct rows the chunks stay in memory and SGD makes several
passes (`Featurized`, `fit`); beyond that a retrain makes one pass of averaged SGD in which every row is featurised
once (`single_pass`), so memory stays bounded by a few chunks whatever the number of labels.

Training matrices are CSR with repeated columns left unsummed and unsorted (`training_matrix`): SGD and every dot
product here add repeated entries up, so the model is the same function of the data, and sorting cost more than
the rest of building the matrix.

EXACT_MAX covers the accuracy benchmark's largest training set (YouTube plus SMS, about 6k rows): there the SGD
path scored a leave-one-video-out MCC of 0.841 against 0.859 for the exact fit of the time (a logistic
regression; the linear SVM that replaced it scores 0.878 there), so small data stays exact.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import mmap
import os
import shutil
import tempfile
import threading
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn import config_context
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier
from threadpoolctl import threadpool_limits

from training.features import FeatureConfig, extract_rows

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
AHEAD = 3                  # chunks submitted per feature worker beyond the one being consumed (bounds memory)
WAIT_MAX = 40              # chunks held while C is chosen, before the pass waits for the choice
AVERAGE_FROM = 0.5         # one pass: SGD averages its weights from this share of the older rows on (at 100k
                           # labels, averaging from the start held-out MCC 0.976, from half way 0.988)


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def training_matrix(items: Iterable[Any], config: FeatureConfig, spool: str | None = None):
    """Feature rows for fitting and scoring: float32 values and int32 columns (half the size of the canonical
    matrix), entries as `extract` gives them. A column repeated within a row (a repeated n-gram, a hash collision)
    stays as several entries: equal, up to float rounding, to Featurizer.transform's summed matrix in every product,
    and SGD's updates add up the same way.

    With `spool` (a directory in shared memory) the arrays are written straight into a file there and a `Spooled`
    handle is returned instead: a feature worker hands a chunk over without pickling it through a pipe."""
    rows = extract_rows(items, config)
    n = len(rows.indptr) - 1
    nnz = int(rows.indptr[-1])
    if spool is None:
        return sp.csr_matrix((rows.values.astype(np.float32), rows.indices.astype(np.int32), rows.indptr),
                             shape=(n, config.n_features))
    fd, path = tempfile.mkstemp(dir=spool)
    try:
        os.ftruncate(fd, max(1, 4 * (n + 1 + 2 * nnz)))
        buffer = mmap.mmap(fd, max(1, 4 * (n + 1 + 2 * nnz)))
    finally:
        os.close(fd)
    ptr, ind, val = _views(buffer, n, nnz)
    ptr[:] = rows.indptr
    ind[:] = rows.indices
    val[:] = rows.values
    del ptr, ind, val
    buffer.close()
    return Spooled(path, n, config.n_features, nnz)


class Spooled(NamedTuple):
    """A training matrix a feature worker wrote into shared memory; `open()` maps it (no copy) and deletes the file,
    so its memory goes with the matrix."""

    path: str
    rows: int
    columns: int
    nnz: int

    def open(self) -> sp.csr_matrix:
        with open(self.path, "r+b") as fh:
            buffer = mmap.mmap(fh.fileno(), 0)
        os.unlink(self.path)
        ptr, ind, val = _views(buffer, self.rows, self.nnz)
        return sp.csr_matrix((val, ind, ptr), shape=(self.rows, self.columns), copy=False)


def _views(buffer, n: int, nnz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indptr, indices and values laid out in one buffer: int32, int32, float32."""
    return (np.frombuffer(buffer, np.int32, n + 1, 0), np.frombuffer(buffer, np.int32, nnz, 4 * (n + 1)),
            np.frombuffer(buffer, np.float32, nnz, 4 * (n + 1 + nnz)))


SPOOL_ROOT = "/dev/shm"


@contextlib.contextmanager
def spooling() -> Iterator[str | None]:
    """A private directory in shared memory for feature workers to hand chunks over in (None where there is no
    /dev/shm: chunks are pickled instead), removed afterwards with anything a stopped run left in it. Directories
    of processes that died without cleaning up are removed first."""
    if not (os.path.isdir(SPOOL_ROOT) and os.access(SPOOL_ROOT, os.W_OK)):
        yield None
        return
    for name in os.listdir(SPOOL_ROOT):
        if name.startswith("winnow-features-"):
            pid = name.split("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(SPOOL_ROOT, name), ignore_errors=True)
    path = tempfile.mkdtemp(prefix=f"winnow-features-{os.getpid()}-", dir=SPOOL_ROOT)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _received(X):
    return X.open() if isinstance(X, Spooled) else X


def _featurize(items: Sequence[Any], config: FeatureConfig) -> sp.csr_matrix:
    return training_matrix(items, config)


def _exit_with_parent() -> None:
    """In each worker process: exit once the process that started it is gone. A retrain killed outright (the OOM
    killer, SIGKILL) cannot shut its workers down, and they would otherwise hold their memory for good."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="winnow-exit-with-parent", daemon=True).start()


def parallel(fn: Callable, tasks: Iterable[tuple], n_jobs: int) -> Iterator[Any]:
    """fn(*task) for each task, results in task order, in `n_jobs` worker processes (in-process for one). At most
    AHEAD tasks per worker are submitted beyond the result being consumed, so a slow consumer holds a few chunks in
    memory, never the whole stream. The workers are joblib's (loky): clean processes, whatever threads the caller
    runs, reused by the next call and gone after a minute idle."""
    if n_jobs <= 1:
        for task in tasks:
            yield fn(*task)
        return
    from joblib.externals.loky import get_reusable_executor

    pool = get_reusable_executor(max_workers=n_jobs, timeout=60, initializer=_exit_with_parent)
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, *task))
            if len(pending) > AHEAD * n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


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
        n_jobs = 1 if sum(len(o) for o in orders) < PARALLEL_MIN else self.n_jobs
        results = parallel(_featurize, (([self.items[i] for i in order], self.config) for order in orders), n_jobs)
        yield from zip(orders, results)


def _average_from(n_rows: int) -> bool | int:
    """SGDClassifier's `average`: True from the first row, or the row count after which averaging starts."""
    start = int(AVERAGE_FROM * n_rows)
    return True if start <= 1 else start


def _sgd(alpha: float, average: bool | int, seed: int) -> SGDClassifier:
    return SGDClassifier(loss="log_loss", alpha=alpha, average=average, learning_rate="optimal", random_state=seed,
                         tol=None, max_iter=1)


def sgd_fit(batches, n_rows: int, C: float, epochs: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Weights minimising the same L2-penalised log loss as LogisticRegression(C) over `n_rows` rows:
    alpha = 1 / (C * n_rows). `batches()` yields (X, y, weights) once per call, one call per epoch."""
    clf = _sgd(1.0 / (C * max(1, n_rows)), average=epochs == 1, seed=seed)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):  # (see single_pass)
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
    ids = np.flatnonzero(weights > 0)
    rng = np.random.default_rng(seed)
    if len(ids) > C_SAMPLE:
        ids = np.sort(rng.choice(ids, size=C_SAMPLE, replace=False))
    return choose_c_on(data.rows(ids), data.y[ids], weights[ids], grid, seed,
                       None if groups is None else np.asarray(groups)[ids])


def choose_c_on(X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, grid: Sequence[float], seed: int = 0,
                g: np.ndarray | None = None) -> tuple[float, dict]:
    """choose_c on given rows (already a sample)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

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


# ---- one pass over many labels --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Items:
    """Rows already in memory, as a batch for `single_pass` (the starter corpora, tests)."""

    comments: tuple
    y: tuple
    weights: tuple
    groups: tuple

    def load(self) -> tuple[list, np.ndarray, np.ndarray, list]:
        return (list(self.comments), np.asarray(self.y, dtype=np.int8), np.asarray(self.weights, dtype=np.float64),
                list(self.groups))


@dataclasses.dataclass(frozen=True)
class Joined:
    """Several batches loaded as one."""

    parts: tuple

    def load(self) -> tuple[list, np.ndarray, np.ndarray, list]:
        loaded = [p.load() for p in self.parts]
        return ([c for part in loaded for c in part[0]], np.concatenate([part[1] for part in loaded]),
                np.concatenate([part[2] for part in loaded]), [g for part in loaded for g in part[3]])


def _stream(tasks: Iterable[tuple], n_jobs: int) -> Iterator[tuple]:
    """_load_features over (batch, config, other) tasks in feature workers, chunks handed over in shared memory."""
    with spooling() if n_jobs > 1 else contextlib.nullcontext() as spool:
        for X, y, w, groups, X_other in parallel(_load_features, (task + (spool,) for task in tasks), n_jobs):
            yield _received(X), y, w, groups, (None if X_other is None else _received(X_other))


def _load_features(batch, config: FeatureConfig, other: FeatureConfig | None = None, spool: str | None = None):
    """In a feature worker: a batch's rows read (a LabelBatch reads Redis itself) and featurised; with `other`, also
    featurised under that configuration (a champion built with different features)."""
    comments, y, w, groups = batch.load()
    X = training_matrix(comments, config, spool)
    return X, y, w, groups, (training_matrix(comments, other, spool) if other is not None else None)


@dataclasses.dataclass
class Pass:
    """What `single_pass` gives: two calibrated models and the gate's scores of the newest rows."""

    challenger: CalibratedClassifierCV  # fitted on the older rows only: the one the gate judges
    final: CalibratedClassifierCV  # the same SGD carried on over the newest rows: the one published
    details: dict  # the final model's "classifier" metadata
    y_eval: np.ndarray  # labels of the newest rows, as read
    challenger_scores: np.ndarray  # their calibrated spam probabilities under the challenger
    champion_scores: np.ndarray | None  # ... under the champion, when one was given
    counts: collections.Counter  # (group, label) -> rows read, every row
    timings: dict[str, float]


def single_pass(batch: Callable[[np.ndarray], Any], older: np.ndarray, newest: np.ndarray, y: np.ndarray,
                config: FeatureConfig, *, weights: np.ndarray | None = None, C: float | None = None,
                grid: Sequence[float], seed: int = 0, champion: tuple[Any, FeatureConfig] | None = None,
                n_jobs: int | None = None, progress: Callable[[str, float], None] | None = None) -> Pass:
    """A retrain over many labels in one pass of averaged SGD, every row read and featurised once, in worker
    processes, a few chunks at a time.

    Rows are positions 0..len(y)-1; `batch(positions)` makes a picklable batch whose `load()` reads those rows (in
    a worker). `y` and `weights` (default 1) per position come from the label index and choose a stratified
    calibration slice of the `older` rows, held out of both fits, and a sample of at most C_SAMPLE older rows that
    C is chosen on (when `C` is None; with sources in the groups the folds leave sources out). Then one SGD visits
    the other older rows in a random order; its weights at that point, calibrated on the slice, are the
    challenger, which never saw a newest row. Each chunk of the `newest` rows, in a random order, is scored by the
    challenger and by the champion ((classifier, its feature configuration)) before the same SGD learns from it;
    the weights at the end, calibrated on the same slice, are the final model. Both are averages of the SGD's
    weights from AVERAGE_FROM of the older rows on (the early, large steps left out). Regularisation follows the
    rows the final model fits (alpha = 1 / (C * rows)), so the challenger is regularised a little less than a
    separate fit on the older rows alone would be. C is chosen in a thread while the workers go on featurising.

    BLAS is held to one thread meanwhile: SGD calls it on the whole weight vector at the end of every chunk, and
    its idle threads then spin for a while on cores the feature workers need (at a million labels, about a
    quarter of a core all through the pass)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _single_pass(batch, older, newest, y, config, weights=weights, C=C, grid=grid, seed=seed,
                            champion=champion, n_jobs=n_jobs, progress=progress)


def _single_pass(batch, older, newest, y, config, *, weights, C, grid, seed, champion, n_jobs, progress) -> Pass:
    started = time.perf_counter()
    n_jobs = workers() if n_jobs is None else n_jobs
    older, newest = np.asarray(older, dtype=np.int64), np.asarray(newest, dtype=np.int64)
    w_all = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    older_w = np.zeros(len(y))
    older_w[older] = w_all[older]
    cal = calibration_slice(older_w, np.asarray(y), seed)
    rest = np.setdiff1d(older, cal, assume_unique=True)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rest, size=min(C_SAMPLE, len(rest)), replace=False)) if C is None else rest[:0]
    rest = rng.permutation(np.setdiff1d(rest, sample, assume_unique=True))
    newest = rng.permutation(newest)
    if not len(rest) + len(sample) or not len(newest):
        raise ValueError("single_pass needs older rows to fit and newest rows to evaluate")
    other = None
    if champion is not None and champion[1] != config:
        other = champion[1]

    def chunks(kind: str, positions: np.ndarray):
        return [(kind, positions[i:i + CHUNK]) for i in range(0, len(positions), CHUNK)]

    plan = chunks("held", cal) + chunks("sample", sample) + chunks("fit", rest) + chunks("eval", newest)
    results = _stream(((batch(np.sort(pos)), config, other if kind == "eval" else None) for kind, pos in plan),
                      n_jobs)

    timings: dict[str, float] = {}
    counts: collections.Counter = collections.Counter()
    held: list = []
    sampled: list = []
    waiting: list = []  # rows that arrived while C was being chosen
    n_fit = len(rest) + len(sample) + len(newest)  # rows the final model fits, as planned
    average = _average_from(len(rest) + len(sample))
    state: dict[str, Any] = {"clf": None, "snapshot": None, "fitted": 0, "C": C, "cv_scores": None}
    y_eval, dec_eval, champ_eval = [], [], []
    classes = np.array([0, 1])

    def learn(X, yy, ww):
        mask = ww > 0
        if not mask.all():  # (row selection copies the chunk: only when some row is left out)
            X, yy, ww = X[mask], yy[mask], ww[mask]
        if len(yy):
            # A chunk holding one class is fine (classes are given); rows built by training_matrix are finite.
            with warnings.catch_warnings(), config_context(assume_finite=True):
                warnings.simplefilter("ignore", category=UserWarning)
                state["clf"].partial_fit(X, yy, classes=classes, sample_weight=ww)
            state["fitted"] += len(yy)

    def take(kind, X, yy, ww, X_other):
        clf = state["clf"]
        if kind == "eval":
            if state["snapshot"] is None:
                state["snapshot"] = (clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))
                timings["older rows"] = time.perf_counter() - stage[0]
                stage[0] = time.perf_counter()
            coef, intercept = state["snapshot"]
            y_eval.append(yy)
            dec_eval.append(X @ coef + intercept)
            if champion is not None:
                champ_eval.append(champion[0].predict_proba(X if X_other is None else X_other)[:, 1])
        learn(X, yy, ww)

    def choose() -> None:
        # In a thread: SGD releases the GIL, so the feature workers' next chunks keep arriving meanwhile.
        try:
            X = sp.vstack([part[0] for part in sampled], format="csr")
            state["C"], state["cv_scores"] = choose_c_on(
                X, np.concatenate([part[1] for part in sampled]), np.concatenate([part[2] for part in sampled]),
                grid, seed, np.asarray([g for part in sampled for g in part[3]], dtype=object))
        except BaseException as exc:  # raised again in the caller's thread
            state["error"] = exc

    def start_fit() -> None:
        if chooser is not None:
            chooser.join()
            if "error" in state:
                raise state["error"]
            timings["choose C"] = time.perf_counter() - stage[0]
        state["clf"] = _sgd(1.0 / (state["C"] * max(1, n_fit)), average=average, seed=seed)
        stage[0] = time.perf_counter()
        for X, yy, ww, _ in sampled:
            learn(X, yy, ww)
        sampled.clear()
        for item in waiting:
            take(*item)
        waiting.clear()

    chooser: threading.Thread | None = None
    stage = [time.perf_counter()]
    last_tick = 0.0
    with contextlib.closing(results):
        for done, ((kind, _), (X, yy, ww, groups, X_other)) in enumerate(zip(plan, results), 1):
            counts.update(zip(groups, yy.tolist()))
            if kind == "held":
                held.append((X, yy, ww))
            elif kind == "sample":
                sampled.append((X, yy, ww, groups))
            elif state["clf"] is not None:
                take(kind, X, yy, ww, X_other)
            else:
                if "held-out rows" not in timings:
                    timings["held-out rows"] = time.perf_counter() - stage[0]
                    stage[0] = time.perf_counter()
                    if state["C"] is None:
                        chooser = threading.Thread(target=choose, name="winnow-choose-c", daemon=True)
                        chooser.start()
                waiting.append((kind, X, yy, ww, X_other))
                if chooser is None or not chooser.is_alive() or len(waiting) >= WAIT_MAX:
                    start_fit()
            if progress is not None and time.perf_counter() - last_tick >= 1.0:
                last_tick = time.perf_counter()
                progress(f"one pass: {kind} rows", done / len(plan))
    if state["clf"] is None:
        start_fit()
    timings["newest rows"] = time.perf_counter() - stage[0]
    clf, snapshot, C = state["clf"], state["snapshot"], state["C"]

    t0 = time.perf_counter()
    X_cal = sp.vstack([h[0] for h in held], format="csr")
    y_cal = np.concatenate([h[1] for h in held])
    w_cal = np.concatenate([h[2] for h in held])
    challenger = calibrate(linear(*snapshot), X_cal, y_cal, w_cal)
    final = calibrate(linear(clf.coef_[0].astype(np.float64), float(clf.intercept_[0])), X_cal, y_cal, w_cal)
    challenger_scores = challenger.calibrated_classifiers_[0].calibrators[0].predict(np.concatenate(dec_eval))
    timings["calibration"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    averaged = "averaged" if average is True else f"averaged from row {average:,}"
    details = {"type": "LogisticRegression", "solver": f"sgd (log loss, 1 pass, {averaged})", "C": C,
               "calibration": f"sigmoid (Platt) on a held-out slice of {len(y_cal)} rows",
               "C_cv_log_loss": state["cv_scores"], "rows_fitted": state["fitted"]}
    return Pass(challenger=challenger, final=final, details=details, y_eval=np.concatenate(y_eval),
                challenger_scores=challenger_scores,
                champion_scores=np.concatenate(champ_eval) if champion is not None else None, counts=counts,
                timings=timings)
