"""One schema for every parameter of the project, checked when a Kedro context starts.

``ParameterCheckHook`` (registered in ``settings.py``) validates the merged parameters
of the run's environment, ``--params`` included, before any node runs, and stops with
one line per bad value that names the parameter, the value and what is allowed::

    parameter train.training.lr: 'abc' is not a number
    parameter preprocess.start_method: 'thread' is not allowed; allowed: 'spawn' or
    'forkserver'

Rejected: a value of the wrong type (strictly: ``"5"`` is not a number, ``1`` is not
``true``), a number out of its range, NaN or infinity, a value outside its list of
choices, a missing key that ``conf/base`` sets, and an unknown key (a misspelt override
would otherwise be ignored without a word). Three blocks are open, their known keys
typed and other keys let through, because they grow with the code that reads them and
that code refuses what it cannot use: ``raw_schema``, ``fit_transforms`` and
``ingest``. Checks that span several values reuse the code that applies them: ingest
windows (``split_windows``), synthetic profiles (``SyntheticConfig``) and model
overrides (``TSAConfig``). ``ParameterError`` is a click error: the ``kedro`` command
prints its lines without a traceback. docs/source/configuration.md describes every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import click
from kedro.framework.hooks import hook_impl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from tsa_kedro.synthetic.config import SyntheticConfig, SyntheticConfigError

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# The drop reasons of tsa_kedro.features.tensors.DROP_REASONS, without the id type.
DropReason = Literal[
    "unlabelled", "ragged_history", "missing_history_timestamp", "negative_delta"
]


class ParameterError(click.ClickException, ValueError):
    """Parameters the schema refuses; one line per bad value."""


def _refuse(message: str) -> PydanticCustomError:
    """A whole line, shown as it is (it names the parameter itself)."""
    return PydanticCustomError("parameter", "{message}", {"message": message})


def _invalid(problem: str) -> PydanticCustomError:
    """What is wrong with the value at the error's location."""
    return PydanticCustomError("invalid", "{problem}", {"problem": problem})


