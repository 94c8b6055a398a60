"""Cost-quality curves from a metrics dict (``metrics.compute_metrics``).

One panel per (dataset, pool): a line per router through its knob points (sorted by cost; a
single-point router is one marker), the single models as grey reference dots (the best single
model labelled), and the cost-aware oracle dashed. Cost on a log axis (USD per 1k queries).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

MARKERS = "osD^v<>pP*Xh"


def plot_curves(metrics: dict, path: str | Path, title: str | None = None, dpi: int = 110) -> Path:
    """Write the curves figure to ``path`` (PNG at ``dpi``) and return the path."""
    panels = [(ds, pool, info) for ds, d in metrics["datasets"].items() for pool, info in d["pools"].items()]
    if not panels:
        raise ValueError("no decisions to plot")
    datasets = list(metrics["datasets"])
    ncols = max(len(metrics["datasets"][ds]["pools"]) for ds in datasets)
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(8.4 * ncols, 4.6 * len(datasets)), squeeze=False)
    routers = sorted({r for _, _, info in panels for r in info["routers"]})
    colors = {r: plt.get_cmap("tab10")(n % 10) for n, r in enumerate(routers)}
    for row, ds in enumerate(datasets):
        pools = list(metrics["datasets"][ds]["pools"].items())
        for col in range(ncols):
            ax = axes[row][col]
            if col >= len(pools):
                ax.axis("off")
                continue
            pool, info = pools[col]
            singles = info["single_models"]
            ax.scatter(
                [s["usd_per_1k"] for s in singles.values()],
                [s["accuracy"] for s in singles.values()],
                s=18, color="0.6", zorder=2, label="single models",
            )
            bs = info["best_single"]
            ax.annotate(f"best single: {bs['model']}", (bs["usd_per_1k"], bs["accuracy"]), fontsize=7, color="0.35",
                        xytext=(-6, 8), textcoords="offset points", ha="right")
            oracle = sorted(info["oracle"]["points"], key=lambda p: p["usd_per_1k"])
            ax.plot([p["usd_per_1k"] for p in oracle], [p["accuracy"] for p in oracle], "--", color="k", lw=1,
                    label=f"oracle (AIQ {info['oracle']['aiq']:.3f})", zorder=3)
            for n, (name, r) in enumerate(sorted(info["routers"].items())):
                if name == "oracle":
                    continue
                pts = sorted(r["points"], key=lambda p: p["usd_per_1k"])
                ax.plot([p["usd_per_1k"] for p in pts], [p["accuracy"] for p in pts], "-",
                        marker=MARKERS[n % len(MARKERS)], ms=4 if len(pts) > 1 else 8, lw=1.5, color=colors[name],
                        label=f"{name} (AIQ {r['aiq']:.3f})", zorder=4)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
            ax.set_xlabel("cost, USD per 1k queries (log)")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{ds}, {pool} pool ({info['n_prompts']} prompts)")
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
