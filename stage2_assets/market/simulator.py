"""A seeded market simulator with regime changes, for offline runs and planted-effect tests.

Each symbol's daily log return is drift plus noise plus two learnable signals whose strength each
regime sets:

- momentum: a coefficient on the sum of the previous five returns (mean reversion when negative).
  It is spread over several days, so yesterday's direction alone captures only part of it.
- volume_signal: a coefficient, in units of the day's volatility, on yesterday's volume shock
  (heavy volume followed by gains when positive). It is invisible in past prices, so a model
  fitted to a momentum regime has no edge in a volume regime, and the reverse.

Returns share common moves, as real stocks do: a market factor (each symbol's loading drawn around 1)
and one of ``num_sectors`` sector factors carry ``market_share`` and ``sector_share`` of a symbol's
daily variance; the rest is the symbol's own. Both signals act on that own part (momentum sums the
previous own returns), so what a model can learn is cross-sectional, and every day's rows move
together, the reason the promotion test treats the day, not the row, as its unit. With both shares
at 0 the bars are those of a market of independent symbols.

Drift, volatility and both coefficients switch at the regime dates, so a model fitted to one
regime decays in the next, whether the next flips the sign of the signal or changes its kind.

Episodes are the weeks in which training goes wrong in ways that pass the data gate (the replay
issue's bad-candidate market): ``transient`` overrides the regime's momentum and volume signal for a
few sessions, then the regime resumes (a model fitted to the episode is wrong afterwards);
``label_noise`` takes every signal out of those sessions (their labels are coin flips); ``stale_feed``
repeats the bars of the sessions just before it, re-dated, as a feed stuck on last week's file does.

Bars are a pure function of (seed, symbol index, session) and the factors' (seed, session): the bars up to a date never depend on
how far the simulation runs, so answering "as of" any date is consistent with every later answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stage2_assets.market.bars import STORED_COLUMNS
from stage2_assets.market.calendar import nyse_sessions

WART_KINDS = ("duplicate_day", "zero_price", "nan_close", "split", "gap", "bad_high")
EPISODE_KINDS = ("transient", "label_noise", "stale_feed")
# Planted faults sit this many sessions after the start, so every as-of past it shows them.
WART_SESSION = 150
_DRAWS_PER_SESSION = 5
MOMENTUM_DAYS = 5
# Stream keys of the factor draws, above every symbol index (num_symbols <= 10,000).
_MARKET_STREAM = 1_000_000
_SECTOR_STREAM = 1_000_001
# A symbol's loadings are drawn in [1 - spread, 1 + spread]; with the largest loading the shares
# must leave room for the symbol's own part.
_LOADING_SPREAD = 0.2
MAX_FACTOR_SHARE = 0.6


@dataclass(frozen=True)
class RegimeSpec:
    start: dt.date
    drift: float
    volatility: float
    momentum: float
    volume_signal: float = 0.0


@dataclass(frozen=True)
class EpisodeSpec:
    kind: str
    start: dt.date
    sessions: int
    momentum: float = 0.0
    volume_signal: float = 0.0


@dataclass(frozen=True)
class MarketSpec:
    seed: int
    num_symbols: int
    start_date: dt.date
    regimes: Sequence[RegimeSpec]
    warts: Sequence[str] = field(default_factory=tuple)
    market_share: float = 0.0
    sector_share: float = 0.0
    num_sectors: int = 1
    episodes: Sequence[EpisodeSpec] = field(default_factory=tuple)

    @property
    def symbols(self) -> list[str]:
        return simulated_symbols(self.num_symbols)

    def wart_symbols(self) -> dict[str, str]:
        """Which symbol carries which planted fault (one symbol per fault, in order)."""
        return {kind: self.symbols[i % self.num_symbols] for i, kind in enumerate(self.warts)}


def simulated_symbols(count: int) -> list[str]:
    return [f"SIM{i:03d}" for i in range(count)]


def _regime_index(sessions: pd.DatetimeIndex, regimes: Sequence[RegimeSpec]) -> np.ndarray:
    starts = np.array([np.datetime64(r.start) for r in regimes], dtype="datetime64[ns]")
    return np.clip(starts.searchsorted(sessions.values, side="right") - 1, 0, None)


def simulate_bars(spec: MarketSpec, symbols: Sequence[str], end: dt.date) -> pd.DataFrame:
    """Daily bars of the given simulated symbols from the spec's start date up to ``end``."""
    sessions = nyse_sessions(spec.start_date, end)
    if len(sessions) == 0:
        return pd.DataFrame(columns=STORED_COLUMNS)
    universe = spec.symbols
    unknown = [s for s in symbols if s not in universe]
    if unknown:
        raise ValueError(
            f"unknown simulated symbol(s) {', '.join(unknown)}; this market has {universe[0]}..{universe[-1]}"
        )
    explosive = [r for r in spec.regimes if abs(r.momentum) * MOMENTUM_DAYS >= 1]
    if explosive:
        raise ValueError(
            f"regime starting {explosive[0].start}: |momentum| must stay below {1 / MOMENTUM_DAYS} or prices explode"
        )
    if spec.market_share + spec.sector_share > MAX_FACTOR_SHARE:
        raise ValueError(
            f"market_share + sector_share is {spec.market_share + spec.sector_share}; at most "
            f"{MAX_FACTOR_SHARE} leaves each symbol a part of its own"
        )
    regime = _regime_index(sessions, spec.regimes)
    drift = np.array([r.drift for r in spec.regimes])[regime]
    vol = np.array([r.volatility for r in spec.regimes])[regime]
    phi = np.array([r.momentum for r in spec.regimes])[regime]
    beta = np.array([r.volume_signal for r in spec.regimes])[regime]
    stale = []
    for episode in spec.episodes:
        if episode.kind not in EPISODE_KINDS:
            raise ValueError(f"unknown episode {episode.kind!r}; known: {', '.join(EPISODE_KINDS)}")
        at = int(sessions.searchsorted(pd.Timestamp(episode.start)))
        span = slice(at, min(at + episode.sessions, len(sessions)))
        if episode.kind == "transient":
            phi, beta = phi.copy(), beta.copy()
            phi[span], beta[span] = episode.momentum, episode.volume_signal
        elif episode.kind == "label_noise":
            phi, beta = phi.copy(), beta.copy()
            phi[span], beta[span] = 0.0, 0.0
        elif at >= episode.sessions:
            stale.append((at, episode.sessions))
    wart_of = {symbol: kind for kind, symbol in spec.wart_symbols().items()}
    market = _factor(spec.seed, _MARKET_STREAM, len(sessions), spec.market_share)
    sectors = {}
    frames = []
    for symbol in symbols:
        index = universe.index(symbol)
        sector = index % max(spec.num_sectors, 1)
        if sector not in sectors:
            sectors[sector] = _factor(
                spec.seed, _SECTOR_STREAM + sector, len(sessions), spec.sector_share
            )
        frames.append(
            _simulate_one(
                spec.seed,
                index,
                symbol,
                sessions,
                drift,
                vol,
                phi,
                beta,
                wart_of.get(symbol),
                (market, sectors[sector], spec.market_share + spec.sector_share),
            )
        )
    bars = pd.concat(frames, ignore_index=True)
    return _stale(bars, stale) if stale else bars