class _Block(BaseModel):
    """A block whose keys are all known: any other key is refused by name."""

    model_config = ConfigDict(**_STRICT, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and cls.model_config.get("extra") == "forbid":
            known = [field.alias or name for name, field in cls.model_fields.items()]
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise _invalid(f"unknown key(s) {unknown}; allowed: {', '.join(known)}")
        return data


class _OpenBlock(_Block):
    """A block whose known keys are typed and whose other keys pass unchecked."""

    model_config = ConfigDict(**_STRICT, extra="allow")


# --- raw_schema (parameters.yml) ------------------------------------------------------


class RawSchemaParams(_OpenBlock):
    """``raw_schema``: column names; ``tsa_kedro.schema.RawSchema`` checks the rest."""

    order_id: str
    timestamp: str
    label: str
    id_columns: dict[str, str]
    cat_features: list[str]
    num_features: list[str]
    eng_features: list[str]
    history_value_template: str
    history_order_id_template: str
    history_timestamp_template: str
    separator: str
    null_tokens: list[str]
    # Optional: RawSchema's defaults apply when they are left out.
    numeric_cat_features: list[str] = []
    earliest_order_date: str = "2000-01-01"
    max_abs_number: PositiveFloat = 1.0e15


# --- synthetic (parameters_synthetic.yml) ---------------------------------------------


@with_config(ConfigDict(**_STRICT, extra="allow"))
class SyntheticProfileParams(TypedDict, total=False):
    """One of ``synthetic_profiles``: any field of ``SyntheticConfig``, each optional;
    its ranges and unknown keys are ``SyntheticConfig``'s to refuse."""

    seed: int
    start_date: str
    end_date: str
    n_customers: int
    orders_per_customer_per_day: float
    extra_cards_per_customer: float
    shared_card_rate: float
    n_merchants: int
    terminals_per_merchant: int
    favourite_terminals: int
    history_length: int
    null_token_rate: float
    unlabelled_rate: float
    ragged_history_rate: float
    future_history_rate: float
    fraud_rate: float
    fraud_mix: dict[str, float]
    compromised_terminal_weeks: int
    compromised_terminal_orders_per_day: float
    compromised_customer_days: int
    compromised_customer_orders_per_day: float
    amount_multiplier: float
    card_testing_burst: list[int]
    card_testing_cashout_rate: float
    velocity_burst: list[int]
    small_amount_max: float
    partition_by: str
    output_format: str
    numeric_code_float_rate: float


# --- ingest (parameters_ingest.yml) ---------------------------------------------------


class WindowParams(_Block):
    """``ingest.windows.<split>``: ``YYYY-MM-DD`` days, checked by ``split_windows``."""

    start: Any
    end: Any


class WindowsParams(_Block):
    """``ingest.windows``."""

    train: WindowParams
    vali: WindowParams
    cali: WindowParams


class IngestParams(_OpenBlock):
    """``ingest``."""

    chunk_size: PositiveInt
    ragged_tolerance: Fraction
    windows: WindowsParams

    @model_validator(mode="after")
    def _windows_in_order(self) -> IngestParams:
        # Imported here: the ingest package loads pandas, and settings.py imports
        # this module for every kedro command.
        from tsa_kedro.pipelines.ingest.windows import (  # noqa: PLC0415
            IngestConfigError,
            split_windows,
        )

        try:
            split_windows({"windows": self.windows.model_dump()})
        except IngestConfigError as error:
            raise _refuse(str(error)) from None
        return self


# --- fit_transforms (parameters_fit_transforms.yml) -----------------------------------


class FitTransformsParams(_OpenBlock):
    """``fit_transforms``."""

    min_frequency: PositiveInt
    categorical_default: Literal["mode", "unknown"]
    numerical_default: Literal["median", "zero"]
    default_overrides: dict[str, Any]
    median_sample_rows: PositiveInt
    seed: int
    log_scale: list[str]


# --- preprocess (parameters_preprocess.yml) -------------------------------------------


class DownsampleParams(_Block):
    """``preprocess.downsample.<split>``: null keeps every negative."""

    target_positive_rate: OpenFraction | None
    seed: int = 0  # optional: only a rate needs a seed


class DownsampleSplitsParams(_Block):
    """``preprocess.downsample``."""

    train: DownsampleParams
    vali: DownsampleParams
    cali: DownsampleParams


class PreprocessRayParams(_Block):
    """``preprocess.ray`` (used when ``preprocess.engine`` is ``ray``)."""

    # null: RAY_ADDRESS if set, else an embedded Ray instance.
    address: Annotated[str, Field(min_length=1)] | None = None
    local_num_cpus: PositiveInt | None = (
        None  # the embedded instance's CPUs (null: all)
    )
    num_cpus: PositiveFloat = 1.0  # CPUs each chunk's task reserves


class PreprocessParams(_Block):
    """``preprocess``."""

    seq_len: PositiveInt
    delta_cap_seconds: PositiveFloat
    scaled_clip: PositiveFloat
    # Share of a split's rows each drop reason may remove; a reason left out: 1.
    max_drop_share: dict[DropReason, Fraction]
    workers: PositiveInt | None
    start_method: Literal["spawn", "forkserver"]
    # local: worker processes on this machine; ray: one Ray task per chunk
    engine: Literal["local", "ray"] = "local"
    ray: PreprocessRayParams = PreprocessRayParams()
    downsample: DownsampleSplitsParams


# --- train (parameters_train.yml) -----------------------------------------------------


class ModelParams(_Block):
    """``train.model``: overrides are checked as ``TSAConfig`` checks them."""

    preset: str
    presets: dict[str, dict[str, Any]]
    overrides: dict[str, Any]

    @model_validator(mode="after")
    def _overrides_fit_the_preset(self) -> ModelParams:
        # Imported here: tsa_kedro.models loads torch, and settings.py imports this
        # module for every kedro command.
        from tsa_kedro.models.config import WIDTH_FIELDS, TSAConfig  # noqa: PLC0415

        if self.preset not in self.presets:
            raise _refuse(
                f"parameter train.model.preset: {self.preset!r} is not one of "
                f"train.model.presets {sorted(self.presets)}"
            )
        # The data's widths are unknown here: stand-ins let TSAConfig check the rest.
        widths = {name: 2 for name in WIDTH_FIELDS}
        try:
            TSAConfig.from_dict(
                {**self.presets[self.preset], **widths, **self.overrides}
            )
        except (TypeError, ValueError) as error:
            raise _refuse(f"parameter train.model: {error}") from None
        return self


class TrainingParams(_Block):
    """``train.training``: the fields of ``tsa_kedro.training.loop.TrainingSettings``."""

    epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    lr: PositiveFloat
    max_lr: PositiveFloat
    patience: PositiveInt
    grad_clip_norm: PositiveFloat
    weight_decay: NonNegativeFloat
    seed: int
    checkpoint_dir: str | None
    resume: bool
    num_threads: PositiveInt | None
    progress: bool
    find_unused_parameters: bool
    compile_on_gpu: bool

    @model_validator(mode="after")
    def _peak_above_start(self) -> TrainingParams:
        if self.max_lr < self.lr:
            raise _refuse(
                f"parameter train.training.max_lr: {self.max_lr!r} is below "
                f"train.training.lr ({self.lr!r}); OneCycle's peak must be >= its start"
            )
        return self


class DistributedParams(_Block):
    """``train.distributed``: the fields of ``DistributedSettings``."""

    resource_config: str
    master_addr: str | None
    master_port: Annotated[int, Field(ge=1, le=65535)]
    backend: Literal["auto", "nccl", "gloo"]
    procs_per_host: PositiveInt | None
    timeout_s: PositiveFloat


class CostParams(_Block):
    """``train.evaluation.cost``: currency units per false positive and per missed
    fraud."""

    false_positive: NonNegativeFloat
    missed_fraud: NonNegativeFloat


class EvaluationParams(_Block):
    """``train.evaluation``."""

    operating_points: list[Annotated[float, Field(gt=0, le=1)]]
    score_batch_size: PositiveInt
    queue_shares: Annotated[
        list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)
    ]
    cost: CostParams


