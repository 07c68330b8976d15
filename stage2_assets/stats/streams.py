"""Simulated paired prediction streams on a market with a common factor, for null and power checks.

Each day, every symbol's return is a common market move plus its own part:
``r = sqrt(market_share) * f_day + sqrt(1 - market_share) * e``, and the label is ``r > 0``. A
model's logit of P(up) is ``skill * s + view_day + noise``, where ``s`` is a signal that carries
part of ``e`` and ``view_day`` is the model's own view of the day's market, the same for every
symbol (its share of the logit's variance is ``view_share``). Both make the rows of one day move
together, as on real markets: a test that treats rows as independent is too bold here.

The candidate reads the signal with ``+skill``; production with ``-skill`` (the regime has turned
against it) or, for a null, with the same sign as the candidate. The accuracy edge is exact for
these Gaussian variables: P(sign agreement) = 1/2 + arcsin(c)/pi for correlation c.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

SKILL = 0.25  # logit units per unit signal: P(up) mostly within 0.4..0.6, as stage2's models
NOISE = 0.05  # the model's own row-level noise, logit units


def signal_loading(accuracy_edge: float, market_share: float, view_share: float) -> float:
    """The loading of ``e`` on the signal that makes candidate - production accuracy = the edge.

    With production reading the signal with the opposite sign, each model is off 50% by half
    the edge: c = sin(pi * edge / 2) is the correlation of the candidate's logit with the return.
    """
    c = np.sin(np.pi * accuracy_edge / 2)
    logit_sd = np.sqrt((SKILL**2 + NOISE**2) / (1 - view_share))
    kappa = c * logit_sd / (SKILL * np.sqrt(1 - market_share))
    if not 0 <= kappa < 1:
        raise ValueError(f"an accuracy edge of {accuracy_edge} is out of reach of this market")
    return float(kappa)


def model_logits(rng, shape, signal, sign, view_share) -> np.ndarray:
    view_sd = np.sqrt(view_share / (1 - view_share) * (SKILL**2 + NOISE**2))
    views = rng.standard_normal((*shape[:-1], 1)) * view_sd
    return sign * SKILL * signal + views + NOISE * rng.standard_normal(shape)


def market_days(rng, shape, market_share: float, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """(signal, return) arrays of ``shape`` (..., days, symbols) with one market move per day."""
    factor = rng.standard_normal((*shape[:-1], 1))
    signal = rng.standard_normal(shape)
    own = kappa * signal + np.sqrt(1 - kappa**2) * rng.standard_normal(shape)
    returns = np.sqrt(market_share) * factor + np.sqrt(1 - market_share) * own
    return signal, returns


def paired_streams(
    streams: int,
    days: int,
    symbols: int,
    *,
    accuracy_edge: float = 0.0,
    market_share: float = 0.3,
    view_share: float = 0.12,
    seed: int = 0,
    start: str = "2024-01-02",
) -> pd.DataFrame:
    """Independent comparisons (``comparison`` 0..streams-1), each ``days`` x ``symbols`` rows.

    ``accuracy_edge`` 0 is a null: both models read the same signal with the same sign (equal
    skill, their own day views and noise).
    """
    rng = np.random.default_rng(seed)
    shape = (streams, days, symbols)
    kappa = signal_loading(abs(accuracy_edge), market_share, view_share)
    if accuracy_edge == 0:
        kappa = signal_loading(0.06, market_share, view_share)  # some skill, the same for both
    signal, returns = market_days(rng, shape, market_share, kappa)
    candidate = model_logits(rng, shape, signal, 1.0, view_share)
    production = model_logits(rng, shape, signal, -1.0 if accuracy_edge else 1.0, view_share)
    dates = pd.bdate_range(start, periods=days)
    index = pd.MultiIndex.from_product(
        [range(streams), dates, [f"S{i:03d}" for i in range(symbols)]],
        names=["comparison", "date", "symbol"],
    )
    return pd.DataFrame(
        {
            "label": (returns > 0).astype(np.int8).ravel(),
            "fwd_return": (0.01 * returns).ravel(),
            "prob_candidate": special.expit(candidate).ravel(),
            "prob_production": special.expit(production).ravel(),
        },
        index=index,
    ).reset_index()


def between_day_share(values: np.ndarray, days: np.ndarray) -> float:
    """Share of the variance of ``values`` that lies between the day means (one-way ANOVA)."""
    frame = pd.DataFrame({"v": np.asarray(values, dtype=float), "d": days})
    total = frame["v"].var(ddof=0)
    between = frame.groupby("d")["v"].transform("mean").var(ddof=0)
    return float(between / total) if total > 0 else 0.0
