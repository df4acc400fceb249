"""The model code stays plain: no threads, no private torch APIs."""

from __future__ import annotations

import re
from pathlib import Path

import tsa_kedro.models

MODELS = Path(tsa_kedro.models.__file__).parent
# ``torch._C``, ``torch.utils._python_dispatch``, ``p._version``, ``m._parameters``...
PRIVATE_TORCH = re.compile(r"\btorch(\.\w+)*\._\w+|\.\_(version|parameters|buffers)\b")
THREADS = re.compile(
    r"^\s*(import|from)\s+(threading|concurrent|multiprocessing)\b|register_at_fork",
    re.MULTILINE,
)


def _sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(MODELS.glob("*.py"))}


def test_the_checks_find_what_they_look_for():
    assert PRIVATE_TORCH.search("x = torch._C._len_torch_function_stack()")
    assert PRIVATE_TORCH.search("from torch.utils._python_dispatch import mode")
    assert PRIVATE_TORCH.search("key = p._version")
    assert THREADS.search("import threading\n")
    assert THREADS.search("from concurrent import futures\n")
    assert not PRIVATE_TORCH.search("torch.nn.functional.scaled_dot_product_attention")


def test_models_use_no_private_torch_api_and_no_threads():
    sources = _sources()
    assert "tsa.py" in sources
    for name, text in sources.items():
        assert not PRIVATE_TORCH.search(text), name
        assert not THREADS.search(text), name
