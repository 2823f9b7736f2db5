"""sync_scaling.png: sync time and API calls against catalogue size, bulk vs per-item."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def can_plot() -> bool:
    """matplotlib is not a dependency of the service; without it the plot is skipped."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_sync_scaling(points: list[dict[str, Any]], path: Path, *, subtitle: str) -> None:
    """Two log-log panels from scenario 1's points (one per catalogue size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p["listings"] for p in points]
    figure, (time_axis, calls_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = (
        (time_axis, "seconds", "Sync time (s)", "{:.2f} s"),
        (calls_axis, "calls", "Back Market API calls", "{:,.0f}"),
    )
    for axis, key, label, fmt in panels:
        for side, name, marker in (("bulk", "bulk sync", "o"), ("per_item", "per-item", "s")):
            values = [p[f"{side}_{key}"] for p in points]
            axis.plot(sizes, values, marker=marker, label=name)
            for size, value in zip(sizes, values, strict=True):
                axis.annotate(
                    fmt.format(value),
                    (size, value),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("catalogue size (listings)")
        axis.set_ylabel(label)
        axis.set_title(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(f"Bulk sync vs per-item refresh, 20 ms simulator latency ({subtitle})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
