"""The validated settings: one model, loaded once from ``config/adaptation.yaml``.

``STAGE2_CONFIG`` names another file. Relative paths in the file are relative to the file itself.
A wrong key or value stops with a message naming it. Secrets (SMTP password, webhook URL) are
never read from the file: the file names the environment variables that hold them. A string value
may name environment variables, ``${NAME}`` or ``${NAME:-default}``, so that one file serves every
machine of a deployment (``deploy/stage2.yaml``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stage2_assets.errors import ConfigError
from stage2_assets.names import validate_symbol

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "adaptation.yaml"

_DURATION = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$")
_DURATION_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def _parse_duration_days(value: object) -> int:
    """Accept ``7d``, ``4w``, ``6m``, ``2y`` (calendar days, weeks, months, years) or an int of days."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '7d', '4w' or '2y'")
    if isinstance(value, int):
        days = value
    else:
        match = _DURATION.match(str(value).lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration such as '7d', '4w', '6m' or '2y'")
        days = int(match.group(1)) * _DURATION_DAYS[match.group(2)]
    if days <= 0:
        raise ValueError("a duration must be positive")
    return days


DurationDays = Annotated[int, BeforeValidator(_parse_duration_days)]


def _validate_cron(value: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(value):
        raise ValueError(f"{value!r} is not a valid cron string (five fields, e.g. '0 2 * * 0')")
    return value


Cron = Annotated[str, BeforeValidator(_validate_cron)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Regime(_Section):
    start: dt.date = Field(description="First session of this regime.")
    drift: float = Field(description="Mean daily log return.")
    volatility: float = Field(gt=0, description="Daily volatility of log returns.")
    momentum: float = Field(
        ge=-0.19,
        le=0.19,
        description="Coefficient on the sum of the previous 5 daily returns (the learnable signal); "
        "negative means mean reversion. |momentum| < 0.2 keeps the process stationary.",
    )
    volume_signal: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="Coefficient, in units of the day's volatility, on yesterday's volume shock: a "
        "second kind of signal, invisible in past prices (positive: heavy volume is followed by "
        "gains). 0 turns it off.",
    )


class Episode(_Section):
    kind: Literal["transient", "label_noise", "stale_feed"] = Field(
        description="transient: momentum and volume_signal below replace the regime's for the "
        "episode, then the regime resumes; label_noise: no signal in the episode (its labels are "
        "coin flips); stale_feed: the episode's bars repeat the bars of the sessions just before it."
    )
    start: dt.date = Field(description="First session of the episode.")
    sessions: int = Field(ge=1, le=60, description="Length in sessions.")
    momentum: float = Field(0.0, ge=-0.19, le=0.19, description="transient: its momentum.")
    volume_signal: float = Field(0.0, ge=-1.0, le=1.0, description="transient: its volume signal.")


class SimulatedMarket(_Section):
    seed: int = Field(7, description="Seed of the market; the same seed gives the same bars.")
    num_symbols: int = Field(40, ge=1, le=10_000, description="Number of simulated symbols.")
    start_date: dt.date = Field(dt.date(2019, 1, 2), description="First simulated session.")
    regimes: list[Regime] = Field(
        default_factory=lambda: [
            Regime(start=dt.date(2019, 1, 2), drift=0.0004, volatility=0.012, momentum=0.1),
            Regime(start=dt.date(2022, 1, 3), drift=-0.0002, volatility=0.02, momentum=-0.1),
            Regime(start=dt.date(2024, 7, 1), drift=0.0003, volatility=0.014, momentum=0.1),
        ],
        description="Regimes in force from their start date: drift, volatility, momentum, "
        "volume_signal.",
    )
    market_share: float = Field(
        0.25,
        ge=0,
        le=0.6,
        description="Share of a symbol's daily return variance carried by the common market "
        "factor (real US large caps: about 0.2-0.3). 0 makes the symbols independent.",
    )
    sector_share: float = Field(
        0.10,
        ge=0,
        le=0.6,
        description="Share carried by the symbol's sector factor (symbol i is in sector i mod "
        "num_sectors).",
    )
    num_sectors: int = Field(8, ge=1, le=100, description="Number of sector factors.")
    warts: list[Literal["duplicate_day", "zero_price", "nan_close", "split", "gap", "bad_high"]] = (
        Field(
            default_factory=list,
            description="Planted data faults, one symbol each, for tests and drills.",
        )
    )
    episodes: list[Episode] = Field(
        default_factory=list,
        description="Weeks in which training goes wrong in ways that pass the data gate (every "
        "symbol at once): transient regimes, label noise, a stale feed.",
    )

    @model_validator(mode="after")
    def _factors_leave_an_own_part(self) -> SimulatedMarket:
        if self.market_share + self.sector_share > 0.6:
            raise ValueError(
                "data_source.simulated.market_share + sector_share must stay at or below 0.6, so "
                "each symbol keeps a part of its own"
            )
        return self

    @field_validator("regimes")
    @classmethod
    def _regimes_in_order(cls, regimes: list[Regime]) -> list[Regime]:
        if not regimes:
            raise ValueError("at least one regime is needed")
        starts = [r.start for r in regimes]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError("regime start dates must be strictly increasing")
        return regimes


class DataSource(_Section):
    kind: Literal["yfinance", "csv", "simulated"] = Field(
        "simulated", description="Where bars come from: yfinance (live), csv (a folder), simulated."
    )
    path: Path | None = Field(None, description="Folder of SYMBOL.csv files (kind: csv).")
    symbols: Literal["auto"] | list[str] = Field(
        "auto",
        description="Symbols to keep current, or 'auto': every file in the csv folder, the default "
        "yfinance universe in config/universe.txt, or every simulated symbol.",
    )
    universe_file: Path = Field(
        Path("universe.txt"), description="Default yfinance universe, one symbol per line."
    )
    simulated: SimulatedMarket = Field(default_factory=SimulatedMarket)

    @field_validator("symbols")
    @classmethod
    def _symbols_are_tickers(
        cls, symbols: Literal["auto"] | list[str]
    ) -> Literal["auto"] | list[str]:
        if symbols == "auto":
            return symbols
        if not symbols:
            raise ValueError("give at least one symbol, or 'auto'")
        cleaned = [validate_symbol(s) for s in symbols]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("symbols are listed twice")
        return cleaned

    @model_validator(mode="after")
    def _csv_needs_path(self) -> DataSource:
        if self.kind == "csv" and self.path is None:
            raise ValueError("data_source.path is required when data_source.kind is 'csv'")
        return self


class Storage(_Section):
    warehouse: Path = Field(Path("../data/stage2.duckdb"), description="DuckDB warehouse file.")
    models: Path = Field(Path("../models"), description="Model store folder.")


class QualityRules(_Section):
    max_failed_symbol_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of checked symbols that may fail before the gate blocks.",
    )
    max_abs_daily_move: float = Field(
        0.4, gt=0, description="One-day |close/previous close - 1| above this is flagged (splits)."
    )
    max_price_ratio: float = Field(
        25.0,
        gt=1,
        description="A close more than this many times (or less than 1/this of) the previous close quarantines "
        "the symbol: a unit error (cents for dollars), larger than any real split.",
    )
    max_missing_sessions: int = Field(
        5, ge=0, description="Missing NYSE sessions between two bars above this are flagged."
    )


class DataRefresh(_Section):
    schedule: Cron = Field("0 0 * * 0", description="Cron of the weekly refresh (Sunday 00:00).")
    timezone: str = Field("America/New_York", description="Timezone of every schedule.")
    history_start: dt.date = Field(
        dt.date(2015, 1, 1), description="First date fetched for a symbol the store has never seen."
    )
    overlap_days: int = Field(
        5,
        ge=0,
        le=60,
        description="Calendar days re-fetched before the last stored bar, to catch revisions.",
    )
    provider_timeout_seconds: float = Field(
        60, gt=0, description="Hard limit on one provider call; a hung call counts as a failure."
    )
    max_retries: int = Field(3, ge=0, le=10, description="Retries of a transient provider failure.")
    retry_backoff_seconds: float = Field(
        2.0, ge=0, description="First back-off; it doubles each retry."
    )
    batch_size: int = Field(50, ge=1, description="Symbols per provider request.")
    max_stale_sessions: int = Field(
        5,
        ge=0,
        le=250,
        description="Sessions the newest bar may lag the as-of date: beyond it a refresh warns and "
        "training refuses to cut a candidate past the data.",
    )
    max_file_mb: float = Field(
        50.0,
        gt=0,
        description="A CSV file larger than this is refused unread (the symbol's refresh fails, nothing "
        "is stored); ten years of daily bars take under 1 MB.",
    )
    max_rows_per_symbol: int = Field(
        20_000,
        ge=1,
        description="A symbol whose fetch delivers more rows than this (about 80 years of sessions) is "
        "refused before anything reaches raw_bars.",
    )
    readjust_tolerance: float = Field(
        1e-4,
        gt=0,
        lt=0.01,
        description="Relative tolerance within which every revised overlap price must share one "
        "factor for the revision to count as a back-adjustment (split or dividend).",
    )
    quality: QualityRules = Field(default_factory=QualityRules)


class Retraining(_Section):
    schedule: Cron = Field("0 2 * * 0", description="Cron of the weekly retraining (Sunday 02:00).")
    data_window: DurationDays = Field(
        730, description="Rolling training window ending at the cut-off."
    )
    validation_split: float = Field(
        0.2, gt=0, lt=0.9, description="Last share of the window, in time."
    )
    label_horizon_days: int = Field(
        1,
        ge=1,
        le=20,
        description="Label horizon h in sessions (its start and kind: the label section).",
    )
    recency_half_life: DurationDays | None = Field(
        None,
        ge=5,
        description="Half-life of a training row's weight by its age before the cut-off (a row "
        "this much older counts half as much in the loss); null weighs every row alike. A short "
        "half-life fits a new regime sooner at the price of noisier weights.",
    )
    refit: bool = Field(
        False,
        description="Once early stopping has chosen the epoch count on the validation slice, train "
        "again from scratch on the whole window (training, embargo and validation rows, scaler "
        "refitted) for that many epochs and keep that model: the newest days reach the model. Its "
        "validation figures are the first fit's (the refit holds nothing out); the refit is a "
        "second training, of best epoch + 1 epochs.",
    )
    num_models: int = Field(5, ge=1, le=50, description="Ensemble members, each with its own seed.")
    max_epochs: int = Field(20, ge=1, description="Epoch limit per training.")
    batch_size: int = Field(128, ge=8, description="Rows per optimisation step.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    hidden_units: int = Field(64, ge=1, description="Width of each member's two hidden layers.")
    early_stopping_patience: int = Field(
        3, ge=1, description="Epochs without val/loss gain before stop."
    )
    min_train_rows: int = Field(
        500, ge=10, description="Fewer training rows than this refuses to train."
    )
    seed: int = Field(0, description="Base seed; member k uses seed + k.")
    keep_versions: int = Field(
        10, ge=1, description="Versions kept besides every one production used."
    )


# Weekly retraining brings this many candidates, and so this many promotion tests, a year.
CANDIDATES_PER_YEAR = 52
TRADING_DAYS_PER_WEEK = 5


class ABTesting(_Section):
    schedule: Cron = Field(
        "0 4 * * 0", description="Cron of the weekly comparison and pointer decision."
    )
    approval: Literal["auto", "manual"] = Field(
        "auto",
        description="auto: a candidate that passes its comparison is promoted at once. manual: it "
        "waits, the alert channels say so, and `stage2 approve VERSION` (or `stage2 reject "
        "VERSION`) decides; pending approvals show in `stage2 status` and the dashboard.",
    )
    shadow_mode_duration: DurationDays = Field(
        7,
        description="Minimum shadow: the first look of the sequential test comes after this many "
        "calendar days' worth of labelled trading days (5 per 7 days, at least 2).",
    )
    max_shadow_duration: Annotated[DurationDays, Field(le=366)] = Field(
        56,
        description="Maximum shadow: after this many calendar days' worth of labelled trading "
        "days an undecided candidate is kept out (decision keep, reason inconclusive).",
    )
    metric: Literal["log_loss", "brier"] = Field(
        "log_loss",
        description="Proper score of the primary test: per day, production's mean score minus the "
        "candidate's over the same symbols.",
    )
    false_promotion_budget: float = Field(
        0.10,
        gt=0,
        lt=1,
        description="Yearly error budget: P(any promotion in a year of candidates no better than "
        "production) stays below it. Spent evenly over the year's 52 weekly tests (Bonferroni).",
    )
    significance_level: float | None = Field(
        None,
        gt=0,
        lt=0.5,
        description="One-sided level of one comparison; empty: false_promotion_budget / 52.",
    )
    min_improvement: float = Field(
        0.0,
        ge=0,
        description="Least mean daily gain, in units of `metric` (log loss or Brier score per "
        "row), that the sequential lower confidence bound must clear to promote.",
    )
    spending_rho: float = Field(
        3.0,
        gt=0,
        le=10,
        description="Alpha-spending function alpha * t**rho over the shadow's looks: 1 spends "
        "evenly (early decisions), 3 keeps most of the error for the later looks (more power).",
    )
    futility_level: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="One-sided level of the futility bound: a candidate whose upper bound falls "
        "below min_improvement is rejected (it never promotes anything, so it spends no budget).",
    )
    min_samples: int = Field(
        100, ge=10, description="Fewer paired rows than this: insufficient data."
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples for confidence intervals.")

    @model_validator(mode="after")
    def _shadow_bounds_in_order(self) -> ABTesting:
        if self.max_shadow_duration < self.shadow_mode_duration:
            raise ValueError(
                f"ab_testing.max_shadow_duration ({self.max_shadow_duration} days) is shorter than "
                f"ab_testing.shadow_mode_duration ({self.shadow_mode_duration} days)"
            )
        return self

    @property
    def alpha(self) -> float:
        """The one-sided level of one comparison: set, or derived from the yearly budget."""
        if self.significance_level is not None:
            return self.significance_level
        return self.false_promotion_budget / CANDIDATES_PER_YEAR

    @property
    def first_look(self) -> int:
        return max(2, round(self.shadow_mode_duration * TRADING_DAYS_PER_WEEK / 7))

    @property
    def max_looks(self) -> int:
        return max(self.first_look, round(self.max_shadow_duration * TRADING_DAYS_PER_WEEK / 7))


class Monitoring(_Section):
    predictions_schedule: Cron = Field(
        "30 17 * * 1-5", description="Cron of daily predictions and outcomes, after the close."
    )
    performance_window: DurationDays = Field(30, description="Rolling window of model_performance.")
    predictions_retention: DurationDays | None = Field(
        730,
        description="Age after which logged predictions of models in any role but production "
        "leave the warehouse for a Parquet archive beside it (what production served stays); "
        "null keeps every row. Replays keep every row.",
    )
    degradation_threshold: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Drop of production's accuracy, from its first live days to the last "
        "performance_window, that degrades (absolute).",
    )
    degradation_level: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="One-sided level of the degradation test (Welch's t on daily accuracies). An "
        "alert asks for attention and a rollback test; it promotes nothing by itself.",
    )
    transaction_cost_bps: float = Field(
        5.0, ge=0, description="Cost per unit turnover, basis points."
    )
    book_fraction: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="The replay's dollar-neutral book: long the top and short the bottom fraction of symbols by P(up).",
    )
    sensors_enabled: bool = Field(True, description="Start every sensor switched on.")


