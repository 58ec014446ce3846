"""000 Tables 1 and 2: universal perturbations for interpretation (UPI) against baselines.

Ehsani Oskouie and Farnia (``000`` in ``shared/seeds``), Sec. 4 and App. B. For each model of
``--archs`` (000's MNIST columns: the 2-layer CNN ``cnn2``, the 2-layer FCN ``fcn2``, and
MobileNet, here ``mobilenet-small``) and each map of 000 (Simple Gradient, Eq. 1, and Integrated
Gradients, Eq. 2, both l1-normalised as 000 defines them), the rows are:

- Random, per image / universal: Gaussian noise scaled to norm ``eps``
  (:func:`geomrob.interpret.random_noise`), averaged over ``--repeats`` seeds (000: 10);
- Per image-PGD / -FGM: per-image attacks on the l1-normalised map
  (:func:`~geomrob.interpret.pgd_attack`, :func:`~geomrob.interpret.fgm_attack`), which keep the
  label by construction (000's per-image PGD changes some labels: its Table 2 is nonzero);
- UPI-PCA-PGD / UPI-PCA-FGM / UPI-Grad (000 Algs. 1-2; :func:`~geomrob.interpret.upi_pca`,
  :func:`~geomrob.interpret.upi_grad`) and, not in 000's tables, UPI-PCA with 000 Alg. 2's own
  rows (gradients at random points);
- Classification UAP (000 Eq. 5; :func:`~geomrob.interpret.classification_uap`), one per model,
  evaluated with both maps.

Every universal perturbation is scaled to norm exactly ``eps`` before it is evaluated (000
Sec. 4: "all the perturbations were scaled such that the norm value" is ``eps``; the norm the
fit reached is saved as ``fitted_norm``). The per-image attacks are evaluated as returned
(inside the ball, ``mean_norm``), since scaling them up could change their labels.

UPI-PCA computes its rows once and then runs the stochastic power method over them for
``--power-epochs`` passes (100: they cost no gradients); each UPI-PCA row records its
``optimality``, the final Rayleigh quotient of 000 Eq. 8 over the exact top eigenvalue of
``G^T G / n`` (1 = the top right singular vector of 000 Prop. 2 was reached).

Universal perturbations are fitted on ``--n-fit`` training images and every row is evaluated on
``--n`` held-out test images with 000 Eq. 9, :math:`\\|I(x) - I(x')\\|_2 / \\|I(x)\\|_2`
(:func:`~geomrob.interpret.universal_dissimilarity`, mean as in Table 1) and the label-change
rate (Table 2, "fooling rate"). ``eps = 100/256`` in l2 as in 000 for MNIST (28 x 28 images in
[0, 1]). The gradients of the dissimilarity go through a softplus surrogate (``--beta``) because
those of a ReLU network vanish; the maps that are evaluated are the real model's.

The default runs on the embedded digits resized to 28 x 28 (``--size 28``): ``eps`` is an l2
radius, so it means the same thing only in the same dimension as MNIST (d = 784; at 8 x 8 the
same radius would be 3.5 times larger per pixel). The digits are upsampled and smoother than
MNIST, so the numbers are a check of the pipeline, not a reproduction. Reduced budgets (000:
150 PGD iterations, 50 IG steps, the whole test set) keep the default run to a few minutes on
one CPU core; the paper's settings:

    python analyses/upi_tables.py                                  # digits 28x28, minutes
    python analyses/upi_tables.py --dataset mnist --size 28 --pgd-steps 150 --ig-steps 50 \\
        --n 1000 --n-fit 1000 --epochs 10                         # 000's MNIST settings
    python analyses/upi_tables.py --dataset fashion-mnist --size 28   # no numbers in 000
    python analyses/upi_tables.py --quick                          # seconds, for CI

The printed table puts 000's MNIST numbers (Tables 1 and 2, read from the text extraction,
whose column headers are shifted but whose rows and the column order Tiny-ImageNet VGG-16 /
MobileNet, CIFAR-10 VGG-16 / MobileNet, MNIST MobileNet / CNN / FCN are readable) beside ours.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import _common as C
import numpy as np
import torch

from geomrob.interpret import (
    IntegratedGradients,
    classification_uap,
    fgm_attack,
    pgd_attack,
    random_noise,
    universal_dissimilarity,
    upi_grad,
    upi_pca,
)
from geomrob.plotting import save_figure, upi_figure

#: The maps of 000 (Eqs. 1-2) and their names in the tables.
METHODS = {"simple": "Simple Gradient", "ig": "Integrated Gradients"}
#: Rows of 000 Table 1 (key, attack, type), plus UPI-PCA with Alg. 2's gradient rows.
ROWS = (
    ("random_per_image", "Random", "Per image"),
    ("random_universal", "Random", "Universal"),
    ("pgd_per_image", "Interpretation", "Per image-PGD"),
    ("fgm_per_image", "Interpretation", "Per image-FGM"),
    ("upi_pca_pgd", "Interpretation", "UPI-PCA-PGD"),
    ("upi_pca_fgm", "Interpretation", "UPI-PCA-FGM"),
    ("upi_pca", "Interpretation", "UPI-PCA (Alg. 2 rows; not in 000)"),
    ("upi_grad", "Interpretation", "UPI-Grad"),
    ("classification_uap", "Classification", "Universal"),
)
#: Rows that are one perturbation for every image (drawn as images).
UNIVERSAL = ("upi_grad", "upi_pca", "upi_pca_fgm", "upi_pca_pgd", "classification_uap")
#: UPI rows fitted per map (the classification UAP does not depend on the map).
UPI_ROWS = ("upi_grad", "upi_pca", "upi_pca_fgm", "upi_pca_pgd")
#: 000's MNIST columns and our zoo models.
PAPER_ARCH = {"mobilenet-small": "MobileNet", "cnn2": "2-layer CNN", "fcn2": "2-layer FCN"}

#: 000 Table 1, MNIST columns (MobileNet, 2-layer CNN, 2-layer FCN): mean Eq. 9 dissimilarity.
PAPER_TABLE1 = {
    "simple": {
        "random_per_image": (0.342, 1.012, 0.085),
        "random_universal": (0.342, 1.006, 0.079),
        "pgd_per_image": (0.566, 1.024, 0.324),
        "fgm_per_image": (0.549, 0.911, 0.334),
        "upi_pca_pgd": (0.428, 1.501, 0.308),
        "upi_pca_fgm": (0.428, 1.275, 0.358),
        "upi_grad": (0.441, 1.045, 0.242),
        "classification_uap": (0.379, 1.042, 0.185),
    },
    "ig": {
        "random_per_image": (0.240, 0.798, 0.028),
        "random_universal": (0.241, 0.794, 0.026),
        "pgd_per_image": (0.510, 0.828, 0.246),
        "fgm_per_image": (0.476, 0.768, 0.228),
        "upi_pca_pgd": (0.318, 0.849, 0.166),
        "upi_pca_fgm": (0.321, 0.851, 0.166),
        "upi_grad": (0.385, 0.835, 0.183),
        "classification_uap": (0.272, 0.824, 0.063),
    },
}
#: 000 Table 2, MNIST columns: fooling rates in percent (the random rows do not depend on the
#: map; 000 gives no per-image FGM and no classification-UAP rows).
PAPER_TABLE2 = {
    "simple": {
        "random_per_image": (0.08, 0.49, 0.05),
        "random_universal": (0.06, 0.54, 0.05),
        "pgd_per_image": (5.46, 0.66, 0.16),
        "upi_pca_pgd": (0.24, 2.05, 0.39),
        "upi_pca_fgm": (0.24, 2.17, 0.45),
        "upi_grad": (0.79, 0.82, 0.51),
    },
    "ig": {
        "random_per_image": (0.08, 0.49, 0.05),
        "random_universal": (0.06, 0.54, 0.05),
        "pgd_per_image": (5.85, 6.45, 2.58),
        "upi_pca_pgd": (0.26, 2.17, 0.67),
        "upi_pca_fgm": (0.26, 2.15, 0.63),
        "upi_grad": (0.77, 1.10, 0.76),
    },
}


def paper_value(table: dict, method: str, row: str, arch: str) -> float | None:
    """000's MNIST number for ``(method, row, arch)``, or ``None`` where 000 has none."""
    if arch not in PAPER_ARCH or row not in table[method]:
        return None
    return table[method][row][list(PAPER_ARCH).index(arch)]


