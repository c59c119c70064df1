"""Plot of receptive-field growth through the layers, with the segment drawn in."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rfspeech.io import atomic_path

if TYPE_CHECKING:
    from rfspeech.rf.analyze import RFReport


def plot_report(report: RFReport, path: str | Path, title: str | None = None) -> None:
    """Write a PNG: ``r_min``, ``r_max`` and the union span per layer (primary input units).

    The segment (when the report has one) is a horizontal line, ``I_min`` a dotted one, and
    critical / unproductive layers are marked.

    Args:
        report: from :func:`rfspeech.rf.analyze`.
        path: output ``.png`` (written atomically).
        title: figure title (default: the model class).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [layer for layer in report.layers if layer.r_max is not None]
    x = list(range(len(layers)))
    fig, ax = plt.subplots(figsize=(max(7.0, min(18.0, 0.12 * len(layers) + 5)), 4.5), dpi=110)
    ax.step(x, [layer.r_max for layer in layers], where="mid", label="r_max", color="tab:blue")
    ax.step(x, [layer.r_min for layer in layers], where="mid", label="r_min", color="tab:green")
    if any(layer.span != layer.r_max for layer in layers):
        ax.step(x, [layer.span for layer in layers], where="mid", label="span (union)", color="tab:purple",
                linestyle="--")
    crit = [i for i, layer in enumerate(layers) if layer.critical and not layer.unproductive]
    unprod = [i for i, layer in enumerate(layers) if layer.unproductive]
    if crit:
        ax.scatter(crit, [layers[i].r_min for i in crit], color="tab:orange", zorder=3, s=14, label="critical")
    if unprod:
        ax.scatter(unprod, [layers[i].r_min for i in unprod], color="tab:red", zorder=3, s=14, label="unproductive")
    if report.segment is not None:
        ax.axhline(report.segment, color="black", linewidth=1.2, label=f"segment {report.segment:g} {report.units}")
    if report.i_min is not None:
        ax.axhline(report.i_min, color="tab:red", linewidth=0.8, linestyle=":",
                   label=f"I_min {report.i_min:.3g} {report.units}")
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel(f"receptive field [{report.units} of '{report.primary}']")
    if report.jump and report.jump < 1:
        sec = ax.secondary_yaxis("right", functions=(lambda r: r / report.jump, lambda s: s * report.jump))
        sec.set_ylabel("output samples")
    ax.set_title(title or f"{report.model}: r_max {report.r_max:.4g}, r_min {report.r_min:.4g} {report.units}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
