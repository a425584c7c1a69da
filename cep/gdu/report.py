"""Running the GDU analysis of one configuration: `cep gdu` and `cep run --action plotcurves`.

Loads the first training minibatch (the same one `train` would see first),
initialises the weights from the seed exactly as the trainer does, runs
`cep.gdu.analyse`, and writes into `out_dir`: `gdu/gdu_curves.png|pdf`,
`gdu/trajectories.npz`, `gdu/agreement.csv`, `config.yaml` and `summary.json`.
The figures and files live here; the analysis itself (and autograd) in `cep.gdu`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from cep.checkpoint import new_state
from cep.config import TrialConfig
from cep.data import load_data
from cep.device import resolve_device
from cep.gdu.analysis import NEURON, Factored, GDUResult, analyse, choose_units, unit_curves
from cep.layout import GDU_DIR
from cep.provenance import provenance
from cep.results import CONFIG_FILE, SUMMARY_FILE, default_out_dir, json_safe
from cep.safe_files import write_atomic
from cep.text import text_table

FIGURE_STEM = "gdu_curves"
TRAJECTORIES_FILE = "trajectories.npz"
AGREEMENT_FILE = "agreement.csv"

# ------------------------------------------------------------------ labels
def describe(name: str, cfg: TrialConfig) -> str:
    """Readable name of a layer or parameter, e.g. 'W_1 (x → s_1)'."""
    kind, i = name.split("_")
    i_ = int(i)
    L = cfg.n_layers
    below = "x" if i_ == L - 1 else f"s_{i_ + 1}"
    if kind == "s":
        return f"neurons s_{i_} ({'output' if i_ == 0 else f'hidden {i_}'})"
    if kind == "W":
        return f"W_{i_} ({below} → s_{i_})"
    if kind == "V":
        return f"V_{i_} (feedback s_{i_} → s_{i_ + 1})"
    return f"b_{i_} (bias of s_{i_})"


# ----------------------------------------------------------------- figures
def curves_figure(result: GDUResult, cfg: TrialConfig, units: dict[str, tuple[torch.Tensor, ...]],
                  rows: list[dict[str, Any]], angle: float) -> Any:
    """The paper's Figs. 5(b), 8-15: chosen units over t, BPTT solid and EP dashed in the same colour."""
    import matplotlib  # deferred: matplotlib is loaded only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    by_name = {r["name"]: r for r in rows}
    groups = [[n for n in result.kinds if n.startswith("s_")],
              [n for n in result.kinds if n.startswith(("W_", "V_"))],
              [n for n in result.kinds if n.startswith("b_")]]
    groups = [g for g in groups if g]
    ncols = max(len(g) for g in groups)
    width, height = 4.4 * ncols, 3.4 * len(groups) + 1.4
    fig, axes = plt.subplots(len(groups), ncols, figsize=(width, height), squeeze=False)
    # fixed margins in inches (constrained layout would double the drawing time): 2-line titles above,
    # the legend below
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, top=1 - 1.15 / height, bottom=1.05 / height,
                        hspace=0.62, wspace=0.38)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = np.arange(cfg.Kmax)
    for r, group in enumerate(groups):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(group):
                ax.axis("off")
                continue
            name = group[c]
            bp = unit_curves(result.bptt[name], units[name]).double().cpu().numpy()
            ep = unit_curves(result.ep[name], units[name]).double().cpu().numpy()
            for u in range(bp.shape[1]):
                colour = colours[u % len(colours)]
                ax.plot(t, bp[:, u], "-", color=colour, lw=1.6)
                ax.plot(t, ep[:, u], "--", color=colour, lw=1.6)
            row = by_name[name]
            ax.set_title(f"{describe(name, cfg)}\ncos {_fmt(row['cosine'])}, rel. RMSE {_fmt(row['rel_rmse'])}",
                         fontsize=10)
            ax.set_xlabel("t (step of the second phase)")
            ax.set_ylabel("∇BPTT(t), EP update D(t)" if result.kinds[name] != NEURON else "∇BPTT_s(t), D_s(t)")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            ax.axhline(0, color="0.8", lw=0.6, zorder=0)
            ax.grid(alpha=0.25)
    handles = [Line2D([], [], color="k", ls="-", label="BPTT gradient ∇(t) (solid)"),
               Line2D([], [], color="k", ls="--", label="EP update D(t) (dashed)")]
    fig.suptitle(f"{title(cfg)}\nangle between total EP update and total BPTT gradient: {angle:.1f}°; "
                 f"one colour per randomly chosen unit", fontsize=11, y=1 - 0.12 / height, va="top")
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=11,
               bbox_to_anchor=(0.5, 0.05 / height))
    return fig


