"""Smooth Surface Regularization against natural training: accuracy and robust saliency (002).

Wang et al., "Smoothed geometry for robust attribution" (NeurIPS 2020, ``002``), Def. 7 and
Sec. 5 (Experiment II, Table 1). Two zoo models of ``--arch`` are trained on ``--dataset`` with
the same recipe and seed, one naturally and one with SSR (``ssr_beta``, ``ssr_scale``:
the loss plus ``beta * s * mean lambda_max`` of the closed-form input Hessian of the
cross-entropy, :func:`geomrob.interpret.ssr_loss`). For each model, on the first ``--n`` test
images:

1. test accuracy, and the mean top eigenvalue of the input Hessian of the loss
   (:func:`geomrob.interpret.input_hessian_ce`), the quantity SSR penalises;
2. a per-image attack on the saliency map (:func:`geomrob.interpret.attacks.pgd_attack`: PGD on
   the squared l2 distance of the l1-normalised maps, l-inf ball of radius ``eps``, pixels kept
   in [0, 1], the label kept, gradients through a softplus surrogate of ``--surrogate-beta``
   because a ReLU network's map has zero derivatives), at each ``eps`` of ``--eps`` (002's
   2, 4, 8, 16 out of 255 by default);
3. the four metrics of 002 between the saliency maps of the real model at ``x`` and at
   ``x_adv`` (target: the label at ``x``): top-k intersection and Spearman's rank correlation
   of the pixel maps (``--k`` pixels), mass-center dislocation (pixels) and cosine distance;
   their means per ``eps`` and the AUC over ``log2 eps`` (002 Fig. 2a).

The scale: 002 used ``beta = 0.3, s = 1e6`` on CIFAR-10 in [0, 255]; an input Hessian in [0, 1]
units is 255^2 times larger, so that setting reads ``s = 15`` here (the default).

    python analyses/ssr.py                                       # digits, cnn2, about a minute
    python analyses/ssr.py --dataset mnist --arch cnn2 --n 200   # the README's MNIST run; SSR
                                            # training costs 5-10x natural (about an hour)
    python analyses/ssr.py --dataset mnist --train-size 12000 --epochs 3   # a cheaper pair
    python analyses/ssr.py --quick                               # seconds
"""

from __future__ import annotations

import _common as C
import numpy as np
import torch

from geomrob.interpret import input_hessian_ce, saliency
from geomrob.interpret.attacks import pgd_attack
from geomrob.interpret.metrics import ROBUSTNESS_METRICS, auc_log_eps, robustness_metrics
from geomrob.plotting import save_figure

