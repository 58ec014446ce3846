"""000 Figs. 3-5: cross-correlation of UPIs between methods, maps and models, and transfer.

Ehsani Oskouie and Farnia (``000``), App. B: "UPIs that are generated using Integrated Gradients
are strongly correlated with their Simple Gradient counterparts" and "UPI-PCA has superior
generalizability over UPI-Grad". For every model of ``--archs`` and map (Simple Gradient,
Integrated Gradients) the universal perturbations of ``upi_tables.py`` (UPI-Grad, UPI-PCA with
Alg. 2's rows, UPI-PCA-FGM, UPI-PCA-PGD; the classification UAP once per model) are fitted with
the same flags (or read from a saved ``upi_tables.py`` run in ``--out`` whose fitting flags
are the same: the same seeds give the same perturbations), and we report:

- the matrix of cosines :math:`\\langle u, v \\rangle / (\\|u\\| \\|v\\|)` between all of them
  (heatmap; 000 draws the same "cross-correlation"). UPI-PCA directions are singular vectors,
  defined up to sign, so the summaries use ``|cos|``;
- summaries: Simple Gradient vs Integrated Gradients for the same model and algorithm, between
  algorithms for one model and map, between models for one algorithm and map, beside the mean
  ``|cos|`` of two independent uniform directions in ``R^d``,
  :math:`\\Gamma(d/2) / (\\sqrt{\\pi}\\, \\Gamma((d+1)/2)) \\approx \\sqrt{2 / (\\pi d)}`;
- transfer: the mean 000 Eq. 9 dissimilarity on ``--n`` held-out test images of model B of the
  UPI fitted on model A (every UPI scaled to norm ``eps``, as in ``upi_tables.py``).

    python analyses/upi_correlation.py                             # digits 28x28, minutes
    python analyses/upi_correlation.py --dataset mnist --size 28 --pgd-steps 150 \\
        --ig-steps 50 --n-fit 1000 --n 1000 --epochs 10
    python analyses/upi_correlation.py --quick                     # seconds, for CI
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import _common as C
import numpy as np
import torch
import upi_tables as T

from geomrob.plotting import correlation_heatmap_figure, save_figure

SHORT = {"simple": "SG", "ig": "IG"}
NAMES = {
    "upi_grad": "UPI-Grad",
    "upi_pca": "UPI-PCA",
    "upi_pca_fgm": "UPI-PCA-FGM",
    "upi_pca_pgd": "UPI-PCA-PGD",
    "classification_uap": "UAP",
}


def expected_abs_cosine(d: int) -> float:
    """``E|cos|`` of two independent uniform directions of ``R^d``."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _mean_abs(values: list[float]) -> float | None:
    return float(np.mean(np.abs(values))) if values else None