# --------------------------------------------------------------------------------------------
# flags shared with upi_correlation.py


def add_upi_options(p: argparse.ArgumentParser) -> None:
    """Flags of the UPI fits (000 Sec. 4) shared by ``upi_tables`` and ``upi_correlation``."""
    g = p.add_argument_group("UPI (000)")
    g.add_argument("--archs", nargs="+", default=["cnn2", "fcn2"], help="zoo models")
    g.add_argument("--n-fit", type=int, default=100, help="training images the UPIs are fit on")
    g.add_argument("--eps", type=float, default=100 / 256, help="l2 radius (000: 100/256)")
    g.add_argument("--epochs", type=int, default=5, help="passes of UPI-Grad and the UAP")
    g.add_argument(
        "--power-epochs",
        type=int,
        default=100,
        help="passes of UPI-PCA's power method over its precomputed rows (no gradients)",
    )
    g.add_argument("--batch-size", type=int, default=32, help="minibatch of the UPI algorithms")
    g.add_argument("--pgd-steps", type=int, default=10, help="per-image PGD iterations (000: 150)")
    g.add_argument("--ig-steps", type=int, default=8, help="Riemann steps of IG (000 Eq. 2)")
    g.add_argument("--beta", type=float, default=10.0, help="softplus surrogate of the gradients")


