"""Weekly training at the size of a universe, on the device Lightning picks or on the one named.

One weekly candidate is trained as the `ensemble_vN` asset trains it (`ml.candidate.build_candidate`:
the default config's 2-year window, validation split, embargo, 5 members as one batched module, early
stopping), on
  * the real data (`--data`, the 150 symbols of ../shared/market-data), and
  * simulated universes of N symbols (`--symbols 1000 5000`), the default config's market (its
    regimes, market and sector factors) with N symbols, the window ending at `--cutoff`,
at each batch size of `--batch-sizes`. Prints, per run: rows, device, seconds, epochs run, seconds per
epoch, samples per second, validation accuracy and log loss, peak resident memory (and peak GPU memory
on CUDA). `--max-epochs` caps epochs (a slow setting is timed per epoch without running 20 of them).
Imports no Dagster, DuckDB or Great Expectations, so it runs on a bare GPU machine with torch, Lightning,
pandas, pydantic and exchange_calendars.

    python benchmarks/bench_training_scale.py --accelerator auto --symbols 0 5000 --batch-sizes 128 1024 8192
    (0 = the real data)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

try:  # the config checks cron strings with Dagster; a bare GPU machine has no Dagster
    import dagster  # noqa: F401
except ImportError:
    import types

    _stub = types.ModuleType("dagster._utils.schedules")
    _stub.is_valid_cron_string = lambda text: True
    sys.modules.update(
        {
            "dagster": types.ModuleType("dagster"),
            "dagster._utils": types.ModuleType("dagster._utils"),
            "dagster._utils.schedules": _stub,
        }
    )

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from stage2_assets.config import load_settings  # noqa: E402
from stage2_assets.market.simulator import MarketSpec, RegimeSpec, simulate_bars  # noqa: E402
from stage2_assets.ml.candidate import build_candidate, candidate_split  # noqa: E402
from stage2_assets.ml.features import compute_features  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "market-data"


def real_bars(folder: Path) -> pd.DataFrame:
    """The CSVs as the csv source stores them: one symbol per file, positive closes, one row a day."""
    frames = []
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path, parse_dates=["date"])
        frame.columns = [c.lower() for c in frame.columns]
        frame["symbol"] = path.stem.upper()
        frames.append(frame)
    bars = pd.concat(frames, ignore_index=True).drop_duplicates(["symbol", "date"], keep="last")
    return bars[bars["close"] > 0].dropna(subset=["open", "high", "low", "close", "volume"])


def simulated_bars(settings, symbols: int, cutoff: dt.date) -> pd.DataFrame:
    sim = settings.data_source.simulated
    start = cutoff - dt.timedelta(days=int(settings.retraining.data_window * 1.5) + 200)
    spec = MarketSpec(
        seed=sim.seed,
        num_symbols=symbols,
        start_date=start,
        regimes=[
            RegimeSpec(
                dt.date.fromisoformat(str(r.start)),
                r.drift,
                r.volatility,
                r.momentum,
                r.volume_signal,
            )
            for r in sim.regimes
        ],
        market_share=sim.market_share,
        sector_share=sim.sector_share,
        num_sectors=sim.num_sectors,
    )
    bars = simulate_bars(spec, spec.symbols, cutoff)
    bars["date"] = pd.to_datetime(bars["date"])
    return bars


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_run(split, cutoff, retraining, rule, batch: int, max_epochs: int, accelerator: str) -> dict:
    chosen = retraining.model_copy(update={"batch_size": batch, "max_epochs": max_epochs})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    _, meta = build_candidate(split, cutoff, chosen, {"accelerator": accelerator}, rule)
    wall = time.perf_counter() - started
    training = meta["training"]
    epochs = max(training["epochs_run"], 1)
    ensemble = meta["metrics"]["ensemble"]
    return {
        "batch_size": batch,
        "max_epochs": max_epochs,
        "device": training["device"],
        "fit_seconds": training["seconds"],
        "wall_seconds": round(wall, 2),
        "epochs_run": training["epochs_run"],
        "best_epoch": training["best_epoch"],
        "seconds_per_epoch": round(training["seconds"] / epochs, 3),
        "samples_per_second": round(
            len(split.train) * chosen.num_models * epochs / training["seconds"]
        ),
        "val_accuracy": round(ensemble["accuracy"], 4),
        "val_log_loss": round(ensemble["log_loss"], 5),
        "always_up_accuracy": round(meta["metrics"]["baselines"]["always_up"]["accuracy"], 4),
        "peak_rss_mib": round(peak_mib()),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20)
        if torch.cuda.is_available()
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--symbols", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap (default: the config's)")
    parser.add_argument(
        "--slow-epochs",
        type=int,
        default=2,
        help="epoch cap for a batch size under 1,024 on more than 200,000 rows (timed per epoch)",
    )
    parser.add_argument(
        "--cutoff",
        nargs="+",
        default=["2019-12-31"],
        help="real data's cut-off(s): one run per cut-off",
    )
    parser.add_argument("--sim-cutoff", default="2024-12-27", help="simulated universes' cut-off")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    parser.add_argument("--json-out")
    args = parser.parse_args()
    settings = load_settings()
    retraining, rule = settings.retraining, settings.label_rule
    batches = args.batch_sizes or [retraining.batch_size]
    max_epochs = args.max_epochs or retraining.max_epochs
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cuda {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
        f"accelerator {args.accelerator}; {retraining.num_models} members, hidden {retraining.hidden_units}, "
        f"window {retraining.data_window} days, patience {retraining.early_stopping_patience}; label {rule.describe()}",
        flush=True,
    )
    header = (
        f"{'universe':>9} {'train rows':>10} {'batch':>6} {'device':>7} {'fit s':>7} {'epochs':>6} "
        f"{'s/epoch':>8} {'samples/s':>10} {'val acc':>7} {'val LL':>7} {'up acc':>6} {'RSS MiB':>8} {'GPU MiB':>8}"
    )
    results = []
    universes = [(0, c) for s in args.symbols if s == 0 for c in args.cutoff] + [
        (s, args.sim_cutoff) for s in args.symbols if s != 0
    ]
    for symbols, chosen_cutoff in universes:
        started = time.perf_counter()
        if symbols == 0:
            folder = Path(args.data)
            if not folder.is_dir():
                print(f"real data not found at {folder}; skipped", file=sys.stderr)
                continue
            cutoff = dt.date.fromisoformat(chosen_cutoff)
            bars = real_bars(folder)
            name = "real" if len(args.cutoff) == 1 else f"r{cutoff:%y%m%d}"
        else:
            cutoff = dt.date.fromisoformat(args.sim_cutoff)
            bars, name = simulated_bars(settings, symbols, cutoff), f"sim{symbols}"
        features = compute_features(bars, rule)
        split = candidate_split(features, cutoff, retraining, rule)
        del bars
        print(
            f"{name}: {features['symbol'].nunique()} symbols, features {len(features)} rows, "
            f"window to {cutoff}: {len(split.train)} training, {len(split.val)} validation rows "
            f"(data and features {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        print(header, flush=True)
        for batch in batches:
            cap = max_epochs
            if batch < 1024 and len(split.train) > 200_000:
                cap = min(cap, args.slow_epochs)
            r = {"universe": name, "train_rows": len(split.train), "val_rows": len(split.val)}
            r |= one_run(split, cutoff, retraining, rule, batch, cap, args.accelerator)
            results.append(r)
            gpu = "" if r["peak_gpu_mib"] is None else r["peak_gpu_mib"]
            print(
                f"{name:>9} {r['train_rows']:>10} {batch:>6} {r['device'][:7]:>7} {r['fit_seconds']:>7.1f} "
                f"{r['epochs_run']:>3}/{cap:<2} {r['seconds_per_epoch']:>8.2f} {r['samples_per_second']:>10} "
                f"{r['val_accuracy']:>7.4f} {r['val_log_loss']:>7.4f} {r['always_up_accuracy']:>6.3f} "
                f"{r['peak_rss_mib']:>8} {gpu:>8}",
                flush=True,
            )
    if len(args.cutoff) > 1 and results:
        print("\nreal data over the cut-offs, per batch size (mean; val = the window's last 20%):")
        frame = pd.DataFrame(
            [r for r in results if r["universe"] != "real" and not r["universe"].startswith("sim")]
        )
        for batch, part in frame.groupby("batch_size"):
            print(
                f"batch {batch:>6}: fit {part['fit_seconds'].mean():6.2f} s, epochs {part['epochs_run'].mean():4.1f}, "
                f"val accuracy {part['val_accuracy'].mean():.4f} (min {part['val_accuracy'].min():.4f}), "
                f"val log loss {part['val_log_loss'].mean():.5f}, always-up {part['always_up_accuracy'].mean():.4f}"
            )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
