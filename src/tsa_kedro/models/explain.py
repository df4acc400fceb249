"""Reason codes: which features and which past orders pushed an order's score up.

Method: integrated gradients (Captum's ``IntegratedGradients``) of the class-1
probability with respect to the model's embeddings, the output of
``TSA.embed_inputs``:

- the feature tokens of the current order (one E-wide token per categorical,
  numerical and dense feature: engineered features, and with
  ``history_match_features`` the match rates, named ``cid_match_rate:<feature>`` and
  ``ccid_match_rate:<feature>``);
- the step vectors of every row of the cid and ccid sequences (one 2E-wide vector per
  past order, the current order being the last row).

Each token's attribution is summed over the embedding dimension: one number per
feature and one per past order. A positive number pushed the score up, a negative
one down. Integrated gradients integrate the gradient along the straight line from
a baseline to the input (``n_steps`` points, Gauss-Legendre), so the attributions of
all tokens add up to ``score(input) - score(baseline)`` up to the integration error,
which Captum reports as the convergence delta (``convergence_delta``, the quality
number of an explanation: the sum of attributions minus that score difference).

Baseline: what the model sees for an absent input. A feature token's baseline is
the token of the unknown category (index 0, the zero row of the embedding table)
or of the numerical value 0; a step vector's baseline is the vector of a padded
row (all categories unknown, all values 0). A reason therefore reads "this value
instead of nothing at all".

Held fixed, hence never attributed: which sequence rows are real (the attention
mask), the time deltas of the attention's time factor, and the current order's own
row in the cid and ccid sequences (its attribution counts in the sum, in
``current_order``, but it is not listed among the past orders). The history match
rates are computed from the category indices before the embedding, so a past order
that matches the current one shows up in the match-rate feature as well as in its
own step vector.

Limits: attributions are local (one order, one baseline) and describe the model,
not the world; a feature whose effect needs another feature to be present splits
the credit between them; with a mixture-of-experts model the routing is piecewise
constant, so the convergence delta can be larger; the empty baseline of a
categorical token (the zero vector) is where the feature attention's layer
normalisation changes fastest, so part of the score difference can escape the
integration points (again visible in the delta). Explaining costs about
``n_steps`` forward and backward passes of the eager model per order (the compiled
artefact has no gradients). Captum is imported when an ``Explainer`` is built,
so the serving handler imports this module (and the bundle ships it) without
loading Captum for plain scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tsa_kedro.features.contract import (
    DENSE_KEY,
    gather_batch,
    model_arguments,
)
from tsa_kedro.models.predict import to_device
from tsa_kedro.models.tsa import (
    TwoSeqMoEOrderFeatureAttentionClassifier,
    class1_probability,
)

# Gauss-Legendre points per order. 8 keeps an explained production-width request at
# 5.7x a plain one on 2 CPU threads (32 points: 15.4x) with a convergence delta of
# 7e-4, and ranks the planted reasons first as often as 32 (tests/models/test_explain.py,
# docs/source/explain.md).
DEFAULT_STEPS = 8
DEFAULT_TOP_K = 3
MAX_TOP_K = 50
OUTPUTS = ("probability", "log_odds")
_INPUTS = ("feature_tokens", "steps_cid", "steps_ccid")
_CONTEXT = ("delta_cid", "real_cid", "delta_ccid", "real_ccid")


def feature_names(
    cat_features: Sequence[str],
    num_features: Sequence[str],
    eng_features: Sequence[str],
    history_match_features: bool,
) -> list[str]:
    """The names of the feature tokens, in the model's token order."""
    names = [*cat_features, *num_features, *eng_features]
    if history_match_features:
        for id_type in ("cid", "ccid"):
            names += [f"{id_type}_match_rate:{name}" for name in cat_features]
    return names


