"""The fast single-comment scorer: the pipeline's features and probability without scikit-learn's per-call cost.

It computes exactly what `Pipeline.predict_proba` computes (the same `features.extract`, the linear decision
function as a sparse dot product, then the same Platt sigmoid), so the two agree to rounding; tests hold them to
1e-9 on every comment of the shared corpora. It never changes parameters: a model update swaps in a new Scorer.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from training.features import Extraction, FeatureConfig, attribute, extract, highlight_spans


class Contributions(NamedTuple):
    """A decision value split among named sources: "(punctuation)" (character n-grams touching no word), the
    distinct words in order of first occurrence, then author words and signals. Names are built only for the
    sources asked about (`name`): a reason list shows a handful of them."""

    decision_value: float  # log-odds of spam after calibration; score = sigmoid(decision_value)
    bias: float  # the part of decision_value that does not depend on the comment
    by_name: np.ndarray  # summed contribution of each source, in the order above
    by_token: np.ndarray | None  # per word occurrence of the normalised text, when asked for
    words: list[str]  # the word occurrences of the normalised text
    distinct: list[str]  # the distinct words, in by_name order
    others: list[str]  # the names after the words

    def name(self, j: int) -> str:
        if j == 0:
            return "(punctuation)"
        n = len(self.distinct)
        if j <= n:
            return "word:" + self.distinct[j - 1]
        return self.others[j - n - 1]

    @property
    def names(self) -> list[str]:
        return ["(punctuation)"] + ["word:" + w for w in self.distinct] + self.others


class Scorer:
    """Immutable scoring parameters: coefficients, intercept and the Platt calibration (a, b).

    sklearn's _SigmoidCalibration predicts expit(-(a * d + b)) for the decision function d = w.x + c, so the
    calibrated log-odds are z = -(a * d + b) and each feature's share of z is -a * w_j * x_j."""

    __slots__ = ("config", "coef", "intercept", "a", "b", "bias")

    def __init__(self, config: FeatureConfig, coef: np.ndarray, intercept: float, a: float, b: float):
        self.config = config
        self.coef = np.ascontiguousarray(coef, dtype=np.float64).ravel()
        self.intercept = float(intercept)
        self.a = float(a)
        self.b = float(b)
        self.bias = -(self.a * self.intercept + self.b)

    def decision_value(self, ex: Extraction) -> float:
        d = float(self.coef[ex.indices] @ ex.values) + self.intercept
        return -(self.a * d + self.b)

    def probability(self, comment: Any) -> float:
        return sigmoid(self.decision_value(extract(comment, self.config)))

    def contributions(self, ex: Extraction, per_token: bool = False) -> Contributions:
        """Split the decision value among named sources; needs an extraction made with explain=True.
        `per_token` also splits it among word occurrences (for highlighting)."""
        layout = ex.layout
        if layout is None:
            raise ValueError("contributions need extract(..., explain=True)")
        weights = self.coef[ex.indices]
        z = -(self.a * (float(weights @ ex.values) + self.intercept) + self.b)  # as decision_value, to the bit
        contrib = weights * ex.values
        contrib *= -self.a
        words = layout.words
        # Slot 0 is "(punctuation)", then one slot per distinct word (per occurrence with per_token), then others.
        index = _numbered(words, 1)
        distinct = list(map(index.__getitem__, words))
        n_words = len(words) if per_token else len(index)
        others = ["author_word:" + w for w in layout.author_words] + layout.signal_keys if layout.author_words \
            else layout.signal_keys
        named = _numbered(others, n_words + 1)
        other_slots = np.array(list(map(named.__getitem__, others)), np.int64)
        word_slots = np.arange(1, n_words + 1) if per_token else np.array(distinct, np.int64)
        sums = attribute(ex, contrib, word_slots, other_slots, n_words + len(named) + 1)
        by_token = None
        if per_token:
            by_token = sums[1:n_words + 1]
            by_word = by_token
            if len(index) < len(words):  # a repeated word is one source
                by_word = np.bincount(distinct, weights=by_token, minlength=len(index) + 1)[1:]
            sums = np.concatenate((sums[:1], by_word, sums[n_words + 1:]))
        return Contributions(z, self.bias, sums, by_token, words, list(index), list(named))


def _numbered(names: list[str], first: int) -> dict[str, int]:
    """Each distinct name's number, counting from `first` in order of first occurrence."""
    index = dict.fromkeys(names)
    for i, name in enumerate(index, first):
        index[name] = i
    return index


def sigmoid(z: float) -> float:
    # The same value as scipy.special.expit to the last bits, without a ufunc call per comment.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def top_reasons(c: Contributions, top: int) -> list[dict[str, Any]]:
    """The `top` largest contributions by magnitude (ties in source order), then "(bias)" and "(other signals)",
    summing to the decision value."""
    w = c.by_name
    n = w.shape[0]
    k = min(max(top, 0), n)
    order: list[int] = []
    weights: list[float] = []
    if k and n <= 64:
        # A short comment's few sources sort faster as a list; a reverse sort keeps equal keys in source order,
        # as the stable argsort below does.
        values = w.tolist()
        order = sorted(range(n), key=list(map(abs, values)).__getitem__, reverse=True)[:k]
        weights = [values[j] for j in order]
    elif k:
        mag = np.abs(w)
        if k < n:
            # Only the candidates at or above the k-th largest magnitude need sorting (a long comment has
            # hundreds of sources); sorting them stably keeps the same order a full stable sort gives.
            kth = np.partition(mag, n - k)[n - k]
            candidates = np.flatnonzero(mag >= kth)
            order = candidates[np.argsort(-mag[candidates], kind="stable")[:k]].tolist()
        else:
            order = np.argsort(-mag, kind="stable")[:k].tolist()
        weights = w[order].tolist()
    reasons = []
    total = 0.0
    for j, weight in zip(order, weights):
        if weight != 0.0:
            reasons.append({"signal": c.name(j), "weight": weight})
            total += weight
    reasons.append({"signal": "(bias)", "weight": c.bias})
    # The remainder is taken against the decision value itself, so the list adds up to it exactly.
    reasons.append({"signal": "(other signals)", "weight": c.decision_value - c.bias - total})
    return reasons


def word_highlights(content: str, c: Contributions, config: FeatureConfig) -> list[dict[str, Any]]:
    """Per-word weights over the original content's offsets (a word's total over its occurrences, spread
    evenly, so a repeated word is coloured alike wherever it stands)."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for w, weight in zip(c.words, c.by_token.tolist()):
        totals[w] = totals.get(w, 0.0) + weight
        counts[w] = counts.get(w, 0) + 1
    per_word = {w: totals[w] / counts[w] for w in totals}
    return highlight_spans(content, per_word, config.max_chars)