def check_upi_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject non-positive sizes and budgets; shrink them with ``--quick``."""
    for name in ("n", "n_fit", "epochs", "power_epochs", "batch_size", "pgd_steps", "ig_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}.")
    for name in ("eps", "beta"):
        if not getattr(args, name) > 0:
            p.error(f"--{name} must be > 0; got {getattr(args, name)}.")
    if args.quick:
        args.n, args.n_fit = min(args.n, 16), min(args.n_fit, 16)
        args.epochs, args.pgd_steps = min(args.epochs, 2), min(args.pgd_steps, 3)
        args.ig_steps, args.batch_size = min(args.ig_steps, 4), min(args.batch_size, 16)
        if hasattr(args, "repeats"):
            args.repeats = min(args.repeats, 2)


def attribution_method(name: str, args: argparse.Namespace):
    """``"simple"`` or 000's Integrated Gradients with ``--ig-steps`` (zero baseline)."""
    return "simple" if name == "simple" else IntegratedGradients(steps=args.ig_steps)


def images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_fit, x_eval)``: the first ``--n-fit`` of a seeded permutation of the training split
    and the first ``--n`` of one of the test split (held out from every fit)."""
    train_set, test_set = C.dataset(args, "train"), C.dataset(args, "test")
    gen = torch.Generator().manual_seed(args.seed)
    tr = torch.randperm(len(train_set), generator=gen)[: args.n_fit]
    te = torch.randperm(len(test_set), generator=gen)[: args.n]
    return train_set.x[tr].to(args.device), test_set.x[te].to(args.device)


def fit_upis(
    net,
    x_fit: torch.Tensor,
    method,
    args: argparse.Namespace,
    seed: int,
    optimality: dict | None = None,
) -> dict:
    """UPI-Grad and UPI-PCA (grad / FGM / PGD rows) of one model and map: ``row -> delta``.

    ``optimality``, when given, receives each UPI-PCA row's power-method optimality (its final
    Rayleigh quotient over the exact top eigenvalue: 1 at 000 Prop. 2's solution).
    """
    common = dict(
        eps=args.eps,
        method=method,
        batch_size=args.batch_size,
        surrogate=args.beta,
        progress=not args.quiet,
    )
    out = {"upi_grad": upi_grad(net, x_fit, generator=seed, epochs=args.epochs, **common).delta}
    for row, variant in (("upi_pca", "grad"), ("upi_pca_fgm", "fgm"), ("upi_pca_pgd", "pgd")):
        res = upi_pca(
            net,
            x_fit,
            variant=variant,
            steps=args.pgd_steps,
            epochs=args.power_epochs,
            generator=seed + 1,
            **common,
        )
        out[row] = res.delta
        if optimality is not None:
            optimality[row] = res.optimality
    return out


def fit_uap(net, x_fit: torch.Tensor, args: argparse.Namespace, seed: int) -> torch.Tensor:
    """The classification UAP of 000 Table 1 (000 Eq. 5) at the same radius."""
    return classification_uap(
        net,
        x_fit,
        eps=args.eps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        generator=seed,
        progress=not args.quiet,
    ).delta


#: The flags the fitted universal perturbations depend on (not ``--n``: the fitting images are
#: drawn before the held-out ones, see :func:`images`).
FIT_FLAGS = (
    "dataset",
    "size",
    "n_fit",
    "eps",
    "epochs",
    "power_epochs",
    "batch_size",
    "pgd_steps",
    "ig_steps",
    "beta",
    "seed",
    "quick",
    "data_root",
    "run_dir",
)


def saved_upis(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """The universal perturbations a saved ``upi_tables`` run fitted with the same flags.

    ``"<arch>__<map>__<row>" -> delta`` (scaled to norm ``eps``), for every model of that run;
    empty when there is none or its flags differ (then the caller fits them itself).
    """
    name = stem(args, "upi_tables")
    if not (Path(args.out) / f"{name}.json").exists():
        return {}
    record, arrays = C.load(name, args)
    config = record["config"]
    if any(config.get(flag) != getattr(args, flag, None) for flag in FIT_FLAGS):
        return {}
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def to_sphere(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """``eps * delta / ||delta||_2``: 000 Sec. 4 scales every perturbation to norm ``eps``.

    The fits stop inside the ball when their steps are short (UPI-PCA grows from the start
    ``sigma`` by at most ``1 + alpha lambda_1 <= 2`` per update); the direction is what they find
    (000 Prop. 2: the solution of Eq. 8 is ``eps`` times the top singular vector).
    """
    norm = float(delta.norm())
    if not norm > 0:
        raise ValueError("a fitted universal perturbation is zero; it has no direction to scale.")
    return delta * (eps / norm)


# --------------------------------------------------------------------------------------------
# the tables


def evaluate(net, x, delta, method, seed: int) -> dict:
    """000 Eq. 9 (mean, median) and the label-change rate of one perturbation on ``x``."""
    res = universal_dissimilarity(net, x, delta, method, generator=seed)
    return {
        "mean": res.mean,
        "median": res.median,
        "label_change_rate": res.label_change_rate,
    }


def compute(args: argparse.Namespace, name: str) -> None:
    """Fit and evaluate every row for every model and map; save ``<name>``."""
    x_fit, x_eval = images(args)
    results: dict = {
        "eps": args.eps,
        "p": 2.0,
        "n_fit": len(x_fit),
        "n_eval": len(x_eval),
        "input_shape": list(x_eval.shape[1:]),
        "models": {},
    }
    arrays: dict[str, np.ndarray] = {}
    for arch in args.archs:
        t0 = time.perf_counter()
        net = C.model(args, arch).eval()
        entry = {"test_accuracy": float(net.test_accuracy), "rows": {}, "seconds": {}}
        uap = fit_uap(net, x_fit, args, args.seed)
        for key in args.maps:
            method = attribution_method(key, args)
            rows: dict = {}
            t1 = time.perf_counter()
            for kind, universal in (("random_per_image", False), ("random_universal", True)):
                runs = []
                for r in range(args.repeats):
                    noise = random_noise(
                        x_eval, eps=args.eps, universal=universal, generator=args.seed + 100 + r
                    )
                    runs.append(evaluate(net, x_eval, noise, method, args.seed))
                rows[kind] = {k: float(np.mean([run[k] for run in runs])) for k in runs[0]} | {
                    "std_over_seeds": float(np.std([run["mean"] for run in runs]))
                }
            for kind, attack in (("pgd_per_image", pgd_attack), ("fgm_per_image", fgm_attack)):
                extra = (
                    {"steps": args.pgd_steps, "progress": not args.quiet}
                    if attack is pgd_attack
                    else {}
                )
                res = attack(
                    net,
                    x_eval,
                    method,
                    eps=args.eps,
                    surrogate=args.beta,
                    generator=args.seed,
                    **extra,
                )
                rows[kind] = evaluate(net, x_eval, res.delta, method, args.seed)
                rows[kind]["mean_norm"] = float(res.norm.mean())
            optimality: dict = {}
            deltas = fit_upis(net, x_fit, method, args, args.seed, optimality)
            deltas["classification_uap"] = uap
            for kind, delta in deltas.items():
                fitted = float(delta.norm())
                delta = to_sphere(delta, args.eps)
                rows[kind] = evaluate(net, x_eval, delta, method, args.seed)
                rows[kind]["fitted_norm"] = fitted
                if kind in optimality:
                    rows[kind]["optimality"] = optimality[kind]
                arrays[f"{arch}__{key}__{kind}"] = delta.detach().cpu().float().numpy()
            entry["rows"][key] = rows
            entry["seconds"][key] = time.perf_counter() - t1
        entry["seconds"]["total"] = time.perf_counter() - t0
        results["models"][arch] = entry
        C.log.info("%s done in %.1f s", arch, entry["seconds"]["total"])
    C.save(name, args, results, arrays)


def saved_maps(results: dict) -> list[tuple[str, str]]:
    """``(key, label)`` of the maps a saved run computed (``--maps``), in 000's order."""
    done = set(next(iter(results["models"].values()))["rows"])
    return [(key, label) for key, label in METHODS.items() if key in done]