class Alerts(_Section):
    jsonl_path: Path | None = Field(Path("../data/alerts.jsonl"), description="JSONL alert file.")
    webhook_url_env: str | None = Field(
        "STAGE2_WEBHOOK_URL",
        description="Environment variable holding a Slack-compatible webhook URL.",
    )
    smtp_host: str | None = Field(None, description="SMTP server; email is off when empty.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = Field(True)
    smtp_from: str = Field("stage2@localhost")
    smtp_to: list[str] = Field(default_factory=list)
    smtp_user_env: str = Field("STAGE2_SMTP_USER")
    smtp_password_env: str = Field("STAGE2_SMTP_PASSWORD")
    smtp_ca_file: Path | None = Field(
        None, description="CA bundle for an SMTP server with a private certificate."
    )


class LabelSettings(_Section):
    start: Literal["next_close", "next_open"] = Field(
        "next_close",
        description="Where the label's return starts, so a prediction made after t's close can "
        "trade it: next_close = close(t+1) -> close(t+1+h) (Qlib's Alpha158 label), next_open = "
        "open(t+1) -> open(t+1+h). The horizon h is retraining.label_horizon_days.",
    )
    kind: Literal["direction", "excess_direction"] = Field(
        "direction",
        description="direction: the sign of that return; excess_direction: the sign of the return "
        "minus the same day's cross-sectional mean (a market-neutral target).",
    )


class ReplaySettings(_Section):
    log_weeks: int = Field(
        26,
        ge=0,
        le=520,
        description="In a replay, every candidate logs its predictions for this many weeks after "
        "its cut-off, whatever the gate decided, so `stage2 replay --sweep` can serve it under "
        "other gate settings; retention spares it meanwhile. 0: only the arms' versions log.",
    )


class Settings(_Section):
    data_source: DataSource = Field(default_factory=DataSource)
    label: LabelSettings = Field(default_factory=LabelSettings)
    storage: Storage = Field(default_factory=Storage)
    data_refresh: DataRefresh = Field(default_factory=DataRefresh)
    retraining: Retraining = Field(default_factory=Retraining)
    ab_testing: ABTesting = Field(default_factory=ABTesting)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    alerts: Alerts = Field(default_factory=Alerts)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    first_partition: dt.date = Field(
        dt.date(2015, 1, 4), description="Sunday that starts the first weekly partition."
    )
    config_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _retention_covers_what_is_read(self) -> Settings:
        """Archived rows are out of the live readers' reach: a comparison reads a candidate's rows
        back to its cut-off, for up to 2 x max_shadow_duration, and performance reads its window."""
        retention = self.monitoring.predictions_retention
        needed = max(
            2 * self.ab_testing.max_shadow_duration + 14, self.monitoring.performance_window + 7, 91
        )
        if retention is not None and retention < needed:
            raise ValueError(
                f"monitoring.predictions_retention of {retention} days would archive rows a shadow "
                f"comparison (2 x ab_testing.max_shadow_duration + 2 weeks) or the performance window "
                f"still reads: at least {needed} days here, or null to keep every row"
            )
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the file, made absolute relative to the file's folder."""
        if path.is_absolute():
            return path
        base = self.config_path.parent if self.config_path else Path.cwd()
        return (base / path).resolve()

    @property
    def label_rule(self):
        from stage2_assets.ml.features import LabelRule

        return LabelRule(
            start=self.label.start,
            kind=self.label.kind,
            horizon_days=self.retraining.label_horizon_days,
        )

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.storage.warehouse)

    @property
    def models_path(self) -> Path:
        return self.resolve(self.storage.models)

    @property
    def predictions_archive_path(self) -> Path:
        """Where predictions past ``monitoring.predictions_retention`` go: beside the warehouse,
        named after it (``data/stage2.duckdb`` -> ``data/stage2.archive/predictions``), so the
        warehouses of several configs in one folder never share an archive."""
        return self.warehouse_path.with_suffix(".archive") / "predictions"

    @property
    def csv_path(self) -> Path | None:
        return self.resolve(self.data_source.path) if self.data_source.path else None


