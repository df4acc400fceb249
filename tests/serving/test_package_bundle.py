"""The model bundle built by the package node, and the handler run from it in isolation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import (
    MANIFEST_NAME,
    read_tar_gz,
    safe_extract,
    verify_manifest,
)

from .isolated import run_isolated


def _pipeline_scores(tiny_model, order_ids: list[str]) -> np.ndarray:
    scores = tiny_model.score_file.set_index("order_id")["score"]
    return scores.loc[order_ids].to_numpy()


def test_layout_and_manifest(tiny_package, tmp_path: Path) -> None:
    bundle, payload, output = tiny_package
    files = read_tar_gz(bundle)
    for name in (
        layout.WEIGHTS,
        layout.COMPILED_MODEL,
        layout.MODEL_CONFIG,
        layout.PERCENTILE_MAP,
        layout.BSPLINE_PARAMETERS,
        layout.CAT_TO_INDEX,
        layout.SCALING,
        layout.DEFAULT_VALUES,
        layout.RAW_SCHEMA,
        layout.PREPROCESS_PARAMS,
        layout.SERVING_CONFIG,
        layout.REFERENCE_PROFILE,
        layout.SAMPLE_PAYLOAD,
        layout.SAMPLE_OUTPUT,
        layout.ENTRY_POINT,
        layout.REQUIREMENTS,
        MANIFEST_NAME,
    ):
        assert name in files, name
    code = sorted(n for n in files if n.startswith("code/tsa_kedro/"))
    assert "code/tsa_kedro/serving/handler.py" in code
    for module in ("tensors", "encoding", "columns", "history"):
        assert f"code/tsa_kedro/features/{module}.py" in code, module
    assert "code/tsa_kedro/calibration/evaluator.py" in code
    assert not [n for n in code if "/pipelines/" in n or "/datasets/" in n]
    assert "code/tsa_kedro/calibration/r_bridge.py" not in code
    assert "code/tsa_kedro/serving/bundle.py" not in code
    requirements = files[layout.REQUIREMENTS].decode().split()
    assert [r.split("==")[0] for r in requirements] == [
        "torch",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "safetensors",
        "onnxruntime",
    ]
    assert all("==" in r and r.split("==")[1] for r in requirements)
    manifest = json.loads(files[MANIFEST_NAME])
    assert set(manifest["files"]) == set(files) - {MANIFEST_NAME}
    assert manifest["package_version"] == "0.1.0"
    assert manifest["data_windows"]["train"]["start"] == "2024-01-01"
    assert "created_at" in manifest and "git_commit" in manifest
    assert json.loads(files[layout.SAMPLE_OUTPUT]) == output
    assert json.loads(files[layout.SAMPLE_PAYLOAD]) == payload
    assert "is_fraud" not in payload[0]
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(bundle)
    safe_extract(archive, tmp_path / "x")
    verify_manifest(tmp_path / "x")


def test_rebuild_differs_only_in_the_manifest_time(tiny_model, tiny_package) -> None:
    first = read_tar_gz(tiny_package[0])
    second = read_tar_gz(tiny_model.package(tiny_package[1])[0])
    assert {k: v for k, v in first.items() if k != MANIFEST_NAME} == {
        k: v for k, v in second.items() if k != MANIFEST_NAME
    }
    manifests = [json.loads(f[MANIFEST_NAME]) for f in (first, second)]
    for manifest in manifests:
        manifest.pop("created_at")
    assert manifests[0] == manifests[1]


def test_sample_output_matches_pipeline_scores(tiny_model, tiny_package) -> None:
    _, payload, output = tiny_package
    ids = [row["order_id"] for row in output]
    assert ids == [row["order_id"] for row in payload]
    scores = np.array([row["score"] for row in output])
    np.testing.assert_allclose(scores, _pipeline_scores(tiny_model, ids), atol=1e-6)
    assert all(0.0 <= row["calibrated_probability"] <= 1.0 for row in output)


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/csv", "text/tab-separated-values"]
)
def test_unpacked_bundle_scores_like_the_pipeline_without_kedro(
    tiny_model, tiny_package, tmp_path: Path, content_type: str
) -> None:
    raw = tiny_model.raw_cali.iloc[:60]
    label = tiny_model.schema_params["label"]
    if content_type == "application/json":
        request = raw.to_json(orient="records").encode()
    else:
        sep = "," if content_type == "text/csv" else "\t"
        request = raw.drop(columns=[label]).to_csv(index=False, sep=sep).encode()
    result = run_isolated(tmp_path, tiny_package[0], request, content_type)
    assert result["kedro_imported"] == []
    code_dir = str(tmp_path / "model" / "code")
    assert result["kedro_origin"] is None or not result["kedro_origin"].startswith(
        code_dir
    )
    assert all(path.startswith(code_dir) for path in result["tsa_modules"])
    assert result["device"] == "cpu"
    assert result["compiled"] is True

    answer = result["answer"]
    assert [a["order_id"] for a in answer] == raw[
        tiny_model.schema_params["order_id"]
    ].tolist()
    scored = [a for a in answer if "score" in a]
    known = set(tiny_model.score_file["order_id"])
    # The handler scores every valid order; the pipeline scored only labelled ones.
    tags = pd.to_numeric(raw[label], errors="coerce")
    order_ids = raw[tiny_model.schema_params["order_id"]]
    unlabelled = set(order_ids[tags.isna() | (tags == -1)])
    scored_ids = {a["order_id"] for a in scored}
    assert scored_ids - known <= unlabelled
    assert known & {a["order_id"] for a in answer} <= scored_ids
    scored = [a for a in scored if a["order_id"] in known]
    assert len(scored) >= 40
    ids = [a["order_id"] for a in scored]
    np.testing.assert_allclose(
        [a["score"] for a in scored],
        _pipeline_scores(tiny_model, ids),
        atol=1e-6,
        rtol=0,
    )
    for a in scored:
        assert 0.0 <= a["percentile"] <= 100.0
        assert 0.0 < a["calibrated_probability"] < 1.0


def test_bundle_ships_the_reference_profile(tiny_model, tiny_package) -> None:
    files = read_tar_gz(tiny_package[0])
    profile = json.loads(files[layout.REFERENCE_PROFILE])
    assert profile == json.loads(json.dumps(tiny_model.reference_profile))
    assert len(files[layout.REFERENCE_PROFILE]) < 64_000  # a few KB
    assert set(profile["categorical"]) == set(tiny_model.cat_to_index)
