"""Adversarial directions of the softmax layer in trained networks (003, Theorems 1-2, Conjecture).

For each zoo model (``--arch``, default fcn2 cnn2 lenet) trained on ``--dataset`` (digits by
default, about a minute on two CPU cores):

1. the final layer ``W`` (``l`` features, ``m`` classes), the rank of ``(I - 11^T/m) W^T`` and the
   dimension of its null space, against 003 Theorem 1's ``l - m``; whether the layer is parallel
   (003 Definition 2; sine tolerance 1e-6) and its smallest sine between two boundaries;
2. invariance (Theorem 1): ``max |p(h + theta d) - p(h)|`` over the features ``h = g(x)`` of
   ``--n`` test images and 16 random unit null directions ``d``, ``theta`` up to 1e3, in
   float64; against 16 random unit directions of ``R^l``;
3. unbounded decision regions (Theorem 2): the fraction of ``(h, d)`` whose label is unchanged at
   ``theta = 1e3, 1e6`` (1 for null directions), the random baseline, and the fraction of
   ``h + theta d`` that stays in the non-negative orthant where ReLU features live (003 assumes
   the feature space is all of ``R^l``);
4. the conjecture: for pairs ``(x, x')`` of test images with different predicted labels, Adam
   (``--steps``, ``--lr``) on ``delta = x* - x``, ``x*`` kept in ``[0, 1]``, minimising
   ``||P (g(x*) - g(x'))||^2 / ||P (g(x) - g(x'))||^2 + lambda ||x* - x||^2`` with ``P`` the
   projector off the null space (the null component ``theta d'`` is free: "null"), or with
   ``P = I`` (plain feature matching, ``theta = 0``: "plain"); success = ``x*`` gets the
   label of ``x'``. Distances are compared with ``||x' - x||`` and DeepFool's ``||r(x)||``.

    python analyses/nullspace.py                                  # digits, fcn2 cnn2 lenet
    python analyses/nullspace.py --dataset mnist --n 500          # needs the MNIST files
    python analyses/nullspace.py --quick                          # seconds
"""

from __future__ import annotations

import _common as C
import torch

from geomrob import (
    deepfool,
    direction_invariance,
    feature_collision,
    parallel_pairs,
    softmax_null_space,
    split_last_linear,
)

THETAS = (1.0, 10.0, 100.0, 1000.0)
FAR = (1e3, 1e6)
N_DIRECTIONS = 16


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=200)
    p.add_argument("--arch", nargs="+", default=["fcn2", "cnn2", "lenet"])
    p.add_argument("--pairs", type=int, default=100, help="pairs (x, x') for the conjecture")
    p.add_argument("--lam", type=float, default=1e-2, help="weight of ||x* - x||^2")
    p.add_argument("--steps", type=int, default=300, help="Adam steps")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam step size")
    args = p.parse_args(argv)
    C.setup(args)
    name = f"nullspace_{args.dataset}"
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    print(table(record["results"]))


def unit_rows(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True)


def analyse(args, arch: str, x: torch.Tensor, gen: torch.Generator) -> dict:
    model = C.model(args, arch).eval()
    split = split_last_linear(model)
    head64 = torch.nn.Linear(split.head.in_features, split.head.out_features).double()
    head64.load_state_dict({k: v.double() for k, v in split.head.state_dict().items()})
    ns = softmax_null_space(head64)
    par = parallel_pairs(head64)
    with torch.no_grad():
        h = split.features(x).double()
        pred = model(x).argmax(1)
    l = ns.l
    null_dirs = unit_rows(
        torch.randn(N_DIRECTIONS, ns.dimension, generator=gen).double() @ ns.basis
    )
    rand_dirs = unit_rows(torch.randn(N_DIRECTIONS, l, generator=gen).double())
    inv_null = direction_invariance(head64, h, null_dirs, thetas=THETAS + FAR)
    inv_rand = direction_invariance(head64, h, rand_dirs, thetas=THETAS + FAR)
    nonneg = bool((h >= 0).all())
    in_orthant = [
        float(((h[:, None, :] + t * null_dirs[None]) >= 0).all(-1).double().mean())
        for t in THETAS + FAR
    ]

    # the conjecture: pairs with different predicted labels
    n = len(x)
    perm = torch.randperm(n, generator=gen)
    keep = (pred != pred[perm]).nonzero().flatten()[: min(args.pairs, n)]
    xs, xt = x[keep], x[perm[keep]]
    opts = {"lam": args.lam, "steps": args.steps, "lr": args.lr, "bounds": (0.0, 1.0)}
    collisions = {}
    for label, theta in (("null", None), ("plain", 0.0)):
        res = feature_collision(model, xs, xt, theta=theta, generator=args.seed, **opts)
        ok = res.success
        collisions[label] = {
            "theta": theta,
            "success_rate": float(ok.float().mean()),
            "median_distance": float(res.distance.median()),
            "median_distance_success": float(res.distance[ok].median()) if ok.any() else None,
            "median_relative_distance": float((res.distance / res.pair_distance).median()),
            "median_residual": float(res.residual.median()),
            "median_null_shift": float(res.null_shift.median()),
        }
    df = deepfool(model, xs)
    return {
        "test_accuracy": float(getattr(model, "test_accuracy", float("nan"))),
        "l": l,
        "m": ns.m,
        "rank": ns.rank,
        "null_dimension": ns.dimension,
        "theorem1_bound": ns.lower_bound,
        "theorem1_holds": ns.theorem1,
        "parallel": par.parallel,
        "parallel_pairs": par.pairs.tolist(),
        "min_sine": par.min_sine,
        "thetas": list(THETAS + FAR),
        "null_max_change": inv_null.max_change.tolist(),
        "null_label_kept": inv_null.label_kept.tolist(),
        "null_logit_spread": float(inv_null.logit_spread.max()),
        "random_max_change": inv_rand.max_change.tolist(),
        "random_label_kept": inv_rand.label_kept.tolist(),
        "features_nonnegative": nonneg,
        "null_in_orthant": in_orthant,
        "pairs": len(keep),
        "median_pair_distance": float((xt - xs).flatten(1).norm(dim=1).median()),
        "median_deepfool_norm": float(df.norms[df.converged].median()),
        "collision": collisions,
    }


