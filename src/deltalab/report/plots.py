"""The report's figures: PNG through matplotlib, and the same data as CSV for `dvc plots`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from deltalab.io import atomic_path  # noqa: E402
from deltalab.report import SPLITS  # noqa: E402

# Fixed metadata: PNG bytes then depend only on the data (no software version or date stamps).
PNG_META = {"Software": None}


def save(fig, path: Path) -> Path:
    """Write the figure; return its path (the report lists what it drew: reports/index.html embeds it)."""
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=PNG_META)
    plt.close(fig)
    return path


def write_csv(df: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, ".csv") as tmp:
        df.write_csv(tmp, float_precision=5)


def gain_vs_delta(points: pl.DataFrame, path: Path) -> Path:
    """points: ablation, generator_delta, split, gain, lo, hi."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, marker in zip(SPLITS, "osD"):
        p = points.filter(pl.col("split") == split).sort("generator_delta")
        if p.height == 0:
            continue
        err = [(p["gain"] - p["lo"]).to_list(), (p["hi"] - p["gain"]).to_list()]
        ax.errorbar(p["generator_delta"], p["gain"], yerr=err, marker=marker, capsize=3,
                    label=SPLITS[split])
        for a, x, y in zip(p["ablation"], p["generator_delta"], p["gain"]):
            ax.annotate(a, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("generator-level delta (accuracy of chosen - rejected generator)")
    ax.set_ylabel("accuracy gain over base")
    ax.set_title("Gain vs generator-level delta (95% CI)")
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def fraction_curves(curves: pl.DataFrame, base: dict[str, float], path: Path) -> Path:
    """curves: curve, fraction, split, accuracy, lo, hi."""
    splits = [s for s in SPLITS if curves.filter(pl.col("split") == s).height]
    fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(5.5 * max(1, len(splits)), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for curve in sorted(curves["curve"].unique().to_list()):
            c = curves.filter((pl.col("split") == split) & (pl.col("curve") == curve)).sort("fraction")
            ax.plot(c["fraction"], c["accuracy"], marker="o", label=curve)
            ax.fill_between(c["fraction"], c["lo"], c["hi"], alpha=0.15)
        if split in base:
            ax.axhline(base[split], color="grey", ls="--", lw=0.8, label="base")
        ax.set_xlabel("fraction of pairs kept")
        ax.set_ylabel("accuracy")
        ax.set_title(SPLITS[split])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def delta_distributions(deltas: pl.DataFrame, dims: list[str], path: Path) -> Path:
    """deltas: ablation, dimension, delta, count (histogram rows)."""
    ablations = deltas["ablation"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(dims), figsize=(3 * len(dims), 3.2), sharey=True, squeeze=False)
    for ax, dim in zip(axes[0], dims):
        d = deltas.filter(pl.col("dimension") == dim)
        data = []
        for a in ablations:
            rows = d.filter(pl.col("ablation") == a)
            data.append([v for v, c in zip(rows["delta"], rows["count"]) for _ in range(int(c))] or [0.0])
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(ablations) + 1), ablations, rotation=45, fontsize=7)
        ax.set_title(dim, fontsize=9)
    axes[0][0].set_ylabel("sample-level delta")
    fig.tight_layout()
    return save(fig, path)


def sample_vs_generator(means: pl.DataFrame, path: Path) -> Path:
    """means: dimension, ablation, generator_delta, mean_delta, lo, hi (bootstrap CI over prompts); one
    panel per dimension, so the error bars do not overlap."""
    dims = means["dimension"].unique(maintain_order=True).to_list()
    cols = 3
    rows = max(1, -(-len(dims) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), sharex=True, squeeze=False)
    for ax, dim in zip(axes.ravel(), dims):
        m = means.filter(pl.col("dimension") == dim).sort("generator_delta")
        err = [(m["mean_delta"] - m["lo"]).to_list(), (m["hi"] - m["mean_delta"]).to_list()]
        ax.errorbar(m["generator_delta"], m["mean_delta"], yerr=err, marker="o", capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(dim, fontsize=9)
    for ax in axes.ravel()[len(dims):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("generator-level delta")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean sample-level delta")
    fig.suptitle("Sample-level vs generator-level delta (95% CI over prompts)")
    fig.tight_layout()
    return save(fig, path)