#: Long names of 002's four metrics, in the order of ``ROBUSTNESS_METRICS`` (k-in, cor, cdl, cosd).
METRICS = ("topk_intersection", "spearman", "mass_center_dislocation", "cosine_distance")
LABELS = {
    "topk_intersection": "top-k intersection (higher: robust)",
    "spearman": "Spearman (higher: robust)",
    "mass_center_dislocation": "center dislocation, px (lower: robust)",
    "cosine_distance": "cosine distance (lower: robust)",
}


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=100)
    p.add_argument("--arch", default="cnn2")
    p.add_argument("--ssr-beta", type=float, default=0.3, help="SSR penalty beta (002: 0.3)")
    p.add_argument("--ssr-scale", type=float, default=15.0, help="SSR scale s (see above)")
    p.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[2 / 255, 4 / 255, 8 / 255, 16 / 255],
        help="l-inf radii of the attack, increasing (default 2, 4, 8, 16 out of 255)",
    )
    p.add_argument("--steps", type=int, default=30, help="PGD iterations")
    p.add_argument("--k", type=int, default=8, help="pixels of the top-k intersection")
    p.add_argument("--surrogate-beta", type=float, default=10.0, help="softplus beta of the attack")
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="train both models on the same seeded subset of this many images (default: all)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs of both models (default: the recipe's)"
    )
    args = p.parse_args(argv)
    for flag in ("train_size", "epochs", "steps", "k", "n"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1; got {value}.")
    C.setup(args)
    name = f"ssr_{args.dataset}_{args.arch}"
    if not args.plot_only:
        compute(args, name)
    record, arrays = C.load(name, args)
    print(table(record["results"]))
    path = plot(record["results"], arrays, args, name)
    print(f"figure: {path}")


def map_metrics(model: torch.nn.Module, x, x_adv, label, k: int) -> dict[str, np.ndarray]:
    """The four metrics of 002 between the saliency maps at ``x`` and ``x_adv`` (per image)."""
    a = saliency(model, x, target=label).attribution
    b = saliency(model, x_adv, target=label).attribution
    values = robustness_metrics(a, b, k)
    return {
        name: values[short].numpy() for name, short in zip(METRICS, ROBUSTNESS_METRICS, strict=True)
    }


def evaluate(args, model: torch.nn.Module, x, y, tag: str, arrays: dict) -> dict:
    with torch.no_grad():
        label = model(x).argmax(1)
    lam = input_hessian_ce(model, x).top_eigenvalue()
    per_eps = []
    for i, eps in enumerate(args.eps):
        res = pgd_attack(
            model,
            x,
            "simple",
            eps=eps,
            p=float("inf"),
            steps=args.steps,
            bounds=(0.0, 1.0),
            surrogate=args.surrogate_beta,
            generator=args.seed,
        )
        if not bool(res.label_kept.all()):
            raise RuntimeError("pgd_attack returned an image whose label changed")
        values = map_metrics(model, x, res.x_adv, label, args.k)
        for m, v in values.items():
            arrays[f"{tag}_{m}_eps{i}"] = v
        if i == len(args.eps) - 1:
            arrays[f"{tag}_x_adv"] = res.x_adv.numpy()
            arrays[f"{tag}_map"] = saliency(model, x[:4], target=label[:4]).attribution.numpy()
            arrays[f"{tag}_map_adv"] = saliency(
                model, res.x_adv[:4], target=label[:4]
            ).attribution.numpy()
        per_eps.append(
            {
                "eps": eps,
                "linf": float(res.norm.max()),
                "steps_accepted": float(res.steps.float().mean()),
                "dissimilarity_after": float(res.metric_after.mean()),
                **{m: float(np.mean(v)) for m, v in values.items()},
            }
        )
    auc = {m: float(auc_log_eps(args.eps, [row[m] for row in per_eps])) for m in METRICS}
    arrays[f"{tag}_lambda_max"] = lam.numpy()
    return {
        "test_accuracy": float(model.test_accuracy),
        "accuracy_on_n": float((label.cpu() == y).float().mean()),
        "lambda_max_mean": float(lam.mean()),
        "lambda_max_median": float(lam.median()),
        "per_eps": per_eps,
        "auc_log2_eps": auc,
    }


def compute(args, name: str) -> None:
    if sorted(args.eps) != list(args.eps) or len(set(args.eps)) != len(args.eps):
        raise SystemExit(f"--eps must be strictly increasing; got {args.eps}")
    test = C.dataset(args, "test")
    n = min(args.n, len(test), 20 if args.quick else args.n)
    x, y = test.x[:n].to(args.device), test.y[:n]
    arrays: dict[str, np.ndarray] = {"x": x.cpu().numpy(), "y": y.numpy()}
    recipe = {
        k: v for k, v in (("train_size", args.train_size), ("epochs", args.epochs)) if v is not None
    }
    models = {
        "natural": C.model(args, args.arch, **recipe),
        "ssr": C.model(args, args.arch, ssr_beta=args.ssr_beta, ssr_scale=args.ssr_scale, **recipe),
    }
    results = {"n": n, "arch": args.arch, "eps": list(args.eps), "recipe": recipe, "models": {}}
    for tag, model in models.items():
        results["models"][tag] = evaluate(args, model.eval(), x, y, tag, arrays)
    C.save(name, args, results, arrays)


def table(results: dict) -> str:
    head = "| model | test acc. | lambda_max mean / median | "
    head += " | ".join(f"AUC {m}" for m in METRICS)
    lines = [head + " |", "|" + " --- |" * (3 + len(METRICS))]
    for tag, r in results["models"].items():
        cells = " | ".join(f"{r['auc_log2_eps'][m]:.3f}" for m in METRICS)
        lam = f"{r['lambda_max_mean']:.4g} / {r['lambda_max_median']:.4g}"
        lines.append(f"| {tag} | {100 * r['test_accuracy']:.2f}% | {lam} | {cells} |")
    eps = ", ".join(f"{255 * e:g}" for e in results["eps"])
    return (
        "\n".join(lines)
        + f"\n\n{results['arch']}, {results['n']} test images, l-inf PGD on the saliency map, "
        f"eps = {eps} / 255; AUC over log2 eps (002 Fig. 2a)"
    )


def plot(results: dict, arrays: dict, args, name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6), layout="constrained")
    grid = fig.add_gridspec(2, 4)
    eps255 = [255 * e for e in results["eps"]]
    colors = {"natural": "tab:blue", "ssr": "tab:red"}
    for j, m in enumerate(METRICS):
        ax = fig.add_subplot(grid[0, j])
        for tag, r in results["models"].items():
            ax.plot(
                eps255,
                [row[m] for row in r["per_eps"]],
                marker="o",
                color=colors.get(tag),
                label=f"{tag} (AUC {r['auc_log2_eps'][m]:.2f})",
            )
        ax.set(xscale="log", xlabel="eps x 255 (l-inf)")
        ax.set_title(LABELS[m], fontsize=9)
        ax.set_xticks(eps255, [f"{e:g}" for e in eps255])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    # example maps at the largest eps: |saliency| summed over channels
    sub = grid[1, :].subgridspec(1, 10, wspace=0.1)
    i = 0
    cols = [("image", arrays["x"][i])]
    for tag in results["models"]:
        cols.append((f"{tag}: map", arrays[f"{tag}_map"][i]))
        cols.append((f"{tag}: map after attack", arrays[f"{tag}_map_adv"][i]))
    for c, (title, img) in enumerate(cols):
        ax = fig.add_subplot(sub[0, 2 * c : 2 * c + 2])
        shown = img[0] if title == "image" else np.abs(img).sum(0)
        ax.imshow(shown, cmap="gray" if title == "image" else "hot")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    acc = ", ".join(
        f"{t} {100 * r['test_accuracy']:.1f}% (mean lambda_max {r['lambda_max_mean']:.3g})"
        for t, r in results["models"].items()
    )
    fig.suptitle(
        f"SSR vs natural training, {results['arch']} on {args.dataset}: test accuracy {acc}",
        fontsize=10,
    )
    return save_figure(fig, f"{args.out}/{name}.png")


if __name__ == "__main__":
    main()
