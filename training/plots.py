"""Training curves and evaluation plots, saved as PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_curves(history: list[dict], path: Path, *, title: str, panels: list[tuple[str, list[str]]]) -> None:
    """One panel per (ylabel, [keys]); x is the epoch."""
    if not history:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, (ylabel, keys) in zip(axes[0], panels, strict=True):
        for k in keys:
            pts = [(e, h[k]) for e, h in zip(epochs, history, strict=True) if h.get(k) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=k.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
