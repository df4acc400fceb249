"""TwoSeqMoEOrderFeatureAttentionClassifier: the two-sequence TSA fraud classifier.

    cid history  --order attention (cid)---> o_cid (B, 2E) --+
                                                             +- gate weights --> LN --+
    ccid history --order attention (ccid)--> o_ccid (B, 2E) -+                        |
    current order + engineered --feature attention--> (B, E) ----------------------- cat
                                                          --> MLP (3E -> 1024 -> 2) --+

The gate (``gate.py``) reads both histories' step vectors; its ccid weight is exactly 0
when the card has no history, and then the ccid stack is skipped for that order.
Inputs follow the tensor bundles of docs/source/architecture.md.
"""

from __future__ import annotations

import torch
from torch import nn

from tsa_kedro.models import branches
from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.embedding import SharedEmbedding
from tsa_kedro.models.feature_attention import FeatureAttention
from tsa_kedro.models.gate import TwoSequenceGate
from tsa_kedro.models.moe import MoEFeedForward
from tsa_kedro.models.order_attention import OrderAttention
from tsa_kedro.models.paired import PairedOrderStacks

_INDEX_DTYPES = (torch.int32, torch.int64)
# Largest batch whose two sequences are paired when scoring. At one to four orders the
# blocks are bound by operator dispatch and pairing halves the calls; from about eight
# orders on, the separate stacks' larger products are as fast or faster (measured at
# 1, 2, 4, 8, 16 and 128 orders, production preset, two CPU threads).
PAIR_MAX_ORDERS = 4
# Largest batch whose feature-attention branch runs beside the sequence stacks when
# scoring on CPU (``branches.py``). One order: 1.11 to 1.26x faster over ten history
# mixes. From two orders on, each branch gains more from two intra-op threads than
# from running beside the other: 0.80x at two orders of mixed histories, 0.76x at
# four (production preset, two CPU threads).
PARALLEL_MAX_ORDERS = 1


