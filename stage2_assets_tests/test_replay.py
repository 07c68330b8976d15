"""Walk-forward replay: resumable with the same result, reproducible bit for bit, bad ranges refused."""

import datetime as dt
import json

import pytest
import torch

from stage2_assets.assets import features as features_asset
from stage2_assets.assets import training as training_asset
from stage2_assets.cli import main
from stage2_assets.errors import Stage2Error
from stage2_assets.ml import features as features_module
from stage2_assets.ml import training
from stage2_assets.promotion.shadow import (
    decided_candidates,
    previous_production,
    shadow_candidates,
)
from stage2_assets.replay.evaluation import serving_rules
from stage2_assets.replay.runner import replay_weeks
from stage2_assets.resources.model_store import ModelStore
from stage2_assets.resources.warehouse import Warehouse
from stage2_assets_tests.conftest import make_project

REPLAY = {
    "data_source": {
        "simulated": {
            "seed": 5,
            "num_symbols": 50,
            "start_date": "2024-01-02",
            "regimes": [
                {"start": "2024-01-02", "drift": 0.0, "volatility": 0.012, "momentum": 0.15},
                {"start": "2024-05-01", "drift": 0.0, "volatility": 0.012, "momentum": -0.15},
            ],
        }
    },
    "retraining": {
        "data_window": "60d",
        "num_models": 3,
        "max_epochs": 10,
        "hidden_units": 16,
        "min_train_rows": 300,
    },
    "ab_testing": {"bootstrap_samples": 300, "shadow_mode_duration": "14d"},
    # 60-day windows on a market with a common factor: a market-neutral label (see the loop test)
    "label": {"kind": "excess_direction"},
}
FROM, TO = "2024-04-01", "2024-08-30"


def _setup(folder, keep_versions: int, log_weeks: int = 26):
    retraining = {**REPLAY["retraining"], "keep_versions": keep_versions}
    return make_project(
        folder, {**REPLAY, "retraining": retraining, "replay": {"log_weeks": log_weeks}}
    )


def _stage2_replay(settings, to, *options) -> int:
    return main(
        ["--config", str(settings.config_path), "replay", "--from", FROM, "--to", to, *options]
    )


def _replay(settings, folder, to=TO, name="replay"):
    return _stage2_replay(
        settings,
        to,
        "--report",
        str(folder / f"{name}.html"),
        "--json-out",
        str(folder / f"{name}.json"),
    )