def _stale(bars: pd.DataFrame, episodes: list[tuple[int, int]]) -> pd.DataFrame:
    """Sessions [at, at + n) carry the bars of sessions [at - n, at), re-dated."""
    out = []
    for _, frame in bars.groupby("symbol", sort=False):
        frame = frame.reset_index(drop=True).copy()
        values = ["open", "high", "low", "close", "volume"]
        for at, n in episodes:
            end = min(at + n, len(frame))
            if at < len(frame):
                frame.loc[at : end - 1, values] = frame.loc[
                    at - n : at - n + (end - at) - 1, values
                ].to_numpy()
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def _factor(seed: int, stream: int, sessions: int, share: float) -> np.ndarray:
    """One factor's unit-variance draws, scaled by sqrt(share); zeros when the share is 0."""
    if share <= 0:
        return np.zeros(sessions)
    return np.sqrt(share) * np.random.default_rng([seed, stream, 0]).standard_normal(sessions)


def _simulate_one(
    seed: int,
    index: int,
    symbol: str,
    sessions: pd.DatetimeIndex,
    drift: np.ndarray,
    vol: np.ndarray,
    phi: np.ndarray,
    beta: np.ndarray,
    wart: str | None,
    factors: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> pd.DataFrame:
    static = np.random.default_rng([seed, index, 1])
    price0 = float(static.uniform(20, 200))
    vol_scale = float(static.uniform(0.7, 1.4))
    base_volume = float(static.uniform(2e5, 5e6))
    market, sector, shares = factors if factors else (0.0, 0.0, 0.0)
    if shares > 0:
        # loadings from a stream of their own, so markets without factors keep their bars
        loadings = np.random.default_rng([seed, index, 2]).uniform(
            1 - _LOADING_SPREAD, 1 + _LOADING_SPREAD, size=2
        )
        common = loadings[0] * market + loadings[1] * sector
        own_scale = np.sqrt(max(1.0 - float(np.mean(loadings**2)) * shares, 0.05))
    else:
        common, own_scale = 0.0, 1.0
    # One row of draws per session, drawn in order: the prefix property behind "as of".
    draws = np.random.default_rng([seed, index, 0]).standard_normal(
        (len(sessions), _DRAWS_PER_SESSION)
    )
    sigma = vol * vol_scale
    innovation = own_scale * sigma * draws[:, 0]
    # Yesterday's volume shock (draws[:, 4] drives the volume below) moves today's return.
    volume_shock = np.concatenate([[0.0], draws[:-1, 4]])
    innovation = innovation + beta * sigma * volume_shock
    own = np.zeros(len(sessions))
    window = 0.0  # sum of the previous MOMENTUM_DAYS own returns
    for t in range(len(sessions)):
        own[t] = phi[t] * window + innovation[t]
        window += own[t]
        if t >= MOMENTUM_DAYS:
            window -= own[t - MOMENTUM_DAYS]
    returns = drift + sigma * common + own
    close = price0 * np.exp(np.cumsum(returns))
    prev_close = np.concatenate([[price0], close[:-1]])
    open_ = prev_close * np.exp(0.25 * sigma * draws[:, 1])
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(draws[:, 2]))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(draws[:, 3]))
    volume = np.round(base_volume * np.exp(0.3 * draws[:, 4] + 8.0 * np.abs(returns)))
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "date": sessions,
            "open": open_.round(4),
            "high": high.round(4),
            "low": low.round(4),
            "close": close.round(4),
            "volume": volume,
            "source": "simulated",
        }
    )
    return _plant(frame, wart) if wart else frame


