"""Diversity of universal perturbations sampled from the curved subspace S_c (001 Fig. 9).

``--k`` (20) vectors drawn uniformly from the unit sphere of the first ``--m`` (10) vectors of
:math:`S_c` (:func:`geomrob.sample_subspace`) and scaled to the study's norm
``rho_rand / 5`` (:func:`geomrob.study.subspace_study`, 001's settings, cached in
``--run-dir``/study and shared with ``cross_sections.py``), shown as images with their fooling
rates on unseen test points (:func:`geomrob.fooling_rates`), and their pairwise normalised
inner products (:func:`geomrob.diversity`: histogram, max and mean ``|cos|``).

001 says "the normalized inner product between two perturbations is less than 0.1". Two
independent uniform directions of an ``m``-dimensional space have
``E|cos| = Gamma(m/2) / (sqrt(pi) Gamma((m+1)/2))`` (about ``sqrt(2 / (pi m))``: 0.25 for
``m = 10``), printed beside the measurement (``expected_abs``): below 0.1 on average needs
``m`` of about 60 or more. In fact for vectors ``v = rho U^T g / ||g||`` of a subspace with
orthonormal rows ``U`` the cosines are those of the coefficients ``g``: they do not depend on
the subspace, nor on the network, only on ``m`` and the draws. What the network decides is
whether these diverse vectors are also universal: their fooling rates. For context
the same is measured for ``--k`` vectors of :math:`S_f` (same ``m``, same norm) and of
isotropic noise in ``R^d`` (same norm).

001 does not say from which ``m`` its Fig. 9 draws. So that the trade-off is visible, the
same ``--k`` draws are repeated for every ``m`` of the study (``--ms``; its largest is the
number of eigenvectors of :math:`S_c`): mean and max ``|cos|``, the fraction of pairs below
0.1, and the mean and best fooling rate of the ``k`` vectors of :math:`S_c` (the ``sweep``
table and the figure's right panel). Diversity grows with ``m``, universality falls.

    python analyses/diversity.py                                  # digits, lenet
    python analyses/diversity.py --dataset mnist --arch lenet --n 100
    python analyses/diversity.py --dataset fashion-mnist --arch lenet --n 100 --m 20
    python analyses/diversity.py --quick                          # seconds, for CI
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import _common as C
import numpy as np
import torch
from matplotlib.figure import Figure

from geomrob import diversity, fooling_rates, sample_subspace
from geomrob.plotting import save_figure

#: 001's threshold on the normalised inner products.
THRESHOLD = 0.1


def _measure(model, x: torch.Tensor, V: torch.Tensor, m: int):
    """Diversity (pairwise cosines, against uniform directions in ``m`` dimensions) and fooling
    rates on ``x`` of the perturbations ``V``: ``(summary, Diversity, rates)``."""
    V = V.to(x.device, x.dtype)
    div = diversity(V, m=m)
    rates = fooling_rates(model, x, V).cpu()
    summary = {
        "max_abs": div.max_abs,
        "mean_abs": div.mean_abs,
        "expected_abs": div.expected_abs,
        "fraction_below_threshold": float((div.cosines.abs() < THRESHOLD).double().mean()),
        "mean_rate": float(rates.mean()),
        "best_rate": float(rates.max()),
    }
    return summary, div, rates


def compute(args: argparse.Namespace, name: str) -> None:
    """Sample the three sets, measure diversity and fooling rates; save ``<name>``."""
    st = C.study(args)
    res = st.result
    m = min(args.m, res.curved.m)
    gen = torch.Generator().manual_seed(args.seed)
    d = res.curved.d
    iso = torch.randn(args.k, d, generator=gen, dtype=torch.float64)
    iso = res.norm * iso / iso.norm(dim=1, keepdim=True)
    sets = {
        "curved": sample_subspace(res.curved.first(m), args.k, res.norm, generator=gen),
        "normal": sample_subspace(res.normal.first(m), args.k, res.norm, generator=gen),
        "isotropic": iso,
    }
    x = st.x_eval
    out, arrays = {}, {}
    for key, V in sets.items():
        summary, div, rates = _measure(st.model, x, V, m if key != "isotropic" else d)
        out[key] = summary | {"rates": rates.tolist(), "worst_rate": float(rates.min())}
        arrays[f"cosines_{key}"] = div.cosines.numpy()
        arrays[f"rates_{key}"] = rates.numpy()
    arrays["vectors"] = sets["curved"].reshape(args.k, *x.shape[1:]).cpu().float().numpy()
    sweep = []
    for mm in res.config.ms:
        V = sample_subspace(res.curved.first(mm), args.k, res.norm, generator=gen)
        sweep.append({"m": mm, **_measure(st.model, x, V, mm)[0]})
    results = {
        "dataset": args.dataset,
        "arch": args.arch,
        "test_accuracy": st.test_accuracy,
        "mode": res.mode,
        "m": m,
        "k": args.k,
        "d": d,
        "norm": res.norm,
        "rho_rand": res.rho_rand,
        "n_eval": len(x),
        "uap_rate": res.uap_rate,
        "threshold": THRESHOLD,
        "sets": out,
        "sweep": sweep,
    }
    C.save(name, args, results, arrays)


def plot(record: dict, arrays: dict[str, np.ndarray], path: Path) -> Path:
    """The S_c vectors as images and the histogram of cosines; returns the PNG's path."""
    res = record["results"]
    V = arrays["vectors"]
    rates = arrays["rates_curved"]
    k = len(V)
    cols = min(5, k)
    rows = -(-k // cols)
    sweep = res.get("sweep")
    extra = 2.6 if sweep else 0.0
    fig = Figure(figsize=(2.0 * cols + 4.6 + 2 * extra, 2.1 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(
        1, 3 if sweep else 2, width_ratios=[cols, 2.6] + ([2.6] if sweep else [])
    )
    sub = grid[0, 0].subgridspec(rows, cols, wspace=0.05, hspace=0.25)
    vmax = float(np.abs(V).max()) or 1.0
    for i in range(k):
        ax = fig.add_subplot(sub[i // cols, i % cols])
        img = V[i]
        if img.shape[0] == 3:
            ax.imshow(np.clip(0.5 + np.moveaxis(img, 0, -1) / (2 * vmax), 0, 1))
        else:
            ax.imshow(img[0], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"fools {100 * rates[i]:.0f}%", fontsize=8)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 1])
    bins = np.linspace(-1, 1, 41)
    styles = {"curved": ("S_c", "C3"), "normal": ("S_f", "C0"), "isotropic": ("R^d noise", "C7")}
    for key, (label, color) in styles.items():
        cos = arrays[f"cosines_{key}"]
        s = res["sets"][key]
        ax.hist(
            cos,
            bins=bins,
            histtype="step" if key != "curved" else "stepfilled",
            alpha=0.5 if key == "curved" else 1.0,
            color=color,
            label=f"{label}: max|cos| {s['max_abs']:.2f}, mean {s['mean_abs']:.2f}",
        )
    exp = res["sets"]["curved"]["expected_abs"]
    for sign in (-1, 1):
        ax.axvline(sign * exp, color="C3", ls="--", lw=1)
        ax.axvline(sign * res["threshold"], color="black", ls=":", lw=1)
    ax.plot([], [], color="C3", ls="--", label=f"E|cos| uniform in m={res['m']}: {exp:.2f}")
    ax.plot([], [], color="black", ls=":", label=f"001's |cos| < {res['threshold']}")
    ax.set(xlabel="normalised inner product of two perturbations", ylabel="pairs")
    ax.legend(fontsize=7, loc="upper left")
    if sweep:
        ax = fig.add_subplot(grid[0, 2])
        ms = [r["m"] for r in sweep]
        ax.plot(ms, [r["mean_abs"] for r in sweep], "o-", color="C3", label="mean |cos|")
        ax.plot(ms, [r["max_abs"] for r in sweep], "s--", color="C3", label="max |cos|")
        ax.plot(ms, [r["mean_rate"] for r in sweep], "o-", color="C2", label="fooling rate, mean")
        ax.plot(ms, [r["best_rate"] for r in sweep], "^:", color="C2", label="fooling rate, best")
        ax.axhline(res["threshold"], color="black", ls=":", lw=1)
        ax.set(xscale="log", xlabel="m (dimension of S_c drawn from)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        f"{res['k']} random vectors of S_c (m={res['m']}) of {res['arch']} on {res['dataset']}, "
        f"norm {res['norm']:.3g} = rho_rand/5; fooling rates on {res['n_eval']} unseen images",
        fontsize=10,
    )
    return save_figure(fig, path)


def table(results: dict) -> str:
    """The three sets as markdown."""
    names = {"curved": "S_c", "normal": "S_f", "isotropic": "isotropic noise"}
    lines = [
        "| vectors | max abs cos | mean abs cos | E abs cos (uniform) | pairs with abs cos < 0.1 "
        "| fooling rate mean (min-max) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in names.items():
        s = results["sets"][key]
        exp = s["expected_abs"]
        lines.append(
            f"| {label} | {s['max_abs']:.3f} | {s['mean_abs']:.3f} | "
            f"{'-' if exp is None or math.isnan(exp) else f'{exp:.3f}'} | "
            f"{s['fraction_below_threshold']:.2f} | {s['mean_rate']:.3f} "
            f"({s['worst_rate']:.3f}-{s['best_rate']:.3f}) |"
        )
    sweep = results.get("sweep") or []
    if sweep:
        lines += [
            "",
            "| m | max abs cos | mean abs cos | E abs cos | pairs below 0.1 | S_c fooling mean | "
            "best |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['m']} | {r['max_abs']:.3f} | {r['mean_abs']:.3f} | {r['expected_abs']:.3f} | "
            f"{r['fraction_below_threshold']:.2f} | {r['mean_rate']:.3f} | {r['best_rate']:.3f} |"
            for r in sweep
        ]
    return (
        "\n".join(lines) + f"\n\n{results['k']} vectors each, m = {results['m']} (S_c, S_f), norm "
        f"{results['norm']:.4f} = rho_rand / 5, on {results['n_eval']} unseen images of "
        f"{results['dataset']}, {results['arch']}; the UAP algorithm at that norm: "
        f"{results['uap_rate']:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    p.add_argument("--k", type=int, default=20, help="perturbations sampled (001 Fig. 9)")
    p.add_argument("--m", type=int, default=10, help="dimension of S_c they are drawn from")
    args = C.parse_study_args(p, argv)
    C.check_positive_flags(p, args, "m")
    if args.k < 2:
        p.error(f"--k must be >= 2 (pairs of perturbations); got {args.k}.")
    if args.quick:
        args.k = min(args.k, 10)
    C.setup(args)
    name = C.stem(args, "diversity")
    if not args.plot_only:
        compute(args, name)
    record, arrays = C.load(name, args)
    path = plot(record, arrays, Path(args.out) / f"{name}.png")
    print(table(record["results"]))
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
