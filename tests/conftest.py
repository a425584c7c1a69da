"""Shared test setup: one local Ray cluster per session, and the sweep file of a test module.

Test helpers (spec_reference, trial_files, processes) import from this folder (pytest's `pythonpath`).
"""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray cluster (2 CPUs) for the whole session; drivers in subprocesses join it with --address."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": a new cluster even if a `ray start` one (e.g. left by another test) is reachable
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING",
                 logging_config=ray.LoggingConfig(log_level="WARNING"))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep_file(request, tmp_path_factory) -> Path:
    """The test module's SWEEP text (a module-level string) written as a sweep file."""
    path = tmp_path_factory.mktemp("sweepfile") / "sweep.yaml"
    path.write_text(request.module.SWEEP)
    return path


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Commands run in-process (cep train, cep-sweep --local) set torch's thread count for the process, as a
    program should; a test must not leak it into the next ones (float64 summation order depends on it)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