def _plant(frame: pd.DataFrame, wart: str) -> pd.DataFrame:
    """Plant one fault at WART_SESSION, as real feeds show them."""
    if len(frame) <= WART_SESSION + 25:
        return frame
    at = WART_SESSION
    frame = frame.copy()
    if wart == "duplicate_day":
        # a second copy of the day with another volume (as CBS's in the real data differs): an
        # exact copy would be collapsed before storage and never reach the gate
        again = frame.iloc[[at]].assign(volume=frame.iloc[at]["volume"] * 2)
        frame = pd.concat([frame.iloc[: at + 1], again, frame.iloc[at + 1 :]], ignore_index=True)
    elif wart == "zero_price":
        frame.loc[at, "close"] = 0.0
    elif wart == "nan_close":
        frame.loc[at, "close"] = np.nan
    elif wart == "split":
        frame.loc[at:, ["open", "high", "low", "close"]] = (
            frame.loc[at:, ["open", "high", "low", "close"]] / 4
        ).round(4)
        frame.loc[at:, "volume"] = frame.loc[at:, "volume"] * 4
    elif wart == "gap":
        frame = frame.drop(index=range(at, at + 20)).reset_index(drop=True)
    elif wart == "bad_high":
        frame.loc[at, "high"] = frame.loc[at, "low"] * 0.99
    else:
        raise ValueError(f"unknown wart {wart!r}; known: {', '.join(WART_KINDS)}")
    return frame
