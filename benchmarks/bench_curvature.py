"""Benchmarks of the curvature stack (never part of the test run).

(a) the cost of one batched Hessian-vector product against one batched gradient for the same n
    boundary points, per mode (exact, finite_difference, surrogate, smoothed), and of one product
    with the averaged operator;
(b) the top-k eigenpairs of the averaged boundary operator of n MNIST boundary points of a
    softplus LeNet: geomrob's Lanczos vs scipy's eigsh vs hessian-eigenthings' Lanczos (when
    importable) vs the dense eigendecomposition (``op.dense()``, d products): wall time,
    products, eigenvalue error and principal-angle cosines against the dense reference;
(c) scaling in the input dimension d (784, 3072, 12288, 150528) with random-init softplus
    models: boundary points, one averaged product, Lanczos, peak memory (each size in its own
    process, so that its peak RSS is its own; ``torch.cuda.max_memory_allocated`` on a GPU).

Results go to ``benchmarks/results/curvature.{json,md}``. ``--quick`` runs a small version
(a few minutes on two CPU cores).

    python benchmarks/bench_curvature.py [--quick] [--parts a b c] [--device cpu]
        [--data-root DIR] [--run-dir runs/bench] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_atomic  # noqa: E402

from geomrob import data as gdata  # noqa: E402
from geomrob._model import eval_mode, functional
from geomrob.curvature import BoundaryHessian, boundary_points, hvp, lanczos
from geomrob.curvature.hvp import _setup, margin_gradients
from geomrob.models import TrainConfig, build, train
from geomrob.subspaces import principal_angles

warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")

SCALING = [
    ("lenet", (1, 28, 28)),
    ("lenet", (3, 32, 32)),
    ("cnn2", (3, 64, 64)),
    ("cnn2", (3, 224, 224)),
]


def timed(fn, repeats: int = 3) -> tuple[float, Any]:
    """Median wall time over ``repeats`` calls (after one warm-up call) and the last result."""
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def paired(fn, ref, rounds: int) -> tuple[float, float, float]:
    """Interleaved timing of ``fn`` against ``ref``: each round calls ``ref`` then ``fn`` (after
    one warm-up call of each). Returns the median time of ``fn``, the median time of ``ref`` and
    the median over rounds of the per-round ratio: load that drifts over seconds on a shared
    machine moves both calls of a round alike, so the ratio is steadier than a ratio of medians
    taken minutes apart."""
    ref()
    fn()
    sync()
    t_fn, t_ref, ratios = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ref()
        sync()
        t1 = time.perf_counter()
        fn()
        sync()
        t2 = time.perf_counter()
        t_ref.append(t1 - t0)
        t_fn.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(t_fn), statistics.median(t_ref), statistics.median(ratios)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rss_mb() -> float:
    """Peak resident set size of this process's image so far, in MiB.

    ``VmHWM`` of ``/proc/self/status`` (reset by exec); ``ru_maxrss`` is a fallback off Linux,
    but on Linux it keeps the parent's peak across fork + exec, which is why it is not used.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trained_softplus_lenet(args: argparse.Namespace):
    quick = args.quick
    config = TrainConfig(
        arch="lenet",
        dataset="mnist",
        activation="softplus",
        beta=10.0,
        epochs=1 if quick else 5,
        lr=1e-3,
        batch_size=128,
        train_size=5000 if quick else None,
    )
    t0 = time.perf_counter()
    res = train(config, run_dir=args.run_dir, data_root=args.data_root, device=args.device)
    return res, time.perf_counter() - t0


def mnist_points(model, args, n: int, dtype: torch.dtype):
    test = gdata.load("mnist", split="test", root=args.data_root)
    x = test.x[:n].to(device=args.device, dtype=dtype)
    pts = boundary_points(model, x)
    return pts.select(pts.converged), len(x)


