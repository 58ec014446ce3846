"""The distributed path on CPU: two processes, gloo, a ``file://`` store (DESIGN.md section 6).

Both ranks (``tests/_dist_worker.py``) build the same seeded tanh MLP and 7 boundary points;
``BoundaryHessian`` on either sharding of the points all-reduces the partial sums, and
``curved_subspace`` shards the points itself. Everything is compared with the same computation in
this process (no process group), in float64: products to ``rtol 1e-12``, eigenvalues to
``1e-10``, principal cosines ``>= 1 - 1e-10``; and the two ranks must agree bitwise (same
Lanczos run, same start vector). The workers are killed after a timeout, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from reference import assert_close

from geomrob.subspaces import principal_angles

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
]

WORKER = Path(__file__).with_name("_dist_worker.py")
WORLD = 2
TIMEOUT_S = 25


def _gloo_available() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_gloo_available()


def _run_workers(tmp_path: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(WORLD), str(store), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in range(WORLD)
    ]
    logs = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            try:
                logs.append(p.communicate(timeout=max(0.1, deadline - time.monotonic()))[0])
            except subprocess.TimeoutExpired:
                pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:  # on any failure: no process left behind
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed (exit {p.returncode}):\n{log}"
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not _gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    import _dist_worker

    ranks = _run_workers(tmp_path_factory.mktemp("dist"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = _dist_worker.cases(0, 1)
    return single, ranks


def _same_on_all_ranks(ranks: list[dict], key: str) -> None:
    first = ranks[0][key]
    for other in ranks[1:]:
        a = first if isinstance(first, tuple) else (first,)
        b = other[key] if isinstance(other[key], tuple) else (other[key],)
        for u, v in zip(a, b, strict=True):
            if isinstance(u, torch.Tensor):
                assert torch.equal(u, v), key
            else:
                assert u == v, key


def test_averaged_matvec_equals_single_process(runs):
    single, ranks = runs
    for name in ("contiguous", "interleaved"):
        key = f"matvec_{name}"
        _same_on_all_ranks(ranks, key)
        assert_close(ranks[0][key], single[key], rtol=1e-12)
        # the shards partition the 7 points
        assert sum(r[f"n_local_{name}"] for r in ranks) == 7
    assert ranks[0]["n_points"] == ranks[1]["n_points"] == single["n_points"] == 7


def test_lanczos_runs_identically_on_every_rank(runs):
    single, ranks = runs
    for key in ("lanczos_vectors", "lanczos_values", "lanczos_matvecs"):
        _same_on_all_ranks(ranks, key)
    assert_close(ranks[0]["lanczos_values"], single["lanczos_values"], rtol=1e-10)
    cos = principal_angles(ranks[0]["lanczos_vectors"], single["lanczos_vectors"])
    assert float(cos.min()) >= 1 - 1e-10


@pytest.mark.parametrize(
    "case",
    [
        "exact",
        "shape",
        "smoothed",
        "finite_difference",
        "scipy",
        "from_x",
        "one_point",
        "one_x",
        "none",
    ],
)
def test_curved_subspace_equals_single_process(runs, case):
    single, ranks = runs
    key = f"curved_{case}"
    _same_on_all_ranks(ranks, key)
    basis, values = ranks[0][key][:2]
    ref_basis, ref_values = single[key][:2]
    assert_close(values, ref_values, rtol=1e-10)
    assert float(principal_angles(basis, ref_basis).min()) >= 1 - 1e-10
    if case != "none":  # n_points and matvecs: the same Lanczos run as one process
        assert ranks[0][key][2:] == single[key][2:]


def test_excluded_points_reported_on_every_rank(runs):
    single, ranks = runs
    for r in ranks:
        assert r["excluded"][:2] == ([5], 6)
        assert r["excluded_warning"] and "1 of 7" in r["excluded_warning"][0]
        assert_close(r["excluded"][2], single["excluded"][2], rtol=1e-10)


def test_generators_that_differ_across_ranks_are_refused(runs):
    _, ranks = runs
    for r in ranks:
        assert "`generator` differs across ranks" in r["mismatch"]
