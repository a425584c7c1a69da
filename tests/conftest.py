"""Shared test setup: tests import the spec reference from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


# ------------------------------------------------------------------ Ray (cep-sweep tests)
import pytest  # noqa: E402


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
