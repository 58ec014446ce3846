"""What drives S_c: an ablation of the curved-subspace construction of 001 (beyond the paper).

For one dataset and architecture, the study of fooling_vs_dim.py / curvature_profile.py is
repeated with one change at a time against the default (ReLU network, finite differences with
h = 0.1 ||r||, raw average of Hessians, n = 100 training points):

- finite-difference step h = 0.02, 0.1, 0.5 x ||r|| (curvature measured at different scales),
- raw vs tangent-projected and normalised averaging (the shape operator),
- the softplus surrogate (beta 10), the Gaussian-smoothed Hessian (Stein, sigma = 0.1 ||r||),
  and a twin network trained with softplus(10) activations in exact mode,
- the eigenvectors of the most negative eigenvalues (which="SA") as a control,
- n = 25 and n = 400 training points.

Each variant reports the fooling rate of random vectors of S_c at rho_rand / 5 on unseen points
(mean and best of --n-vectors per m), K_S on unseen points, and the principal-angle cosines
between its S_c and the default's. The normal subspace S_f and the UAP algorithm are shared
references. All stages are cached in <run-dir>/study (shared with the other scripts).

    python analyses/ablation.py                                   # digits, a few minutes
    python analyses/ablation.py --dataset mnist --arch lenet       # the README's ablation
    python analyses/ablation.py --dataset mnist --arch lenet --variants "default (FD, h=0.1|r|)" \
        "n=25"                                        # adds one variant to the saved table
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import _common as C
import numpy as np
from matplotlib.figure import Figure

from geomrob.plotting import save_figure
from geomrob.subspaces import principal_angles

#: name -> (changes of the command-line namespace); the first is the reference.
VARIANTS: dict[str, dict] = {
    "default (FD, h=0.1|r|)": {},
    "FD h=0.02|r|": {"h_scale": 0.02},
    "FD h=0.5|r|": {"h_scale": 0.5},
    "projected+normalised": {"project": True, "normalize": True},
    "softplus surrogate (beta 10)": {"mode": "surrogate", "surrogate_beta": 10.0},
    "smoothed (sigma=0.1|r|)": {"mode": "smoothed"},
    "softplus-trained, exact": {"activation": "softplus", "mode": "exact"},
    "most negative (SA)": {"which": "SA"},
    "n=25": {"n": 25},
    "n=400": {"n": 400},
}


def main(argv: list[str] | None = None) -> None:
    """Compute the variants (unless ``--plot-only``), save, plot and print the table."""
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="VARIANT",
        help=f"subset of the variants, the first is the reference (from {list(VARIANTS)})",
    )
    args = C.parse_study_args(p, argv)
    C.setup(args)
    name = C.stem(args, "ablation")
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    s = record["results"]
    path = save_figure(figure(s, args), Path(args.out) / f"{name}.png")
    print(table(s))
    print(f"figure: {path}")


def _variant_args(args: argparse.Namespace, changes: dict) -> argparse.Namespace:
    ns = copy.copy(args)
    for k, v in changes.items():
        setattr(ns, k, v)
    return ns


#: Flags that do not change a variant's numbers (a saved run with other values is merged).
NEUTRAL_FLAGS = ("variants", "quiet", "plot_only", "out", "run_dir")


def _previous_rows(args: argparse.Namespace, name: str) -> dict[str, dict]:
    """The variants of a saved run with the same settings and reference, else nothing.

    Variants are expensive (a curved stage and a K_S profile each), so a run with a subset of
    ``--variants`` adds to the saved table instead of replacing it; the reference (the first
    variant, against which the cosines are measured) must be the same.
    """
    path = Path(args.out) / f"{name}.json"
    if not path.exists():
        return {}
    record, _ = C.load(name, args)
    mine = {k: v for k, v in vars(args).items() if k not in NEUTRAL_FLAGS}
    theirs = {k: v for k, v in record["config"].items() if k not in NEUTRAL_FLAGS}
    res = record["results"]
    if mine != theirs or res.get("reference") != args.variants[0]:
        return {}
    return dict(res["variants"])


def compute(args: argparse.Namespace, name: str) -> None:
    """Run the study of every variant; saved as ``<name>.json``, merged with a saved run of
    the same settings and reference (see :func:`_previous_rows`)."""
    rows = _previous_rows(args, name)
    if rows:
        C.log.info("ablation: adding to the saved variants %s", list(rows))
    reference = None
    for label in args.variants:
        ns = _variant_args(args, VARIANTS[label])
        st = C.study(ns)
        res = st.result
        s = res.summary()
        if reference is None:
            reference = res.curved
        k = min(10, res.curved.m, reference.m)
        cos = principal_angles(res.curved.first(k), reference.first(k)).tolist()
        rows[label] = {
            "changes": VARIANTS[label],
            "test_accuracy": st.test_accuracy,
            "mode": s["mode"],
            "n_fit": s["n_fit"],
            "ms": s["ms"],
            "norm": s["norm"],
            "curved_mean": s["curved_mean"],
            "curved_best": s["curved_best"],
            "normal_mean": s["normal_mean"],
            "uap_rate": s["uap_rate"],
            "K_mean": s["K_mean"],
            "K_std": s["K_std"],
            "K_random_mean": s["K_random_mean"],
            "eigenvalues": s["curved_values"][:10],
            "cosines_with_reference": cos,
            "seconds": s["seconds"],
        }
        print(
            f"{label}: S_c fooling {np.round(s['curved_mean'], 3).tolist()}, K_S "
            f"{np.round(s['K_mean'], 4).tolist()}, mean cos with the reference "
            f"{np.mean(cos):.3f}",
            flush=True,
        )
    # the JSON's keys are sorted: "order" keeps the variants' order for the table and figure
    # (the reference first, then the order of VARIANTS)
    order = [args.variants[0]] + [v for v in VARIANTS if v in rows and v != args.variants[0]]
    C.save(name, args, {"reference": args.variants[0], "order": order, "variants": rows})


def _rows(s: dict) -> dict[str, dict]:
    """The saved variants in the order they were run."""
    return {label: s["variants"][label] for label in s.get("order", s["variants"])}


def figure(s: dict, args: argparse.Namespace) -> Figure:
    """Fooling rates and K_S of every variant against m, from the saved results."""
    rows = _rows(s)
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    ax_f, ax_k = fig.subplots(1, 2)
    for label, r in rows.items():
        ls = ":" if "SA" in label else "-"
        ax_f.plot(r["ms"], r["curved_mean"], marker="o", ms=3, ls=ls, label=label)
        ax_k.plot(r["ms"], r["K_mean"], marker="o", ms=3, ls=ls, label=label)
    ref = rows[s["reference"]]
    ax_f.plot(ref["ms"], ref["normal_mean"], color="black", lw=2, alpha=0.5, label="S_f (normals)")
    ax_f.axhline(ref["uap_rate"], color="black", ls="--", lw=1, label="UAP algorithm")
    ax_k.plot(ref["ms"], ref["K_random_mean"], color="gray", lw=2, alpha=0.6, label="random")
    ax_k.axhline(0.0, color="black", lw=0.6)
    for ax in (ax_f, ax_k):
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_xlabel("subspace dimension m")
    ax_f.set(ylabel="fooling rate of random vectors of S_c (mean)", ylim=(-0.02, 1.02))
    ax_k.set(ylabel="K_S on unseen points (1/length)")
    ax_k.legend(fontsize=6, loc="best")
    fig.suptitle(f"Ablation of S_c: {args.dataset} {args.arch}, norm rho_rand/5", fontsize=9)
    return fig


def table(s: dict) -> str:
    """Fooling rates, K_S and cosines with the reference per variant, as markdown."""
    rows = _rows(s)
    ms = next(iter(rows.values()))["ms"]
    head = " | ".join(f"fool m={m}" for m in ms)
    lines = [
        f"| variant | {head} | K_S m={ms[0]} | K_S m={ms[-1]} | mean cos vs reference |",
        "| --- | " + " | ".join("---:" for _ in ms) + " | ---: | ---: | ---: |",
    ]
    for label, r in rows.items():
        fool = " | ".join(f"{v:.3f}" for v in r["curved_mean"])
        lines.append(
            f"| {label} | {fool} | {r['K_mean'][0]:.4g} | {r['K_mean'][-1]:.4g} | "
            f"{np.mean(r['cosines_with_reference']):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
