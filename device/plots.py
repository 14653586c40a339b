"""Latency histograms as PNG for the device benchmarks (matplotlib, Agg backend, imported only when drawn).

matplotlib is optional on a device: without it a benchmark writes its JSON and says why there is no picture.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def latency_axes(figsize: tuple[float, float]) -> tuple[Any, Any] | None:
    """(figure, axes) on the Agg backend, or None (with a warning) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no latency histogram")
        return None
    return plt.subplots(figsize=figsize, dpi=100)


def save_latency_png(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Label the axes, add the legend, write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
