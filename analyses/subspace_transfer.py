"""Is the curved subspace S_c shared between networks? (001 Fig. 10 and App. C.2).

Two networks on the same dataset: A = ``--arch`` and B = ``--arch-b`` (two architectures), or
the same architecture trained with another seed (``--seed-b``). Each gets the subspace study of
001 (:func:`geomrob.study.subspace_study`: :math:`S_c` from the averaged boundary Hessian of
``--n`` = 100 training points, :math:`S_f`, ``rho_rand``, the UAP; cached in
``--run-dir``/study and shared with the other scripts of 001). Then:

1. Fig. 10: the cosines of the principal angles between :math:`S_c(A)` and :math:`S_c(B)` of
   dimension ``--m`` (:func:`geomrob.principal_angles`), against those of two independent
   Haar-random subspaces of the same dimension (``--draws`` pairs: mean, standard deviation and
   the 5-95 % band); the same for :math:`S_f(A)` and :math:`S_f(B)` for context.
2. Transfer: the fooling rate *on network B*, on unseen test images, of random vectors of
   :math:`S_c(A)` vs :math:`S_c(B)` vs :math:`S_f(A)` vs a random subspace, at B's norm
   ``rho_rand(B) / 5``, for each ``m`` of the study (:func:`geomrob.subspace_fooling`, the
   study's ``n_vectors`` draws: mean and best), beside the UAP algorithm's rate of B and that of
   A's UAP rescaled to B's norm.

A shared subspace shows as leading cosines well above the random band and as :math:`S_c(A)`
fooling B about as well as :math:`S_c(B)` does.

    python analyses/subspace_transfer.py                          # digits, lenet vs cnn2
    python analyses/subspace_transfer.py --dataset mnist --arch lenet --arch-b cnn2 --n 100
    python analyses/subspace_transfer.py --dataset mnist --arch lenet --arch-b lenet --seed-b 1
    python analyses/subspace_transfer.py --quick                  # seconds, for CI
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common as C
import numpy as np
import torch
from matplotlib.figure import Figure

from geomrob import fooling_rate, principal_angles, random_subspace, subspace_fooling
from geomrob.models import ARCHITECTURES
from geomrob.plotting import save_figure


def label_b(args: argparse.Namespace) -> str:
    """Network B's name: its architecture, with ``-seed<k>`` when ``--seed-b`` differs."""
    if args.seed_b is None or args.seed_b == args.seed:
        return args.arch_b
    return f"{args.arch_b}-seed{args.seed_b}"


def compute(args: argparse.Namespace, name: str) -> None:
    """Principal angles and fooling rates on B; saved as ``<name>.json`` / ``.npz``."""
    st_a = C.study(args)
    st_b = C.study(args, args.arch_b, model_seed=args.seed_b)
    ra, rb = st_a.result, st_b.result
    d = ra.curved.d
    m = min(args.m, ra.curved.m, rb.curved.m)
    gen = torch.Generator().manual_seed(args.seed)
    cos_c = principal_angles(ra.curved.first(m), rb.curved.first(m))
    cos_f = principal_angles(ra.normal.first(m), rb.normal.first(m))
    rand = torch.stack(
        [
            principal_angles(
                random_subspace(d, m, generator=gen, dtype=torch.float64),
                random_subspace(d, m, generator=gen, dtype=torch.float64),
            )
            for _ in range(args.draws)
        ]
    )
    # fooling rates on B at B's norm
    x, model_b = st_b.x_eval, st_b.model
    ms = [k for k in rb.config.ms if k <= min(ra.curved.m, rb.curved.m)]
    baseline = random_subspace(d, max(ms), generator=args.seed + 1, dtype=x.dtype)
    subspaces = {
        "curved_a": ra.curved,
        "curved_b": rb.curved,
        "normal_a": ra.normal,
        "random": baseline,
    }
    fooling = {}
    for key, s in subspaces.items():
        basis = s.basis.to(x.device, x.dtype)
        res = subspace_fooling(
            model_b, x, basis, ms, rb.norm, n_vectors=rb.config.n_vectors, generator=args.seed
        )
        fooling[key] = {
            "mean": res.mean.tolist(),
            "std": res.std.tolist(),
            "best": res.best.tolist(),
        }
    uap_a = ra.uap.to(x.device, x.dtype).view(x.shape[1:])
    uap_a_on_b = fooling_rate(model_b, x, uap_a * (rb.norm / float(uap_a.norm())))
    results = {
        "dataset": args.dataset,
        "arch_a": args.arch,
        "arch_b": label_b(args),
        "test_accuracy_a": st_a.test_accuracy,
        "test_accuracy_b": st_b.test_accuracy,
        "mode_a": ra.mode,
        "mode_b": rb.mode,
        "d": d,
        "m": m,
        "draws": args.draws,
        "cosines_curved": cos_c.tolist(),
        "cosines_normal": cos_f.tolist(),
        "cosines_random_mean": rand.mean(0).tolist(),
        "cosines_random_std": rand.std(0).tolist() if args.draws > 1 else [0.0] * m,
        "cosines_random_q05": rand.quantile(0.05, dim=0).tolist(),
        "cosines_random_q95": rand.quantile(0.95, dim=0).tolist(),
        "above_random_q95": int((cos_c > rand.quantile(0.95, dim=0)).sum()),
        "ms": ms,
        "norm_b": rb.norm,
        "rho_rand_b": rb.rho_rand,
        "n_eval": len(x),
        "n_vectors": rb.config.n_vectors,
        "fooling_on_b": fooling,
        "uap_b_rate": rb.uap_rate,
        "uap_a_on_b_rate": float(uap_a_on_b),
    }
    C.save(name, args, results, {"cosines_random": rand.numpy()})