def _fmt(v: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v * scale:.{digits}f}"


def table(results: dict, dataset: str) -> str:
    """Markdown: 000 Table 1 (mean Eq. 9) and Table 2 (label-change %) with 000's numbers."""
    archs = list(results["models"])
    ref = "000 (MNIST)"
    head = "| map | attack | type | " + " | ".join(
        f"{a} ours | {a} {ref} | {a} changed % | {a} {ref} %" for a in archs
    )
    lines = [head + " |", "|" + " --- |" * (3 + 4 * len(archs))]
    for key, label in saved_maps(results):
        for row, attack, kind in ROWS:
            cells = []
            for a in archs:
                ours = results["models"][a]["rows"][key][row]
                cells += [
                    _fmt(ours["mean"]),
                    _fmt(paper_value(PAPER_TABLE1, key, row, a)),
                    _fmt(ours["label_change_rate"], 100.0, 2),
                    _fmt(paper_value(PAPER_TABLE2, key, row, a), digits=2),
                ]
            lines.append(f"| {label} | {attack} | {kind} | " + " | ".join(cells) + " |")
    acc = ", ".join(f"{a} {results['models'][a]['test_accuracy']:.3f}" for a in archs)
    opt = "; ".join(
        f"{a} {key} "
        + " ".join(
            f"{row.removeprefix('upi_pca').lstrip('_') or 'grad'} {r['optimality']:.3f}"
            for row, r in results["models"][a]["rows"][key].items()
            if r.get("optimality") is not None
        )
        for a in archs
        for key, _ in saved_maps(results)
    )
    return (
        "\n".join(lines)
        + f"\n\n{dataset}, input {results['input_shape']}, eps = {results['eps']:.4f} (l2), "
        f"UPIs fit on {results['n_fit']} training images, evaluated on {results['n_eval']} "
        f"held-out test images; test accuracy {acc}. '-': no number in 000. Per-image attacks "
        "keep the label by construction (000's per-image PGD does not). UPI-PCA power-method "
        f"optimality (final Rayleigh quotient / top eigenvalue, 1 = converged): {opt}."
    )


