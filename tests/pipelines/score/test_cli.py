"""``kedro run --pipeline=score`` end to end: local files, and S3 on a moto server."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import s3fs

from tsa_kedro.serving.handler import TSAPredictor

BATCH = 25


def expected_answers(model_dir: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """What the inference handler answers for the same orders, file by file."""
    predictor = TSAPredictor.from_model_dir(model_dir, device="cpu")
    half = len(raw) // 2
    answers = [*predictor.predict(raw.iloc[:half]), *predictor.predict(raw.iloc[half:])]
    return pd.DataFrame(answers).set_index("order_id")


def check_scores(scores: pd.DataFrame, raw: pd.DataFrame, expected, rejected: str):
    assert len(scores) == len(raw)
    assert sorted(scores["order_id"]) == sorted(raw["order_id"])
    scores = scores.set_index("order_id").loc[expected.index]
    ok = expected["error"].isna() if "error" in expected else slice(None)
    for column in ("score", "calibrated_probability", "percentile"):
        np.testing.assert_allclose(
            scores.loc[ok, column].to_numpy(float),
            expected.loc[ok, column].to_numpy(float),
            rtol=0,
            atol=1e-6,
        )
    assert scores["error"].notna().sum() == 1
    assert "negative_delta_cid" in scores.loc[rejected, "error"]
    assert scores.loc[rejected, ["score", "percentile"]].isna().all()
    assert scores.loc[scores["error"].isna(), "score"].notna().all()
    assert scores["model_name"].eq("model.tar.gz").all()
    assert scores["model_version"].str.fullmatch(r"sha256:[0-9a-f]{12}").all()
    assert str(scores["scored_at"].dt.tz) in ("UTC", "Etc/UTC")


def test_score_run_writes_parquet_duckdb_and_summary(
    kedro_cli, score_export, model_archive, model_dir
):
    export, raw, rejected = score_export
    expected = expected_answers(model_dir, raw)
    assert expected["error"].notna().sum() == 1
    data = kedro_cli.data_root

    empty = export.parent / "empty"
    empty.mkdir()
    nothing = kedro_cli(
        "run",
        "--pipeline=score",
        f"--params=score_export={empty},score.model={model_archive}",
        check=False,
    )
    assert nothing.returncode != 0
    output = nothing.stdout + nothing.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "No orders to score" in line]
    assert len(lines) == 1 and str(empty) in lines[0], output[-3000:]

    broken = export.parent / "broken"
    broken.mkdir()
    raw.drop(columns=["cid_hist_ts"]).to_parquet(broken / "part-00000.parquet")
    failed = kedro_cli(
        "run",
        "--pipeline=score",
        f"--params=score_export={broken},score.model={model_archive}",
        check=False,
    )
    assert failed.returncode != 0
    assert "part-00000" in failed.stderr + failed.stdout
    assert "cid_hist_ts" in failed.stderr + failed.stdout
    assert not (data / "07_model_output" / "scores").exists()
    assert not (data / "08_reporting" / "scores.duckdb").exists()

    kedro_cli(
        "run",
        "--pipeline=score",
        f"--params=score_export={export},score.model={model_archive},"
        f"score.batch_orders={BATCH}",
    )
    folder = data / "07_model_output" / "scores"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"batch-{i:05d}.parquet" for i in range(4)]  # 30 + 30 orders
    scores = pd.read_parquet(folder)
    assert list(scores.columns) == [
        "order_id",
        "score",
        "calibrated_probability",
        "percentile",
        "model_name",
        "model_version",
        "scored_at",
        "error",
    ]
    check_scores(scores, raw, expected, rejected)

    with duckdb.connect(
        str(data / "08_reporting" / "scores.duckdb"), read_only=True
    ) as con:
        table = con.execute("select * from scores").df()
        nulls = con.execute(
            "select order_id, error from scores where score is null"
        ).fetchall()
    check_scores(table, raw, expected, rejected)
    assert [n[0] for n in nulls] == [rejected]

    summary = json.loads((data / "08_reporting" / "score_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == len(raw)
    assert summary["scored"] == len(raw) - 1
    assert summary["rejected_by_reason"] == {"negative_delta_cid": 1}
    assert summary["model"]["name"] == "model.tar.gz"
    assert summary["batches"] == 4
    assert summary["score_quantiles"]["q50"] == pytest.approx(
        float(expected["score"].median()), abs=1e-6
    )


def test_score_run_reads_and_writes_s3(
    kedro_cli, score_export, model_archive, model_dir, s3_bucket, aws_env
):
    export, raw, rejected = score_export
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": aws_env["AWS_ENDPOINT_URL"]})
    fs.put(f"{export}/", f"{s3_bucket}/new-orders/", recursive=True)
    fs.put(str(model_archive), f"{s3_bucket}/models/model.tar.gz")
    kedro_cli(
        "run",
        "--pipeline=score",
        "-e",
        "s3",
        f"--params=score_export=s3://{s3_bucket}/new-orders/,"
        f"score.model=s3://{s3_bucket}/models/model.tar.gz",
        env={**aws_env, "TSA_S3_BUCKET": s3_bucket, "TSA_S3_PREFIX": "data"},
    )
    root = f"{s3_bucket}/data"
    assert fs.ls(f"{root}/07_model_output/scores") == [
        f"{root}/07_model_output/scores/batch-00000.parquet",
        f"{root}/07_model_output/scores/batch-00001.parquet",
    ]
    with (
        fs.open(f"{root}/07_model_output/scores/batch-00000.parquet") as f0,
        fs.open(f"{root}/07_model_output/scores/batch-00001.parquet") as f1,
    ):
        scores = pd.concat([pd.read_parquet(f0), pd.read_parquet(f1)])
    expected = expected_answers(model_dir, raw)
    check_scores(scores, raw, expected, rejected)
    local = kedro_cli.data_root / "scores.duckdb"
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get(f"{root}/08_reporting/scores.duckdb", str(local))
    with duckdb.connect(str(local), read_only=True) as con:
        assert con.execute("select count(*) from scores").fetchone()[0] == len(raw)
    summary = json.loads(fs.cat(f"{root}/08_reporting/score_summary.json"))
    assert summary["rejected"] == 1