class BaselineParams(_Block):
    """``train.baseline``: the fields of ``BaselineSettings``."""

    max_iter: PositiveInt
    learning_rate: PositiveFloat
    max_leaf_nodes: Annotated[int, Field(ge=2)]
    l2_regularization: NonNegativeFloat
    max_train_rows: PositiveInt | None
    random_state: int
    history_match_features: bool


class TrainParams(_Block):
    """``train``."""

    model: ModelParams
    training: TrainingParams
    distributed: DistributedParams
    evaluation: EvaluationParams
    baseline: BaselineParams


# --- calibrate (parameters_calibrate.yml) ---------------------------------------------


class CalibrationSplitParams(_Block):
    """``calibrate.split``."""

    holdout_fraction: OpenFraction
    seed: int


class BSplineParams(_Block):
    """``calibrate.bspline``: keyword arguments of the R ``fit_bspline_calibration``,
    with the ranges it enforces."""

    max_iterations: PositiveInt
    coefficient_tolerance: PositiveFloat
    deviance_tolerance: NonNegativeFloat
    penalty: NonNegativeFloat
    ridge: PositiveFloat
    min_records: PositiveInt
    min_positives: PositiveInt
    tail_fraction: OpenFraction
    tail_knots: NonNegativeInt
    min_interval_records: PositiveInt
    start_bins: Annotated[int, Field(ge=2)]
    max_abs_coefficient: PositiveFloat
    min_distinct_fitted: PositiveInt


class CalibrationMetricsParams(_Block):
    """``calibrate.metrics``."""

    ece_bins: PositiveInt
    log_loss_clip: Annotated[float, Field(gt=0, lt=0.5)]


class CalibrateParams(_Block):
    """``calibrate``."""

    split: CalibrationSplitParams
    require_convergence: bool
    bspline: BSplineParams
    metrics: CalibrationMetricsParams


# --- package (parameters_package.yml) -------------------------------------------------


class PackageParams(_Block):
    """``package``."""

    sample_size: PositiveInt
    max_batch_size: PositiveInt
    score_batch_size: PositiveInt
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")]
    cuda_graph_max_batch: NonNegativeInt = 32
    compiled_model: Literal["onnx", "none"]
    runtime_requirements: list[str]


# --- register (parameters_register.yml) -----------------------------------------------


class RegisterParams(_Block):
    """``register``."""

    registry: Literal["mlflow", "sagemaker"]
    model_name: str
    description: str


class GateCheckParams(_Block):
    """One check of ``register_gate``: a metric path and one bound, a number or
    another metric's path."""

    metric: str
    min: Any = None  # min or max: one of them
    max: Any = None
    margin: NonNegativeFloat = 0.0  # optional

    @model_validator(mode="after")
    def _one_bound(self) -> GateCheckParams:
        bounds = {"min": self.min, "max": self.max}
        given = {name: value for name, value in bounds.items() if value is not None}
        if len(given) != 1:
            raise _invalid(f"needs exactly one of min or max, got {sorted(given)}")
        ((bound, value),) = given.items()
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _invalid(
                f"{bound} {_shown(value)} is neither a number nor a metric path"
            )
        return self


class RegisterMlflowParams(_Block):
    """``register_mlflow``."""

    tracking_uri: str
    artifact_location: str | None
    experiment_name: str
    alias: str | None


class RegisterSagemakerParams(_Block):
    """``register_sagemaker``."""

    model_package_group: str | None
    model_data_uri: str
    image_uri: str
    approval_status: Literal["Approved", "Rejected", "PendingManualApproval"]
    region: str | None
    content_types: list[str]
    response_types: list[str]
    realtime_instance_types: list[str]
    transform_instance_types: list[str]


# --- score (parameters_score.yml) -----------------------------------------------------


class ScoreRayParams(_Block):
    """``score.ray`` (used when ``score.engine`` is ``ray``)."""

    # null: RAY_ADDRESS if set, else an embedded Ray instance.
    address: Annotated[str, Field(min_length=1)] | None
    local_num_cpus: PositiveInt | None  # the embedded instance's CPUs (null: all)
    concurrency: PositiveInt  # scoring actors
    num_cpus: PositiveFloat  # CPUs each scoring actor reserves


