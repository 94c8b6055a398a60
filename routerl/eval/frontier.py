"""Cost-quality frontiers: the protocol's AIQ, Gain@BestSingle and CostSave@BestSingle.

A router's operating points are ``(cost, accuracy)`` pairs, one per knob value (cost in any fixed
unit, e.g. USD per 1k queries).

AIQ: the area under the non-decreasing concave (upper convex) hull of the points together with
``(0, 0)``, extended flat beyond its highest point up to ``c_max`` (the cost of the most expensive
single model), divided by ``c_max``. Points beyond ``c_max`` shape the hull but the area stops at
``c_max``. A perfect free router scores 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

REL_TOL = 1e-9


def upper_hull(costs: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(xs, ys)`` of the non-decreasing concave hull of the points and ``(0, 0)``.

    ``xs`` starts at 0 and increases; ``ys`` is non-decreasing; the curve is flat after the last
    vertex (the highest point).
    """
    c = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError("costs and accuracies must be 1-d arrays of the same length")
    if (c < 0).any() or not np.isfinite(c).all() or not np.isfinite(a).all():
        raise ValueError("costs must be finite and >= 0, accuracies finite")
    best: dict[float, float] = {0.0: 0.0}
    for x, y in zip(c.tolist(), a.tolist()):
        best[x] = max(best.get(x, -np.inf), y)
    pts = sorted(best.items())
    hull: list[tuple[float, float]] = []
    for x, y in pts:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0:  # hull[-1] is on or below the chord
                hull.pop()
            else:
                break
        hull.append((x, y))
    xs = np.array([p[0] for p in hull])
    ys = np.array([p[1] for p in hull])
    top = int(np.argmax(ys))  # first highest vertex: the hull is flat after it
    return xs[: top + 1], ys[: top + 1]


def hull_area(xs: np.ndarray, ys: np.ndarray, c_max: float) -> float:
    """``∫_0^c_max g(c) dc / c_max`` for the piecewise-linear ``g`` through ``(xs, ys)``, flat
    after the last vertex."""
    if not c_max > 0:
        raise ValueError(f"the AIQ cost range must be > 0, got {c_max}")
    grid = np.union1d(xs[xs < c_max], [0.0, c_max])
    vals = np.interp(grid, xs, ys)
    return float(np.sum((grid[1:] - grid[:-1]) * (vals[1:] + vals[:-1]) / 2.0) / c_max)


def aiq(costs: Sequence[float], accuracies: Sequence[float], c_max: float) -> float:
    """The protocol's AIQ of a router's operating points (see the module docstring)."""
    xs, ys = upper_hull(costs, accuracies)
    return hull_area(xs, ys, c_max)


def gain_at(costs: Sequence[float], accuracies: Sequence[float], ref_cost: float, ref_acc: float) -> float | None:
    """Best accuracy among points costing no more than ``ref_cost``, minus ``ref_acc``
    (None when no point is that cheap)."""
    c, a = np.asarray(costs, dtype=float), np.asarray(accuracies, dtype=float)
    ok = c <= ref_cost * (1 + REL_TOL) + 1e-15
    return float(a[ok].max() - ref_acc) if ok.any() else None


def cost_save_at(costs: Sequence[float], accuracies: Sequence[float], ref_cost: float, ref_acc: float) -> float | None:
    """``1 - (cheapest cost among points reaching ref_acc) / ref_cost`` (None when no point
    reaches it). Negative when reaching it costs more than the reference."""
    c, a = np.asarray(costs, dtype=float), np.asarray(accuracies, dtype=float)
    ok = a >= ref_acc - 1e-12
    if not ok.any() or not ref_cost > 0:
        return None
    return float(1.0 - c[ok].min() / ref_cost)
