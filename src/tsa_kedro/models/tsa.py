"""TwoSeqMoEOrderFeatureAttentionClassifier: the two-sequence TSA fraud classifier.

    cid history  --order attention (cid)---> o_cid (B, 2E) --+
                                                             +- gate weights --> LN --+
    ccid history --order attention (ccid)--> o_ccid (B, 2E) -+                        |
    current order + engineered --feature attention--> (B, E) ----------------------- cat
                                                          --> MLP (3E -> 1024 -> 2) --+

The gate (``gate.py``) reads both histories' step vectors; its ccid weight is exactly 0
when the card has no history. Inputs follow the tensor bundles of
docs/source/architecture.md.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.embedding import SharedEmbedding
from tsa_kedro.models.feature_attention import FeatureAttention
from tsa_kedro.models.gate import TwoSequenceGate
from tsa_kedro.models.moe import MoEFeedForward
from tsa_kedro.models.order_attention import OrderAttention

_INDEX_DTYPES = (torch.int32, torch.int64)


def history_match_rates(x_cat: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per categorical feature, the share of history rows equal to the current order.

    The current order (the last row) is excluded, padded rows never count, and the
    rate is 0 without history or for an unknown (0) current value.

    Args:
        x_cat: (B, L, n_cat) category indices.
        real: (B, L) 1/0 (or bool) real-row flags.

    Returns:
        (B, n_cat) float32 rates.
    """
    current = x_cat[:, -1:]  # (B, 1, n_cat)
    history = real[:, :-1] > 0.5  # (B, L-1)
    same = (x_cat[:, :-1] == current) & history[..., None] & (current != 0)
    n_rows = history.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    return same.sum(dim=1).to(torch.float32) / n_rows  # (B, n_cat)


