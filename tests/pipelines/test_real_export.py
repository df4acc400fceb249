"""A team's own export, end to end through the real ``kedro`` CLI.

The export is the production-format sample checked in under tests/data (TSV gz, every
column text, numeric codes written ``3`` and ``3.0``, null tokens, empty histories),
read with the ``production_sample`` environment from a folder given on the command
line: ``kedro run -e production_sample --params=raw_export=<folder>``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.startup import bootstrap_project

from tsa_kedro.datasets import TensorBundleDataset
from tsa_kedro.features.numeric_codes import canonical_code
from tsa_kedro.schema import ID_TYPES, RawSchema
from tsa_kedro.serving import handler
from tsa_kedro.serving.archive import safe_extract

PROJECT = Path(__file__).resolve().parents[2]
SAMPLE = PROJECT / "tests" / "data" / "production_sample"
ENV = "production_sample"
SMALL_RUN = [
    "preprocess.workers=2",
    "train.training.epochs=1",
    "train.training.progress=False",
    # every training value gets a row, so no real training cell may encode to 0
    "fit_transforms.min_frequency=1",
    # one epoch on a small sample: this test is about the data path, the gate has
    # its own tests
    "register_gate.tsa_not_worse_than_baseline_pr_auc.margin=1.0",
    "register_gate.validation_pr_auc.min=0.0",
    "register_gate.validation_roc_auc.min=0.0",
    "register_gate.validation_queue_recall.min=0.0",
    "register_gate.calibration_not_worse_than_raw.margin=1.0",
]


def _schema() -> RawSchema:
    params = yaml.safe_load((PROJECT / "conf" / ENV / "parameters.yml").read_text())
    return RawSchema.from_params(params["raw_schema"])


def test_default_pipeline_reads_the_export_and_demo_adds_the_generator() -> None:
    bootstrap_project(PROJECT)
    from kedro.framework.project import pipelines  # noqa: PLC0415 (needs bootstrap)

    default = {n.name for n in pipelines["__default__"].nodes}
    demo = {n.name for n in pipelines["demo"].nodes}
    assert "generate_synthetic_orders" not in default
    assert "raw_orders" in pipelines["__default__"].inputs()
    assert demo == default | {"generate_synthetic_orders"}
    assert {"download_train", "register_model"} <= default


def test_kedro_run_without_an_export_says_what_to_do_in_one_line(kedro_cli) -> None:
    result = kedro_cli("run", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "No raw order export" in line]
    assert len(lines) == 1, output[-3000:]
    assert "kedro run --pipeline=demo" in lines[0]
    assert str(kedro_cli.data_root / "01_raw" / "orders") in lines[0]
    assert not (kedro_cli.data_root / "02_intermediate").exists()


def test_registry_list_shows_demo(kedro_cli) -> None:
    listed = kedro_cli("registry", "list").stdout
    assert "- demo" in listed
    assert "- __default__" in listed


def _respelled(frame: pd.DataFrame, schema: RawSchema, spell) -> pd.DataFrame:
    """``frame`` with every numeric code (current order and history tokens) passed
    through ``spell``."""
    out = frame.copy()
    for feature in schema.numeric_cat_features:
        out[feature] = [
            v if v in schema.null_tokens else spell(canonical_code(v))
            for v in out[feature]
        ]
        for id_type in ID_TYPES:
            column = schema.history_column(id_type, feature)
            out[column] = [
                "~".join(
                    t if t in schema.null_tokens else spell(canonical_code(t))
                    for t in history.split("~")
                )
                if history
                else history
                for history in out[column]
            ]
    return out


@pytest.mark.slow
def test_kedro_run_on_the_sample_export_registers_a_model(
    kedro_cli, tmp_path: Path
) -> None:
    export = tmp_path / "exports" / "2024"
    shutil.copytree(SAMPLE, export)
    (export / "_SUCCESS").write_text("")  # marker files of export jobs are skipped
    kedro_cli(
        "run", "-e", ENV, "--params=" + ",".join([*SMALL_RUN, f"raw_export={export}"])
    )

    root = kedro_cli.data_root
    schema = _schema()
    decision = json.loads(
        (root / "08_reporting" / "registration_decision.json").read_text()
    )
    assert decision["registered"] is True, decision["reason"]
    ingest = json.loads((root / "08_reporting/train/ingest_report.json").read_text())
    rewritten = ingest["numeric_codes_canonicalised"]
    assert set(rewritten) == set(schema.numeric_cat_features)
    assert all(count > 0 for count in rewritten.values()), rewritten

    # one vocabulary row per code, whatever its spelling in the export
    cat_to_index = json.loads((root / "04_feature" / "cat_to_index.json").read_text())
    for feature in schema.numeric_cat_features:
        assert all(v == canonical_code(v) for v in cat_to_index[feature]), feature
    # every real training cell (current order and both histories) has a row
    train = TensorBundleDataset(
        filepath=str(root / "05_model_input" / "train" / "model_input")
    ).load()
    for id_type in ID_TYPES:
        real = train[f"X_seq_num_{id_type}"][:, :, -1] == 1
        codes = train[f"X_seq_cat_{id_type}"][real]
        assert real.sum() > len(train["Y"]), "the sample has histories"
        assert (codes > 0).all(), f"{id_type}: {(codes == 0).mean():.2%} unknown"

    # the packaged model scores an order the same whichever way its codes are written
    model_dir = tmp_path / "model"
    safe_extract(root / "06_models" / "model.tar.gz", model_dir)
    predictor = handler.model_fn(str(model_dir))
    raw = pd.read_csv(
        SAMPLE / "orders_2024-05.tsv.gz",
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_filter=False,
    ).iloc[100:140]
    plain = _respelled(raw, schema, lambda code: code)
    with_point = _respelled(raw, schema, lambda code: f" {code}.0")
    typed = plain.copy()
    for feature in schema.numeric_cat_features:
        typed[feature] = pd.to_numeric(
            typed[feature].replace(list(schema.null_tokens), np.nan)
        ).astype(float)
    answers = [predictor.predict(frame) for frame in (plain, with_point, typed, raw)]
    scores = [[a.get("score") for a in answer] for answer in answers]
    assert sum(s is not None for s in scores[0]) >= 30
    for other in scores[1:]:
        assert other == scores[0]
