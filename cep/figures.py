"""Figures of single runs (the seed's plot_results): train and test error per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cep.results import atomic_path  # noqa: E402


def save_figure(fig: Any, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Save a figure atomically (write to a temporary name, then rename) and close it.

    `metadata` goes to matplotlib's savefig (e.g. {"CreationDate": None} for a PDF
    without a timestamp, so that the same figure gives the same bytes).
    """
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=metadata)
    finally:
        plt.close(fig)


def learning_curve(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(epochs, [h["train_error"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["test_error"] for h in history], "s--", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title or "learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