def class1_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2) logits -> (B,) float32 probability of class 1 (fraud)."""
    return logits.float().softmax(dim=-1)[:, 1]


class TwoSeqMoEOrderFeatureAttentionClassifier(nn.Module):
    """Two-sequence temporal self-attention classifier; see the module docstring.

    Every order runs through both order-attention stacks, also when its card has no
    history (the gate then gives the ccid readout weight 0). Under
    DistributedDataParallel with ``use_moe`` pass ``find_unused_parameters=True``:
    experts that no token chose in a step get no gradient.

    Args:
        config: the hyper-parameters; validated here.
    """

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        E = config.dim_embedding
        self.embedding = SharedEmbedding(config)
        self.order_cid = OrderAttention(config)
        self.order_ccid = OrderAttention(config)
        self.gate = TwoSequenceGate(config)
        self.sequence_norm = nn.LayerNorm(2 * E)
        self.feature_attention = FeatureAttention(config)
        self.classifier = nn.Sequential(
            nn.Linear(3 * E + config.feature_mlp_hidden, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, 2),
        )

    @classmethod
    def from_config(
        cls, config: TSAConfig | dict
    ) -> TwoSeqMoEOrderFeatureAttentionClassifier:
        """Build from a ``TSAConfig`` or its dict (e.g. a loaded ``model_config``)."""
        if isinstance(config, dict):
            config = TSAConfig.from_dict(config)
        return cls(config)

    def forward(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        x_num: torch.Tensor,
    ) -> torch.Tensor:
        """Class logits (B, 2).

        Args:
            x_seq_cat_cid: (B, L, n_cat) int32/int64 (int16 accepted) category
                indices of the customer's orders, 0 = padding/unknown.
            x_seq_num_cid: (B, L, n_num + 2) float: scaled numericals, time delta in
                seconds, 1/0 real-row flag. Left-padded; the last row is the current
                order and must be real.
            x_seq_cat_ccid: as ``x_seq_cat_cid``, for the card's orders.
            x_seq_num_ccid: as ``x_seq_num_cid``, for the card's orders.
            x_num: (B, n_eng) float engineered features.

        Raises:
            ValueError: on inputs whose rank, widths, batch size or dtype disagree with
                the config (naming the input).
        """
        return self.forward_details(
            x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
        )["logits"]

    def forward_details(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        x_num: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``forward`` plus intermediates: ``logits`` (B, 2), ``gate_weights`` (B, 2)."""
        return self.head(
            **self.embed_inputs(
                x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
            )
        )

    def embed_inputs(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        x_num: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The embedding stage of ``forward``: the arguments of ``head``.

        ``feature_tokens`` (B, n_cat + n_num + n_dense, E): the current order's
        categorical, numerical and dense (engineered, then match-rate) tokens;
        ``steps_cid`` / ``steps_ccid`` (B, L, 2E): one vector per sequence row;
        ``delta_*`` (B, L) seconds and ``real_*`` (B, L) bool real-row flags.

        Raises:
            ValueError: as ``forward``.
        """
        x_seq_cat_cid, x_seq_cat_ccid = self._check_inputs(
            x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
        )
        real_cid = x_seq_num_cid[..., -1] > 0.5  # (B, L)
        real_ccid = x_seq_num_ccid[..., -1] > 0.5  # (B, L)

        dense = x_num  # (B, n_eng)
        if self.config.history_match_features:
            # Before categorical dropout: the rates describe the real histories.
            rates_cid = history_match_rates(x_seq_cat_cid, real_cid)  # (B, n_cat)
            rates_ccid = history_match_rates(x_seq_cat_ccid, real_ccid)  # (B, n_cat)
            rates = torch.cat([rates_cid, rates_ccid], dim=1).to(x_num.dtype)
            dense = torch.cat([x_num, rates], dim=1)  # (B, n_eng + 2 n_cat)
        if self.training and self.config.categorical_dropout > 0:
            x_seq_cat_cid = self._drop_categories(x_seq_cat_cid)
            x_seq_cat_ccid = self._drop_categories(x_seq_cat_ccid)

        # Each id type's history -> one vector per row.
        steps_cid = self.order_cid.embed_steps(
            self.embedding, x_seq_cat_cid, x_seq_num_cid, real_cid
        )  # (B, L, 2E)
        steps_ccid = self.order_ccid.embed_steps(
            self.embedding, x_seq_cat_ccid, x_seq_num_ccid, real_ccid
        )  # (B, L, 2E)

        # The current order (the last cid row) and the dense features.
        n_num = self.config.n_num_features
        feature_tokens = self.feature_attention.tokens(
            self.embedding,
            x_seq_cat_cid[:, -1],  # (B, n_cat)
            x_seq_num_cid[:, -1, :n_num],  # (B, n_num)
            dense,  # (B, n_dense)
        )  # (B, n_cat + n_num + n_dense, E)
        return {
            "feature_tokens": feature_tokens,
            "steps_cid": steps_cid,
            "steps_ccid": steps_ccid,
            "delta_cid": x_seq_num_cid[..., -2],
            "real_cid": real_cid,
            "delta_ccid": x_seq_num_ccid[..., -2],
            "real_ccid": real_ccid,
        }

    def head(
        self,
        feature_tokens: torch.Tensor,
        steps_cid: torch.Tensor,
        steps_ccid: torch.Tensor,
        delta_cid: torch.Tensor,
        real_cid: torch.Tensor,
        delta_ccid: torch.Tensor,
        real_ccid: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Everything after ``embed_inputs``: ``logits`` (B, 2), ``gate_weights``."""
        o_cid = self.order_cid(steps_cid, delta_cid, real_cid)  # (B, 2E)
        o_ccid = self.order_ccid(steps_ccid, delta_ccid, real_ccid)  # (B, 2E)

        # The gate weighs the two readouts.
        weights = self.gate(steps_cid, real_cid, steps_ccid, real_ccid)  # (B, 2)
        combined = weights[:, :1] * o_cid + weights[:, 1:] * o_ccid  # (B, 2E)
        sequence = self.sequence_norm(combined)  # (B, 2E)

        features = self.feature_attention.read(feature_tokens)  # (B, E [+ mlp])
        logits = self.classifier(torch.cat([sequence, features], dim=-1))  # (B, 2)
        return {"logits": logits, "gate_weights": weights}

    def _drop_categories(self, x_cat: torch.Tensor) -> torch.Tensor:
        """Categorical dropout (training only): each index becomes 0, the unknown
        value, with probability ``config.categorical_dropout``; draws from torch's
        global generator, so a seeded run repeats."""
        drop = (
            torch.rand(x_cat.shape, device=x_cat.device)
            < self.config.categorical_dropout
        )
        return x_cat.masked_fill(drop, 0)

    def _check_inputs(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        x_num: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape and dtype checks; returns the categorical inputs as int32/int64."""
        c = self.config
        B = x_num.shape[0] if x_num.dim() else -1
        if x_num.dim() != 2 or x_num.shape[1] != c.n_eng_features:
            raise ValueError(
                f"x_num must have shape (B, n_eng_features={c.n_eng_features}), "
                f"got {tuple(x_num.shape)}"
            )
        sequences = {
            "cid": (x_seq_cat_cid, x_seq_num_cid),
            "ccid": (x_seq_cat_ccid, x_seq_num_ccid),
        }
        checked = []
        for kind, (cat, num) in sequences.items():
            cat_name, num_name = f"x_seq_cat_{kind}", f"x_seq_num_{kind}"
            if cat.dim() != 3 or cat.shape[0] != B or cat.shape[2] != c.n_cat_features:
                raise ValueError(
                    f"{cat_name} must have shape (B={B}, L, n_cat_features="
                    f"{c.n_cat_features}), got {tuple(cat.shape)}"
                )
            if num.shape != (B, cat.shape[1], c.n_num_features + 2):
                raise ValueError(
                    f"{num_name} must have shape (B={B}, L={cat.shape[1]}, "
                    f"n_num_features + 2={c.n_num_features + 2}), got {tuple(num.shape)}"
                )
            if cat.dtype.is_floating_point or cat.dtype == torch.bool:
                raise ValueError(f"{cat_name} must hold integers, got {cat.dtype}")
            checked.append(cat if cat.dtype in _INDEX_DTYPES else cat.to(torch.int64))
        return checked[0], checked[1]

    @torch.inference_mode()
    def predict_proba(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        x_num: torch.Tensor,
    ) -> torch.Tensor:
        """(B,) softmax probability of class 1 (fraud), without autograd.

        Uses the module's current mode: call ``.eval()`` first for scoring.
        """
        logits = self(
            x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
        )
        return class1_probability(logits)

    def moe_aux_loss(self) -> torch.Tensor:
        """Sum of the mixture-of-experts load-balancing terms of the last forward."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoEFeedForward)]
        return torch.stack(losses).sum() if losses else torch.zeros(())
