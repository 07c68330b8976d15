"""Weekly retraining: the time split, its refusals, and the train job end to end."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from stage2_assets.errors import TrainingError
from stage2_assets.market.simulator import MarketSpec, RegimeSpec, simulate_bars
from stage2_assets.ml.dataset import time_split
from stage2_assets.ml.features import FEATURE_COLUMNS, compute_features
from stage2_assets.ml.metrics import (
    brier_decomposition,
    brier_skill_score,
    classification_metrics,
    expected_calibration_error,
)
from stage2_assets_tests.test_data_pipeline import run_refresh

CUTOFF = dt.date(2025, 6, 27)


@pytest.fixture(scope="module")
def feats():
    spec = MarketSpec(
        seed=2,
        num_symbols=4,
        start_date=dt.date(2023, 1, 3),
        regimes=[RegimeSpec(dt.date(2023, 1, 3), 0.0, 0.015, 0.1)],
    )
    return compute_features(simulate_bars(spec, spec.symbols, dt.date(2025, 12, 31)))


def test_split_is_by_time_with_an_embargo_and_nothing_after_the_cutoff(feats):
    split = time_split(feats, CUTOFF, 365, 0.2, 3, 100)
    assert split.train["date"].max() < split.val["date"].min()
    gap = pd.bdate_range(split.train["date"].max(), split.val["date"].min())
    assert len(gap) - 2 >= 3  # three trading dates embargoed between the slices
    assert pd.to_datetime(split.val["label_date"]).max() <= pd.Timestamp(CUTOFF)
    assert split.val["date"].nunique() == int(
        np.ceil(0.2 * (split.train["date"].nunique() + split.val["date"].nunique() + 3))
    )
    np.testing.assert_allclose(
        split.scaled(split.train).mean(axis=0), 0, atol=1e-5
    )  # fitted on training only


def test_too_few_rows_single_class_and_nan_are_refused(feats):
    with pytest.raises(TrainingError, match="fewer than retraining.min_train_rows"):
        time_split(feats, CUTOFF, 365, 0.2, 1, 10_000)
    with pytest.raises(TrainingError, match="one class only"):
        time_split(feats.assign(label=1), CUTOFF, 365, 0.2, 1, 100)
    broken = feats.copy()
    broken.loc[broken.index[300], "rsi_14"] = np.nan
    with pytest.raises(TrainingError, match="NaN or infinite"):
        time_split(broken, CUTOFF, 730, 0.2, 1, 100)
    with pytest.raises(TrainingError, match="too few"):
        time_split(feats, dt.date(2023, 3, 16), 365, 0.2, 1, 1)  # one labelled date


def test_metrics_match_hand_worked_values():
    prob = np.array([0.9, 0.8, 0.3, 0.6])
    label = np.array([1, 0, 0, 0])
    m = classification_metrics(prob, label)
    assert m["accuracy"] == 0.5
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert m["brier"] == pytest.approx((0.01 + 0.64 + 0.09 + 0.36) / 4)
    assert m["log_loss"] == pytest.approx(
        -(np.log(0.9) + np.log(0.2) + np.log(0.7) + np.log(0.4)) / 4
    )
    assert m["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert m["always_up_accuracy"] == 0.25
    # two equal-mass bins of P(up): {0.3, 0.6} -> mean 0.45 vs 0 up; {0.8, 0.9} -> 0.85 vs 1/2
    assert expected_calibration_error(prob, label, bins=2) == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    parts = brier_decomposition(prob, label, bins=2)
    assert parts["reliability"] == pytest.approx(0.5 * 0.45**2 + 0.5 * 0.35**2)
    assert parts["resolution"] == pytest.approx(0.5 * 0.25**2 + 0.5 * 0.25**2)
    assert parts["uncertainty"] == pytest.approx(0.25 * 0.75)
    # climatology 0.5: Brier 0.25; the model's 0.275 is worse than it
    assert brier_skill_score(prob, label, 0.5) == pytest.approx(1 - 0.275 / 0.25)


def test_equal_mass_bins_see_what_one_bin_of_confidence_hides():
    """P(up) within 0.45..0.55, and the truth 52.5% in its direction whatever it claims: its
    accuracy equals its mean confidence, so one bin of confidence (where equal-width bins over
    [0.5, 1] put every row) shows no error; bins of P(up) show it."""
    rng = np.random.default_rng(4)
    prob = 0.5 + rng.uniform(-0.05, 0.05, 200_000)
    up = rng.random(len(prob)) < np.where(prob > 0.5, 0.525, 0.475)
    label = up.astype(int)
    one_bin = abs(((prob > 0.5) == up).mean() - np.maximum(prob, 1 - prob).mean())
    assert one_bin < 0.004
    assert expected_calibration_error(prob, label) == pytest.approx(0.0125, abs=0.004)


TINY = {
    "retraining": {
        "num_models": 2,
        "max_epochs": 3,
        "hidden_units": 8,
        "min_train_rows": 200,
        "batch_size": 256,
    }
}


def test_train_job_writes_a_complete_version_and_retrains_identically(write_settings, instance):
    from stage2_assets.assets.training import REUSE_TAG
    from stage2_assets.definitions import build_definitions
    from stage2_assets.partitions import AS_OF_TAG, partition_key_for
    from stage2_assets.resources.model_store import ModelStore

    settings = write_settings(TINY)
    assert run_refresh(settings, instance, CUTOFF).success
    job = build_definitions(settings).resolve_job_def("train_ensemble")
    tags = {AS_OF_TAG: CUTOFF.isoformat()}
    first = job.execute_in_process(
        instance=instance, partition_key=partition_key_for(CUTOFF), tags=tags
    )
    second = job.execute_in_process(
        instance=instance,
        partition_key=partition_key_for(CUTOFF),
        tags={**tags, REUSE_TAG: "false"},  # train anew: is it the same model?
    )
    assert first.success and second.success
    store = ModelStore(root=str(settings.models_path))
    v1, v2 = store.versions()
    # a plain rerun of the week reuses its candidate: one version per cut-off and inputs
    assert job.execute_in_process(
        instance=instance, partition_key=partition_key_for(CUTOFF), tags=tags
    ).success
    assert store.versions() == [v1, v2]
    m1, m2 = store.metadata(v1), store.metadata(v2)
    assert m1["cutoff"] == "2025-06-27"
    assert m1["data_range"]["validation"][1] <= "2025-06-27"
    assert m1["features"] == list(FEATURE_COLUMNS)
    assert m1["symbols"] == [f"SIM{i:03d}" for i in range(6)]
    assert (
        set(m1["metrics"]) == {"ensemble", "members", "baselines"}
        and len(m1["metrics"]["members"]) == 2
    )
    baselines = m1["metrics"]["baselines"]
    assert set(baselines) == {"always_up", "climatology", "majority", "yesterday"}
    validation_up = baselines["always_up"]["accuracy"]
    assert validation_up == baselines["always_up"]["always_up_accuracy"]
    assert m1["metrics"]["ensemble"]["always_up_accuracy"] == validation_up
    assert baselines["climatology"]["brier_skill"] == pytest.approx(0.0, abs=1e-12)
    assert m1["label_rule"] == {"start": "next_close", "kind": "direction", "horizon_days": 1}
    assert {
        "git_commit",
        "data_fingerprint",
        "library_versions",
        "hyperparameters",
        "trained_at",
    } <= set(m1)
    assert m1["metrics"] == m2["metrics"]  # same cut-off, same data, same seed: same model on CPU
    assert m1["data_fingerprint"] == m2["data_fingerprint"]
    assert store.production() is None  # training alone never moves the pointer


def test_recency_weights_halve_at_the_half_life_and_change_the_fit(feats):
    from stage2_assets.ml.candidate import recency_weights
    from stage2_assets.ml.training import train_ensemble

    cutoff = dt.date(2023, 12, 29)
    dates = pd.Series(pd.to_datetime(["2023-12-29", "2023-12-19", "2023-12-09", "2023-11-29"]))
    weights = recency_weights(dates, cutoff, 10)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(0.5) and weights[3] / weights[
        0
    ] == pytest.approx(0.125)
    assert recency_weights(dates, cutoff, None) is None
    split = time_split(feats, cutoff, 120, 0.2, 2, 100)
    y, yv = (s["label"].to_numpy(dtype=np.float32) for s in (split.train, split.val))
    args = dict(
        num_members=2, hidden=8, learning_rate=1e-2, batch_size=64, max_epochs=2, patience=1, seed=0
    )
    plain = train_ensemble(split.scaled(split.train), y, split.scaled(split.val), yv, **args)
    ones = train_ensemble(
        split.scaled(split.train),
        y,
        split.scaled(split.val),
        yv,
        **args,
        weights=np.ones(len(y), dtype=np.float32),
    )
    recent = train_ensemble(
        split.scaled(split.train),
        y,
        split.scaled(split.val),
        yv,
        **args,
        weights=recency_weights(split.train["date"], cutoff, 5),
    )
    # weights of one are the plain loss; a 5-day half-life fits another model
    torch = pytest.importorskip("torch")
    assert torch.allclose(plain.model.w1, ones.model.w1, atol=1e-6)
    assert not torch.allclose(plain.model.w1, recent.model.w1, atol=1e-3)


def test_refit_trains_the_whole_window_for_the_chosen_epochs_and_keeps_the_first_fits_figures(
    feats,
):
    torch = pytest.importorskip("torch")
    from stage2_assets.config import Retraining
    from stage2_assets.ml.candidate import build_candidate, split_fingerprint
    from stage2_assets.ml.dataset import Split
    from stage2_assets.ml.training import refit_ensemble

    cutoff = dt.date(2023, 12, 29)
    split = time_split(feats, cutoff, 120, 0.2, 2, 100)
    assert split.gap["date"].nunique() == 2  # the embargo's two dates, in neither slice
    assert split.train["date"].max() < split.gap["date"].min() <= split.gap["date"].max()
    assert split.gap["date"].max() < split.val["date"].min()
    whole = split.whole()
    assert len(whole) == len(split.train) + len(split.gap) + len(split.val)
    base = dict(
        num_models=2,
        hidden_units=8,
        learning_rate=1e-2,
        batch_size=64,
        max_epochs=4,
        early_stopping_patience=1,
        data_window="120d",
        min_train_rows=100,
    )
    plain_t, plain = build_candidate(split, cutoff, Retraining(**base))
    refit_t, refit = build_candidate(split, cutoff, Retraining(**base, refit=True))
    # the validation figures and the early stopping are the first fit's, the same either way
    assert refit["metrics"] == plain["metrics"]
    assert refit["training"]["best_epoch"] == plain["training"]["best_epoch"]
    chosen = plain["training"]["best_epoch"] + 1
    assert refit["training"]["refit"]["epochs"] == chosen
    assert refit["training"]["refit"]["rows"] == len(whole)
    assert refit["training"]["refit"]["dates"][1] == split.val["date"].max().date().isoformat()
    assert refit["hyperparameters"]["refit"] is True and "refit" not in plain["hyperparameters"]
    assert refit["data_fingerprint"] == split_fingerprint(split, True) != plain["data_fingerprint"]
    # the stored model is a fit from scratch on every row of the window, its scaler theirs
    values = whole[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(refit_t["scaler.mean"].numpy(), values.mean(axis=0), rtol=1e-5)
    assert not torch.allclose(refit_t["scaler.mean"], plain_t["scaler.mean"])
    mean, std = refit_t["scaler.mean"].numpy(), refit_t["scaler.std"].numpy()
    again = refit_ensemble(
        Split(whole, whole.iloc[0:0], mean, std).scaled(whole),
        whole["label"].to_numpy(dtype=np.float32),
        epochs=chosen,
        num_members=2,
        hidden=8,
        learning_rate=1e-2,
        batch_size=64,
        seed=0,
    )
    assert again.epochs_run == chosen
    assert torch.equal(refit_t["model.w1"], again.model.w1)
    assert not torch.allclose(refit_t["model.w1"], plain_t["model.w1"], atol=1e-3)
