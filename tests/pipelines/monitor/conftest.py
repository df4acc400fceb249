"""Orders for the monitor pipeline: like the tiny model's training orders, and the
same orders with planted shifts; the tiny bundle as an archive."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.pipelines.score import conftest as score

tiny_model = score.tiny_model
tiny_package = score.tiny_package
model_archive = score.model_archive

N_ORDERS = 400
SHIFTED_AMOUNT = "amount"  # multiplied by 10
SHIFTED_CATEGORY = "device_type"  # every value replaced by one never seen


def like_training(tiny_model) -> pd.DataFrame:
    """Training orders (every column text), as a new export would bring them."""
    return tiny_model.raw_train.sample(N_ORDERS, random_state=1).reset_index(drop=True)


def with_planted_shift(raw: pd.DataFrame) -> pd.DataFrame:
    """Amounts times ten and one categorical feature flipped to new values."""
    raw = raw.copy()
    amounts = pd.to_numeric(raw[SHIFTED_AMOUNT], errors="coerce") * 10
    raw[SHIFTED_AMOUNT] = amounts.map(lambda x: "" if pd.isna(x) else repr(float(x)))
    raw[SHIFTED_CATEGORY] = "smart-fridge"
    return raw


def write_export(raw: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True)
    half = len(raw) // 2
    raw.iloc[:half].to_parquet(folder / "part-00000.parquet", index=False)
    raw.iloc[half:].to_parquet(folder / "part-00001.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def exports(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """``{"like_training": folder, "shifted": folder}``."""
    root = tmp_path_factory.mktemp("monitor_exports")
    raw = like_training(tiny_model)
    return {
        "like_training": write_export(raw, root / "like-training"),
        "shifted": write_export(with_planted_shift(raw), root / "shifted"),
    }
