"""``kedro run --pipeline=score`` then ``--pipeline=monitor`` through the CLI: the
report is written, then the run fails naming the shifted features."""

from __future__ import annotations

import json

from .conftest import SHIFTED_AMOUNT, SHIFTED_CATEGORY


def test_score_then_monitor_writes_the_report_then_fails(
    kedro_cli, exports, model_archive
):
    data = kedro_cli.data_root
    params = f"score_export={exports['shifted']},score.model={model_archive}"
    kedro_cli("run", "--pipeline=score", f"--params={params}")
    failed = kedro_cli("run", "--pipeline=monitor", f"--params={params}", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "monitor.psi_fail" in line]
    assert lines, output[-3000:]
    assert SHIFTED_AMOUNT in output and SHIFTED_CATEGORY in output

    reporting = data / "08_reporting"
    summary = json.loads((reporting / "drift_summary.json").read_text())
    assert summary["status"] == "fail"
    assert set(summary["failed"]) == {SHIFTED_AMOUNT, SHIFTED_CATEGORY}
    page = (reporting / "drift_report.html").read_text()
    assert SHIFTED_AMOUNT in page and "<script" not in page
    assert (reporting / "drift_psi.png").stat().st_size > 0

    kedro_cli(
        "run", "--pipeline=monitor", f"--params={params},monitor.fail_run_on=never"
    )
