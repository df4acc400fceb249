"""Running the handler of an unpacked bundle in a fresh, Kedro-free interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tsa_kedro.serving.archive import safe_extract

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
    "compiled": model.compiled is not None,
}))
"""


def run_isolated(
    tmp_path: Path, bundle: bytes, request: bytes, content_type: str
) -> dict:
    """Unpack the bundle in an empty folder and call the handler in a fresh
    interpreter whose path is only the bundle's code/ and the venv's site-packages."""
    tmp_path.mkdir(parents=True, exist_ok=True)
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
        [
            sys.executable,
            "-S",
            "-c",
            bootstrap,
            str(code_dir),
            str(model_dir),
            str(request_path),
            content_type,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
