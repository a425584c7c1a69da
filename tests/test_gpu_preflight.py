"""GPU preflight (cep.sweep.gpu_preflight): a node whose torch cannot use the GPUs Ray counts is refused by name.

The pure part runs on stand-in reports (no GPU here); gpu_report runs for real on this GPU-less machine; one
Ray test has a local Ray that claims a GPU torch cannot see, the situation of a too-old driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cep.sweep.gpu_preflight import check_gpus, gpu_problems, gpu_report, wheel_advice

OLD_DRIVER = {"host": "gpu-node-7", "torch": "2.14.1+cu130", "torchvision": "0.29.1", "torch_cuda": "13.0",
              "cuda_available": False, "device_count": 0, "driver": "535.183.01", "cuda_visible_devices": "0",
              "error": "RuntimeError: The NVIDIA driver on your system is too old (found version 12020)."}
HEALTHY = {"host": "gpu-node-8", "torch": "2.14.1+cu126", "torch_cuda": "12.6", "cuda_available": True,
           "device_count": 1, "driver": "535.183.01", "cuda_visible_devices": None, "error": None}


def test_a_node_whose_torch_sees_no_gpu_is_refused_in_one_line_naming_it():
    problems = gpu_problems([("10.0.3.17 (Ray node 7f3a91c2)", 1.0, OLD_DRIVER),
                             ("10.0.3.18 (Ray node 0b1c2d3e)", 1.0, HEALTHY)], gpu_per_trial=0.25)
    assert len(problems) == 1
    line = problems[0]
    assert "\n" not in line
    assert line.startswith("GPU preflight: gpu-node-7 10.0.3.17 (Ray node 7f3a91c2): Ray counts 1 GPU(s) but torch "
                           "sees none")
    for part in ("NVIDIA driver 535.183.01", "torch 2.14.1+cu130, built for CUDA 13.0", "too old",
                 "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128",
                 "--set resources.gpu=0"):
        assert part in line, part
    assert "gpu-node-8" not in line


def test_healthy_nodes_nodes_without_gpus_and_cpu_sweeps_give_nothing():
    assert gpu_problems([("a", 1.0, HEALTHY)], 1.0) == []
    assert gpu_problems([("a", 0.0, OLD_DRIVER)], 1.0) == []  # Ray counts no GPU there: no trial goes there
    assert gpu_problems([("a", 1.0, OLD_DRIVER)], 0.0) == []  # the sweep asks for no GPU
    assert gpu_problems([("a", 1.0, None)], 1.0) == []  # did not answer: the caller warns, no refusal


def test_fewer_gpus_than_ray_counts_and_other_causes_are_worded():
    partial = {**HEALTHY, "device_count": 2}
    (line,) = gpu_problems([("n", 4.0, partial)], 1.0)
    assert "Ray counts 4 GPU(s) but torch sees 2" in line and "driver fits" in line
    cpu_build = {**OLD_DRIVER, "torch": "2.14.1+cpu", "torch_cuda": None, "error": "torch is a CPU-only build",
                 "driver": "580.65.06"}
    (line,) = gpu_problems([("n", 1.0, cpu_build)], 1.0)
    assert "no CUDA build" in line and "install a CUDA build of torch" in line
    hidden = {**HEALTHY, "cuda_available": False, "device_count": 0, "cuda_visible_devices": ""}
    (line,) = gpu_problems([("n", 1.0, hidden)], 1.0)
    assert "CUDA_VISIBLE_DEVICES is empty" in line


def test_wheel_advice_by_driver_range():
    assert "cu128" in wheel_advice("570.124.06", "2.14.1+cu130", "13.0")
    assert "upgrade it" in wheel_advice("470.256.02", "2.14.1+cu130", "13.0")
    assert "no NVIDIA driver" in wheel_advice(None, "2.14.1+cu130", "13.0")
    assert "driver fits" in wheel_advice("580.65.06", "2.14.1+cu130", "13.0")
    assert "driver fits" in wheel_advice("550.54.15", "2.14.1+cu126", "12.6")


def test_gpu_report_runs_here_without_a_gpu():
    rep = gpu_report()
    assert set(rep) >= {"host", "torch", "torchvision", "torch_cuda", "cuda_available", "device_count", "driver",
                        "error"}
    assert rep["host"] and rep["torch"]
    assert rep["cuda_available"] in (True, False) and isinstance(rep["device_count"], int)
    if not rep["cuda_available"]:  # this machine: no GPU, so the reason is recorded
        assert rep["device_count"] == 0 and rep["error"]
    json.dumps(rep)  # travels back from a Ray task as plain data


def test_check_gpus_does_nothing_for_a_cpu_sweep():
    assert check_gpus([{"Alive": True, "NodeID": "x", "Resources": {"GPU": 1.0}}], 0.0) == []


@pytest.mark.ray
def test_check_gpus_refuses_a_node_whose_gpu_torch_cannot_see(tmp_path):
    """A local Ray told it has a GPU (as NVML would on a node with an old driver); torch here sees none.
    check_gpus names it, and cep-sweep refuses to start with that one line, leaving nothing behind."""
    (tmp_path / "gpu.yaml").write_text("name: gpu\nbase: {epochs: 1, train_samples: 40, test_samples: 20}\n"
                                       "resources: {gpu: 0.25}\n")
    code = textwrap.dedent(f"""
        import contextlib, io, json, ray
        from cep.sweep.cli import main
        from cep.sweep.gpu_preflight import check_gpus
        ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, logging_level="ERROR")
        warnings = []
        problems = check_gpus([n for n in ray.nodes() if n["Alive"]], 0.25, 120, warnings.append)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                main([{str(tmp_path / "gpu.yaml")!r}, "--storage", {str(tmp_path / "results")!r}])
            except SystemExit as e:
                exit_code = e.code
        print("RESULT " + json.dumps({{"problems": problems, "warnings": warnings, "code": exit_code,
                                       "stderr": err.getvalue()}}))
        ray.shutdown()
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, p.stdout + p.stderr
    out = json.loads(line[len("RESULT "):])
    assert out["warnings"] == []
    assert len(out["problems"]) == 1
    assert "Ray counts 1 GPU(s) but torch sees none" in out["problems"][0]
    assert out["code"] == 2 and out["stderr"].splitlines() == [f"error: {out['problems'][0]}"]
    assert not (tmp_path / "results").exists()  # nothing started, nothing written
