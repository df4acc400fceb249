from pathlib import Path

import pytest
import yaml

from tsa_kedro.schema import RawSchema, SchemaError

PARAMS = Path(__file__).parents[1] / "conf" / "base" / "parameters.yml"


def _params():
    return yaml.safe_load(PARAMS.read_text())["raw_schema"]


def test_base_schema_round_trips():
    schema = RawSchema.from_params(_params())
    assert RawSchema.from_params(schema.to_params()) == schema
    assert schema.history_column("ccid", "amount") == "ccid_hist_amount"
    assert len(schema.all_columns()) == len(set(schema.all_columns()))


def test_feature_in_two_families_is_rejected():
    params = _params()
    params["num_features"] = [*params["num_features"], params["cat_features"][0]]
    with pytest.raises(SchemaError, match="payment_method"):
        RawSchema.from_params(params)


def test_unknown_key_is_rejected():
    with pytest.raises(SchemaError, match="raw_schema parameters are invalid"):
        RawSchema.from_params({**_params(), "colour": "red"})


def test_id_types_must_be_cid_and_ccid():
    with pytest.raises(SchemaError, match="id_columns"):
        RawSchema.from_params({**_params(), "id_columns": {"cid": "cid"}})
