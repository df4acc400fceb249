"""Hyper-parameters of the TSA classifier: one dataclass, validation, JSON round trip.

Every number that shapes `TwoSeqMoEOrderFeatureAttentionClassifier` lives here, so a model
can be rebuilt from its saved `model_config` JSON alone. The named presets (`production`,
`small`) are parameters of the train stage (`train.model.presets` in
conf/base/parameters_train.yml), not code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

NUMERIC_EMBEDDINGS = ("linear", "periodic")

# Data widths: they come from the fitted transforms, not from a preset.
WIDTH_FIELDS = (
    "n_cat_features",
    "n_num_features",
    "n_eng_features",
    "vocab_size",
    "seq_len",
)


@dataclass
class TSAConfig:
    """Every hyper-parameter of the two-sequence TSA classifier.

    Data widths:
        n_cat_features: categorical sequence features per order (109 in production).
        n_num_features: numerical sequence features per order, *without* the two extra
            trailing columns (time delta, real-row flag) of the tensor bundles (67).
        n_eng_features: engineered dense features of the current order (297).
        vocab_size: rows of the categorical index space (largest index + 1); index 0 is
            padding / unknown.
        seq_len: rows per sequence, the current order included (51).

    Architecture:
        dim_embedding: width of the shared embedding table; order attention runs at
            twice this width (categorical and numerical halves concatenated).
        n_heads: attention heads in the order and feature attention blocks.
        n_layers_order: post-norm temporal attention blocks per id type.
        n_layers_feature: pre-norm feature attention blocks.
        dim_feedforward: hidden width of every block's feed-forward.
        dropout: dropout on every block's residual branches and feed-forward hidden
            layer, the feature MLP path and the classifier (not on attention
            weights: ``attention.py``).
        use_moe: replace the order blocks' feed-forward by a sparse mixture of experts.
        n_experts: experts per mixture-of-experts layer.
        moe_top_k: experts each token is routed to.
        time_scale: seconds; attention scores are multiplied by
            ``exp((delta_query - delta_key) / time_scale)``.
        time_delta_feature: also embed each history row's time delta as one more
            numerical feature of the step (``log1p(delta) / 16``, its own embedding
            row). The time factor alone barely separates minutes from hours at a
            ``time_scale`` of 1e6 s; this feature lets the order attention read
            recency and bursts (velocity, card testing) from the sequence itself.
        categorical_dropout: training only: each categorical index of every history
            row and of the current order is replaced by 0 (the unknown index) with this
            probability. A regulariser against memorising identifiers: over a temporal
            split, the embedding row of a merchant or terminal seen with fraud in the
            training window says little about a later window, and at scoring time
            unseen values map to 0 anyway. 0 turns it off.
        numeric_embedding: how every numerical input (each history step's, the
            current order's, the engineered features and match rates) becomes an
            embedding: ``linear`` (the value times the feature's row of the shared
            table, plus a bias in the feature attention) or ``periodic``
            (``numeric_embedding.py``: sin/cos of learned frequencies, a per-feature
            linear map and a ReLU; the shared table then holds categorical rows
            only).
        periodic_frequencies: frequencies per feature with ``periodic``.
        periodic_sigma: standard deviation of the initial frequencies.
        feature_mlp_hidden: 0 (off) or the width of a second path from the feature
            tokens to the head: the current order's tokens (categorical, numerical,
            engineered) flattened, a linear layer to this width and a ReLU,
            concatenated with the feature attention's readout. Attention pools the
            tokens into one E-wide readout; this path keeps each token's own
            weights, as a tabular MLP does. Its input is ``(n_cat + n_num + n_eng)
            * E`` wide, so it is meant for small models.
        history_match_features: give the feature attention ``2 * n_cat_features``
            more dense inputs, computed from the sequences: for each categorical
            feature and each id type, the share of the history rows (current order
            excluded) whose value equals the current order's (0 without history or
            when the current value is unknown). "First time this customer uses this
            device / terminal / country" is the signature of account takeover and
            of stolen cards cashed out at a compromised terminal; the order
            attention mixes all categoricals of a step into one vector before
            attending, so exact equality is hard for it to learn. The rates are
            computed before ``categorical_dropout`` blanks any index.
        gate_dim: width of the two-sequence gate's attention block.
        gate_feedforward: hidden width of the gate block's feed-forward.
        classifier_hidden: hidden width of the final classifier MLP.
    """

    n_cat_features: int
    n_num_features: int
    n_eng_features: int
    vocab_size: int
    seq_len: int
    dim_embedding: int = 64
    n_heads: int = 1
    n_layers_order: int = 6
    n_layers_feature: int = 4
    dim_feedforward: int = 256
    dropout: float = 0.1
    use_moe: bool = False
    n_experts: int = 4
    moe_top_k: int = 2
    time_scale: float = 1e6
    time_delta_feature: bool = False
    categorical_dropout: float = 0.0
    numeric_embedding: str = "linear"
    periodic_frequencies: int = 16
    periodic_sigma: float = 1.0
    feature_mlp_hidden: int = 0
    history_match_features: bool = False
    gate_dim: int = 32
    gate_feedforward: int = 64
    classifier_hidden: int = 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TSAConfig:
        """Check every field; raise ``ValueError`` naming the first field at fault.

        Rejected: non-integer or non-positive widths, layer counts and
        ``periodic_frequencies``, a negative or non-integer ``feature_mlp_hidden``,
        ``vocab_size`` below 2 (index 0 is reserved), ``dim_embedding`` not
        divisible by ``n_heads``, non-bool flags, an unknown
        ``numeric_embedding``, ``dropout`` or ``categorical_dropout`` outside [0, 1),
        a non-positive or non-finite ``time_scale`` or ``periodic_sigma``, and with
        ``use_moe`` a ``moe_top_k`` outside [1, n_experts].
        """
        self._validate_integers()
        for name in ("use_moe", "time_delta_feature", "history_match_features"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"TSAConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        if self.numeric_embedding not in NUMERIC_EMBEDDINGS:
            raise ValueError(
                f"TSAConfig.numeric_embedding must be one of {NUMERIC_EMBEDDINGS}, "
                f"got {self.numeric_embedding!r}"
            )
        self._validate_reals()
        if self.use_moe and self.moe_top_k > self.n_experts:
            raise ValueError(
                f"TSAConfig.moe_top_k ({self.moe_top_k}) must be <= "
                f"TSAConfig.n_experts ({self.n_experts})"
            )
        return self

    def _validate_integers(self) -> None:
        positive_ints = (
            *WIDTH_FIELDS,
            "dim_embedding",
            "n_heads",
            "n_layers_order",
            "n_layers_feature",
            "dim_feedforward",
            "n_experts",
            "moe_top_k",
            "periodic_frequencies",
            "gate_dim",
            "gate_feedforward",
            "classifier_hidden",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"TSAConfig.{name} must be an int, got {value!r} "
                    f"({type(value).__name__})"
                )
            if value < 1:
                raise ValueError(f"TSAConfig.{name} must be >= 1, got {value}")
        if self.vocab_size < 2:
            raise ValueError(
                "TSAConfig.vocab_size must be >= 2 (index 0 is padding/unknown), "
                f"got {self.vocab_size}"
            )
        if isinstance(self.feature_mlp_hidden, bool) or not isinstance(
            self.feature_mlp_hidden, int
        ):
            raise ValueError(
                "TSAConfig.feature_mlp_hidden must be an int, got "
                f"{self.feature_mlp_hidden!r}"
            )
        if self.feature_mlp_hidden < 0:
            raise ValueError(
                "TSAConfig.feature_mlp_hidden must be >= 0 (0 = off), got "
                f"{self.feature_mlp_hidden}"
            )
        if self.dim_embedding % self.n_heads:
            raise ValueError(
                f"TSAConfig.dim_embedding ({self.dim_embedding}) must be divisible by "
                f"TSAConfig.n_heads ({self.n_heads})"
            )

    def _validate_reals(self) -> None:
        for name in ("dropout", "categorical_dropout", "time_scale", "periodic_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"TSAConfig.{name} must be a number, got {value!r}")
            if name.endswith("dropout"):
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"TSAConfig.{name} must be in [0, 1), got {value}")
            elif not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"TSAConfig.{name} must be a finite number > 0, got {value}"
                )

    @property
    def n_dense_features(self) -> int:
        """Dense inputs of the feature attention: the engineered features, plus the
        history match rates with ``history_match_features``."""
        extra = 2 * self.n_cat_features if self.history_match_features else 0
        return self.n_eng_features + extra

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TSAConfig:
        """Build from a dict such as a loaded ``model_config`` JSON.

        Rejected: unknown keys and missing data widths (``ValueError`` naming them), and
        any value that ``validate`` rejects.
        """
        if not isinstance(data, dict):
            raise ValueError(f"TSAConfig needs a dict, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown TSAConfig keys: {unknown}; known keys: {sorted(known)}"
            )
        missing = [name for name in WIDTH_FIELDS if name not in data]
        if missing:
            raise ValueError(f"TSAConfig is missing required keys: {missing}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON text of ``to_dict()``."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TSAConfig:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))