class _PlainEnsembleModule(training.EnsembleModule):
    """Lightning's automatic loop with per-step logging and the for-loop Adam: the training as it
    was before the speed issue made the loop manual."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = True

    def on_fit_start(self) -> None:
        _PLAIN_CALLS["fit"] += 1

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
        return loss

    def on_train_epoch_end(self) -> None:
        pass

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def _plain_ewm(frame, column, **kwargs):
    return frame.groupby("symbol", sort=False)[column].transform(
        lambda s: s.ewm(adjust=False, **kwargs).mean()
    )


_PLAIN_CALLS = {"write": 0, "window": 0, "fit": 0}


def _plain_write(conn, table, symbols=None):
    _PLAIN_CALLS["write"] += 1
    conn.execute("DELETE FROM features")
    conn.register("new_features", table)
    conn.execute(
        f"INSERT INTO features SELECT {', '.join(features_asset._COLUMNS)} FROM new_features"
    )
    conn.unregister("new_features")
    return len(table)


def _plain_window(conn, cutoff, window_days):
    _PLAIN_CALLS["window"] += 1
    return conn.execute("SELECT * FROM features WHERE date <= ?", [cutoff]).df()


def _without_speedups(mp: pytest.MonkeyPatch) -> None:
    """The replay's speed-ups replaced by the plain code they replaced: the whole features table
    rewritten every week, the per-symbol ewm transform, every feature row read for training, the
    automatic training loop."""
    mp.setattr(training, "EnsembleModule", _PlainEnsembleModule)
    mp.setattr(features_module, "_ewm", _plain_ewm)
    mp.setattr(features_asset, "write_changed_rows", _plain_write)
    mp.setattr(training_asset, "window_rows", _plain_window)


@pytest.fixture(scope="module")
def replays(tmp_path_factory):
    """One uninterrupted replay that keeps 100 versions, and one that keeps 2, cut short, with its
    last week lost mid-flight, then resumed, run without the speed-ups (the plain code they
    replaced). Neither retention, the resume nor the speed-ups may change a figure."""
    root = tmp_path_factory.mktemp("replay")
    mp = pytest.MonkeyPatch()
    whole, home = _setup(root / "whole", keep_versions=100)
    mp.setenv("DAGSTER_HOME", str(home))
    assert _replay(whole, root / "whole") == 0
    _without_speedups(mp)
    # candidates log 4 weeks past their cut-off for a sweep, not the 22 of the replay: retention
    # may prune them after that
    resumed, home = _setup(root / "resumed", keep_versions=2, log_weeks=4)
    mp.setenv("DAGSTER_HOME", str(home))
    assert _replay(resumed, root / "resumed", to="2024-06-01", name="partial") == 0
    with Warehouse(database=str(resumed.warehouse_path)).connect() as conn:
        # the process died after the week's run but before it was recorded: the week runs again
        conn.execute("DELETE FROM replay_log WHERE week = (SELECT max(week) FROM replay_log)")
    assert _replay(resumed, root / "resumed") == 0
    mp.undo()
    return root, whole, resumed


def test_resumed_replay_with_two_versions_kept_gives_the_same_result_bit_for_bit(replays):
    """Every arm is scored from what was logged: pruning down to 2 versions changes nothing; and
    the speed-ups (features written by difference, grouped ewm, the window read, the manual
    training loop) change no decision, prediction or figure."""
    root, whole, resumed = replays
    # the resumed replay ran the plain code: every week's features and training went through it
    assert (
        _PLAIN_CALLS["write"] >= 22 and _PLAIN_CALLS["window"] >= 22 and _PLAIN_CALLS["fit"] >= 20
    )
    kept = ModelStore(root=str(resumed.models_path))
    assert len(kept.trained_cutoffs()) == 22  # one candidate a week...
    assert len(kept.versions()) < 22  # ...most of them pruned since
    assert any(e["event"] == "pruned" for e in kept.events())
    assert (root / "whole" / "replay.json").read_bytes() == (
        root / "resumed" / "replay.json"
    ).read_bytes()
    assert (root / "whole" / "replay.html").read_bytes() == (
        root / "resumed" / "replay.html"
    ).read_bytes()
    report = json.loads((root / "resumed" / "replay.json").read_text())
    assert report["unlogged_rows"] == {"adaptive": 0, "frozen": 0, "always_promote": 0}
    # always_promote served candidates that are gone from the store by now
    served = {v for _, v in serving_rules(kept)["always_promote"]}
    assert len(served) == 22 and not served <= set(kept.versions())


def test_retention_spares_production_its_rollback_target_and_every_candidate_in_shadow(replays):
    _, _, resumed = replays
    store = ModelStore(root=str(resumed.models_path))
    warehouse = Warehouse(database=str(resumed.warehouse_path))
    with warehouse.connect(read_only=True) as conn:
        in_shadow = shadow_candidates(conn, store)
    kept = set(store.versions())
    assert store.production() in kept
    assert set(store.production_history()) <= kept
    assert previous_production(store) in kept | {None}
    # the candidates of the last weeks are undecided yet, and all still on disk
    cutoffs = store.trained_cutoffs()
    newest = sorted(cutoffs, key=cutoffs.get)[-3:]
    assert set(newest) <= kept
    assert set(in_shadow) <= kept
    pruned = {e["version"] for e in store.events() if e["event"] == "pruned"}
    with warehouse.connect(read_only=True) as conn:
        decided = decided_candidates(conn)
    assert pruned and pruned <= decided  # only decided candidates were ever pruned


def test_a_rerun_week_adds_no_version_and_no_duplicate_prediction(replays):
    _, whole, resumed = replays
    for s in (whole, resumed):
        store = ModelStore(root=str(s.models_path))
        trained = [e["cutoff"] for e in store.events() if e["event"] == "trained"]
        assert len(trained) == len(set(trained)) == 22  # one version per cut-off in each store
    counts = []
    for s in (whole, resumed):
        with Warehouse(database=str(s.warehouse_path)).connect(read_only=True) as conn:
            counts.append(
                conn.execute(
                    # production's and the compared candidates' rows (what only logs for a sweep
                    # depends on replay.log_weeks, which differs between the two)
                    "SELECT count(*), count(DISTINCT (model_version, symbol, date)) FROM predictions "
                    "WHERE role <> 'logged'"
                ).fetchall()[0]
            )
    assert counts[0][0] == counts[1][0] and all(total == distinct for total, distinct in counts)


def test_json_contract_and_figures(replays):
    root, _, _ = replays
    report = json.loads((root / "whole" / "replay.json").read_text())
    assert report["weeks"] == 22
    assert set(report["arms"]) == {"adaptive", "frozen", "always_promote"}
    for arm in report["arms"].values():
        assert {
            "accuracy",
            "balanced_accuracy",
            "mean_confidence",
            "ece",
            "sharpe",
            "max_drawdown",
            "ci",
            "ic",
            "rank_ic",
            "icir",
            "turnover",
            "beta",
            "brier_skill",
        } <= set(arm)
        assert {"accuracy", "sharpe"} <= set(arm["ci"])
        assert arm["ci"]["accuracy"][0] <= arm["accuracy"] <= arm["ci"]["accuracy"][1]
        assert arm["rows"] == report["rows"]  # every arm scored on the same rows
        assert -1 < arm["rank_ic"] < 1 and arm["turnover"] > 0
        assert {"ic", "rank_ic", "sharpe"} <= set(next(iter(arm["by_quarter"].values())))
    assert set(report["decisions"]) >= {"promote", "keep", "rollback"}
    assert report["regime_changes"][0]["change"] == "2024-05-01"
    assert len(report["cumulative"]["dates"]) == report["arms"]["adaptive"]["days"]


def test_always_up_is_scored_on_the_arms_rows_and_differences_are_paired(replays):
    root, whole, _ = replays
    report = json.loads((root / "whole" / "replay.json").read_text())
    with Warehouse(database=str(whole.warehouse_path)).connect(read_only=True) as conn:
        labels = conn.execute(
            "SELECT label FROM features WHERE date >= ? AND date <= ? AND label_date <= ? AND label IS NOT NULL",
            [report["period"]["from"], report["period"]["to"], report["period"]["to"]],
        ).df()["label"]
    up = report["baselines"]["always_up"]
    # the arms' rows are the labelled rows of the days every arm had a model
    assert report["rows"] <= len(labels)
    assert 0.3 < up["accuracy"] < 0.7
    assert up["brier"] == pytest.approx(1 - up["accuracy"])  # (1 - y)^2 is 1 on a down day
    differences = report["differences"]
    assert {"adaptive - frozen", "adaptive - always_promote", "adaptive - always_up"} <= set(
        differences
    )
    for pair, arm in (("adaptive - always_up", "adaptive"), ("frozen - always_up", "frozen")):
        figure = differences[pair]["accuracy"]
        assert figure["estimate"] == pytest.approx(
            report["arms"][arm]["accuracy"] - up["accuracy"], abs=1e-6
        )
        assert figure["ci"][0] <= figure["estimate"] <= figure["ci"][1]
        assert figure["verdict"] in {"ahead", "behind", "no difference shown"}
    paired = differences["adaptive - frozen"]["accuracy"]["estimate"]
    assert paired == pytest.approx(
        report["arms"]["adaptive"]["accuracy"] - report["arms"]["frozen"]["accuracy"], abs=1e-6
    )
    html = (root / "whole" / "replay.html").read_text()
    assert "Paired differences" in html and "always up (baseline)" in html


def test_the_regime_change_is_followed_by_the_promotion_of_a_fitted_model(replays):
    """Whether adaptation *pays* is the benchmark's question, answered with paired intervals on a
    longer replay; here: the sequential gate promotes a model fitted to the new regime, and the
    report counts it from the change."""
    root, _, _ = replays
    report = json.loads((root / "whole" / "replay.json").read_text())
    change = report["regime_changes"][0]
    assert change["weeks_to_promotion"] is not None
    assert change["new_regime_share_of_window"] >= 0.5
    assert 0 < change["weeks_to_first_promotion_trained_after"] <= 10
    cutoff = dt.date.fromisoformat(change["model_cutoff"])
    assert cutoff >= dt.date(2024, 5, 1) + dt.timedelta(days=30)  # half its 60-day window after
    assert change["accuracy_after_promotion"]["rows"] > 0


def test_a_replay_into_stores_that_hold_later_history_is_refused(replays, capsys):
    """Weeks before the recorded replay would run on a pointer and candidates from their future."""
    _, whole, _ = replays
    events = (whole.models_path / "events.jsonl").read_bytes()
    code = main(
        ["--config", str(whole.config_path), "replay", "--from", "2024-03-01", "--to", "2024-03-31"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "already hold history up to 2024-08-30" in err and "stores of its own" in err
    assert (whole.models_path / "events.jsonl").read_bytes() == events  # nothing ran


def test_a_range_outside_the_data_is_refused(write_settings):
    settings = write_settings()
    with pytest.raises(Stage2Error, match="outside the data of source 'simulated'"):
        replay_weeks(settings, dt.date(2020, 1, 6), dt.date(2020, 6, 30))
    with pytest.raises(Stage2Error, match="before the first bar"):
        replay_weeks(settings, dt.date(2023, 12, 1), dt.date(2024, 6, 30))
    with pytest.raises(Stage2Error, match="before --from"):
        replay_weeks(settings, dt.date(2024, 6, 1), dt.date(2024, 5, 1))
    weeks = replay_weeks(settings, dt.date(2024, 6, 5), dt.date(2024, 6, 20))
    assert weeks == [
        ("2024-06-02", dt.date(2024, 6, 8)),
        ("2024-06-09", dt.date(2024, 6, 15)),
        ("2024-06-16", dt.date(2024, 6, 20)),
    ]


def test_a_promotion_counts_for_a_regime_only_once_most_of_its_window_is_in_it():
    from stage2_assets.replay.evaluation import _regime_change

    change = dt.date(2025, 1, 2)
    served = [
        (dt.date(2024, 12, 21), "v1"),  # before the change
        (dt.date(2025, 1, 18), "v2"),  # cut-off 2 days after the change: the old regime's model
        (dt.date(2025, 3, 8), "v3"),  # 51 of its 60 days in the new regime
    ]
    cutoffs = {"v1": "2024-12-07", "v2": "2025-01-04", "v3": "2025-02-22"}
    out = _regime_change(change, served, cutoffs, data_window_days=60)
    assert out["first_promotion_after"] == "2025-03-08"
    assert out["weeks_to_promotion"] == 10
    assert out["model_cutoff"] == "2025-02-22"
    assert out["new_regime_share_of_window"] == pytest.approx(51 / 60)
    assert out["first_promotion_trained_after"] == "2025-01-18"
    assert out["weeks_to_first_promotion_trained_after"] == 3
    none_yet = _regime_change(change, served[:2], cutoffs, data_window_days=60)
    assert none_yet["weeks_to_promotion"] is None
    assert none_yet["weeks_to_first_promotion_trained_after"] == 3
    # recency weights of a 10-day half-life, the last 14 days (validation, embargo) untrained: a
    # model whose cut-off is 14 days into the new regime trained on none of it; at 28 days 65% of
    # its training weight, (0.5**1.4 - 0.5**2.8) / (0.5**1.4 - 0.5**6), lies after the change
    served = [*served[:2], (dt.date(2025, 1, 25), "v4"), (dt.date(2025, 2, 8), "v5"), served[2]]
    cutoffs = {**cutoffs, "v4": "2025-01-16", "v5": "2025-01-30"}
    weighted = _regime_change(change, served, cutoffs, 60, half_life_days=10, untrained_days=14)
    assert weighted["model_cutoff"] == "2025-01-30" and weighted["weeks_to_promotion"] == 6
    assert weighted["new_regime_share_of_window"] == pytest.approx(
        (0.5**1.4 - 0.5**2.8) / (0.5**1.4 - 0.5**6)
    )
    assert _regime_change(change, served, cutoffs, 60)["model_cutoff"] == "2025-02-22"


def test_a_replay_before_any_production_reports_a_note_not_a_crash(tmp_path):
    """Weeks in which the bootstrap refused every candidate: no arm has a model, nothing logged."""
    import pandas as pd

    from stage2_assets.replay.evaluation import evaluate

    warehouse = Warehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as conn:
        conn.execute(
            "INSERT INTO features (symbol, date, label, fwd_return, label_date) "
            "VALUES ('AAA', '2019-01-07', 1, 0.01, '2019-01-09')"
        )
    weeks = pd.DataFrame(
        {
            "week": ["2019-01-06"],
            "as_of": [dt.date(2019, 1, 12)],
            "status": ["done"],
            "reason": [None],
        }
    )
    report = evaluate(warehouse, ModelStore(root=str(tmp_path / "models")), weeks, 5.0, 100)
    assert report["rows"] == 0 and report["arms"] == {}
    assert "first production model came too late" in report["note"]
    assert report["unlogged_rows"] == {"adaptive": 0, "frozen": 0, "always_promote": 0}


def test_rerunning_a_finished_replay_says_it_resumes_and_gives_the_same_report(
    replays, capsys, monkeypatch
):
    root, whole, _ = replays
    monkeypatch.setenv("DAGSTER_HOME", str(root / "whole" / "dagster_home"))
    assert _replay(whole, root / "whole", name="again") == 0
    assert (
        "resuming: 22 of 22 weeks already recorded in replay_log, skipped"
        in capsys.readouterr().out
    )
    assert (root / "whole" / "again.json").read_bytes() == (
        root / "whole" / "replay.json"
    ).read_bytes()


# a looser gate than REPLAY's: it promotes on weaker evidence, so the decisions differ
LOOSER = {"ab_testing.false_promotion_budget": "0.45", "ab_testing.shadow_mode_duration": "7d"}


@pytest.fixture(scope="module")
def looser_replay(tmp_path_factory):
    """The same replay, run in full under the looser gate."""
    root = tmp_path_factory.mktemp("looser")
    ab = {
        **REPLAY["ab_testing"],
        "false_promotion_budget": float(LOOSER["ab_testing.false_promotion_budget"]),
        "shadow_mode_duration": LOOSER["ab_testing.shadow_mode_duration"],
    }
    settings, home = make_project(
        root,
        {**REPLAY, "ab_testing": ab, "retraining": {**REPLAY["retraining"], "keep_versions": 3}},
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home))
    assert _replay(settings, root) == 0
    mp.undo()
    return root, settings


def _sweep(settings, folder, *items, to=TO):
    out = folder / "sweep.json"
    code = _stage2_replay(settings, to, "--sweep", *items, "--json-out", str(out))
    return code, (json.loads(out.read_text()) if code == 0 else None)


def test_a_sweep_gives_what_a_full_replay_under_that_setting_gives(replays, looser_replay):
    """Re-deciding the finished replay from its logs under the looser gate gives the decisions,
    pointer moves and arm figures of a replay run in full under it, and the other way round."""
    root, whole, _ = replays
    looser_root, looser = looser_replay
    code, swept = _sweep(whole, root, *(f"{k}={v}" for k, v in LOOSER.items()))
    assert code == 0
    assert swept["sweep_check"]["decisions_reproduced"] and swept["sweep_check"]["moves_reproduced"]
    (row,) = swept["sweep"]
    assert row["setting"] == LOOSER and row["exact"] and row["unlogged"] == []
    full = json.loads((looser_root / "replay.json").read_text())
    assert row["decisions"] != swept["decisions"]  # the setting changed what was decided
    for key in ("decisions", "production_timeline", "rows", "arms", "baselines", "differences"):
        assert row[key] == full[key], key
    assert row["regime_changes"] == full["regime_changes"]
    # back: the looser replay's logs, under REPLAY's gate, give the whole replay's figures
    code, back = _sweep(
        looser,
        looser_root,
        "ab_testing.false_promotion_budget=0.1",
        "ab_testing.shadow_mode_duration=14d",
    )
    original = json.loads((root / "whole" / "replay.json").read_text())
    for key in ("decisions", "production_timeline", "rows", "arms", "differences"):
        assert back["sweep"][0][key] == original[key], key


def test_a_sweep_refuses_what_is_not_a_gate_setting_and_an_unfinished_replay(replays, capsys):
    root, whole, _ = replays
    code, _ = _sweep(whole, root, "retraining.data_window=30d")
    assert code == 2
    err = capsys.readouterr().err
    assert "'retraining.data_window' is not a gate setting" in err
    assert "ab_testing.false_promotion_budget" in err and "ab_testing.min_improvement" in err
    code, _ = _sweep(whole, root, "ab_testing.min_samples=200,5")
    err = capsys.readouterr().err  # every value validated like the config, before any work
    assert code == 2 and "--sweep ab_testing.min_samples=5: ab_testing.min_samples:" in err
    # a range ending mid-week: that week ran (as of the replay's own end), so it is swept
    code, report = _sweep(whole, root, "ab_testing.min_samples=200", to="2024-08-26")
    assert code == 0 and report["sweep"][0]["period"]["to"] < "2024-08-26"
    code, _ = _sweep(whole, root, "ab_testing.min_samples=200", to="2024-09-30")
    assert code == 2
    assert "have not run: run the same replay without --sweep" in capsys.readouterr().err


def test_the_printed_summary_names_production_moves_and_the_weeks_to_adapt():
    from stage2_assets.replay.evaluation import _regime_change
    from stage2_assets.replay.report import summary_lines

    report = {
        "arms": {},
        "decisions": {"promote": 5, "keep": 3},
        "production_timeline": [
            {"after": "2024-04-06", "model_cutoff": "2024-04-06"},
            {"after": "2024-08-10", "model_cutoff": "2024-07-13"},
            {"after": "2024-08-17", "model_cutoff": "2024-07-20"},
        ],
        "regime_changes": [
            {
                "change": "2024-07-01",
                "weeks_to_promotion": 6,
                "first_promotion_after": "2024-08-10",
                "model_cutoff": "2024-07-13",
            },
            # a change no fitted model followed, as the evaluation writes it
            _regime_change(
                dt.date(2025, 1, 2), [(dt.date(2024, 12, 21), "v1")], {"v1": "2024-12-14"}, 60
            ),
        ],
    }
    assert report["regime_changes"][1]["weeks_to_promotion"] is None
    assert summary_lines(report) == [
        "decisions: promote 5, keep 3; first production from 2024-04-06, then moved 2 times",
        "regime change 2024-07-01: a fitted model served after 6 weeks (promoted 2024-08-10, "
        "cut-off 2024-07-13)",
        "regime change 2025-01-02: no fitted model served by the end of the replay",
    ]
    report["production_timeline"] = report["production_timeline"][:2]
    assert summary_lines(report)[0].endswith("then moved 1 time")
    report["production_timeline"] = []
    assert "no model reached production" in summary_lines(report)[0]
