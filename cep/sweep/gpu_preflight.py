"""GPU preflight for cep-sweep: before any trial starts, every node that Ray says has GPUs must show that torch
can use them.

Why: Ray counts a node's GPUs through NVML (the driver's management library), torch through its own CUDA
build. A torch built for a newer CUDA than the node's driver supports (the default CUDA 13 wheels need an
NVIDIA driver >= 580; 535-570 are common on clusters) sees no GPU at all, yet Ray schedules GPU trials there and
every one of them fails, hours of GPU time later for each retry. The preflight turns that into one line per
node, before anything starts, naming the node, its driver, torch's CUDA build and the wheel that fits.

Three parts, so that the pure logic is testable without GPUs or Ray:
* `gpu_report()` runs on a node (as a Ray task) and never raises;
* `gpu_problems(...)` compares the reports with Ray's GPU counts and words the refusal (pure);
* `check_gpus(...)` runs `gpu_report` on every live node with GPUs, like the shared-storage probe.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

TORCH_WHEEL_INDEX = "https://download.pytorch.org/whl"
CUDA12_MIN_DRIVER = 525  # CUDA 12.x builds run on drivers >= 525 (NVIDIA's minor version compatibility)
CUDA13_MIN_DRIVER = 580  # CUDA 13.x builds need drivers >= 580
GPU_CHECK_S = 60.0  # how long the nodes get to report (a node busy starting workers may be slow)

# Environment of the report task (see check_gpus): leave CUDA_VISIBLE_DEVICES as the node was started with.
REPORT_ENV = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version on this machine ("535.183.01"), or None when there is none."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module[^0-9]*(\d+\.\d+(?:\.\d+)?)", f.read())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
        first = p.stdout.strip().splitlines()[0].strip() if p.returncode == 0 and p.stdout.strip() else ""
        return first or None
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_report() -> dict[str, Any]:
    """What this node's torch makes of its GPUs. Runs on the node; never raises (errors become fields)."""
    report: dict[str, Any] = {"host": socket.gethostname(), "torch": None, "torchvision": None, "torch_cuda": None,
                              "cuda_available": False, "device_count": 0, "driver": None, "error": None,
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        report["driver"] = driver_version()
    except Exception as e:  # pragma: no cover - driver_version catches what it expects
        report["error"] = f"reading the driver version: {type(e).__name__}: {e}"
    try:
        import torch

        report["torch"] = torch.__version__
        try:
            from importlib.metadata import version

            report["torchvision"] = version("torchvision")  # reinstalled with torch: its build must match
        except Exception:
            pass
        report["torch_cuda"] = torch.version.cuda
        if torch.version.cuda is None:
            report["error"] = "torch is a CPU-only build"
            return report
        try:
            torch.cuda.init()  # raises with the reason (driver too old, no driver) where is_available() is silent
        except Exception as e:
            report["error"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        report["cuda_available"] = bool(torch.cuda.is_available())
        report["device_count"] = int(torch.cuda.device_count()) if report["cuda_available"] else 0
    except Exception as e:  # torch missing or broken on this node
        report["error"] = report["error"] or " ".join(f"{type(e).__name__}: {e}".split())[:300]
    return report


def _major(version: str | None) -> int | None:
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


def wheel_advice(driver: str | None, torch_version: str | None, torch_cuda: str | None,
                 torchvision_version: str | None = None) -> str:
    """How to get a torch that runs on this driver (one clause, for the refusal line)."""
    base = (torch_version or "").split("+")[0]
    vision = (torchvision_version or "").split("+")[0]
    pin = (f"torch=={base}" if base else "torch") + (f" torchvision=={vision}" if vision else " torchvision")
    drv = _major(driver)
    cuda = _major(torch_cuda)
    if driver is None:
        return ("no NVIDIA driver found on this node (/proc/driver/nvidia/version, nvidia-smi): install one, or start "
                "its Ray without GPUs (ray start --num-gpus 0)")
    if drv is not None and drv < CUDA12_MIN_DRIVER:
        return (f"driver {driver} is older than any current torch CUDA build supports: upgrade it (>= "
                f"{CUDA12_MIN_DRIVER} for torch's CUDA 12.x builds, >= {CUDA13_MIN_DRIVER} for CUDA 13)")
    if drv is not None and drv < CUDA13_MIN_DRIVER and (cuda is None or cuda >= 13):
        return (f"install torch's CUDA 12.x build on every node, e.g. pip install {pin} --index-url "
                f"{TORCH_WHEEL_INDEX}/cu128 (drivers {CUDA12_MIN_DRIVER}-{CUDA13_MIN_DRIVER - 1} need a CUDA 12.x "
                f"build: cu128, or cu126 for Pascal/Volta GPUs such as P100, V100; drivers >= {CUDA13_MIN_DRIVER}: "
                "the default CUDA 13 build), then rerun")
    if cuda is None:
        return (f"install a CUDA build of torch on every node: pip install {pin} (driver >= {CUDA13_MIN_DRIVER}) or "
                f"pip install {pin} --index-url {TORCH_WHEEL_INDEX}/cu128 (drivers {CUDA12_MIN_DRIVER}-"
                f"{CUDA13_MIN_DRIVER - 1})")
    return ("the driver fits this torch build, so look at the CUDA error above, CUDA_VISIBLE_DEVICES and the "
            "container's GPU runtime on that node")


def gpu_problems(reports: Sequence[tuple[str, float, dict[str, Any] | None]], gpu_per_trial: float) -> list[str]:
    """One line per node where Ray counts GPUs but torch sees fewer; nothing when the sweep asks for no GPU.

    `reports`: (node label, the node's GPU count in Ray, its gpu_report() or None when it did not answer;
    nodes that did not answer are the caller's to mention, not a refusal).
    """
    if gpu_per_trial <= 0:
        return []
    problems = []
    for label, ray_gpus, rep in reports:
        if rep is None or ray_gpus <= 0:
            continue
        seen = int(rep.get("device_count") or 0) if rep.get("cuda_available") else 0
        if seen >= int(ray_gpus):
            continue
        host = rep.get("host")
        where = f"{host} {label}" if host and host not in label else label
        torch_build = (f"torch {rep.get('torch') or '(not importable)'}, built for CUDA {rep['torch_cuda']}"
                       if rep.get("torch_cuda") else f"torch {rep.get('torch') or '(not importable)'}, no CUDA build")
        sees = "none" if seen == 0 else str(seen)
        err = f"; CUDA: {rep['error']}" if rep.get("error") else ""
        visible = rep.get("cuda_visible_devices")
        hidden = "; CUDA_VISIBLE_DEVICES is empty" if visible is not None and not visible.strip() else ""
        problems.append(
            f"GPU preflight: {where}: Ray counts {ray_gpus:g} GPU(s) but torch sees {sees} (NVIDIA driver "
            f"{rep.get('driver') or 'not found'}, {torch_build}{err}{hidden}); "
            f"{wheel_advice(rep.get('driver'), rep.get('torch'), rep.get('torch_cuda'), rep.get('torchvision'))}; "
            "or run on CPUs with --set resources.gpu=0; see cluster/README.md")
    return problems


def node_label(node: dict[str, Any]) -> str:
    """How a refusal names a Ray node: its name or address, and the start of its Ray id."""
    return f"{node.get('NodeName') or node.get('NodeManagerAddress')} (Ray node {str(node.get('NodeID', ''))[:8]})"


def check_gpus(nodes: Sequence[dict[str, Any]], gpu_per_trial: float, timeout_s: float = GPU_CHECK_S,
               warn: Callable[[str], None] | None = None) -> list[str]:
    """Run gpu_report on every live node of `nodes` (ray.nodes() entries) that has GPUs; the problems found.

    Needs a connected Ray (ray.init done). Returns [] when the sweep asks for no GPU or every GPU node's torch
    sees its GPUs; nodes that do not answer within `timeout_s` (busy, gone) are passed to `warn`, not refused.

    How the task sees the node's GPUs: it asks for no GPU (num_gpus=0), so it never waits for GPUs that trials
    (of this or another sweep) hold and cannot deadlock with them. Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone
    for a task with no GPUs, but older Rays, and RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1, set it to "" (torch would
    then see no GPU on a healthy node); the task's runtime_env therefore sets
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1 and RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0, which keep the
    variable as the node's Ray was started with: the same GPUs Ray counted. A runtime_env also gives the task
    its own fresh worker process, so no earlier task's CUDA state (or hidden devices) carries over.
    """
    if gpu_per_trial <= 0:
        return []
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    gpu_nodes = [n for n in nodes if n.get("Alive") and float((n.get("Resources") or {}).get("GPU", 0)) > 0]
    if not gpu_nodes:
        return []
    remote = ray.remote(num_cpus=0, num_gpus=0, max_retries=0)(gpu_report)
    refs = {remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                           runtime_env={"env_vars": dict(REPORT_ENV)}).remote(): n for n in gpu_nodes}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    reports: list[tuple[str, float, dict[str, Any] | None]] = []
    unchecked = []
    for ref, node in refs.items():
        try:
            rep = ray.get(ref, timeout=5) if ref in ready else None
        except Exception:  # the node died meanwhile, or its worker could not start
            rep = None
        if rep is None:
            unchecked.append(node_label(node))
        reports.append((node_label(node), float(node["Resources"]["GPU"]), rep))
    for ref in set(refs) - set(ready):  # do not leave reports queued on a busy or lost node
        ray.cancel(ref, force=True)
    if unchecked and warn is not None:
        warn(f"warning: GPU preflight: {len(unchecked)} node(s) did not report within {timeout_s:g} s whether "
             f"torch sees their GPUs: {', '.join(unchecked)}")
    return gpu_problems(reports, gpu_per_trial)
