"""The compiled artefact (``model.onnx``): same scores as the eager model, and the
handler's fallback to the eager model when the artefact is absent, corrupt or wrong."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.conftest import make_batch, tiny_config
from tsa_kedro.models import TwoSeqMoEOrderFeatureAttentionClassifier
from tsa_kedro.pipelines.package.nodes import compile_model
from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import read_tar_gz
from tsa_kedro.serving.bundle import PackageError, export_onnx
from tsa_kedro.serving.compiled import CompiledModel
from tsa_kedro.serving.handler import TSAPredictor

CONFIG = tiny_config(
    time_delta_feature=True,
    numeric_embedding="periodic",
    feature_mlp_hidden=8,
    history_match_features=True,
)


@pytest.fixture(scope="module")
def eager_and_compiled(tmp_path_factory):
    torch.manual_seed(0)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(CONFIG).eval()
    path = tmp_path_factory.mktemp("onnx") / layout.COMPILED_MODEL
    path.write_bytes(export_onnx(model, CONFIG))
    return model, CompiledModel(path)


@pytest.mark.parametrize(
    ("cid_lengths", "ccid_lengths"),
    [([7], [1]), ([1, 3, 7, 5, 2], [1, 2, 7, 1, 4])],
    ids=["one_order", "five_orders"],
)
def test_artefact_scores_equal_the_eager_model(
    eager_and_compiled, cid_lengths, ccid_lengths
):
    model, compiled = eager_and_compiled
    batch = make_batch(CONFIG, cid_lengths, ccid_lengths, seed=5)
    batch = (batch[0].to(torch.int32), batch[1], batch[2].to(torch.int64), *batch[3:])
    with torch.inference_mode():
        eager = model(*batch).softmax(-1)[:, 1]
    scores = compiled(*batch).softmax(-1)[:, 1]
    assert scores.shape == (len(cid_lengths),)
    torch.testing.assert_close(scores, eager, rtol=0, atol=1e-5)


def test_mixture_of_experts_does_not_export_and_says_how_to_package_it():
    config = tiny_config(use_moe=True, n_experts=3)
    model = TwoSeqMoEOrderFeatureAttentionClassifier(config)
    with pytest.raises(PackageError, match="compiled_model: none"):
        export_onnx(model, config)


def test_unknown_compiled_format_is_named():
    with pytest.raises(ValueError, match="package.compiled_model"):
        compile_model(b"", CONFIG.to_dict(), "tensorrt")


def test_bundle_without_artefact_when_asked(tiny_model, tiny_package):
    bundle, payload, output = tiny_model.package(tiny_package[1], compiled_model="none")
    assert layout.COMPILED_MODEL not in read_tar_gz(bundle)
    np.testing.assert_allclose(
        [row["score"] for row in output],
        [row["score"] for row in tiny_package[2]],
        rtol=0,
        atol=1e-5,
    )


def _scores(predictor: TSAPredictor, tiny_model) -> np.ndarray:
    answers = predictor.predict(tiny_model.raw_cali.iloc[:30].reset_index(drop=True))
    return np.array([a["score"] for a in answers if "score" in a])


def _broken_copy(model_dir: Path, tmp_path: Path, content: bytes | None) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    artefact = copy / layout.COMPILED_MODEL
    if content is None:
        artefact.unlink()
    else:
        artefact.write_bytes(content)
    return copy


def test_the_bundle_serves_its_artefact(model_dir, tiny_model):
    predictor = TSAPredictor.from_model_dir(model_dir, device="cpu")
    assert predictor.compiled is not None
    assert len(_scores(predictor, tiny_model)) >= 20


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no compiled model"), (b"not an onnx graph", "does not load")],
    ids=["absent", "corrupt"],
)
def test_handler_falls_back_to_eager(
    model_dir, tiny_model, tmp_path, caplog, content, message
):
    compiled = TSAPredictor.from_model_dir(model_dir, device="cpu")
    copy = _broken_copy(model_dir, tmp_path, content)
    with caplog.at_level(logging.INFO, logger="tsa_kedro.serving.compiled"):
        predictor = TSAPredictor.from_model_dir(copy, device="cpu", verify=False)
    assert predictor.compiled is None
    assert message in caplog.text
    np.testing.assert_allclose(
        _scores(predictor, tiny_model), _scores(compiled, tiny_model), atol=1e-5
    )


def test_handler_refuses_an_artefact_that_scores_differently(
    model_dir, tiny_model, tmp_path, caplog
):
    """An artefact of other weights loads fine; the probe check catches it."""
    torch.manual_seed(1)
    other = TwoSeqMoEOrderFeatureAttentionClassifier.from_config(
        tiny_model.model_config
    )
    copy = _broken_copy(model_dir, tmp_path, export_onnx(other, other.config))
    with caplog.at_level(logging.WARNING, logger="tsa_kedro.serving.compiled"):
        predictor = TSAPredictor.from_model_dir(copy, device="cpu", verify=False)
    assert predictor.compiled is None
    assert "differ from the eager model" in caplog.text