def compute(args: argparse.Namespace, name: str) -> None:
    """Fit the UPIs of every model and map, measure cosines and transfer; save ``<name>``."""
    x_fit, x_eval = T.images(args)
    saved = T.saved_upis(args)
    nets, labels, vectors, keys = {}, [], [], []
    for arch in args.archs:
        net = C.model(args, arch).eval()
        nets[arch] = net
        reuse = all(f"{arch}__{key}__{row}" in saved for key in T.METHODS for row in T.UNIVERSAL)
        if reuse:
            C.log.info("%s: the UPIs of the saved upi_tables run (same flags)", arch)
            uap = saved[f"{arch}__simple__classification_uap"].to(x_fit)
        else:
            uap = T.fit_uap(net, x_fit, args, args.seed)
        for key in T.METHODS:
            if reuse:
                deltas = {row: saved[f"{arch}__{key}__{row}"].to(x_fit) for row in T.UPI_ROWS}
            else:
                deltas = T.fit_upis(net, x_fit, T.attribution_method(key, args), args, args.seed)
            for row in T.UPI_ROWS:
                keys.append((arch, key, row))
                labels.append(f"{arch}/{SHORT[key]}/{NAMES[row]}")
                vectors.append(T.to_sphere(deltas[row], args.eps))
        keys.append((arch, None, "classification_uap"))
        labels.append(f"{arch}/UAP")
        vectors.append(T.to_sphere(uap, args.eps))
    V = torch.stack([v.flatten().double().cpu() for v in vectors])
    U = V / V.norm(dim=1, keepdim=True)
    cos = (U @ U.T).numpy()
    index = {k: i for i, k in enumerate(keys)}

    sg_ig, between_rows, between_models = [], [], []
    for arch in args.archs:
        for row in T.UPI_ROWS:
            sg_ig.append(cos[index[(arch, "simple", row)], index[(arch, "ig", row)]])
        for key in T.METHODS:
            for i, r1 in enumerate(T.UPI_ROWS):
                for r2 in T.UPI_ROWS[i + 1 :]:
                    between_rows.append(cos[index[(arch, key, r1)], index[(arch, key, r2)]])
    for i, a1 in enumerate(args.archs):
        for a2 in args.archs[i + 1 :]:
            for key in T.METHODS:
                for row in T.UPI_ROWS:
                    between_models.append(cos[index[(a1, key, row)], index[(a2, key, row)]])
    d = V.shape[1]
    summary = {
        "sg_vs_ig_same_algorithm": _mean_abs(sg_ig),
        "between_algorithms": _mean_abs(between_rows),
        "between_models": _mean_abs(between_models),
        "random_directions": expected_abs_cosine(d),
    }
    per_row_sg_ig = {
        f"{arch}/{NAMES[row]}": float(cos[index[(arch, "simple", row)], index[(arch, "ig", row)]])
        for arch in args.archs
        for row in T.UPI_ROWS
    }

    transfer: dict = {}
    for key in T.METHODS:
        method = T.attribution_method(key, args)
        for row in (*T.UPI_ROWS, "classification_uap"):
            table = {}
            for src in args.archs:
                i = index[(src, None if row == "classification_uap" else key, row)]
                delta = V[i].view(x_eval.shape[1:]).to(x_eval)
                table[src] = {
                    dst: T.evaluate(nets[dst], x_eval, delta, method, args.seed)["mean"]
                    for dst in args.archs
                }
            transfer[f"{SHORT[key]}/{NAMES[row]}"] = table
    results = {
        "labels": labels,
        "cosine": cos.tolist(),
        "d": d,
        "summary": summary,
        "sg_vs_ig": per_row_sg_ig,
        "transfer": transfer,
        "eps": args.eps,
        "n_fit": len(x_fit),
        "n_eval": len(x_eval),
    }
    C.save(name, args, results, {"cosine": cos, "upis": V.float().numpy()})


def table(results: dict) -> str:
    """Markdown: the summaries and the transfer table."""
    s = results["summary"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| mean abs cosine | value |",
        "| --- | --- |",
        f"| Simple Gradient vs Integrated Gradients, same model and algorithm | "
        f"{fmt(s['sg_vs_ig_same_algorithm'])} |",
        f"| between algorithms, same model and map | {fmt(s['between_algorithms'])} |",
        f"| between models, same algorithm and map | {fmt(s['between_models'])} |",
        f"| two random directions in R^{results['d']} (expected) | {fmt(s['random_directions'])} |",
        "",
    ]
    archs = list(next(iter(results["transfer"].values())))
    lines.append("| UPI (map/algorithm) | fitted on | " + " | ".join(f"D on {a}" for a in archs))
    lines[-1] += " |"
    lines.append("|" + " --- |" * (2 + len(archs)))
    for key, tab in results["transfer"].items():
        for src, row in tab.items():
            lines.append(f"| {key} | {src} | " + " | ".join(f"{row[a]:.3f}" for a in archs) + " |")
    lines.append(
        f"\nUPIs at eps = {results['eps']:.4f} fitted on {results['n_fit']} training images; "
        f"dissimilarity (000 Eq. 9) on {results['n_eval']} held-out test images."
    )
    return "\n".join(lines)


def plot(results: dict, path: Path, dataset: str) -> Path:
    fig = correlation_heatmap_figure(
        np.asarray(results["cosine"]),
        results["labels"],
        title=f"Cosine between UPIs on {dataset} (000 Figs. 3-5); eps = {results['eps']:.3f}",
    )
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=100)
    p.set_defaults(size=28)
    T.add_upi_options(p)
    args = p.parse_args(argv)
    T.check_upi_flags(p, args)
    C.setup(args)
    name = T.stem(args, "upi_correlation")
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    print(table(record["results"]))
    print(f"figure: {plot(record['results'], Path(args.out) / f'{name}.png', args.dataset)}")


if __name__ == "__main__":
    main()
