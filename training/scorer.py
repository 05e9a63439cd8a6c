"""The fast single-comment scorer: the pipeline's features and probability without scikit-learn's per-call cost.

It computes exactly what `Pipeline.predict_proba` computes (the same `features.extract`, the linear decision
function as a sparse dot product, then the same Platt sigmoid), so the two agree to rounding; tests hold them to
1e-9 on every comment of the shared corpora. It never changes parameters: a model update swaps in a new Scorer.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from training.features import Extraction, FeatureConfig, extract, highlight_spans


class Contributions(NamedTuple):
    decision_value: float  # log-odds of spam after calibration; score = sigmoid(decision_value)
    bias: float  # the part of decision_value that does not depend on the comment
    names: list[str]  # explanation names (word:..., links:..., ...)
    by_name: np.ndarray  # summed contribution of each name
    by_token: np.ndarray | None  # per word occurrence of the normalised text, when asked for
    words: list[str]


class Scorer:
    """Immutable scoring parameters: coefficients, intercept and the Platt calibration (a, b).

    sklearn's _SigmoidCalibration predicts expit(-(a * d + b)) for the decision function d = w.x + c, so the
    calibrated log-odds are z = -(a * d + b) and each feature's share of z is -a * w_j * x_j."""

    __slots__ = ("config", "coef", "intercept", "a", "b")

    def __init__(self, config: FeatureConfig, coef: np.ndarray, intercept: float, a: float, b: float):
        self.config = config
        self.coef = np.ascontiguousarray(coef, dtype=np.float64).ravel()
        self.intercept = float(intercept)
        self.a = float(a)
        self.b = float(b)

    def decision_value(self, ex: Extraction) -> float:
        d = float(self.coef[ex.indices] @ ex.values) + self.intercept
        return -(self.a * d + self.b)

    def probability(self, comment: Any) -> float:
        return sigmoid(self.decision_value(extract(comment, self.config)))

    def contributions(self, ex: Extraction, per_token: bool = False) -> Contributions:
        """Split the decision value among named sources; needs an extraction made with explain=True.
        `per_token` also splits it among word occurrences (for highlighting)."""
        prov = ex.provenance
        if prov is None:
            raise ValueError("contributions need extract(..., explain=True)")
        z = self.decision_value(ex)
        bias = -(self.a * self.intercept + self.b)
        contrib = self.coef[prov.indices] * prov.values
        contrib *= -self.a
        per_name = np.bincount(prov.owner, weights=contrib, minlength=len(prov.names))
        by_token = None
        if per_token:
            in_word = prov.token >= 0
            by_token = np.bincount(prov.token[in_word], weights=contrib[in_word], minlength=len(prov.words))
        return Contributions(z, bias, prov.names, per_name, by_token, prov.words)


def sigmoid(z: float) -> float:
    # The same value as scipy.special.expit to the last bits, without a ufunc call per comment.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def top_reasons(c: Contributions, top: int) -> list[dict[str, Any]]:
    """The `top` largest contributions by magnitude, then "(bias)" and "(other signals)", summing to the
    decision value."""
    order = np.argsort(-np.abs(c.by_name), kind="stable")[:max(top, 0)].tolist()
    shown = [(c.names[j], w) for j, w in zip(order, c.by_name[order].tolist()) if w != 0.0]
    reasons = [{"signal": name, "weight": w} for name, w in shown]
    reasons.append({"signal": "(bias)", "weight": c.bias})
    # The remainder is taken against the decision value itself, so the list adds up to it exactly.
    rest = c.decision_value - c.bias - sum(w for _, w in shown)
    reasons.append({"signal": "(other signals)", "weight": rest})
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
