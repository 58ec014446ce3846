"""Lemma 1 and Theorems 1-2 of 001 checked by Monte Carlo and against a trained network.

1. Lemma 1 (001 App. A): for ``v`` uniform on ``S^{d-1}``,
   ``P(beta1 m/d <= ||P_m v||^2 <= beta2 m/d) >= 1 - delta``. For several ``d``, ``m`` and
   ``delta``: the empirical probability of ``--mc`` draws
   (:func:`geomrob.theory.lemma1_monte_carlo`), the exact one (``||P_m v||^2 ~ Beta(m/2,
   (d-m)/2)``, :func:`~geomrob.theory.lemma1_probability`) and the bound ``1 - delta``.

2. The theorems on ``--arch`` (the subspace study of 001, :func:`geomrob.study.subspace_study`,
   cached in ``--run-dir``/study and shared with the other scripts of 001). On the boundary
   points ``z = x + r(x)`` of the first ``n_curvature`` (200) unseen test images (those whose
   boundary point converged), for each dimension ``m`` of the study:

   - Theorem 1 (flat model, :math:`S = S_f`): :math:`\\xi` from the unit normals
     (:func:`~geomrob.theory.measure_xi`): ``xi_min = 1 - min_x ||P_S n(x)||`` (every point) and
     ``xi = 1 - q-quantile_x ||P_S n(x)||`` (all but a fraction ``--quantile`` = q of the
     points: "almost all x"), then ``rho_1 = theorem1_radius(m, delta, xi)``. The theorem then
     promises that random *directions* of ``S`` of norm ``rho_1`` fool (``x + v`` or ``x - v``
     changes the label) at least ``1 - delta - q`` of the points, on average over ``v``.
   - Theorem 2 (curved model, :math:`S = S_c`): per point and ``--dirs`` random unit ``v`` of
     ``S``, the dimensionless curvature ``kappa(x, v) = ||r|| lambda_min(Pi^T H_z Pi) /
     (2 ||grad F||)`` of the normal section ``span(r(x), v)``
     (:func:`~geomrob.theory.normal_section_curvature`, the study's Hessian-vector product
     mode: ``finite_difference`` at step ``0.1 ||r||`` for ReLU networks), per point
     ``kappa_x`` = its ``--beta``-quantile over ``v`` (:meth:`SectionCurvature.theorem_kappa`),
     and ``kappa`` = the q-quantile of ``kappa_x`` over points. If ``kappa > 0``,
     ``rho_2 = theorem2_radius(kappa, m, delta)`` and the theorem promises random *vectors*
     of norm ``rho_2`` fooling ``1 - delta - beta - q`` of the points. ``kappa <= 0`` means the
     hypothesis fails and no radius is given; ``kappa >= 1/2`` is flagged (the quadratic model
     is then inconsistent with ``r(x)`` minimal, see :func:`~geomrob.theory.theorem2_radius`).

   **Scaling.** The theorems assume ``||r(x)|| = 1`` for every ``x``; a universal perturbation
   is one vector for all points, so the radii (in units of ``||r||``) are converted to input
   units with the *median* ``||r(x)||`` of the points (its spread is printed), not per point.

   **Empirical universal norms** beside them: on the same points, for ``--vectors`` fixed unit
   directions of the subspace (common random numbers across norms), the smallest norm at which
   the mean fooling rate over the directions reaches the theorem's level (doubling from the
   median ``||r||``, then bisection to 5 %): Theorem 1's two-sided rate for :math:`S_f`,
   Theorem 2's one-sided rate for :math:`S_c`, and the same for a Haar-random subspace of the
   same dimension as a baseline.

    python analyses/theory_check.py                              # digits, lenet
    python analyses/theory_check.py --dataset mnist --arch lenet --n 100
    python analyses/theory_check.py --dataset fashion-mnist --arch lenet --n 100 --delta 0.1
    python analyses/theory_check.py --quick                      # seconds, for CI
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import _common as C
import numpy as np
import torch
from matplotlib.figure import Figure

from geomrob import boundary_points, random_subspace, sample_subspace
from geomrob.plotting import save_figure
from geomrob.theory import (
    lemma1_monte_carlo,
    measure_xi,
    normal_section_curvature,
    theorem1_radius,
    theorem2_radius,
)

LEMMA_D = (64, 784, 3072)
LEMMA_M = (1, 5, 10, 50)
LEMMA_DELTA = (0.05, 0.2, 0.5)
#: relative width of the bracket of the empirical universal norm
REL_TOL = 0.05


# --------------------------------------------------------------------------------------------
# Lemma 1


def lemma_rows(args: argparse.Namespace, d_data: int) -> list[dict]:
    """Lemma 1 by Monte Carlo on a grid of ``(d, m, delta)``."""
    gen = torch.Generator().manual_seed(args.seed)
    ds = sorted({*LEMMA_D, d_data}) if not args.quick else sorted({64, d_data})
    rows = []
    for d in ds:
        for m in (k for k in LEMMA_M if k <= d):
            for delta in LEMMA_DELTA:
                mc = lemma1_monte_carlo(d, m, delta, args.mc, generator=gen)
                row = mc.to_dict()
                # the lemma holds if the estimate is not significantly below the bound
                row["holds"] = mc.probability >= mc.bound - 3 * mc.standard_error
                row["exact_holds"] = mc.exact >= mc.bound
                row["agrees_with_exact"] = abs(mc.probability - mc.exact) <= 4 * max(
                    mc.standard_error, 1 / mc.n
                )
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# empirical universal norms


def fooled_fraction(
    model: torch.nn.Module,
    x: torch.Tensor,
    clean: torch.Tensor,
    dirs: torch.Tensor,
    rho: float,
    *,
    both: bool,
) -> float:
    """Mean over the unit directions ``dirs`` of the fraction of ``x`` fooled at norm ``rho``.

    Args:
        model: the classifier.
        x: ``(n, *input_shape)`` points.
        clean: ``(n,)`` their labels.
        dirs: ``(k, d)`` unit directions.
        rho: the norm.
        both: count ``x`` as fooled when ``x + rho v`` *or* ``x - rho v`` changes the label
            (Theorem 1's universal direction); else ``x + rho v`` only (Theorem 2).

    Returns:
        The mean fooling rate.
    """
    k, n = len(dirs), len(x)
    fooled = torch.zeros(k, n, dtype=torch.bool, device=x.device)
    for sign in (1.0, -1.0) if both else (1.0,):
        pert = (sign * rho * dirs).view(k, 1, *x.shape[1:])
        with torch.no_grad():
            pred = model((x[None] + pert).reshape(k * n, *x.shape[1:])).argmax(1)
        fooled |= pred.view(k, n) != clean[None]
    return float(fooled.double().mean())


def universal_norm(
    model: torch.nn.Module,
    x: torch.Tensor,
    clean: torch.Tensor,
    dirs: torch.Tensor,
    target: float,
    start: float,
    *,
    both: bool,
    max_doublings: int = 16,
) -> float | None:
    """The smallest norm (to ``REL_TOL``) whose mean fooling rate reaches ``target``.

    Doubling from ``start`` until the rate reaches ``target``, then bisection on the same
    directions; a crossing, the first one when the rate grows with the norm. ``None`` when
    ``start * 2**max_doublings`` does not reach it.
    """
    lo, hi = 0.0, start
    for _ in range(max_doublings):
        if fooled_fraction(model, x, clean, dirs, hi, both=both) >= target:
            break
        lo, hi = hi, 2 * hi
    else:
        return None
    while hi - lo > REL_TOL * hi:
        mid = (lo + hi) / 2
        if fooled_fraction(model, x, clean, dirs, mid, both=both) >= target:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------------------------
# the theorems on the network


def theorem_rows(args: argparse.Namespace) -> tuple[dict, list[dict], dict[str, np.ndarray]]:
    """Per ``m``: xi, kappa, the theorems' radii and the empirical norms (see the module)."""
    st = C.study(args)
    res, model = st.result, st.model
    x_all = st.x_eval[: res.config.n_curvature]
    pts = boundary_points(model, x_all)
    conv = pts.converged
    if int(conv.sum()) < 2:
        raise SystemExit("fewer than 2 unseen points with a converged boundary point")
    pc = pts.select(conv)
    x = pc.x
    r = pc.r.flatten(1)
    r_norm = r.norm(dim=1).double().cpu()
    scale = float(r_norm.median())
    with torch.no_grad():
        clean = model(x).argmax(1)
    gen = torch.Generator().manual_seed(args.seed)
    hvp = {k: v for k, v in res.config.hvp_options().items() if v is not None}
    q, delta, beta = args.quantile, args.delta, args.beta
    level1, level2 = 1 - delta - q, 1 - delta - beta - q
    d = r.shape[1]
    ms = [m for m in res.config.ms if m <= min(res.curved.m, res.normal.m)]
    baseline = random_subspace(d, max(ms), generator=args.seed + 1, dtype=x.dtype)
    rows, arrays = [], {"r_norm": r_norm.numpy()}
    for m in ms:
        sf, sc, rnd = res.normal.first(m), res.curved.first(m), baseline.first(m)
        # Theorem 1
        xi = measure_xi(sf, r)
        proj = xi.projection_norms.double().cpu()
        xi_q = 1.0 - float(torch.quantile(proj, q))
        rho1 = theorem1_radius(m, delta, xi_q) if xi_q < 1 else None
        rho1_sharp = theorem1_radius(m, delta, xi_q, sharp=True) if xi_q < 1 else None
        # Theorem 2
        V = sample_subspace(sc, args.dirs, 1.0, generator=gen).to(x.device, x.dtype)
        curv = normal_section_curvature(model, pc, V, mode=res.mode, **hvp)
        kappa_x = curv.theorem_kappa(beta).double().cpu()
        finite = kappa_x[torch.isfinite(kappa_x)]
        kappa = float(torch.quantile(finite, q)) if len(finite) else math.nan
        rho2 = theorem2_radius(kappa, m, delta) if kappa > 0 else None
        kap = curv.kappa.double().cpu()
        tangent = (curv.tangent.double().cpu() * r_norm[:, None]).flatten()
        notes = []
        if xi_q >= 1 or rho1 is None:
            notes.append(f"m={m}: Theorem 1: xi = 1 (normals orthogonal to S_f): no radius")
        elif xi_q > 0.9:
            notes.append(f"m={m}: Theorem 1: xi = {xi_q:.2f} close to 1: the radius is loose")
        if not kappa > 0:
            notes.append(
                f"m={m}: Theorem 2: kappa = {kappa:.3g} <= 0 (the {q:.0%}-quantile over points "
                f"of the {beta:.0%}-quantile over directions): the hypothesis fails, no radius"
            )
        elif kappa >= 0.5:
            notes.append(
                f"m={m}: Theorem 2: kappa = {kappa:.3g} >= 1/2: quadratic model inconsistent"
            )
        # empirical universal norms at the theorems' levels
        units = {
            name: sample_subspace(s, args.vectors, 1.0, generator=gen).to(x.device, x.dtype)
            for name, s in (("normal", sf), ("curved", sc), ("random", rnd))
        }
        emp = {
            "normal_both": universal_norm(
                model, x, clean, units["normal"], level1, scale, both=True
            ),
            "random_both": universal_norm(
                model, x, clean, units["random"], level1, scale, both=True
            ),
            "curved_plus": universal_norm(
                model, x, clean, units["curved"], level2, scale, both=False
            ),
            "random_plus": universal_norm(
                model, x, clean, units["random"], level2, scale, both=False
            ),
        }
        rows.append(
            {
                "m": m,
                "xi_min": xi.xi,
                "xi": xi_q,
                "median_projection": float(proj.median()),
                "theorem1_rho": rho1,
                "theorem1_rho_sharp": rho1_sharp,
                "theorem1_norm": None if rho1 is None else rho1 * scale,
                "kappa": C.finite_or_none(kappa),
                "kappa_median": C.finite_or_none(float(kap[torch.isfinite(kap)].median())),
                "kappa_positive": float((kap[torch.isfinite(kap)] > 0).double().mean()),
                "points_kappa_positive": float((finite > 0).double().mean()),
                "tangent_median": C.finite_or_none(
                    float(tangent[torch.isfinite(tangent)].median())
                ),
                "theorem2_rho": rho2,
                "theorem2_norm": None if rho2 is None else rho2 * scale,
                "empirical_norm": emp,
                "empirical_rho": {k: None if v is None else v / scale for k, v in emp.items()},
                "notes": notes,
            }
        )
        arrays[f"projection_m{m}"] = proj.numpy()
        arrays[f"kappa_m{m}"] = kap.numpy()
    meta = {
        "arch": args.arch,
        "test_accuracy": st.test_accuracy,
        "mode": res.mode,
        "n_points": int(conv.sum()),
        "n_unconverged": int((~conv).sum()),
        "median_r": scale,
        "r_quartiles": [float(torch.quantile(r_norm, t)) for t in (0.25, 0.75)],
        "study_norm": res.norm,
        "rho_rand": res.rho_rand,
        "delta": delta,
        "beta": beta,
        "quantile": q,
        "level_theorem1": level1,
        "level_theorem2": level2,
        "dirs": args.dirs,
        "vectors": args.vectors,
    }
    return meta, rows, arrays


def compute(args: argparse.Namespace, name: str) -> None:
    """Theorems on the network, then Lemma 1; saved as ``<name>.json`` / ``.npz``."""
    meta, rows, arrays = theorem_rows(args)
    d = int(np.prod(C.dataset(args, "test").x.shape[1:]))
    lemma = lemma_rows(args, d)
    results = {"dataset": args.dataset, **meta, "lemma1": lemma, "theorems": rows}
    C.save(name, args, results, arrays)


# --------------------------------------------------------------------------------------------
# figure and table


def plot(record: dict, path: Path) -> Path:
    """Lemma 1, the radii vs m and the hypotheses vs m; returns the PNG's path."""
    res = record["results"]
    fig = Figure(figsize=(14, 4.0), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=[1.3, 1.2, 1.0])
    lemma = res["lemma1"]
    for i, row in enumerate(lemma):
        color = f"C{LEMMA_DELTA.index(row['delta'])}" if row["delta"] in LEMMA_DELTA else "C7"
        ax1.errorbar(
            i, row["probability"], yerr=2 * row["standard_error"], fmt="o", ms=3, color=color
        )
        ax1.plot(i, row["exact"], "x", color="black", ms=4)
        ax1.plot([i - 0.4, i + 0.4], [row["bound"]] * 2, color=color, lw=1.5)
    for delta in sorted({row["delta"] for row in lemma}):
        color = f"C{LEMMA_DELTA.index(delta)}" if delta in LEMMA_DELTA else "C7"
        ax1.plot([], [], "o", color=color, label=f"delta = {delta}: estimate ± 2 se, bar 1 - delta")
    ax1.plot([], [], "x", color="black", label="exact (Beta law)")
    ax1.set_xticks(range(len(lemma)), [str(row["m"]) for row in lemma], fontsize=6)
    starts = [i for i, row in enumerate(lemma) if i == 0 or row["d"] != lemma[i - 1]["d"]]
    for i in starts:
        if i:
            ax1.axvline(i - 0.5, color="black", lw=0.6)
        ax1.text(i - 0.3, 1.0, f"d = {lemma[i]['d']}", fontsize=7, va="bottom")
    ax1.set(
        xlabel="m (colour: delta)",
        ylabel="P(beta1 m/d <= ||P_m v||^2 <= beta2 m/d)",
        ylim=(min(row["bound"] for row in lemma) - 0.05, 1.04) if lemma else None,
        title=f"Lemma 1, {lemma[0]['n']} draws each" if lemma else "Lemma 1",
    )
    ax1.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    rows = res["theorems"]
    ms = np.array([r["m"] for r in rows])
    scale = res["median_r"]

    def series(get) -> np.ndarray:
        return np.array([np.nan if get(r) is None else get(r) / scale for r in rows], dtype=float)

    ax2.plot(ms, series(lambda r: r["theorem1_norm"]), "s--", color="C0", label="Thm 1 radius, S_f")
    ax2.plot(
        ms,
        series(lambda r: r["empirical_norm"]["normal_both"]),
        "s-",
        color="C0",
        label=f"S_f, +-v fools {res['level_theorem1']:.0%}",
    )
    ax2.plot(
        ms,
        series(lambda r: r["empirical_norm"]["random_both"]),
        ".:",
        color="C0",
        alpha=0.6,
        label="random subspace, +-v",
    )
    ax2.plot(ms, series(lambda r: r["theorem2_norm"]), "o--", color="C3", label="Thm 2 radius, S_c")
    ax2.plot(
        ms,
        series(lambda r: r["empirical_norm"]["curved_plus"]),
        "o-",
        color="C3",
        label=f"S_c, +v fools {res['level_theorem2']:.0%}",
    )
    ax2.plot(
        ms,
        series(lambda r: r["empirical_norm"]["random_plus"]),
        ".:",
        color="C3",
        alpha=0.6,
        label="random subspace, +v",
    )
    ax2.axhline(res["study_norm"] / scale, color="black", ls=":", lw=1, label="rho_rand / 5")
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="subspace dimension m",
        ylabel="norm / median ||r(x)||",
        title="universal norms: theorems vs measured",
    )
    ax2.set_xticks(ms, [str(m) for m in ms])
    ax2.minorticks_off()
    ax2.legend(fontsize=6.5)
    missing = [r["m"] for r in rows if r["theorem2_rho"] is None]
    if missing:
        ax2.text(
            0.02,
            0.98,
            f"Thm 2 does not apply (kappa <= 0) at m = {missing}",
            transform=ax2.transAxes,
            fontsize=7,
            va="top",
        )
    ax3.plot(
        ms,
        [r["xi"] for r in rows],
        "s-",
        color="C0",
        label=f"xi ({res['quantile']:.0%} of points out)",
    )
    ax3.plot(
        ms, [r["xi_min"] for r in rows], "s:", color="C0", alpha=0.6, label="xi over all points"
    )
    ax3.plot(
        ms,
        [np.nan if r["kappa"] is None else r["kappa"] for r in rows],
        "o-",
        color="C3",
        label="kappa (Thm 2 hypothesis)",
    )
    ax3.plot(
        ms,
        [np.nan if r["kappa_median"] is None else r["kappa_median"] for r in rows],
        "o:",
        color="C3",
        alpha=0.6,
        label="median kappa(x, v)",
    )
    ax3.axhline(0, color="black", lw=0.6)
    ax3.set(xscale="log", xlabel="subspace dimension m", title="measured hypotheses")
    ax3.set_xticks(ms, [str(m) for m in ms])
    ax3.minorticks_off()
    ax3.legend(fontsize=7)
    fig.suptitle(
        f"001 theory vs {res['arch']} on {res['dataset']} ({res['n_points']} unseen boundary "
        f"points, {res['mode']} curvature; delta = {res['delta']}, beta = {res['beta']})",
        fontsize=10,
    )
    return save_figure(fig, path)


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def table(results: dict) -> str:
    """Lemma 1's worst cases and the theorems per m as markdown."""
    lemma = results["lemma1"]
    held = sum(r["holds"] for r in lemma)
    agree = sum(r["agrees_with_exact"] for r in lemma)
    exact = sum(r["exact_holds"] for r in lemma)
    slack = min(lemma, key=lambda r: r["exact"] - r["bound"])
    lines = [
        f"Lemma 1: {held}/{len(lemma)} configurations hold within 3 se, {exact}/{len(lemma)} "
        f"by the exact probability, estimates agree with it in {agree}/{len(lemma)}; tightest: "
        f"d={slack['d']} m={slack['m']} delta={slack['delta']}: {slack['probability']:.4f} "
        f"(exact {slack['exact']:.4f}) vs {slack['bound']:.2f}",
        "",
        "| m | xi (all pts) | Thm 1 rho | S_f +-v | random +-v | kappa (median k(x,v)) "
        "| Thm 2 rho | S_c +v | random +v |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["theorems"]:
        e = r["empirical_rho"]
        lines.append(
            f"| {r['m']} | {r['xi']:.3f} ({r['xi_min']:.3f}) | {_fmt(r['theorem1_rho'])} | "
            f"{_fmt(e['normal_both'])} | {_fmt(e['random_both'])} | {_fmt(r['kappa'])} "
            f"({_fmt(r['kappa_median'])}) | {_fmt(r['theorem2_rho'])} | "
            f"{_fmt(e['curved_plus'])} | {_fmt(e['random_plus'])} |"
        )
    notes = [n for r in results["theorems"] for n in r["notes"]]
    q25, q75 = results["r_quartiles"]
    lines += [
        "",
        f"norms in units of the median ||r(x)|| = {results['median_r']:.4f} (quartiles "
        f"{q25:.3f}, {q75:.3f}) over {results['n_points']} unseen points; Thm 1 level "
        f"{results['level_theorem1']:.2f} = 1 - delta - q, Thm 2 level "
        f"{results['level_theorem2']:.2f} = 1 - delta - beta - q; rho_rand / 5 = "
        f"{results['study_norm'] / results['median_r']:.3g}",
        *notes,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    p.add_argument("--delta", type=float, default=0.2, help="failure probability of the theorems")
    p.add_argument(
        "--beta", type=float, default=0.1, help="Theorem 2: directions allowed below kappa"
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.1,
        help="fraction of points allowed to break a hypothesis",
    )
    p.add_argument("--dirs", type=int, default=16, help="directions per point for kappa")
    p.add_argument("--vectors", type=int, default=5, help="directions per empirical norm")
    p.add_argument("--mc", type=int, default=10000, help="Monte Carlo draws per Lemma 1 setting")
    args = C.parse_study_args(p, argv)
    C.check_positive_flags(p, args, "dirs", "vectors", "mc")
    for flag in ("delta", "beta", "quantile"):
        if not 0 <= getattr(args, flag) < 1:
            p.error(f"--{flag} must be in [0, 1); got {getattr(args, flag)}.")
    if args.delta == 0:
        p.error("--delta must be > 0.")
    if 1 - args.delta - args.beta - args.quantile <= 0:
        p.error("1 - delta - beta - quantile must be > 0: nothing left to guarantee.")
    if args.quick:
        args.mc = min(args.mc, 1000)
        args.dirs = min(args.dirs, 8)
        args.vectors = min(args.vectors, 3)
    C.setup(args)
    name = C.stem(args, "theory_check")
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    path = plot(record, Path(args.out) / f"{name}.png")
    print(table(record["results"]))
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