@dataclass(frozen=True)
class Attributions:
    """Integrated-gradient attributions of a batch of B orders.

    Attributes:
        features: (B, n_features) per feature token.
        cid: (B, L) per cid sequence row (0 for padded rows; the last row is the
            current order).
        ccid: (B, L) per ccid sequence row.
        seconds_before_cid: (B, L) seconds between each cid row and the order.
        seconds_before_ccid: (B, L) as above, ccid.
        real_cid: (B, L) bool, the real cid rows.
        real_ccid: (B, L) bool, the real ccid rows.
        score: (B,) the explained output (``Explainer.output``) of the order.
        baseline_score: (B,) the explained output of the baseline.
        convergence_delta: (B,) sum of all attributions minus
            ``score - baseline_score``.
    """

    features: np.ndarray
    cid: np.ndarray
    ccid: np.ndarray
    seconds_before_cid: np.ndarray
    seconds_before_ccid: np.ndarray
    real_cid: np.ndarray
    real_ccid: np.ndarray
    score: np.ndarray
    baseline_score: np.ndarray
    convergence_delta: np.ndarray

    def total(self) -> np.ndarray:
        """(B,) the sum of every attribution (features and all sequence rows)."""
        return self.features.sum(1) + self.cid.sum(1) + self.ccid.sum(1)