def _describe(error: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = (
            "unknown key (check its spelling)" if item["type"] == "extra_forbidden" else item["msg"]
        )
        lines.append(f"  - {key}: {message}")
    return "\n".join(lines)


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ABSENT = object()


def _expand_env(value: object, key: str, source: Path) -> object:
    """``${NAME}`` and ``${NAME:-default}`` in the file's strings, from the environment.

    ``:-`` takes the default when NAME is unset or empty, as the shell does. A value that names a
    variable and comes out empty is left out: its key takes the default, a list drops the item
    (``smtp_host: "${STAGE2_SMTP_HOST:-}"`` turns email off where the variable is not set).
    """
    if isinstance(value, dict):
        expanded = {
            k: _expand_env(v, f"{key}.{k}" if key else str(k), source) for k, v in value.items()
        }
        return {k: v for k, v in expanded.items() if v is not _ABSENT}
    if isinstance(value, list):
        items = [_expand_env(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return [v for v in items if v is not _ABSENT]
    if not isinstance(value, str) or not _ENV_REFERENCE.search(value):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"invalid configuration in {source}:\n  - {key}: the environment variable "
                    f"{name} is not set (set it, or write ${{{name}:-default}} in the file)"
                )
            return default
        return found

    expanded = _ENV_REFERENCE.sub(substitute, value)
    return _ABSENT if expanded == "" else expanded


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a config file (``STAGE2_CONFIG``, else ``config/adaptation.yaml``)."""
    chosen = Path(path or os.environ.get("STAGE2_CONFIG") or DEFAULT_CONFIG).expanduser().resolve()
    if not chosen.is_file():
        raise ConfigError(
            f"config file {chosen} does not exist (set STAGE2_CONFIG to another file)"
        )
    try:
        raw = yaml.safe_load(chosen.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {chosen} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {chosen} must hold a mapping of sections at the top level")
    raw = _expand_env(raw, "", chosen)
    try:
        return Settings.model_validate({**raw, "config_path": chosen})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, chosen)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, loaded once."""
    return load_settings()
