"""Figures of single runs (the seed's plot_results): error per epoch; save_figure, the one figure writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cep.safe_files import atomic_path  # noqa: E402

# no creation date in a PDF (PNGs carry none): the same figure gives the same bytes
METADATA: dict[str, dict[str, Any] | None] = {".png": None, ".pdf": {"CreationDate": None}}


def save_figure(fig: Any, path: str | Path, metadata: dict[str, Any] | None = None, tight: bool = True,
                close: bool = True) -> None:
    """Save a figure atomically (write to a temporary name, then rename), the one figure writer; closes it
    unless `close` is False. `metadata` goes to matplotlib's savefig (METADATA[suffix]: reproducible files);
    `tight=False` for figures whose margins are set by hand (bbox_inches="tight" draws the figure twice).
    """
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight" if tight else None, metadata=metadata)
    finally:
        if close:
            plt.close(fig)


def angle_columns(history: list[dict[str, Any]]) -> list[str]:
    """The angle_<i> columns of a history (vf runs; empty for ep and for histories from before them)."""
    return list(dict.fromkeys(k for h in history for k in h if k.startswith("angle_") and k[6:].isdigit()))


def learning_curve(history: list[dict[str, Any]], path: str | Path, title: str = "",
                   collapsed_epoch: int | None = None, initial_angles: list[float] | None = None) -> None:
    """Train and test error per epoch; for vf a second panel with the angle between each V_i and W_i^T
    (how feedback alignment moves it is the question after Fig. 4), from `initial_angles` at epoch 0 when
    given; a collapse is marked on both."""
    epochs = [h["epoch"] for h in history]
    angles = angle_columns(history)
    fig, axes = plt.subplots(2 if angles else 1, 1, figsize=(5.5, 6.4 if angles else 3.8), sharex=True,
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    ax.plot(epochs, [h["train_error"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["test_error"] for h in history], "s--", label="test")
    ax.set_ylabel("error (%)")
    ax.set_title(title or "learning curve")
    if angles:
        ang = axes[1, 0]
        for k in angles:
            i = int(k[6:])
            start = [0] if initial_angles and i < len(initial_angles) else []
            ang.plot(start + epochs, [initial_angles[i]] * len(start) + [h.get(k, float("nan")) for h in history],
                     "o-", ms=3, label=f"V{i} and W{i}ᵀ")
        ang.set_ylabel("angle (°)")
        ang.legend(fontsize=8)
    for a in axes[:, 0]:
        a.grid(alpha=0.3)
        if collapsed_epoch is not None:
            a.axvline(collapsed_epoch, color="tab:red", lw=1, ls=":", label=f"collapse (epoch {collapsed_epoch})"
                      if a is ax else None)
    ax.legend()
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path)
