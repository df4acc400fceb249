"""The forward pass's two branches at once when scoring one order (``branches.py``)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tsa_kedro.models import (
    TSAConfig,
    TwoSeqMoEOrderFeatureAttentionClassifier,
    branches,
)
from tsa_kedro.models.tsa import PARALLEL_MAX_ORDERS, history_match_rates

from .conftest import make_batch, tiny_config


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (CI's machine has two cores), restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _probe() -> dict:
    return {
        "thread": threading.get_ident(),
        "threads": torch.get_num_threads(),
        "inference": torch.is_inference_mode_enabled(),
        "grad": torch.is_grad_enabled(),
    }


def test_branches_run_on_two_threads_with_one_intra_op_thread_each(two_threads):
    with torch.inference_mode():
        side, main = branches.run_both(_probe, _probe)
    caller = threading.get_ident()
    assert main["thread"] == caller
    assert side["thread"] != caller
    assert (side["threads"], main["threads"]) == (1, 1)
    assert torch.get_num_threads() == 2  # restored
    # A thread started afterwards takes up the restored default.
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert seen == [2]


def test_the_split_follows_the_callers_thread_count(two_threads):
    branches.run_both(_probe, _probe)  # the side thread has run with one thread
    torch.set_num_threads(4)
    side, main = branches.run_both(_probe, _probe)
    assert (side["threads"], main["threads"]) == (2, 2)
    assert torch.get_num_threads() == 4
    torch.set_num_threads(3)
    side, main = branches.run_both(_probe, _probe)
    assert (side["threads"], main["threads"]) == (1, 2)


def test_the_side_thread_inherits_the_autograd_mode(two_threads):
    with torch.inference_mode():
        side, _ = branches.run_both(_probe, _probe)
    assert side["inference"] and not side["grad"]
    with torch.no_grad():
        side, _ = branches.run_both(_probe, _probe)
    assert not side["inference"] and not side["grad"]


def test_one_intra_op_thread_runs_both_branches_on_the_caller():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert not branches.available()
        side, main = branches.run_both(_probe, _probe)
    finally:
        torch.set_num_threads(before)
    assert side["thread"] == main["thread"] == threading.get_ident()


def test_a_branch_run_from_the_side_thread_stays_there(two_threads):
    def nested():
        return branches.run_both(_probe, _probe)

    (inner_side, inner_main), _ = branches.run_both(nested, _probe)
    assert inner_side["thread"] == inner_main["thread"]


def test_operator_modes_keep_both_branches_on_the_caller(config, two_threads):
    """Dispatch and function modes are thread-local: a FLOP count (or a device
    context) must see every operation, so the branches run here under them."""
    model = _model(config)
    batch = make_batch(config, [5], [4])
    counts = {}
    with torch.no_grad():
        for parallel in (True, False):
            model.parallel_branches = parallel
            with FlopCounterMode(display=False) as counter:
                assert not branches.available()
                model(*batch)
            counts[parallel] = counter.get_total_flops()
        with torch.device("cpu"):
            assert not branches.available()
        assert branches.available()
    assert counts[True] == counts[False] > 0


def test_the_caller_waits_for_the_side_branch_when_its_own_raises(two_threads):
    finished = threading.Event()

    def slow_side():
        time.sleep(0.2)
        finished.set()

    def failing_main():
        raise RuntimeError("main branch failed")

    with pytest.raises(RuntimeError, match="main branch failed"):
        branches.run_both(slow_side, failing_main)
    assert finished.is_set()
    assert torch.get_num_threads() == 2


def test_an_error_on_the_side_thread_reaches_the_caller(two_threads):
    def failing_side():
        raise ValueError("side branch failed")

    with pytest.raises(ValueError, match="side branch failed"):
        branches.run_both(failing_side, _probe)
    assert torch.get_num_threads() == 2


def _in_child(queue) -> None:
    torch.set_num_threads(2)
    side, main = branches.run_both(_probe, _probe)
    queue.put(side["thread"] != main["thread"])


def test_a_forked_process_gets_its_own_side_thread(two_threads):
    branches.run_both(_probe, _probe)  # the parent's side thread exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("run_both hung in a forked child")
    assert child.exitcode == 0
    assert queue.get(timeout=5) is True


def _model(config) -> TwoSeqMoEOrderFeatureAttentionClassifier:
    torch.manual_seed(0)
    return TwoSeqMoEOrderFeatureAttentionClassifier(config).eval()


@pytest.mark.parametrize("ccid_length", [1, 4])  # without and with a card history
def test_parallel_branches_score_as_one_after_the_other(
    config, two_threads, ccid_length
):
    model = _model(config)
    batch = make_batch(config, [5], [ccid_length])
    outputs = {}
    for parallel in (True, False):
        model.parallel_branches = parallel
        with torch.inference_mode():
            assert model._parallel(batch[4]) is parallel
            outputs[parallel] = model.forward_details(*batch)
    for key in ("logits", "gate_weights"):
        torch.testing.assert_close(
            outputs[True][key], outputs[False][key], rtol=0, atol=1e-6
        )


def test_branches_run_at_once_only_to_score_one_order(config, two_threads):
    model = _model(config)
    model.parallel_branches = True
    one = make_batch(config, [5], [4])[4]
    more = make_batch(
        config, [5] * (PARALLEL_MAX_ORDERS + 1), [4] * (PARALLEL_MAX_ORDERS + 1)
    )[4]
    assert not model._parallel(one)  # autograd on
    with torch.no_grad():
        assert model._parallel(one)
        assert not model._parallel(more)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not model._parallel(one)
        model.train()
        assert not model._parallel(one)
        model.eval()
        model.parallel_branches = False
        assert not model._parallel(one)


@pytest.mark.parametrize(
    ("preset", "widths", "parallel"),
    [
        ("production", (109, 67, 297, 51), True),
        ("production", (40, 30, 100, 51), False),  # measured slower at once
        ("small", (109, 67, 297, 51), False),
        ("small", (12, 10, 40, 32), False),  # the default run's model
    ],
)
def test_only_models_with_two_large_branches_run_them_at_once(preset, widths, parallel):
    n_cat, n_num, n_eng, seq_len = widths
    config = TSAConfig.preset(
        preset,
        n_cat_features=n_cat,
        n_num_features=n_num,
        n_eng_features=n_eng,
        seq_len=seq_len,
        vocab_size=50,
    )
    feature, sequences = branches.branch_flops(config)
    assert feature > 0 and sequences > 0
    assert (
        TwoSeqMoEOrderFeatureAttentionClassifier(config).parallel_branches is parallel
    )


def test_branch_estimates_grow_with_the_work():
    config = tiny_config()
    feature, sequences = branches.branch_flops(config)
    more_features = branches.branch_flops(tiny_config(n_eng_features=40))
    longer = branches.branch_flops(tiny_config(seq_len=21))
    assert more_features[0] > feature and more_features[1] == sequences
    assert longer[1] > 2 * sequences and longer[0] == feature


def test_training_with_categorical_dropout_matches_rates_of_the_real_histories(
    two_threads,
):
    """The match rates read the histories before categorical dropout (the branch
    closures must keep that order)."""
    config = tiny_config(history_match_features=True, categorical_dropout=0.9)
    model = _model(config).train()
    batch = make_batch(config, [6, 3], [5, 1])
    seen = []
    hook = model.feature_attention.register_forward_pre_hook(
        lambda module, args: seen.append(args[3].clone())
    )
    try:
        torch.manual_seed(3)
        model(*batch)
    finally:
        hook.remove()
    expected = torch.cat(
        [
            batch[4],
            history_match_rates(batch[0], batch[1][..., -1]),
            history_match_rates(batch[2], batch[3][..., -1]),
        ],
        dim=1,
    )
    torch.testing.assert_close(seen[0], expected)
