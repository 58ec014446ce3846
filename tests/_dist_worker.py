"""One rank of the two-process gloo run of ``tests/test_distributed.py`` (CPU).

Usage: ``python tests/_dist_worker.py RANK WORLD_SIZE STORE_FILE OUT_DIR``. The rank joins a gloo
process group through a ``file://`` store, builds the same seeded model and points as every other
rank (and as the single-process reference, :func:`problem`), runs :func:`cases` and saves the
results to ``OUT_DIR/rank<RANK>.pt``. Any exception is printed and gives exit status 1.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from pathlib import Path

import torch
from torch import nn

DT = torch.float64


def problem() -> tuple[nn.Module, torch.Tensor, object]:
    """A seeded tanh MLP on R^10, 7 inputs (shards of 3 and 4) and their boundary points."""
    from geomrob.curvature import boundary_points

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4)).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    x = torch.randn(7, 10, generator=torch.Generator().manual_seed(1), dtype=DT)
    pts = boundary_points(model, x)
    assert bool(pts.converged.all())
    return model, x, pts


def probe_vectors() -> torch.Tensor:
    return torch.randn(3, 10, generator=torch.Generator().manual_seed(2), dtype=DT)


#: the curved_subspace cases: name -> keyword arguments (``points`` / ``x`` filled in by ``cases``)
CURVED = {
    "exact": {"mode": "exact"},
    "shape": {"mode": "exact", "project": True, "normalize": True},
    "smoothed": {"mode": "smoothed", "n_samples": 6, "sigma": 0.05},
    "finite_difference": {"mode": "finite_difference", "h": 1e-3},
    "scipy": {"mode": "exact", "backend": "scipy"},
}


def with_unconverged(pts, index: int):
    from geomrob.curvature import BoundaryPoints

    conv = pts.converged.clone()
    conv[index] = False
    return BoundaryPoints(**{**pts.__dict__, "converged": conv})


def cases(rank: int, world: int) -> dict[str, object]:
    """Everything compared by the test; with world == 1 and no process group: the reference."""
    from geomrob.curvature import BoundaryHessian, lanczos
    from geomrob.subspaces import curved_subspace

    model, x, pts = problem()
    n = len(pts)
    out: dict[str, object] = {}
    V = probe_vectors()
    # the operator on two shardings of the points (the caller shards; the product all-reduces)
    start, stop = n * rank // world, n * (rank + 1) // world
    for name, idx in (
        ("contiguous", torch.arange(start, stop)),
        ("interleaved", torch.arange(rank, n, world)),
    ):
        op = BoundaryHessian(model, pts.select(idx), project=True, normalize=True)
        out[f"matvec_{name}"] = op.matvec(V)
        out[f"n_local_{name}"] = op.n_local
        out["n_points"] = op.n_points
    # Lanczos on the distributed operator from the same seed: identical runs on every rank
    res = lanczos(op, 3, tol=1e-10, generator=torch.Generator().manual_seed(7))
    out["lanczos_vectors"], out["lanczos_values"] = res.vectors, res.values
    out["lanczos_matvecs"] = res.matvecs
    for name, kw in CURVED.items():
        s = curved_subspace(model, None, 3, points=pts, tol=1e-10, generator=0, **kw)
        out[f"curved_{name}"] = (s.basis, s.values, s.n_points, s.matvecs)
    s = curved_subspace(model, x, 3, tol=1e-10, generator=0)  # DeepFool on each shard
    out["curved_from_x"] = (s.basis, s.values, s.n_points, s.matvecs)
    # one point, two ranks: rank 0 holds an empty shard (from points and from x)
    s = curved_subspace(model, None, 2, points=pts.select(torch.tensor([4])), generator=0)
    out["curved_one_point"] = (s.basis, s.values, s.n_points, s.matvecs)
    s = curved_subspace(model, x[4:5], 2, generator=0)
    out["curved_one_x"] = (s.basis, s.values, s.n_points, s.matvecs)
    # a non-converged point on rank 1's shard is reported on every rank
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = curved_subspace(model, None, 3, points=with_unconverged(pts, 5), tol=1e-10, generator=0)
    out["excluded"] = (s.excluded.tolist(), s.n_points, s.values)
    out["excluded_warning"] = [str(w.message) for w in caught if "excluded" in str(w.message)]
    # generator=None: rank 0 draws the seed, whatever the other ranks' global RNG
    torch.manual_seed(1000 + rank)
    s = curved_subspace(model, None, 3, points=pts, tol=1e-10)
    out["curved_none"] = (s.basis, s.values)
    if world > 1:
        try:
            curved_subspace(model, None, 3, points=pts, generator=rank)
            out["mismatch"] = "no error"
        except ValueError as exc:
            out["mismatch"] = str(exc)
    return out


def main(argv: list[str]) -> int:
    rank, world, store, out_dir = int(argv[1]), int(argv[2]), argv[3], Path(argv[4])
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results = cases(rank, world)
        torch.save(results, out_dir / f"rank{rank}.pt")
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
