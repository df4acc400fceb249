"""Scoring one order on CPU: two independent branches of the forward pass at once.

The feature-attention branch does not depend on the two order-attention stacks, and at
one order neither keeps two CPU threads busy: their operations are too small for
intra-op parallelism to pay (one thread to two speeds them up 1.4x and 1.6x, not 2x).
``run_both`` runs one branch on a side thread while the calling thread runs the other,
and splits the intra-op threads between them (two threads: one each), so the two cores
work on different operations instead of sharing each small one.

Thread counts: PyTorch's OpenMP backend keeps the intra-op thread count per thread
(``omp_set_num_threads``), plus a process-wide default that a thread takes up when it
first runs a parallel operation. ``run_both`` sets the caller's count to its share for
the duration and restores it afterwards; the side thread sets its own share at the
start of every task. (PyTorch sets the process-wide default along with the caller's
count, so a thread that runs its first parallel operation inside that window starts
with the caller's share.) Nothing else changes: autograd and inference mode, which are
thread-local, are carried over to the side thread, and the caller waits for the side
task even when its own branch raises.

It pays only when both branches are large: handing work to another thread and the
interpreter lock they share cost a few hundred microseconds, and while one branch runs
alone its thread has a single core. ``branch_flops`` estimates each branch's work per
order from the config; the model runs them at once when both reach
``PARALLEL_MIN_FLOPS``. Measured (one order, full histories, two CPU threads; ratio of
one-after-the-other to at-once forward times, per-order estimates in MFLOP):

    preset / widths (cat, num, eng)        feature  sequences  ratio
    production / 109, 67, 297                  416        320   1.09
    production, E 32, FF 128 / 109, 67, 297   162        119   1.12
    production / 40, 30, 100                    97        202   0.94
    production / 12, 10, 40                     29        112   0.94
    small, 4 feature layers / 109, 67, 297     140         40   1.08
    small / 109, 67, 297                        35         40   1.01
    small / 12, 10, 40 (the default run)         1          3   0.88

Concurrent callers share one side thread, so their side tasks run one after another.
After ``os.fork`` the child makes its own side thread (a forked process has none).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from tsa_kedro.models.config import TSAConfig
from tsa_kedro.models.feature_reduction import halving_widths

# Both branches' estimated work per order must reach this (see the table above).
PARALLEL_MIN_FLOPS = 100e6

A = TypeVar("A")
B = TypeVar("B")


class _SideThread:
    """The process's one side thread, started on first use (again after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: futures.ThreadPoolExecutor | None = None

    def submit(self, task: Callable[[], A]) -> futures.Future[A]:
        with self._lock:
            if self._executor is None:
                self._executor = futures.ThreadPoolExecutor(
                    1, thread_name_prefix="tsa-branch", initializer=_mark_side
                )
            executor = self._executor
        return executor.submit(task)

    def forget(self) -> None:
        """In a forked child: the parent's thread is not there; start afresh."""
        self._lock = threading.Lock()
        self._executor = None


_side_thread = _SideThread()
os.register_at_fork(after_in_child=_side_thread.forget)
_side = threading.local()


def _mark_side() -> None:
    _side.active = True


def branch_flops(config: TSAConfig) -> tuple[float, float]:
    """Estimated floating-point operations per order of the feature-attention branch
    and of the two order-attention stacks (matrix products and attention only)."""
    E, F, L = config.dim_embedding, config.dim_feedforward, config.seq_len
    T = config.n_cat_features + config.n_num_features + config.n_dense_features + 1
    feature = config.n_layers_feature * (2 * T * E * (4 * E + 2 * F) + 4 * T * T * E)
    feature += 2 * (T - 1) * E * config.feature_mlp_hidden

    def reducer(n_features: int) -> int:
        widths = halving_widths(n_features)
        return 2 * L * E * sum(a * b for a, b in zip(widths, widths[1:]))

    D = 2 * E
    n_step_num = config.n_num_features + int(config.time_delta_feature)
    stack = reducer(config.n_cat_features) + reducer(n_step_num)
    stack += config.n_layers_order * (
        2 * (L + 1) * D * (4 * D + 2 * F) + 4 * (L + 1) ** 2 * D
    )
    return float(feature), float(2 * stack)


def available() -> bool:
    """Whether ``run_both`` would run the branches at once here: at least two intra-op
    threads, not called from the side thread itself, and no Python dispatch or
    function mode active (they are thread-local: a ``FlopCounterMode`` or a
    ``torch.device`` context would not see the side thread's operations)."""
    return (
        torch.get_num_threads() >= 2
        and not getattr(_side, "active", False)
        and _get_current_dispatch_mode() is None
        and torch._C._len_torch_function_stack() == 0
    )


def run_both(side: Callable[[], A], main: Callable[[], B]) -> tuple[A, B]:
    """``(side(), main())``, the first on the side thread, the second on this one.

    Meant for CPU tensors with autograd off (the caller checks); with fewer than two
    intra-op threads, or from the side thread, both run here one after the other.

    Raises:
        Whatever either branch raises; the caller's exception first.
    """
    threads = torch.get_num_threads()
    if not available():
        return side(), main()
    side_threads = threads // 2
    inference = torch.is_inference_mode_enabled()

    def task() -> A:
        torch.set_num_threads(side_threads)
        with torch.inference_mode() if inference else torch.no_grad():
            return side()

    torch.set_num_threads(threads - side_threads)
    try:
        future = _side_thread.submit(task)
        try:
            main_result = main()
        except BaseException:
            futures.wait([future])
            raise
        return future.result(), main_result
    finally:
        torch.set_num_threads(threads)