class Explainer:
    """Integrated gradients of one model's class-1 probability; see the module doc.

    Args:
        model: the eager model; put in eval mode here (dropout off).
        names: one name per feature token (``feature_names``).
        n_steps: integration points per order (>= 2).
        internal_batch_size: rows per forward/backward pass inside the integration;
            None runs all ``n_steps`` points of a batch in one pass.
        output: what is explained: ``probability`` (the class-1 score; the
            attributions add up to a score difference) or ``log_odds`` (the class-1
            minus the class-0 logit: the integral converges with fewer steps when
            the score saturates, in log-odds units).

    Raises:
        ValueError: ``names`` does not have one name per feature token,
            ``n_steps`` < 2, or an unknown ``output``.
    """

    def __init__(
        self,
        model: TwoSeqMoEOrderFeatureAttentionClassifier,
        names: Sequence[str],
        n_steps: int = DEFAULT_STEPS,
        internal_batch_size: int | None = None,
        output: str = "probability",
    ) -> None:
        config = model.config
        n_tokens = config.n_cat_features + config.n_num_features
        n_tokens += config.n_dense_features
        if len(names) != n_tokens:
            raise ValueError(
                f"feature names: {len(names)} given, the model has {n_tokens} "
                "feature tokens (n_cat + n_num + n_dense)"
            )
        if n_steps < 2:
            raise ValueError(f"n_steps must be at least 2, got {n_steps}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.model = model.eval()
        self.names = list(names)
        self.n_steps = int(n_steps)
        self.internal_batch_size = internal_batch_size
        # Captum (and the matplotlib it loads) only where something is explained.
        from captum.attr import IntegratedGradients  # noqa: PLC0415

        self._gradients = IntegratedGradients(self._probability)

    def _probability(self, *inputs: torch.Tensor) -> torch.Tensor:
        arguments = dict(zip(_INPUTS + _CONTEXT, inputs, strict=True))
        logits = self.model.head(**arguments)["logits"]
        if self.output == "log_odds":
            return (logits[:, 1] - logits[:, 0]).float()
        return class1_probability(logits)

    def attribute(self, *model_inputs: torch.Tensor) -> Attributions:
        """Attributions of a batch given as the model's five inputs (one device).

        Raises:
            ValueError: inputs the model rejects (naming the input).
        """
        with torch.no_grad():
            embedded = self.model.embed_inputs(*model_inputs)
            empty = [torch.zeros_like(x) for x in model_inputs]
            baseline = self.model.embed_inputs(*empty)
        inputs = tuple(embedded[k].detach() for k in _INPUTS)
        baselines = tuple(baseline[k].detach() for k in _INPUTS)
        context = tuple(embedded[k] for k in _CONTEXT)
        with torch.enable_grad():
            parts, delta = self._gradients.attribute(
                inputs,
                baselines=baselines,
                additional_forward_args=context,
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
                return_convergence_delta=True,
            )
        with torch.no_grad():
            score = self._probability(*inputs, *context)
            baseline_score = self._probability(*baselines, *context)

        def numbers(x: torch.Tensor) -> np.ndarray:
            return x.detach().double().cpu().numpy()

        features, cid, ccid = (numbers(p.sum(dim=-1)) for p in parts)
        return Attributions(
            features=features,
            cid=cid,
            ccid=ccid,
            seconds_before_cid=numbers(embedded["delta_cid"]),
            seconds_before_ccid=numbers(embedded["delta_ccid"]),
            real_cid=embedded["real_cid"].cpu().numpy(),
            real_ccid=embedded["real_ccid"].cpu().numpy(),
            score=numbers(score),
            baseline_score=numbers(baseline_score),
            convergence_delta=numbers(delta),
        )

    def reasons(self, attributions: Attributions, top_k: int) -> list[dict[str, Any]]:
        """Per order, the ``top_k`` features and past orders with the largest positive
        attributions (fewer when fewer pushed the score up).

        Each order's answer: ``features`` ``[{name, attribution}]``, ``cid_orders``
        and ``ccid_orders`` ``[{position, seconds_before, attribution}]`` (position
        1 is the most recent past order), ``convergence_delta``.

        Raises:
            ValueError: ``top_k`` is not an integer in 1..``MAX_TOP_K``.
        """
        check_top_k(top_k, "top_k")
        answers = []
        for b in range(len(attributions.score)):
            features = [
                {"name": self.names[i], "attribution": float(v)}
                for i, v in _top(attributions.features[b], top_k)
            ]
            answers.append(
                {
                    "features": features,
                    "cid_orders": _past_orders(
                        attributions.cid[b],
                        attributions.real_cid[b],
                        attributions.seconds_before_cid[b],
                        top_k,
                    ),
                    "ccid_orders": _past_orders(
                        attributions.ccid[b],
                        attributions.real_ccid[b],
                        attributions.seconds_before_ccid[b],
                        top_k,
                    ),
                    "convergence_delta": float(attributions.convergence_delta[b]),
                }
            )
        return answers

    def explain_bundle(
        self,
        bundle: Mapping[str, np.ndarray],
        top_k: int,
        batch_size: int,
        device: torch.device,
    ) -> list[dict[str, Any]]:
        """``reasons`` of every row of a tensor bundle, in order, ``batch_size`` rows
        (each integrated over ``n_steps`` points) per pass.

        Raises:
            ValueError: ``top_k`` out of range (see ``reasons``).
        """
        check_top_k(top_k, "top_k")
        n_rows = len(bundle[DENSE_KEY])
        answers: list[dict[str, Any]] = []
        for first in range(0, n_rows, batch_size):
            rows = np.arange(first, min(first + batch_size, n_rows))
            batch = to_device(gather_batch(bundle, rows), device)
            answers += self.reasons(self.attribute(*model_arguments(batch)), top_k)
        return answers


def check_top_k(top_k: Any, field: str) -> int:
    """``top_k`` as an int.

    Raises:
        ValueError: not an integer (booleans included) in 1..``MAX_TOP_K``, naming
            ``field``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer):
        raise ValueError(
            f"{field} must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}"
        )
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"{field} must be from 1 to {MAX_TOP_K}, got {top_k}")
    return int(top_k)


def _top(values: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and values of the ``k`` largest positive ``values``, largest first."""
    order = np.argsort(-values, kind="stable")[:k]
    return [(int(i), float(values[i])) for i in order if values[i] > 0]


def _past_orders(
    values: np.ndarray, real: np.ndarray, seconds: np.ndarray, k: int
) -> list[dict[str, Any]]:
    """The top ``k`` real past rows (the last row, the current order, excluded)."""
    past = np.where(real[:-1], values[:-1], 0.0)
    last = len(values) - 1
    return [
        {
            "position": last - i,
            "seconds_before": float(seconds[i]),
            "attribution": value,
        }
        for i, value in _top(past, k)
    ]