# --------------------------------------------------------------------------------------- (a)
def part_a(model, args) -> dict[str, Any]:
    n = 20 if args.quick else 100
    S = 16 if args.quick else 64
    dtype = torch.float32
    model = copy.deepcopy(model).to(dtype)
    relu = build(**{**model.geomrob_config, "activation": "relu"}).to(args.device, dtype)
    relu.load_state_dict(model.state_dict())
    relu.eval()
    pts, asked = mnist_points(model, args, n, dtype)
    n = len(pts)
    d = pts.z[0].numel()
    setup = _setup(
        model, pts, mode="exact", h=None, beta=None, sigma=None, n_samples=None, generator=None
    )
    call = functional(model)

    def grad() -> None:
        with eval_mode(model), torch.no_grad():
            margin_gradients(call, setup.input_shape, setup.z, setup.coef)

    rounds = 3 if args.quick else 9
    g = torch.Generator().manual_seed(0)
    V = torch.randn(n, d, generator=g, dtype=dtype).to(args.device)
    v1 = torch.randn(d, generator=g, dtype=dtype).to(args.device)
    rows = []
    grad_times = []
    cases = [
        ("exact", model, {}),
        ("finite_difference", model, {}),
        ("surrogate", relu, {"beta": 10.0}),
        ("smoothed", model, {"n_samples": S, "generator": 0}),
    ]
    for mode, net, kw in cases:
        # the smoothed products take seconds: one round is not at the mercy of load noise
        r = 1 if mode == "smoothed" else rounds
        t_hvp, t_g1, hvp_ratio = paired(
            lambda net=net, mode=mode, kw=kw: hvp(net, pts, V, mode=mode, **kw), grad, r
        )
        t0 = time.perf_counter()
        op = BoundaryHessian(net, pts, mode=mode, **kw)
        t_build = time.perf_counter() - t0
        t_mv, t_g2, mv_ratio = paired(lambda op=op: op.matvec(v1), grad, r)
        grad_times += [t_g1, t_g2]
        rows.append(
            {
                "mode": mode,
                "rounds": r,
                "hvp_s": t_hvp,
                "hvp_over_grad": hvp_ratio,
                "operator_build_s": t_build,
                "operator_matvec_s": t_mv,
                "matvec_over_grad": mv_ratio,
                "note": {
                    "exact": "double backward of the batched gradient (a row per point and vector)",
                    "finite_difference": "2 gradients of n points",
                    "surrogate": "exact on the softplus copy of the ReLU twin (beta 10)",
                    "smoothed": f"hvp draws 2 n S = {2 * n * S} gradients per call; the operator "
                    "stores them (build) and its matvec is a dense product",
                }[mode],
            }
        )

    # The other exact kernel (DESIGN.md section 3 allows both): forward-over-reverse, the same
    # products bitwise; kept here so that a run on another device says which one wins there.
    def jvp_of_grad() -> None:
        Z, C, T = setup.z, setup.coef, V
        shape = setup.input_shape

        def total(zz):
            return (call(zz.view(-1, *shape)) * C).sum()

        with eval_mode(model), torch.no_grad():
            torch.func.jvp(torch.func.grad(total), (Z,), (T,))

    t_jvp, t_g3, jvp_ratio = paired(jvp_of_grad, grad, rounds)
    grad_times.append(t_g3)
    rows.append(
        {
            "mode": "exact, forward-over-reverse",
            "rounds": rounds,
            "hvp_s": t_jvp,
            "hvp_over_grad": jvp_ratio,
            "operator_build_s": None,
            "operator_matvec_s": None,
            "matvec_over_grad": None,
            "note": "torch.func.jvp of torch.func.grad, the kernel before session 4 (reference)",
        }
    )
    t_grad = statistics.median(grad_times)
    return {"n": n, "asked": asked, "d": d, "dtype": str(dtype), "grad_s": t_grad, "rows": rows}