def title(cfg: TrialConfig) -> str:
    parts = [f"{cfg.model_label} ({cfg.setting}, {cfg.activation})", f"β={cfg.beta:g}", f"T={cfg.T}",
             f"Kmax={cfg.Kmax}"]
    if cfg.setting == "continuous":
        parts.append(f"dt={cfg.dt:g}{', no clamp' if cfg.no_clamp else ''}")
    if cfg.continual:
        parts.append("lr=" + "/".join(f"{lr:g}" for lr in cfg.lr_tab))
    if cfg.rule == "vf":
        parts.append(f"angle {cfg.angle:g}°")
    parts.append(f"batch {cfg.batch_size}, seed {cfg.seed}")
    return ", ".join(parts)


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4f}"


# ---------------------------------------------------------------- writing
def agreement_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=("name", "kind", "cosine", "rel_rmse"), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def trajectories_npz(result: GDUResult, units: dict[str, tuple[torch.Tensor, ...]]) -> bytes:
    """Both sides per name ('bptt.NAME', 'ep.NAME'); the input matrix as factors: 'bptt.W_k.post'
    `[K, B, n]` with M[t] = post[t]^T x_syn ('x_syn' `[B, 784]`); 'units.NAME' the plotted units."""
    arrays: dict[str, np.ndarray] = {"t": np.arange(next(iter(result.bptt.values())).shape[0])}
    for side, trajs in (("bptt", result.bptt), ("ep", result.ep)):
        for name, traj in trajs.items():
            if isinstance(traj, Factored):
                arrays[f"{side}.{name}.post"] = traj.post.cpu().numpy()
                arrays["x_syn"] = traj.pre.cpu().numpy()
            else:
                arrays[f"{side}.{name}"] = traj.cpu().numpy()
    for name, last in result.bptt_last_step.items():
        arrays[f"bptt_last_step.{name}"] = last.cpu().numpy()
    for name, u in units.items():
        arrays[f"units.{name}"] = torch.stack(list(u)).cpu().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # float noise does not compress
    return buf.getvalue()


