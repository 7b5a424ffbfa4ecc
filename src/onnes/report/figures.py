"""The report's figures, drawn with matplotlib's Agg backend: the page's figures as PNG
and SVG, candidate pictures as PNG. Neither carries software or date metadata (and SVG
ids use a fixed salt), so the same inputs give the same bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "onnes"
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from onnes.io import atomic_path  # noqa: E402
from onnes.report.collect import FUNNEL_STEPS  # noqa: E402

STEP_LABELS = {"msun": "MSUN", "confirmed": "MSUN confirmed", "tc_ranked": "Tc-ranked",
               "dft_verified": "DFT-verified"}

DPI = 110
MAX_ELEMENTS = 8


def save(fig: plt.Figure, path: str | Path, svg: bool = True) -> Path:
    """``path`` (PNG) and, with ``svg``, the same figure beside it as SVG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    if svg:
        with atomic_path(path.with_suffix(".svg")) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return path


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
    return save(fig, path, svg=False)


def predictor(held_out: pd.DataFrame | None, path: Path, threshold: float = 10.0) -> Path:
    """The Tc predictor on held-out compositions: parity of the Tc-if-superconducting
    regressor with its 90 % conformal intervals (superconductors), and calibration of
    P(superconducting) and P(Tc > threshold) (all held-out records): predicted
    probability in ten bins against the observed share, with Wilson intervals."""
    from onnes.screen.funnel import wilson_interval

    fig, (parity, calibration) = plt.subplots(1, 2, figsize=(11, 4.6))
    if held_out is None or not len(held_out):
        for ax in (parity, calibration):
            ax.text(0.5, 0.5, "no Tc predictor in this campaign", ha="center", transform=ax.transAxes)
        return save(fig, path)
    sc = held_out[held_out.tc_K > 0]
    top = float(max(sc.tc_K.max(), sc.tc_if_superconducting.max(), 1.0)) * 1.05
    if {"tc_lo_90", "tc_hi_90"} <= set(sc.columns):
        parity.errorbar(sc.tc_K, sc.tc_if_superconducting,
                        yerr=[sc.tc_if_superconducting - sc.tc_lo_90, sc.tc_hi_90 - sc.tc_if_superconducting],
                        fmt="none", ecolor="0.75", lw=0.6, zorder=1, label="90 % interval")
    parity.scatter(sc.tc_K, sc.tc_if_superconducting, s=8, zorder=2, label=f"held-out superconductors (n={len(sc)})")
    parity.plot([0, top], [0, top], "k--", lw=0.8)
    parity.set(xlim=(0, top), ylim=(0, top), xlabel="measured Tc (K)", ylabel="predicted Tc if superconducting (K)",
               title="Parity (held-out compositions)")
    parity.legend(fontsize=7)
    edges = np.linspace(0, 1, 11)
    column = f"tc_p_above_{threshold:g}K"
    for name, truth, label in (("tc_p_superconducting", held_out.tc_K > 0, "P(superconducting)"),
                               (column, held_out.tc_K > threshold, f"P(Tc > {threshold:g} K)")):
        if name not in held_out:
            continue
        bins = np.clip(np.digitize(held_out[name], edges) - 1, 0, 9)
        x, y, low, high = [], [], [], []
        for b in range(10):
            inside = bins == b
            if inside.sum() == 0:
                continue
            hits, count = int(truth[inside].sum()), int(inside.sum())
            lo, hi = wilson_interval(hits, count)
            x.append(float(held_out[name][inside].mean()))
            y.append(hits / count)
            low.append(hits / count - lo)
            high.append(hi - hits / count)
        calibration.errorbar(x, y, yerr=[low, high], marker="o", capsize=2, label=label)
    calibration.plot([0, 1], [0, 1], "k--", lw=0.8)
    calibration.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability (bin mean)", ylabel="observed share",
                    title="Calibration (held-out records, 95 % Wilson bars)")
    calibration.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def binary_hull(phases: pd.DataFrame, elements: tuple[str, str], point: tuple[float, float], label: str,
                path: Path) -> Path:
    """A small A-B convex-hull plot: the reference phases (hull phases named), the lower
    hull, and the candidate at its formation energy."""
    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    hull = phases[phases.on_hull].sort_values("x")
    ax.scatter(phases.x[~phases.on_hull], phases.e_form[~phases.on_hull], s=10, c="0.6", label="above hull")
    ax.plot(hull.x, hull.e_form, "k-", marker="o", ms=4, lw=1, label="hull")
    for _, row in hull.iterrows():
        if 0 < row.x < 1:
            ax.annotate(row.formula, (row.x, row.e_form), fontsize=6, textcoords="offset points", xytext=(0, -9),
                        ha="center")
    ax.scatter([point[0]], [point[1]], marker="*", s=90, c="C3", zorder=3, label=label)
    ax.set_xlabel(f"x in {elements[0]}(1-x){elements[1]}(x)", fontsize=8)
    ax.set_ylabel("formation energy (eV/atom)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    return save(fig, path, svg=False)


def chemical_map(points: pd.DataFrame, known_label: str, path: Path) -> Path:
    """The composition map in three panels: by source (rounds in order), the crystals the
    confirming MLIP kept, and the predicted P(Tc > 10 K)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    known = points[points.source == known_label]
    samples = points[points.source != known_label]
    for ax in axes:
        ax.scatter(known.x, known.y, s=4, c="0.82", label=known_label, rasterized=True)
        ax.set_xticks([])
        ax.set_yticks([])
    for source, group in samples.groupby("source", sort=False):
        axes[0].scatter(group.x, group.y, s=6, alpha=0.7, label=source, rasterized=True)
    axes[0].set_title("by source (each round its own)")
    axes[0].legend(fontsize=7, markerscale=2, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.02))
    confirmed = samples[samples.confirmed.astype(bool)]
    axes[1].scatter(samples.x, samples.y, s=4, c="0.55", label="valid samples", rasterized=True)
    axes[1].scatter(confirmed.x, confirmed.y, s=18, c="tab:red", marker="*", label="confirmed (MSUN, both MLIPs)")
    axes[1].set_title("kept by the confirming MLIP")
    axes[1].legend(fontsize=7, markerscale=1.5, loc="upper center", bbox_to_anchor=(0.5, -0.02))
    scored = samples[samples.p_tc_above_10K.notna()]
    if len(scored):
        sc = axes[2].scatter(scored.x, scored.y, s=6, c=scored.p_tc_above_10K, cmap="viridis", vmin=0, vmax=1,
                             rasterized=True)
        fig.colorbar(sc, ax=axes[2], label="P(Tc > 10 K)")
    axes[2].set_title("predicted P(Tc > 10 K)")
    fig.suptitle("Where the sources sample in composition space (t-SNE of Magpie features)")
    return save(fig, path)