# --------------------------------------------------------------------------------------- (b)
def part_b(model, args) -> dict[str, Any]:
    n = 20 if args.quick else 100
    k = 5 if args.quick else 20
    tol = 1e-8
    dtype = torch.float64
    model = copy.deepcopy(model).to(dtype)
    pts, asked = mnist_points(model, args, n, dtype)
    op = BoundaryHessian(model, pts)
    d = op.shape[0]
    t0 = time.perf_counter()
    M = op.dense()
    t_dense_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    evals, evecs = torch.linalg.eigh((M + M.T) / 2)
    t_eigh = time.perf_counter() - t0
    order = torch.argsort(evals, descending=True)[:k]
    ref_values, ref_vectors = evals[order], evecs[:, order].T
    scale = float(evals.abs().max())
    rows = [
        {
            "method": "dense: op.dense() + torch.linalg.eigh",
            "seconds": t_dense_build + t_eigh,
            "matvecs": d,
            "max_rel_eig_error": 0.0,
            "min_cosine": 1.0,
            "note": f"dense() {t_dense_build:.2f} s, eigh {t_eigh:.3f} s",
        }
    ]

    def record(name: str, seconds: float, matvecs: int, values, vectors, note: str = "") -> None:
        values = values.to(dtype).cpu()
        err = float((values - ref_values.cpu()).abs().max()) / scale
        try:
            cos = principal_angles(vectors.to(dtype).cpu(), ref_vectors.cpu())
        except ValueError as exc:  # e.g. duplicated Ritz vectors: report, don't crash the run
            cos = torch.tensor([float("nan")])
            note = f"{note}; principal angles undefined: {exc}"
        # per-vector cosines (each Ritz vector against its reference eigenvector)
        dots = (vectors.to(dtype).cpu() * ref_vectors.cpu()).sum(1).abs()
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "matvecs": matvecs,
                "max_rel_eig_error": err,
                "min_cosine": float(cos.min()),
                "min_vector_cosine": float(dots.min()),
                "note": note,
            }
        )

    # check_multiplicity (torch only) spends 10 extra matvecs looking for missed copies of
    # repeated eigenvalues; ARPACK has no such check, so the like-for-like row turns it off.
    for backend, extra in (
        ("torch", {}),
        ("torch", {"check_multiplicity": False}),
        ("scipy", {}),
    ):
        t0 = time.perf_counter()
        res = lanczos(op, k, tol=tol, backend=backend, generator=0, **extra)
        t = time.perf_counter() - t0
        label = ", check_multiplicity=False" if extra else ""
        record(
            f"geomrob lanczos (backend={backend}{label})",
            t,
            res.matvecs,
            res.values,
            res.vectors,
            f"tol {tol:g}, converged {int(res.converged.sum())}/{k}, restarts {res.restarts}",
        )
    try:
        from hessian_eigenthings import LambdaOperator
        from hessian_eigenthings import lanczos as he_lanczos
    except ImportError as exc:
        rows.append({"method": "hessian-eigenthings lanczos", "skipped": f"not importable: {exc}"})
    else:
        he_op = LambdaOperator(lambda v: op.matvec(v.to(dtype)), d, device=op.device, dtype=dtype)  # noqa: E731
        ours = min(d - 1, max(2 * k, rows[1]["matvecs"]))
        # its defaults (2k steps, reorthogonalised), then our budget with and without its
        # default reorthogonalisation (off above 50 steps)
        for steps, reorth in dict.fromkeys([(2 * k, None), (ours, True), (ours, None)]):
            t0 = time.perf_counter()
            res = he_lanczos(
                he_op, k=k, max_iter=steps, which="LA", seed=0, tol=tol, reorthogonalize=reorth
            )
            t = time.perf_counter() - t0
            used = reorth if reorth is not None else steps <= 50
            record(
                f"hessian-eigenthings lanczos (max_iter={steps}, reorth={used})",
                t,
                steps,
                res.eigenvalues,
                res.eigenvectors,
                f"one run, no restart; converged {int(res.converged.sum())}/{k} by its own test",
            )
    return {
        "n": len(pts),
        "asked": asked,
        "d": d,
        "k": k,
        "dtype": str(dtype),
        "operator": "BoundaryHessian(model, points), exact mode, project=False (001)",
        "top_eigenvalues": ref_values.tolist(),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------- (c)
def scaling_one(arch: str, shape: tuple[int, ...], n: int, k: int, device: str) -> dict:
    """One size, in this (child) process."""
    base_rss = rss_mb()
    cuda = device.startswith("cuda")
    rng = torch.random.fork_rng(devices=[])
    with rng:
        torch.manual_seed(0)
        model = build(arch, input_shape=shape, num_classes=10, activation="softplus")
    model = model.to(device).eval()
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    d = x[0].numel()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    pts = boundary_points(model, x)
    sync()
    t_points = time.perf_counter() - t0
    pts = pts.select(pts.converged)
    op = BoundaryHessian(model, pts, chunk=1)
    v = torch.randn(d, generator=torch.Generator().manual_seed(2)).to(device)
    t_mv, _ = timed(lambda: op.matvec(v), repeats=2)
    t0 = time.perf_counter()
    res = lanczos(op, k, tol=1e-4, generator=0)
    sync()
    t_lanczos = time.perf_counter() - t0
    out = {
        "arch": arch,
        "input_shape": list(shape),
        "d": d,
        "n": len(pts),
        "k": k,
        "points_s": t_points,
        "matvec_s": t_mv,
        "lanczos_s": t_lanczos,
        "lanczos_matvecs": res.matvecs,
        "converged": int(res.converged.sum()),
        "top_value": float(res.values[0]),
        "rss_before_mb": base_rss,
        "peak_rss_mb": rss_mb(),
    }
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def part_c(args) -> dict[str, Any]:
    n, k = (2, 2) if args.quick else (4, 5)
    sizes = SCALING[:3] if args.quick else SCALING
    rows = []
    for arch, shape in sizes:
        cmd = [
            sys.executable,
            __file__,
            *(["--threads", str(args.threads)] if args.threads else []),
            "--scaling-one",
            json.dumps({"arch": arch, "shape": shape, "n": n, "k": k, "device": args.device}),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            rows.append({"arch": arch, "input_shape": list(shape), "error": proc.stderr[-2000:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  (c) {arch} {shape}: {rows[-1]}", flush=True)
    return {"n": n, "k": k, "rows": rows, "mode": "exact, chunk=1, float32"}


# --------------------------------------------------------------------------------------- report
def _load(part: dict[str, Any]) -> str:
    before, after = part.get("loadavg_before"), part.get("loadavg_after")
    text = f" Torch threads: {part['threads']}." if part.get("threads") else ""
    text += f" Load average before this part: {before}." if before else ""
    return text + (f" After: {after}." if after else "")


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Curvature benchmarks",
        "",
        f"`python benchmarks/bench_curvature.py{' --quick' if results['quick'] else ''}` on "
        f"{results['machine']} ({results['threads']} torch threads, device "
        f"{results['device']}), torch {results['torch']}, "
        f"load average at start {results['loadavg']}.",
        "",
    ]
    if "model" in results:
        lines += [f"Model: {results['model']}", ""]
    a = results.get("a")
    if a:
        lines += [
            f"## (a) HVP vs gradient: n = {a['n']} MNIST boundary points, d = {a['d']}, "
            f"{a['dtype']}",
            "",
            f"One batched gradient of F at the n points: {a['grad_s'] * 1e3:.1f} ms (median)."
            + _load(a),
            "",
            "Ratios are medians over rounds that time one gradient and then the product, "
            "interleaved (rounds per mode in the JSON); times are medians.",
            "",
            "| mode | batched HVP (ms) | HVP / gradient | operator build (s) "
            "| averaged matvec (ms) | matvec / gradient | how |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in a["rows"]:
            op = r["operator_build_s"] is not None
            lines.append(
                f"| {r['mode']} | {r['hvp_s'] * 1e3:.1f} | {r['hvp_over_grad']:.2f} | "
                + (
                    f"{r['operator_build_s']:.3f} | {r['operator_matvec_s'] * 1e3:.2f} | "
                    f"{r['matvec_over_grad']:.2f} | "
                    if op
                    else "- | - | - | "
                )
                + f"{r['note']} |"
            )
        lines.append("")
    b = results.get("b")
    if b:
        lines += [
            f"## (b) Top-{b['k']} eigenpairs: n = {b['n']} boundary points, d = {b['d']}, "
            f"{b['dtype']}",
            "",
            f"Operator: {b['operator']}. Errors against the dense eigendecomposition: max "
            "|lambda - lambda_ref| / max|lambda_ref|, and the smallest principal-angle cosine "
            "between the k-dimensional subspaces (and the smallest per-vector |cosine|)."
            + _load(b),
            "",
            "| method | seconds | matvecs | max rel. eigenvalue error | min principal cosine "
            "| min vector cosine | note |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in b["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['method']} | | | | | | skipped: {r['skipped']} |")
                continue
            lines.append(
                f"| {r['method']} | {r['seconds']:.2f} | {r['matvecs']} | "
                f"{r['max_rel_eig_error']:.2e} | {r['min_cosine']:.10f} | "
                f"{r.get('min_vector_cosine', 1.0):.6f} | {r['note']} |"
            )
        lines.append("")
    c = results.get("c")
    if c:
        lines += [
            f"## (c) Scaling in d: random-init softplus models, n = {c['n']} points, "
            f"k = {c['k']} ({c['mode']})",
            "",
            "Peak RSS is VmHWM of the process that ran the size (its own process)." + _load(c),
            "",
            "| arch | input | d | boundary points (s) | one averaged matvec (s) | Lanczos (s) "
            "| matvecs | peak RSS (MB) | RSS after imports (MB) | CUDA peak (MB) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in c["rows"]:
            if "error" in r:
                lines.append(f"| {r['arch']} | {r['input_shape']} | | error | | | | | | |")
                continue
            lines.append(
                f"| {r['arch']} | {'x'.join(map(str, r['input_shape']))} | {r['d']} | "
                f"{r['points_s']:.2f} | {r['matvec_s']:.3f} | {r['lanczos_s']:.2f} | "
                f"{r['lanczos_matvecs']} | {_mb(r.get('peak_rss_mb'))} | "
                f"{_mb(r.get('rss_before_mb'))} | {_mb(r.get('cuda_peak_mb'))} |"
            )
        lines.append("")
    for part in ("a", "b", "c"):
        note = (results.get(part) or {}).get("note")
        if note:
            lines += [f"Note ({part}): {note}.", ""]
    if results.get("note"):
        lines += [f"Note: {results['note']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (minutes on 2 CPU cores)")
    p.add_argument("--parts", nargs="*", default=["a", "b", "c"], choices=["a", "b", "c"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=os.environ.get("GEOMROB_DATA"))
    p.add_argument("--run-dir", default="runs/bench", help="cache of trained models")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's). On a machine where another process holds a "
        "core, 1 thread avoids OpenMP spin-waiting (measured 7x faster products)",
    )
    p.add_argument("--scaling-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scaling_one:
        spec = json.loads(args.scaling_one)
        row = scaling_one(spec["arch"], tuple(spec["shape"]), spec["n"], spec["k"], spec["device"])
        print(json.dumps(row))
        return 0
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "threads": torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    if {"a", "b"} & set(args.parts):
        res, seconds = trained_softplus_lenet(args)
        results["model"] = (
            f"softplus(10) LeNet on MNIST, {res.config.epochs} epoch(s), test accuracy "
            f"{res.test_accuracy:.4f} ({'cached' if res.cached else f'trained in {seconds:.0f} s'})"
        )
        print(results["model"], flush=True)
        if "a" in args.parts:
            start = [round(x, 2) for x in os.getloadavg()]
            results["a"] = part_a(res.model, args)
            results["a"]["loadavg_before"] = start
            results["a"]["threads"] = torch.get_num_threads()
            results["a"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            print("(a) done", flush=True)
        if "b" in args.parts:
            start = [round(x, 2) for x in os.getloadavg()]
            results["b"] = part_b(res.model, args)
            results["b"]["loadavg_before"] = start
            results["b"]["threads"] = torch.get_num_threads()
            results["b"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            print("(b) done", flush=True)
    if "c" in args.parts:
        start = [round(x, 2) for x in os.getloadavg()]
        results["c"] = part_c(args)
        results["c"]["loadavg_before"] = start
        results["c"]["threads"] = torch.get_num_threads()
        results["c"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "curvature_quick" if args.quick else "curvature"
    previous = out / f"{stem}.json"
    if previous.exists():
        # A run of some parts keeps the other parts of the last run (each part carries its own
        # load averages and the command line that made it).
        old = json.loads(previous.read_text())
        for part in {"a", "b", "c"} - set(args.parts):
            if part in old:
                results[part] = old[part]
                if part == "b" and "model" in old:
                    results.setdefault("model", old["model"])
    write_atomic(out / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    write_atomic(out / f"{stem}.md", markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
