"""Shared fixtures: the real-data root, seeds, problems x dtypes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _find_shared_data() -> Path | None:
    env = os.environ.get("GEOMROB_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    here = Path(__file__).resolve().parent
    for parent in [here, *here.parents][:5]:
        cand = parent / "shared" / "data"
        if (cand / "mnist").is_dir():
            return cand
    return None


SHARED_DATA = _find_shared_data()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with MNIST / Fashion-MNIST (``$GEOMROB_DATA`` or ``../shared/data``)."""
    if SHARED_DATA is None:
        pytest.skip("real data not found: set GEOMROB_DATA or put shared/data beside the repo")
    return SHARED_DATA


requires_data = pytest.mark.skipif(
    SHARED_DATA is None,
    reason="real data not found: set GEOMROB_DATA or put shared/data beside the repo",
)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: on a loaded machine a second thread
    makes every backward pass wait for it (measured: 93 s instead of 8 s for the diversity
    run). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One model / study cache for every analysis script of a module."""
    return tmp_path_factory.mktemp("runs")
