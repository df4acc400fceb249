"""PyTorch model code, importable without Kedro."""

from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.tsa import TwoSeqMoEOrderFeatureAttentionClassifier

__all__ = ["TSAConfig", "TwoSeqMoEOrderFeatureAttentionClassifier"]