def first_minibatch(cfg: TrialConfig, generator: torch.Generator, device: torch.device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, one-hot y, indices): the first minibatch of epoch 1 as `cep.train` draws it from `generator`."""
    data = load_data(cfg)
    order = torch.randperm(len(data.y_train), generator=generator)
    idx = order[:cfg.batch_size]
    x = data.x_train[idx].to(device, dtype)
    y = F.one_hot(data.y_train[idx], cfg.size_tab[0]).to(device, dtype)
    return x, y, idx


def run_gdu(cfg: TrialConfig) -> int:
    """Run the analysis of `cfg` on its first minibatch, write the results folder, print the table."""
    from cep.figures import METADATA, plt, save_figure  # matplotlib is loaded only when a figure is drawn

    start = time.monotonic()
    device = resolve_device(cfg.device)
    state = new_state(cfg, device)  # resolves the seed, draws the weights exactly as training would
    cfg = state.config
    if cfg.out_dir is None:
        cfg = cfg.replace(out_dir=default_out_dir(f"gdu-{cfg.model_label}"))
    x, y, idx = first_minibatch(cfg, state.generator, device, getattr(torch, cfg.dtype))
    result = analyse(cfg, state.params, x, y)
    rows = result.agreement()
    angle = result.angle_grad()
    units = choose_units(result, cfg.gdu_units, cfg.seed)

    out = Path(cfg.out_dir)
    gdu_dir = out / GDU_DIR
    gdu_dir.mkdir(parents=True, exist_ok=True)
    fig = curves_figure(result, cfg, units, rows, angle)
    try:  # the margins are set by hand: not tight; drawn once, saved in both formats
        for suffix in (".png", ".pdf"):
            save_figure(fig, gdu_dir / f"{FIGURE_STEM}{suffix}", METADATA[suffix], tight=False, close=False)
    finally:
        plt.close(fig)
    write_atomic(gdu_dir / TRAJECTORIES_FILE, trajectories_npz(result, units))
    write_atomic(gdu_dir / AGREEMENT_FILE, agreement_csv(rows))
    write_atomic(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    seconds = time.monotonic() - start
    summary = {
        "status": "finished", "action": "gdu", "seed": cfg.seed, "angle_grad": angle,
        "angle_grad_tensors": [n for n in result.kinds if n.startswith("W_")],
        "agreement": rows, "loss": result.loss,
        "free_residual": result.free_residual, "free_phase_settled": not result.unsettled(cfg.beta),
        "minibatch": {"indices": idx.tolist(), "labels": y.argmax(-1).tolist()},
        **{k: v for k, v in state.info.items() if k != "seed"},
        "files": {"figures": [f"{GDU_DIR}/{FIGURE_STEM}.png", f"{GDU_DIR}/{FIGURE_STEM}.pdf"],
                  "trajectories": f"{GDU_DIR}/{TRAJECTORIES_FILE}", "agreement": f"{GDU_DIR}/{AGREEMENT_FILE}"},
        "wall_seconds": seconds, "host": socket.gethostname(), "provenance": provenance(str(device), cfg.dtype),
        "config": cfg.to_dict(),
    }
    write_atomic(out / SUMMARY_FILE, json.dumps(json_safe(summary), indent=2) + "\n")

    _print_report(cfg, result, rows, state.info, summary["angle_grad_tensors"], out, seconds)
    return 0


def _print_report(cfg: TrialConfig, result: GDUResult, rows: list[dict[str, Any]], info: dict[str, Any],
                  tensors: list[str], out: Path, seconds: float) -> None:
    """The analysis on the terminal: per-layer agreement, the angles, and where the files are."""
    click.echo(f"EP updates versus BPTT gradients: {title(cfg)}")
    click.echo(text_table(["name", "kind", "cosine", "rel. RMSE"],
                          [[r["name"], r["kind"], _fmt(r["cosine"]), _fmt(r["rel_rmse"])] for r in rows], right=(2, 3)))
    if "measured_angle" in info:
        click.echo("measured angle between V and W^T per pair: "
                   + ", ".join(f"{a:.1f}°" for a in info["measured_angle"]))
    click.echo(f"angle between the total EP update and the total BPTT gradient ({', '.join(tensors)}): "
               f"{result.angle_grad():.1f}°")
    if result.unsettled(cfg.beta):
        click.echo(f"warning: the free phase has not settled (last step changes states by {result.free_residual:.1e}"
                   f"{' per unit time' if cfg.setting == 'continuous' else ''}, large against beta {cfg.beta:g}): "
                   "EP reads this drift as signal; use more free steps (--T)", err=True)
    gdu_dir = out / GDU_DIR
    click.echo(f"figures: {gdu_dir / FIGURE_STEM}.png and .pdf; trajectories and agreement.csv in {gdu_dir}/")
    click.echo(f"results in {out}/ ({seconds:.1f} s)")
