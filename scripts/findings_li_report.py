"""The tables, statistics and figures of scripts/findings_li.py from its per-net JSON files
(--out/nets/*.json), written to --out/report.md and --out/*.png; works on a partial run (the
tables say how many nets each row holds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from findings_li import ARMS, PAPER_TABLE_1, RISE, RISES, SMALL_BATCH, TARGET_LOSS, Arm

from landscape_hpc.stats import correlation_interval, mean_interval, welch_difference


def _width(net: dict[str, Any], norm: str, rise: float) -> float:
    return float(np.mean(net[f"width_{norm}"][str(rise)]))


def _ci(values: list[float], digits: int = 3) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f} (n=1)" if values else "–"
    mean, lo, hi = mean_interval(np.asarray(values))
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _diff(x: list[float], y: list[float], digits: int = 3) -> str:
    if min(len(x), len(y)) < 2:
        return "–"
    d = welch_difference(np.asarray(x), np.asarray(y))
    f = f".{digits}f"
    return f"{d.diff:{f}} [{d.lo:{f}}, {d.hi:{f}}], p={d.p:.3f}, MDD {d.mdd:{f}}"


def report(out: Path) -> str:
    nets = [json.loads(p.read_text()) for p in sorted((out / "nets").glob("*.json"))]
    matched = [n for n in nets if n["reached_target"]]
    unmatched = [f"{n['arm']}_s{n['seed']}" for n in nets if not n["reached_target"]]
    by_arm = {arm.name: [n for n in matched if n["arm"] == arm.name] for arm in ARMS}
    lines = [
        "# Sharp vs flat on digits: the measured tables (scripts/findings_li_report.py)",
        "",
        f"{len(nets)} nets measured, {len(matched)} reached the train-loss target "
        f"{TARGET_LOSS} (the others are left out of every row below: "
        f"{', '.join(unmatched) or 'none'}).",
        "Intervals: 95% t intervals over nets (independently trained seeds).",
        "",
        "| arm | nets | epochs | test error % | width filter (rise 0.1) | width filter (rise 1) "
        "| width raw (rise 0.1) | weight norm | PCA var PC1+PC2 |",
        "|---|---:|---:|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        group = by_arm[arm.name]
        if not group:
            lines.append(f"| {arm.name} | 0 | | | | | | | |")
            continue
        lines.append(
            f"| {arm.name} | {len(group)} | {np.mean([n['epochs'] for n in group]):.0f} | "
            f"{_ci([n['test_error'] for n in group], 2)} | "
            f"{_ci([_width(n, 'filter', RISE) for n in group])} | "
            f"{_ci([_width(n, 'filter', 1.0) for n in group])} | "
            f"{_ci([_width(n, 'none', RISE) for n in group], 4)} | "
            f"{_ci([n['weight_norm'] for n in group], 1)} | "
            f"{_ci([sum(n.get('pca_variance', [math.nan])) for n in group], 3)} |"
        )
    lines += [
        "",
        "## Small − large batch, per optimiser and weight decay (Welch; MDD at 80% power)",
        "",
        "| optimiser, wd | test error % (small − large) | width filter rise 0.1 "
        "| width raw rise 0.1 | paper Table 1 error % (128 / 8192) |",
        "|---|---|---|---|---|",
    ]
    for (opt, wd), paper in PAPER_TABLE_1.items():
        small = by_arm[Arm(opt, wd, SMALL_BATCH).name]
        large = [n for n in matched if n["optimizer"] == opt and n["weight_decay"] == wd
                 and n["batch"] != SMALL_BATCH]  # fmt: skip
        error = lambda n: n["test_error"]  # noqa: E731
        filt = lambda n: _width(n, "filter", RISE)  # noqa: E731
        raw = lambda n: _width(n, "none", RISE)  # noqa: E731
        cells = [
            _diff([error(n) for n in small], [error(n) for n in large], 2),
            _diff([filt(n) for n in small], [filt(n) for n in large]),
            _diff([raw(n) for n in small], [raw(n) for n in large], 4),
        ]
        lines.append(f"| {opt}, {wd:g} | {' | '.join(cells)} | {paper[0]:.2f} / {paper[1]:.2f} |")
    lines += ["", "## Sharpness against test error, all matched nets (Spearman, Fisher z)", ""]
    errors = [n["test_error"] for n in matched]
    for norm in ("filter", "none"):
        for rise in RISES:
            c = correlation_interval(np.asarray([_width(n, norm, rise) for n in matched]),
                                     np.asarray(errors), "spearman")  # fmt: skip
            lines.append(
                f"- width ({norm}, rise {rise:g}) vs test error: ρ = {c.r:.2f} "
                f"[{c.lo:.2f}, {c.hi:.2f}], p = {c.p:.3f}, n = {c.n}"
            )
    cos = [np.mean(n["path_cos"]) for n in nets]
    if nets:
        dim = nets[0]["path_dim"]
        lines += [
            "",
            "## Appendix B: random directions against the training path",
            "",
            f"mean |cos| of Gaussian directions with θ_end − θ_0, per net: {_ci(cos, 5)}; "
            f"√(2/(πn)) = {math.sqrt(2 / (math.pi * dim)):.5f} for n = {dim:,}.",
        ]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    _figures(out, matched)
    print(text)
    return text


def _figures(out: Path, matched: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {arm.name: next((n for n in matched if n["arm"] == arm.name), None) for arm in ARMS}
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharey=True)
    for ax, arm in zip(axes.ravel(), ARMS):
        net = first[arm.name]
        ax.set_title(arm.name, fontsize=9)
        if net is None:
            continue
        x = np.linspace(-1.5, 1.5, len(net["curves_filter"]["train_loss"][0]))
        for i, curve in enumerate(net["curves_filter"]["train_loss"]):
            ax.plot(x, curve, lw=0.8, color="C0", alpha=0.7, label="train" if i == 0 else None)
        for i, curve in enumerate(net["curves_filter"]["test_loss"]):
            ax.plot(x, curve, lw=0.8, color="C1", alpha=0.7, label="test" if i == 0 else None)
        ax.set_ylim(0, 5)
        ax.set_xlabel("filter-normalised step")
    axes[0, 0].set_ylabel("loss")
    axes[0, 0].legend()
    fig.suptitle("10 filter-normalised directions per net (seed 0 of each arm; Li et al. A.4)")
    fig.tight_layout()
    fig.savefig(out / "curves_filter.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, norm in zip(axes, ("filter", "none")):
        for k, arm in enumerate(ARMS):
            group = [n for n in matched if n["arm"] == arm.name]
            ax.scatter([_width(n, norm, RISE) for n in group], [n["test_error"] for n in group],
                       label=arm.name, color=f"C{k}", s=18)  # fmt: skip
        kind = "filter-normalised" if norm == "filter" else "raw"
        ax.set_xlabel(f"width at rise {RISE} ({kind})")
        ax.set_ylabel("test error %")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "width_vs_error.png", dpi=90)
    plt.close(fig)
