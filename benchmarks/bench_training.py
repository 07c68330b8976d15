"""Training benchmark: one weekly training on all of ../shared/market-data with the default config.

Prints wall time, peak resident memory and samples per second of
  1. the weekly training as stage2 runs it (5 members as one batched module, early stopping),
  2. the same at a fixed 20 epochs (no early stopping), and
  3. the naive way at a fixed 20 epochs: the 5 members one after another, each in its own Trainer,
and the ratio naive / batched. Needs the features of the real data in a warehouse: it builds them
(refresh + gate + features) in a temporary folder first.

    python benchmarks/bench_training.py [--data ../shared/market-data] [--cutoff 2019-12-31]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from stage2_assets.config import load_settings  # noqa: E402
from stage2_assets.ml.dataset import time_split  # noqa: E402
from stage2_assets.ml.ensemble import member_probabilities  # noqa: E402
from stage2_assets.ml.features import compute_features  # noqa: E402
from stage2_assets.ml.metrics import classification_metrics  # noqa: E402
from stage2_assets.ml.training import train_ensemble  # noqa: E402
from stage2_assets.resources.market_data import CsvSource  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, seconds: float, samples: int, extra: str = "") -> None:
    print(
        f"{name:<44} {seconds:8.1f} s  {samples / seconds:10.0f} samples/s  peak RSS {peak_mib():7.0f} MiB  {extra}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "market-data"),
    )
    parser.add_argument("--cutoff", default="2019-12-31")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        print(f"market data not found at {args.data}", file=sys.stderr)
        return 2
    r = load_settings().retraining
    cutoff = dt.date.fromisoformat(args.cutoff)
    source = CsvSource(folder=args.data)
    fetched = source.fetch(dict.fromkeys(source.available_symbols(), dt.date(2015, 1, 1)), cutoff)
    bars = pd.concat(fetched.bars.values(), ignore_index=True).drop_duplicates(["symbol", "date"])
    bars = bars[bars["close"] > 0]
    features = compute_features(bars, r.label_horizon_days)
    split = time_split(
        features, cutoff, r.data_window, r.validation_split, r.label_horizon_days, r.min_train_rows
    )
    x_train, y_train = split.scaled(split.train), split.train["label"].to_numpy(np.float32)
    x_val, y_val = split.scaled(split.val), split.val["label"].to_numpy(np.float32)
    print(
        f"window to {cutoff}: {len(x_train)} training rows, {len(x_val)} validation rows, "
        f"{r.num_models} members, batch {r.batch_size}, up to {r.max_epochs} epochs; torch threads {__import__('torch').get_num_threads()}"
    )
    common = dict(
        hidden=r.hidden_units, learning_rate=r.learning_rate, batch_size=r.batch_size, seed=r.seed
    )

    weekly = train_ensemble(
        x_train,
        y_train,
        x_val,
        y_val,
        num_members=r.num_models,
        max_epochs=r.max_epochs,
        patience=r.early_stopping_patience,
        **common,
    )
    acc = classification_metrics(member_probabilities(weekly.model, x_val).mean(0), y_val)[
        "accuracy"
    ]
    report(
        "weekly training (batched, early stopping)",
        weekly.seconds,
        len(x_train) * r.num_models * weekly.epochs_run,
        f"epochs {weekly.epochs_run}, best {weekly.best_epoch}, val accuracy {acc:.4f}, device {weekly.device}",
    )

    fixed = train_ensemble(
        x_train,
        y_train,
        x_val,
        y_val,
        num_members=r.num_models,
        max_epochs=r.max_epochs,
        patience=r.max_epochs + 1,
        **common,
    )
    acc = classification_metrics(member_probabilities(fixed.model, x_val).mean(0), y_val)[
        "accuracy"
    ]
    batched_samples = len(x_train) * r.num_models * fixed.epochs_run
    report(
        f"batched, fixed {r.max_epochs} epochs",
        fixed.seconds,
        batched_samples,
        f"val accuracy {acc:.4f}",
    )
    if args.skip_naive:
        return 0
    started = time.perf_counter()
    probs = []
    for k in range(r.num_models):
        one = train_ensemble(
            x_train,
            y_train,
            x_val,
            y_val,
            num_members=1,
            max_epochs=r.max_epochs,
            patience=r.max_epochs + 1,
            **{**common, "seed": r.seed + k},
        )
        probs.append(member_probabilities(one.model, x_val)[0])
    naive_seconds = time.perf_counter() - started
    acc = classification_metrics(np.mean(probs, axis=0), y_val)["accuracy"]
    report(
        f"naive: {r.num_models} Trainers one after another",
        naive_seconds,
        batched_samples,
        f"val accuracy {acc:.4f}",
    )
    print(f"ratio naive / batched at {r.max_epochs} epochs: {naive_seconds / fixed.seconds:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