class ScoreExplainParams(_Block):
    """``score.explain``: reason codes in the scores (docs/source/explain.md)."""

    enabled: bool = False
    top_k: Annotated[int, Field(ge=1, le=50)] = 3  # models.explain.MAX_TOP_K


class ScoreParams(_Block):
    """``score``."""

    model: Annotated[str, Field(min_length=1)]
    tracking_uri: str | None
    batch_orders: PositiveInt
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")] | None
    engine: Literal["local", "ray"] = "local"
    ray: ScoreRayParams
    explain: ScoreExplainParams = ScoreExplainParams()


# --- monitor (parameters_monitor.yml) -------------------------------------------------


class MonitorParams(_Block):
    """``monitor``."""

    psi_warn: PositiveFloat
    psi_fail: PositiveFloat
    unknown_share_warn: Annotated[float, Field(ge=0, le=1)]
    clipped_share_warn: Annotated[float, Field(ge=0, le=1)]
    fail_run_on: Literal["fail", "never"]

    @model_validator(mode="after")
    def _warn_below_fail(self) -> MonitorParams:
        if self.psi_warn > self.psi_fail:
            raise _invalid(
                f"psi_warn {self.psi_warn:g} is above psi_fail {self.psi_fail:g}"
            )
        return self


# --- every parameter file -------------------------------------------------------------


class ProjectParameters(_Block):
    """Every top-level key of ``conf/*/parameters*.yml``, ``raw_export`` and
    ``score_export``."""

    # Runtime parameter: `--params=raw_export=<folder>` names the export to read.
    raw_export: str | None = None
    # Runtime parameter: `--params=score_export=<folder or file>`, the orders to score.
    score_export: str | None = None
    raw_schema: RawSchemaParams
    synthetic_profile: str
    synthetic_profiles: dict[str, SyntheticProfileParams]
    ingest: IngestParams
    fit_transforms: FitTransformsParams
    preprocess: PreprocessParams
    train: TrainParams
    calibrate: CalibrateParams
    package: PackageParams
    # "register" would shadow the metaclass's register() as a field name
    register_: RegisterParams = Field(alias="register")
    register_gate: dict[str, GateCheckParams]
    register_mlflow: RegisterMlflowParams
    register_sagemaker: RegisterSagemakerParams
    score: ScoreParams
    monitor: MonitorParams

    @model_validator(mode="after")
    def _profiles_build(self) -> ProjectParameters:
        if self.synthetic_profile not in self.synthetic_profiles:
            raise _refuse(
                f"parameter synthetic_profile: {self.synthetic_profile!r} is not one "
                f"of synthetic_profiles: {', '.join(self.synthetic_profiles)}"
            )
        for name, profile in self.synthetic_profiles.items():
            try:
                SyntheticConfig.from_params(profile)
            except SyntheticConfigError as error:
                raise _refuse(f"parameter synthetic_profiles.{name}: {error}") from None
        return self


# --- messages -------------------------------------------------------------------------

_NOT_A = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "typed_dict_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(error: Mapping[str, Any]) -> str:
    """One line for one of pydantic's errors: parameter, value, what is allowed."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "parameter":
        return ctx["message"]
    loc = [str(part) for part in error["loc"]]
    value = _shown(error.get("input"))
    if loc[-1:] == ["[key]"]:  # a mapping's key: (..., mapping, key, "[key]")
        loc, value = loc[:-2], f"key {value}"
    where = f"parameter {'.'.join(loc)}" if loc else "parameters"
    if kind in _NOT_A:
        problem = f"{value} is not {_NOT_A[kind]}"
    elif kind == "finite_number":
        problem = f"{value} is not a finite number"
    elif kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        problem = f"{value} is not allowed; allowed: {sign} {ctx[key]}"
    elif kind == "literal_error":
        problem = f"{value} is not allowed; allowed: {ctx['expected']}"
    elif kind == "string_pattern_mismatch":
        problem = f"{value} is not allowed; allowed: auto, cpu, cuda or cuda:N"
    elif kind == "missing":
        problem = "is missing"
    else:
        problem = error["msg"]
    return f"{where}: {problem}"


def validate_parameters(params: Mapping[str, Any]) -> ProjectParameters:
    """Check every parameter against the schema.

    Args:
        params: The merged parameters of an environment (``context.params``).

    Returns:
        The parameters as the schema reads them.

    Raises:
        ParameterError: One line per refused value (see the module docstring).
    """
    try:
        return ProjectParameters.model_validate(params)
    except ValidationError as error:
        lines = [describe(e) for e in error.errors(include_url=False)]
        raise ParameterError("\n".join(dict.fromkeys(lines))) from None


class ParameterCheckHook:
    """Refuses bad parameters when the context is created, before any node runs."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Validate ``context.params`` (the environment's files and ``--params``)."""
        validate_parameters(context.params)
