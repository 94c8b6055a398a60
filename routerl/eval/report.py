"""Markdown tables of a metrics dict (``metrics.compute_metrics``): one table per dataset and pool."""

from __future__ import annotations


def _fmt(x, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def metrics_markdown(metrics: dict) -> str:
    """Tables of AIQ, Gain/CostSave@BestSingle, OracleGapClosed and the unseen metrics."""
    out = []
    for ds, d in metrics["datasets"].items():
        for pool, info in d["pools"].items():
            bs = info["best_single"]
            out.append(
                f"**{ds}, {pool} pool** ({info['n_prompts']} prompts; best single {bs['model']}: "
                f"accuracy {bs['accuracy']:.3f} at ${bs['usd_per_1k']:.3f}/1k; AIQ cost range "
                f"${d['c_max_usd_per_1k']:.3f}/1k = {d['most_expensive_single']}; single-model AIQ "
                f"{info['singles_aiq']:.3f}; oracle AIQ {info['oracle']['aiq']:.3f})\n"
            )
            full = pool == "full"
            head = ["router", "AIQ", "max acc", "Gain@BS", "CostSave@BS", "OracleGapClosed", "calls"]
            if full:
                head += ["UnseenShare", "UnseenCapture", "UnseenCapture (shuffled)"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for name, r in sorted(info["routers"].items(), key=lambda kv: -(kv[1]["aiq"] or 0)):
                cells = [
                    name,
                    _fmt(r["aiq"]),
                    _fmt(r["max_accuracy"]),
                    _fmt(r["gain_at_best_single"], signed=True),
                    _fmt(r["cost_save_at_best_single"], signed=True),
                    _fmt(r["oracle_gap_closed"]),
                    _fmt(r.get("mean_calls"), 2),
                ]
                if full:
                    cells += [_fmt(r.get("unseen_share")), _fmt(r.get("unseen_capture")), _fmt(r.get("unseen_capture_shuffled"))]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def knob_table(metrics: dict, dataset: str, pool: str, router: str) -> str:
    """A markdown table of one router's per-knob accuracy, cost and unseen share."""
    r = metrics["datasets"][dataset]["pools"][pool]["routers"][router]
    lines = ["| knob | accuracy | $/1k queries | unseen share |", "|---|---|---|---|"]
    for p in r["points"]:
        lines.append(f"| {p['knob']:g} | {p['accuracy']:.3f} | {p['usd_per_1k']:.4f} | {p['unseen_share']:.3f} |")
    return "\n".join(lines)
