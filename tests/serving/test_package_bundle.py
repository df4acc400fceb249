"""The model bundle built by the package node, and the handler run from it in isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tsa_kedro.serving import layout
from tsa_kedro.serving.archive import MANIFEST_NAME, read_tar_gz, safe_extract, verify_manifest

ISOLATED_SCRIPT = r"""
import importlib.util, json, sys
code_dir, model_dir, request_path, content_type = sys.argv[1:5]
import inference
import tsa_kedro
assert tsa_kedro.__file__.startswith(code_dir), tsa_kedro.__file__
model = inference.model_fn(model_dir)
body = open(request_path, "rb").read()
answer = inference.output_fn(
    inference.predict_fn(inference.input_fn(body, content_type), model),
    "application/json",
)
spec = importlib.util.find_spec("kedro")
print(json.dumps({
    "answer": json.loads(answer),
    "kedro_imported": sorted(m for m in sys.modules if m.split(".")[0] in ("kedro", "rpy2", "mlflow")),
    "kedro_origin": spec.origin if spec else None,
    "tsa_modules": sorted(
        m.__file__ for n, m in list(sys.modules.items())
        if n.startswith("tsa_kedro") and getattr(m, "__file__", None)
    ),
    "device": str(model.device),
}))
"""


def _run_isolated(
    tmp_path: Path, bundle: bytes, request: bytes, content_type: str
) -> dict:
    """Unpack the bundle in an empty folder and call the handler in a fresh
    interpreter whose path is only the bundle's code/ and the venv's site-packages."""
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(bundle)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert list(model_dir.iterdir()) == []
    safe_extract(archive, model_dir)
    code_dir = model_dir / "code"
    request_path = tmp_path / "request.body"
    request_path.write_bytes(request)
    site_packages = sysconfig.get_paths()["purelib"]
    # -S: no site module, so sys.path is the standard library only; keep that, drop
    # the working folder, add code/ first and the venv's site-packages last.
    bootstrap = (
        f"import sys; sys.path[:] = [{str(code_dir)!r}, *filter(None, sys.path), "
        f"{site_packages!r}]; "
        f"exec(open({str(tmp_path / 'probe.py')!r}).read())"
    )
    (tmp_path / "probe.py").write_text(ISOLATED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [sys.executable, "-S", "-c", bootstrap, str(code_dir), str(model_dir),
         str(request_path), content_type],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pipeline_scores(tiny_model, order_ids: list[str]) -> np.ndarray:
    scores = tiny_model.score_file.set_index("order_id")["score"]
    return scores.loc[order_ids].to_numpy()


def test_layout_and_manifest(tiny_package, tmp_path: Path) -> None:
    bundle, payload, output = tiny_package
    files = read_tar_gz(bundle)
    for name in (
        layout.WEIGHTS, layout.MODEL_CONFIG, layout.PERCENTILE_MAP,
        layout.BSPLINE_PARAMETERS, layout.CAT_TO_INDEX, layout.SCALING,
        layout.DEFAULT_VALUES, layout.RAW_SCHEMA, layout.PREPROCESS_PARAMS,
        layout.SERVING_CONFIG, layout.SAMPLE_PAYLOAD, layout.SAMPLE_OUTPUT,
        layout.ENTRY_POINT, layout.REQUIREMENTS, MANIFEST_NAME,
    ):
        assert name in files, name
    code = sorted(n for n in files if n.startswith("code/tsa_kedro/"))
    assert "code/tsa_kedro/serving/handler.py" in code
    assert "code/tsa_kedro/features/tensors.py" in code
    assert "code/tsa_kedro/calibration/evaluator.py" in code
    assert not [n for n in code if "/pipelines/" in n or "/datasets/" in n]
    assert "code/tsa_kedro/calibration/r_bridge.py" not in code
    assert "code/tsa_kedro/serving/bundle.py" not in code
    requirements = files[layout.REQUIREMENTS].decode().split()
    assert [r.split("==")[0] for r in requirements] == [
        "torch", "numpy", "pandas", "pyarrow", "scipy", "safetensors",
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


@pytest.mark.parametrize("content_type", ["application/json", "text/csv", "text/tab-separated-values"])
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
    result = _run_isolated(tmp_path, tiny_package[0], request, content_type)
    assert result["kedro_imported"] == []
    code_dir = str(tmp_path / "model" / "code")
    assert result["kedro_origin"] is None or not result["kedro_origin"].startswith(code_dir)
    assert all(path.startswith(code_dir) for path in result["tsa_modules"])
    assert result["device"] == "cpu"

    answer = result["answer"]
    assert [a["order_id"] for a in answer] == raw[tiny_model.schema_params["order_id"]].tolist()
    scored = [a for a in answer if "score" in a]
    known = set(tiny_model.score_file["order_id"])
    assert {a["order_id"] for a in scored} == known & {a["order_id"] for a in answer}
    assert len(scored) >= 50
    ids = [a["order_id"] for a in scored]
    np.testing.assert_allclose(
        [a["score"] for a in scored], _pipeline_scores(tiny_model, ids), atol=1e-6, rtol=0
    )
    for a in scored:
        assert 0.0 <= a["percentile"] <= 100.0
        assert 0.0 < a["calibrated_probability"] < 1.0