def history_match_rates(x_cat: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B, L, n_cat) indices, (B, L) real-row flags -> (B, n_cat): per feature, the
    share of real history rows (the last row, the current order, excluded) whose
    value equals the current order's; 0 without history or for an unknown (0)
    current value. Padded rows never count."""
    current = x_cat[:, -1:]  # (B, 1, n_cat)
    history = real[:, :-1] > 0.5  # (B, L-1)
    same = (x_cat[:, :-1] == current) & history[..., None] & (current != 0)
    n_rows = history.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    return same.sum(dim=1).to(torch.float32) / n_rows  # (B, n_cat)


class TwoSeqMoEOrderFeatureAttentionClassifier(nn.Module):
    """Two-sequence temporal self-attention classifier; see the module docstring.

    Four settings change speed, never results (the last two up to float rounding):
        skip_empty_ccid: run the ccid order attention only for orders whose card has
            a history (the others get gate weight 0 for ccid anyway).
        skip_padding: drop leading time steps that are padding in every row of the
            batch, and embed real rows only (padded keys are masked in every
            attention block, so padded rows contribute nothing).
        pair_sequences: when scoring (eval mode, autograd off, no autocast) a batch
            of at most ``PAIR_MAX_ORDERS`` orders that all have a card history (a
            scoring request), run the cid and ccid blocks as one batched pass
            (``paired.py``).
        parallel_branches: when scoring one order on CPU with at least two intra-op
            threads, run the feature attention on a side thread while this thread
            runs the two sequence stacks, one intra-op thread each (``branches.py``).
            On by default only for configs whose two branches are both large (the
            production preset at production widths); smaller models are faster
            on one thread.
    All but ``pair_sequences`` are off while ``torch.compile`` traces the model (the
    first two need data-dependent shapes, the last a thread). Under
    DistributedDataParallel pass ``find_unused_parameters=True`` (or set
    ``skip_empty_ccid = False``): a batch without any card history leaves the ccid
    stack without gradients, as unchosen experts do with ``use_moe``.
    """

    def __init__(self, config: TSAConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.skip_empty_ccid = True
        self.skip_padding = True
        self.pair_sequences = True
        # Whether both branches are large enough to run at once (``branches.py``).
        self.parallel_branches = (
            min(branches.branch_flops(config)) >= branches.PARALLEL_MIN_FLOPS
        )
        E = config.dim_embedding
        self.embedding = SharedEmbedding(config)
        self.order_cid = OrderAttention(config)
        self.order_ccid = OrderAttention(config)
        self._paired = PairedOrderStacks(self.order_cid, self.order_ccid)
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
            x_seq_cat_cid, x_seq_cat_ccid: (B, L, n_cat) int32/int64 (int16 accepted)
                category indices, 0 = padding/unknown.
            x_seq_num_cid, x_seq_num_ccid: (B, L, n_num + 2) float: scaled numericals,
                time delta in seconds, 1/0 real-row flag. Left-padded; the last row is
                the current order and must be real.
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
        x_seq_cat_cid, x_seq_cat_ccid = self._check_inputs(
            x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid, x_num
        )
        # Before categorical dropout: the match rates describe the real histories.
        history_cid, history_ccid = x_seq_cat_cid, x_seq_cat_ccid
        if self.training and self.config.categorical_dropout > 0:
            x_seq_cat_cid = self._drop_categories(x_seq_cat_cid)
            x_seq_cat_ccid = self._drop_categories(x_seq_cat_ccid)

        def features() -> torch.Tensor:  # (B, E [+ feature_mlp_hidden])
            dense = x_num
            if self.config.history_match_features:
                rates = [
                    history_match_rates(cat, num[..., -1]).to(x_num.dtype)
                    for cat, num in (
                        (history_cid, x_seq_num_cid),
                        (history_ccid, x_seq_num_ccid),
                    )
                ]
                dense = torch.cat([x_num, *rates], dim=1)  # (B, n_eng + 2 n_cat)
            n_num = self.config.n_num_features
            return self.feature_attention(
                self.embedding,
                x_seq_cat_cid[:, -1],
                x_seq_num_cid[:, -1, :n_num],
                dense,
            )

        def sequences() -> tuple[torch.Tensor, torch.Tensor]:  # (B, 2E), (B, 2)
            has_ccid_history = (x_seq_num_ccid[:, :-1, -1] > 0.5).any(dim=1)  # (B,)
            if self._pairs(x_seq_cat_cid, x_seq_cat_ccid, has_ccid_history):
                o_cid, g_cid, o_ccid, g_ccid = self._encode_pair(
                    x_seq_cat_cid, x_seq_num_cid, x_seq_cat_ccid, x_seq_num_ccid
                )
            else:
                o_cid, g_cid, o_ccid, g_ccid = self._encode_each(
                    x_seq_cat_cid,
                    x_seq_num_cid,
                    x_seq_cat_ccid,
                    x_seq_num_ccid,
                    has_ccid_history,
                )
            weights = self.gate.weights(g_cid, g_ccid, has_ccid_history)  # (B, 2)
            combined = weights[:, :1] * o_cid + weights[:, 1:] * o_ccid
            return self.sequence_norm(combined), weights

        if self._parallel(x_num):
            feature_vectors, (sequence, weights) = branches.run_both(
                features, sequences
            )
        else:
            sequence, weights = sequences()
            feature_vectors = features()
        logits = self.classifier(torch.cat([sequence, feature_vectors], dim=-1))
        return {"logits": logits, "gate_weights": weights}  # (B, 2), (B, 2)

    def _drop_categories(self, x_cat: torch.Tensor) -> torch.Tensor:
        """Categorical dropout (training only): each index becomes 0, the unknown
        value, with probability ``config.categorical_dropout``; draws from torch's
        global generator, so a seeded run repeats."""
        drop = (
            torch.rand(x_cat.shape, device=x_cat.device)
            < self.config.categorical_dropout
        )
        return x_cat.masked_fill(drop, 0)

    def _pairs(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        has_ccid_history: torch.Tensor,
    ) -> bool:
        """Whether this forward runs both sequences in one pass (``pair_sequences``)."""
        if not (
            self.pair_sequences
            and self._paired.supported
            and not self.training
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x_seq_cat_cid.device.type)
            and x_seq_cat_cid.shape[0] <= PAIR_MAX_ORDERS
            and x_seq_cat_cid.shape[1] == x_seq_cat_ccid.shape[1]
        ):
            return False
        if torch.compiler.is_compiling() or not self.skip_empty_ccid:
            return True  # the ccid stack runs on every order anyway
        return bool(has_ccid_history.all())

    def _parallel(self, x_num: torch.Tensor) -> bool:
        """Whether this forward hands its two branches to ``branches.run_both``
        (``parallel_branches``), which runs them at once where ``branches.available``."""
        return (
            self.parallel_branches
            and not self.training
            and not torch.is_grad_enabled()
            and x_num.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and x_num.shape[0] <= PARALLEL_MAX_ORDERS
            and not torch.compiler.is_compiling()
        )

    def _encode_pair(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Both sequences through ``PairedOrderStacks``: o_cid, g_cid, o_ccid, g_ccid."""
        x_cat = torch.stack([x_seq_cat_cid, x_seq_cat_ccid])  # (2, B, L, n_cat)
        x_num = torch.stack([x_seq_num_cid, x_seq_num_ccid])  # (2, B, L, n_num + 2)
        skip_padding = self.skip_padding and not torch.compiler.is_compiling()
        if skip_padding:
            # The first column with a real row in either sequence.
            start = int((x_num[..., -1] > 0.5).flatten(0, 1).any(dim=0).int().argmax())
            x_cat, x_num = x_cat[:, :, start:], x_num[:, :, start:]
        real = x_num[..., -1] > 0.5  # (2, B, L')
        steps = torch.stack(
            [
                order.embed_steps(
                    self.embedding, cat, num, is_real, real_rows_only=skip_padding
                )
                for order, cat, num, is_real in zip(
                    (self.order_cid, self.order_ccid), x_cat, x_num, real, strict=True
                )
            ]
        )  # (2, B, L', 2E)
        delta = x_num[..., -2]  # (2, B, L')
        readouts = self._paired.encode(steps, delta, real)  # (2, B, 2E)
        summaries = self.gate.summarise(steps.flatten(0, 1), real.flatten(0, 1))
        summaries = summaries.view(2, -1, summaries.shape[-1])  # (2, B, G)
        return readouts[0], summaries[0], readouts[1], summaries[1]

    def _encode_each(
        self,
        x_seq_cat_cid: torch.Tensor,
        x_seq_num_cid: torch.Tensor,
        x_seq_cat_ccid: torch.Tensor,
        x_seq_num_ccid: torch.Tensor,
        has_ccid_history: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Each sequence through its own stack: o_cid, g_cid, o_ccid, g_ccid."""
        dynamic = not torch.compiler.is_compiling()
        o_cid, g_cid = self._encode(self.order_cid, x_seq_cat_cid, x_seq_num_cid)
        if dynamic and self.skip_empty_ccid and not bool(has_ccid_history.all()):
            rows = has_ccid_history.nonzero().squeeze(1)  # (B',)
            o_ccid = o_cid.new_zeros(o_cid.shape)  # (B, 2E)
            g_ccid = g_cid.new_zeros(g_cid.shape)  # (B, G)
            if rows.numel():
                o_sub, g_sub = self._encode(
                    self.order_ccid, x_seq_cat_ccid[rows], x_seq_num_ccid[rows]
                )
                o_ccid = o_ccid.index_copy(0, rows, o_sub.to(o_ccid.dtype))
                g_ccid = g_ccid.index_copy(0, rows, g_sub.to(g_ccid.dtype))
        else:
            o_ccid, g_ccid = self._encode(
                self.order_ccid, x_seq_cat_ccid, x_seq_num_ccid
            )
        return o_cid, g_cid, o_ccid, g_ccid

    def _encode(
        self, order: OrderAttention, x_cat: torch.Tensor, x_num: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sequence -> order-attention readout (B, 2E), gate summary (B, G)."""
        real = x_num[..., -1] > 0.5  # (B, L)
        skip_padding = self.skip_padding and not torch.compiler.is_compiling()
        if skip_padding:
            # Left padding: the first column with a real row anywhere in the batch.
            start = int(real.any(dim=0).int().argmax())
            x_cat, x_num, real = x_cat[:, start:], x_num[:, start:], real[:, start:]
        steps = order.embed_steps(
            self.embedding, x_cat, x_num, real, real_rows_only=skip_padding
        )  # (B, L', 2E)
        delta = x_num[..., -2]  # (B, L')
        return order.encode(steps, delta, real), self.gate.summarise(steps, real)

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
        return logits.float().softmax(dim=-1)[:, 1]

    def moe_aux_loss(self) -> torch.Tensor:
        """Sum of the mixture-of-experts load-balancing terms of the last forward."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoEFeedForward)]
        return torch.stack(losses).sum() if losses else torch.zeros(())