def plot(record: dict, path: Path) -> Path:
    """Fig. 10 (left) and the transfer rates (right); returns the PNG's path."""
    res = record["results"]
    a, b = res["arch_a"], res["arch_b"]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    idx = np.arange(1, res["m"] + 1)
    mean, std = np.array(res["cosines_random_mean"]), np.array(res["cosines_random_std"])
    ax1.fill_between(
        idx,
        res["cosines_random_q05"],
        res["cosines_random_q95"],
        color="C7",
        alpha=0.2,
        label="random pairs, 5-95 %",
    )
    ax1.errorbar(
        idx, mean, yerr=std, color="C7", marker=".", ms=4, capsize=2, label="random, mean ± std"
    )
    ax1.plot(idx, res["cosines_curved"], "o-", color="C3", ms=4, label=f"S_c({a}) vs S_c({b})")
    ax1.plot(idx, res["cosines_normal"], "s--", color="C0", ms=3, label=f"S_f({a}) vs S_f({b})")
    ax1.set(
        xlabel="principal angle index",
        ylabel="cosine",
        ylim=(0, 1.02),
        title=f"principal angles, m = {res['m']}, d = {res['d']}",
    )
    ax1.legend(fontsize=7)
    ms = np.array(res["ms"])
    styles = {
        "curved_a": (f"S_c({a})", "C3", "o-"),
        "curved_b": (f"S_c({b})", "C1", "^-"),
        "normal_a": (f"S_f({a})", "C0", "s--"),
        "random": ("random subspace", "C7", ".-"),
    }
    for key, (label, color, style) in styles.items():
        f = res["fooling_on_b"][key]
        ax2.plot(ms, f["mean"], style, color=color, ms=4, label=f"{label}: mean")
        ax2.plot(ms, f["best"], ls="", marker="_", color=color, ms=10, mew=2)
    ax2.axhline(res["uap_b_rate"], color="black", ls=":", label=f"UAP algorithm of {b}")
    ax2.axhline(res["uap_a_on_b_rate"], color="C3", ls=":", label=f"UAP of {a} at {b}'s norm")
    ax2.plot([], [], ls="", marker="_", color="black", ms=10, mew=2, label="best of the draws")
    if len(ms) > 1:
        ax2.set_xscale("log")
        ax2.set_xticks(ms, [str(k) for k in ms])
        ax2.minorticks_off()
    ax2.set(
        xlabel="subspace dimension m",
        ylabel=f"fooling rate on {b}",
        ylim=(0, 1),
        title=f"on {b}: norm {res['norm_b']:.3g} = rho_rand({b})/5",
    )
    ax2.legend(fontsize=7)
    fig.suptitle(f"Transfer of S_c between {a} and {b} on {res['dataset']}", fontsize=10)
    return save_figure(fig, path)


def table(results: dict) -> str:
    """Principal cosines and fooling rates on B as markdown."""
    a, b = results["arch_a"], results["arch_b"]
    k = min(5, results["m"])

    def row(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values[:k])

    lines = [
        f"principal cosines (first {k} of m = {results['m']}):",
        f"  S_c({a}) vs S_c({b}): {row(results['cosines_curved'])}",
        f"  S_f({a}) vs S_f({b}): {row(results['cosines_normal'])}",
        f"  random pairs (mean of {results['draws']}): {row(results['cosines_random_mean'])}"
        f" (95 %: {row(results['cosines_random_q95'])})",
        f"  S_c cosines above the random 95 % band: {results['above_random_q95']} of "
        f"{results['m']}",
        "",
        f"| m | S_c({a}) on {b} | S_c({b}) on {b} | S_f({a}) on {b} | random on {b} |",
        "| --- | --- | --- | --- | --- |",
    ]
    f = results["fooling_on_b"]
    for i, m in enumerate(results["ms"]):
        cells = " | ".join(
            f"{f[key]['mean'][i]:.3f} (best {f[key]['best'][i]:.3f})"
            for key in ("curved_a", "curved_b", "normal_a", "random")
        )
        lines.append(f"| {m} | {cells} |")
    lines.append(
        f"\nmean (best) of {results['n_vectors']} vectors at norm {results['norm_b']:.4f} = "
        f"rho_rand({b}) / 5 on {results['n_eval']} unseen images; UAP algorithm of {b}: "
        f"{results['uap_b_rate']:.3f}; UAP of {a} rescaled to that norm: "
        f"{results['uap_a_on_b_rate']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    p.add_argument("--arch-b", default="cnn2", choices=ARCHITECTURES, help="network B")
    p.add_argument("--seed-b", type=int, default=None, help="training seed of B (default --seed)")
    p.add_argument("--m", type=int, default=10, help="dimension of the subspaces compared")
    p.add_argument("--draws", type=int, default=20, help="pairs of random subspaces")
    args = C.parse_study_args(p, argv)
    C.check_positive_flags(p, args, "m", "draws")
    if args.arch_b == args.arch and args.seed_b in (None, args.seed):
        p.error("A and B are the same network: give another --arch-b or a --seed-b.")
    if args.quick:
        args.draws = min(args.draws, 5)
    C.setup(args)
    name = C.stem(args, "subspace_transfer", args.arch, label_b(args))
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    path = plot(record, Path(args.out) / f"{name}.png")
    print(table(record["results"]))
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