def compute(args, name: str) -> None:
    test = C.dataset(args, "test")
    n = min(args.n, len(test), 60 if args.quick else len(test))
    x = test.x[:n].to(args.device)
    if args.quick:
        args.steps = min(args.steps, 50)
    gen = torch.Generator().manual_seed(args.seed)
    per_model = {arch: analyse(args, arch, x, gen) for arch in args.arch}
    results = {"n": n, "dataset": args.dataset, "archs": list(args.arch), "models": per_model}
    C.save(name, args, results)


def _pair(a: float, b: float, fmt: str) -> str:
    return f"{a:{fmt}} / {b:{fmt}}"


def table(results: dict) -> str:
    """The per-model numbers as markdown."""
    models = results["models"]
    archs = results["archs"]
    i3 = models[archs[0]]["thetas"].index(1e3)

    def cell(r: dict, key: str) -> str:
        nul, pla = r["collision"]["null"], r["collision"]["plain"]
        return {
            "acc": f"{100 * r['test_accuracy']:.1f}%",
            "lm": f"{r['l']}, {r['m']}",
            "rank": str(r["rank"]),
            "dim": f"{r['null_dimension']} (>= {r['theorem1_bound']})",
            "par": f"{r['parallel']} / {r['min_sine']:.3g}",
            "dnull": f"{max(r['null_max_change'][: i3 + 1]):.1e}",
            "drand": f"{r['random_max_change'][0]:.2f}",
            "knull": _pair(*r["null_label_kept"][-2:], ".2f"),
            "krand": _pair(*r["random_label_kept"][-2:], ".2f"),
            "orth": _pair(*r["null_in_orthant"][:2], ".2f"),
            "pairs": str(r["pairs"]),
            "succ": _pair(nul["success_rate"], pla["success_rate"], ".2f"),
            "dist": _pair(nul["median_distance"], pla["median_distance"], ".3f"),
            "ref": _pair(r["median_pair_distance"], r["median_deepfool_norm"], ".3f"),
        }[key]

    labels = {
        "acc": "test accuracy",
        "lm": "l (features), m (classes)",
        "rank": "rank (I - 11^T/m) W^T",
        "dim": "null-space dimension (>= l - m)",
        "par": "parallel layer / min sine",
        "dnull": "max abs change of p, null dirs, theta <= 1e3",
        "drand": "max abs change of p, random dirs, theta = 1",
        "knull": "label kept at theta 1e3 / 1e6, null",
        "krand": "label kept at theta 1e3 / 1e6, random",
        "orth": "h + theta d >= 0 at theta 1 / 10 (null)",
        "pairs": "pairs (x, x')",
        "succ": "collision success: null / plain",
        "dist": "median l2 dist(x*, x): null / plain",
        "ref": "median dist(x', x) / DeepFool norm r(x)",
    }
    lines = ["| | " + " | ".join(archs) + " |", "|" + " --- |" * (len(archs) + 1)]
    for key, label in labels.items():
        lines.append(f"| {label} | " + " | ".join(cell(models[a], key) for a in archs) + " |")
    return "\n".join(lines) + f"\n\n{results['n']} test images of {results['dataset']}"


if __name__ == "__main__":
    main()
