"""The report's figures, drawn with matplotlib's Agg backend. PNGs carry no software or
date metadata, so the same inputs give the same bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from onnes.io import atomic_path  # noqa: E402
from onnes.report.collect import FUNNEL_STEPS  # noqa: E402

STEP_LABELS = {"msun": "MSUN", "confirmed": "MSUN confirmed", "tc_ranked": "Tc-ranked",
               "dft_verified": "DFT-verified"}

DPI = 110
MAX_ELEMENTS = 8


def save(fig: plt.Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _log_axes(ax, ylabel: str, title: str, legend_size: int) -> None:
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, ncol=2)


def funnel(table: pd.DataFrame, path: Path) -> Path:
    """Counts per step, one line per source, on a log axis (1,000 generated down to a few)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = np.arange(len(FUNNEL_STEPS))
    for _, row in table.iterrows():
        counts = np.array([row[s] if pd.notna(row[s]) else np.nan for s in FUNNEL_STEPS], dtype=float)
        ax.plot(x, np.where(counts > 0, counts, np.nan), marker="o", label=row.source)
    ax.set_xticks(x, [STEP_LABELS.get(s, s) for s in FUNNEL_STEPS], rotation=20)
    _log_axes(ax, "structures", "Discovery funnel per model and baseline", legend_size=8)
    return save(fig, path)


def training(curves: dict[str, pd.DataFrame], path: Path) -> Path:
    """Training and validation loss of every trained model."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (name, metrics) in enumerate(sorted(curves.items())):
        color = f"C{i % 10}"
        ax.plot(metrics.step, metrics.loss, color=color, alpha=0.8, label=f"{name} train")
        val = metrics.dropna(subset=["val_loss"])
        if len(val):
            ax.plot(val.step, val.val_loss, color=color, ls="--", marker=".", label=f"{name} val")
    if not curves:
        ax.text(0.5, 0.5, "no trained models in this campaign", ha="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    _log_axes(ax, "loss", "Training curves", legend_size=7)
    return save(fig, path)


def _hist(ax, values: dict[str, np.ndarray], bins: np.ndarray, xlabel: str, title: str) -> None:
    for name, data in values.items():
        data = np.asarray(data, dtype=float)
        data = data[np.isfinite(data)]
        if len(data):
            ax.hist(np.clip(data, bins[0], bins[-1]), bins=bins, density=True, histtype="step", lw=1.4,
                    label=f"{name} (n={len(data)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=6)


def distributions(tc: dict[str, np.ndarray], e_hull: dict[str, np.ndarray], density: dict[str, np.ndarray],
                  n_elements: dict[str, np.ndarray], path: Path) -> Path:
    """Predicted Tc against the training set's measured Tc; energy above hull of the
    relaxed structures; density and number of elements of the valid ones."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    # Values beyond the axis pile up in the end bins (clipped), so nothing drops silently.
    _hist(axes[0, 0], tc, np.linspace(0, 40, 41), "Tc (K); last bin ≥ 40", "Predicted Tc (valid) vs training set")
    _hist(axes[0, 1], e_hull, np.linspace(-0.2, 1.5, 35), "E above hull (eV/atom); end bins clipped",
          "Stability (relaxed)")
    _hist(axes[1, 0], density, np.linspace(0, 16, 33), "density (g/cm³); last bin ≥ 16", "Density (valid)")
    ax = axes[1, 1]
    width = 0.8 / max(len(n_elements), 1)
    for i, (name, counts) in enumerate(n_elements.items()):
        values, freq = np.unique(np.minimum(np.asarray(counts, dtype=int), MAX_ELEMENTS), return_counts=True)
        if len(values):
            ax.bar(values + (i - len(n_elements) / 2) * width, freq / freq.sum(), width=width, label=name)
    ax.set_xlabel(f"number of elements; last bar ≥ {MAX_ELEMENTS}")
    ax.set_ylabel("fraction")
    ax.set_title("Number of elements (valid)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, path)


def space_groups(symbols: dict[str, list[str]], path: Path, top: int = 12) -> Path:
    """The most common space groups of the relaxed structures, per source."""
    counts = pd.DataFrame({name: pd.Series(s, dtype=object).value_counts() for name, s in symbols.items()}).fillna(0)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    if len(counts):
        order = counts.sum(axis=1).sort_values(ascending=False, kind="stable").index[:top]
        counts.loc[order[::-1]].plot.barh(stacked=True, ax=ax, width=0.8)
        ax.legend(fontsize=7)
    ax.set_xlabel("relaxed structures")
    ax.set_title(f"Space groups of the relaxed structures (top {top}, symprec 0.1 Å)")
    return save(fig, path)


def structure(atoms, path: Path, title: str) -> Path:
    """A ball picture of one unit cell (ase's matplotlib renderer, slightly rotated)."""
    from ase.visualize.plot import plot_atoms

    fig, ax = plt.subplots(figsize=(2.6, 2.6))
    plot_atoms(atoms, ax, rotation="15x,-25y,0z", radii=0.45, show_unit_cell=2)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save(fig, path)
