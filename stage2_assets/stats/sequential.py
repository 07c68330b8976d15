"""Group-sequential boundaries with an alpha-spending function (Lan and DeMets, 1983).

The shadow looks at its evidence on every labelled day, up to a planned maximum of ``max_looks``
days. A fixed-sample test repeated daily would inflate its error; a spending function says how
much of the one-sided level ``alpha`` may be used by the time a share ``t`` of the maximum has
been seen, and the boundary of each look is the z value whose crossing probability (given no
earlier crossing) spends exactly the increment. Looking every day then keeps the overall error at
``alpha``, whatever day the test stops on.

The crossing probabilities are computed by the recursive numerical integration of Armitage,
McPherson and Rowe (1969), as in Jennison and Turnbull, *Group Sequential Methods* (2000), ch. 19,
for a score statistic with independent normal increments of one unit of information per look.

Spending family ``alpha * t**rho`` (Kim and DeMets, 1987): rho = 1 spends evenly (close to
Pocock), rho = 3 saves the error for the last looks (close to O'Brien and Fleming).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import optimize, signal, special

_GRID_PER_SD = 16  # grid points per standard deviation of one look's increment
_TAIL_SD = 9.0  # how far below zero the continuing density is followed


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _crossing(b: float, look: int, step: int, grid, density, weights) -> float:
    """P(the score at ``look`` reaches b * sqrt(look), no earlier crossing).

    ``density`` is the density on ``grid`` (integration ``weights``) of the score at the previous
    look for the paths that went on (None at the first look); the score moves by N(0, ``step``).
    """
    if density is None:
        return float(special.ndtr(-b))
    s_b = b * np.sqrt(look)
    return float(np.sum(density * weights * special.ndtr((grid - s_b) / np.sqrt(step))))


def _weights(grid: np.ndarray, upper: float, h: float) -> np.ndarray:
    """Trapezoid weights on the lattice, the last cell stretched to the boundary itself."""
    weights = np.full(len(grid), h)
    weights[0] = h / 2
    weights[-1] = h / 2 + max(upper - grid[-1], 0.0)
    return weights


def _propagate(density, grid, weights, index: np.ndarray, h: float, step: int) -> np.ndarray:
    """Density on ``index * h`` after a N(0, step) move from ``density`` on ``grid`` (the same
    lattice, integration ``weights``)."""
    reach = int(np.ceil(_TAIL_SD * np.sqrt(step) / h))
    kernel = _normal_pdf(np.arange(-reach, reach + 1) * h / np.sqrt(step)) / np.sqrt(step)
    full = signal.fftconvolve(density * weights, kernel)
    start = int(round(grid[0] / h)) - reach  # lattice index of full[0]
    position = index - start
    inside = (position >= 0) & (position < len(full))
    out = np.zeros(len(index))
    out[inside] = np.clip(full[position[inside]], 0.0, None)
    return out


def spent(alpha: float, rho: float, share: float) -> float:
    """Error spent by the time ``share`` (0..1) of the maximum information has been seen."""
    return float(alpha * min(max(share, 0.0), 1.0) ** rho)


@lru_cache(maxsize=256)
def boundaries(alpha: float, max_looks: int, rho: float, first_look: int = 1) -> tuple[float, ...]:
    """One-sided z boundaries for looks ``first_look .. max_looks`` (one unit of information each).

    ``result[k - first_look]`` is the boundary at look k (k labelled days). Looks before
    ``first_look`` are not taken, and the error they would have spent is spent at the first look.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), not {alpha}")
    if not 1 <= first_look <= max_looks:
        raise ValueError(f"first_look {first_look} must lie in 1..max_looks ({max_looks})")
    h = 1.0 / _GRID_PER_SD
    bounds: list[float] = []
    density = None  # density of the score S_k on ``grid`` for paths not yet stopped
    grid = weights = None
    previous_info = 0
    for look in range(first_look, max_looks + 1):
        target = spent(alpha, rho, look / max_looks) - spent(alpha, rho, (look - 1) / max_looks)
        if look == first_look:
            target = spent(alpha, rho, look / max_looks)
        step = look - previous_info
        bound = (
            np.inf
            if target <= 0
            else optimize.brentq(
                lambda b, look=look, step=step, g=grid, d=density, w=weights, target=target: (
                    _crossing(b, look, step, g, d, w) - target
                ),
                -10.0,
                40.0,
            )
        )
        bounds.append(float(bound))
        # the density of paths that continue past this look: S_k below the boundary, on the
        # lattice of multiples of h, so one look to the next is a discrete convolution (FFT)
        upper = bound * np.sqrt(look) if np.isfinite(bound) else _TAIL_SD * np.sqrt(look) + 10
        index = np.arange(
            int(np.floor(-_TAIL_SD * np.sqrt(look) / h)), int(np.floor(upper / h)) + 1
        )
        if density is None:
            new_density = _normal_pdf(index * h / np.sqrt(look)) / np.sqrt(look)
        else:
            new_density = _propagate(density, grid, weights, index, h, step)
        grid, density, previous_info = index * h, new_density, look
        weights = _weights(grid, upper, h)
    return tuple(bounds)


def boundary_at(alpha: float, max_looks: int, rho: float, first_look: int, look: int) -> float:
    """The z boundary at ``look`` (``inf`` before the first look; the last look's after the maximum)."""
    if look < first_look:
        return float("inf")
    table = boundaries(alpha, max_looks, rho, first_look)
    return table[min(look, max_looks) - first_look]