def plot(results: dict, arrays: dict, path: Path, dataset: str) -> Path:
    """The universal perturbations as images, with the mean dissimilarity each reached."""
    shape = results["input_shape"]
    rows, labels, notes = [], [], []
    cols = [dict((r[0], r[2]) for r in ROWS)[k].split(" (")[0] for k in UNIVERSAL]
    cols[-1] = "Classification UAP"
    for arch in results["models"]:
        for key, label in saved_maps(results):
            rows.append([arrays[f"{arch}__{key}__{k}"].reshape(shape) for k in UNIVERSAL])
            labels.append(f"{arch}\n{label}")
            notes.append(
                [f"D = {results['models'][arch]['rows'][key][k]['mean']:.3f}" for k in UNIVERSAL]
            )
    fig = upi_figure(
        rows,
        row_labels=labels,
        col_labels=cols,
        notes=notes,
        title=f"UPIs on {dataset}, eps = {results['eps']:.3f} (000 Table 1 rows)",
    )
    return save_figure(fig, path)


def stem(args: argparse.Namespace, prefix: str) -> str:
    """``<prefix>_<dataset>[<size>]``: the file stem of the run."""
    return f"{prefix}_{args.dataset}{args.size or ''}"


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=100)
    p.set_defaults(size=28)
    add_upi_options(p)
    p.add_argument("--repeats", type=int, default=10, help="seeds of the random rows (000: 10)")
    p.add_argument(
        "--maps",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="the maps of 000 to tabulate (default both)",
    )
    args = p.parse_args(argv)
    args.maps = [key for key in METHODS if key in args.maps]  # 000's order, no repeats
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}.")
    check_upi_flags(p, args)
    C.setup(args)
    name = stem(args, "upi_tables")
    if not args.plot_only:
        compute(args, name)
    record, arrays = C.load(name, args)
    print(table(record["results"], args.dataset))
    print(
        f"figure: {plot(record['results'], arrays, Path(args.out) / f'{name}.png', args.dataset)}"
    )


if __name__ == "__main__":
    main()
