"""Cross-model generalization of adversarial examples (004, Szegedy et al., Table 2 and 4).

Adversarial examples are computed for each model (DeepFool by default, or Szegedy's
box-constrained L-BFGS towards a random other class) on the first ``--n`` test images, then fed to
every model. Each cell is the error rate (prediction != true label) that a row's examples induce
on a column's model. Rows of Gaussian noise with the same average distortion
sqrt(mean (x' - x)^2) (004's measure) come beside them, and, as in 004 Table 4, the examples
amplified to distortion ``--amplify`` (x + a r/||r||). Nothing is clipped to [0, 1] except by the
L-BFGS attack's own box.

    python analyses/cross_model.py --dataset mnist --n 500            # the table of the README
    python analyses/cross_model.py --quick                             # seconds, on digits
"""

from __future__ import annotations

import _common as C
import numpy as np
import torch

from geomrob.attacks import deepfool, lbfgs


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=300)
    p.add_argument("--archs", nargs="+", default=["fcn2", "lenet", "cnn2"])
    p.add_argument("--attack", default="deepfool", choices=("deepfool", "lbfgs"))
    p.add_argument(
        "--amplify",
        type=float,
        default=0.1,
        help="also rows with the examples scaled to this distortion (0: none)",
    )
    args = p.parse_args(argv)
    C.setup(args)
    name = f"cross_model_{args.dataset}"
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    print(table(record["results"]))


def distortion(r: torch.Tensor) -> torch.Tensor:
    """004's distortion per image: sqrt(mean over pixels of r^2)."""
    return r.flatten(1).pow(2).mean(1).sqrt()


def compute(args, name: str) -> None:
    test = C.dataset(args, "test")
    n = min(args.n, len(test))
    if args.quick:
        n = min(n, 60)
    x, y = test.x[:n].to(args.device), test.y[:n].to(args.device)
    models = {a: C.model(args, a) for a in args.archs}
    gen = torch.Generator().manual_seed(args.seed)

    def errors(xs: torch.Tensor) -> list[float]:
        with torch.no_grad():
            return [float((m(xs).argmax(1) != y).float().mean()) for m in models.values()]

    rows = [{"row": "clean test images", "errors": errors(x), "distortion": 0.0}]
    for arch, model in models.items():
        if args.attack == "deepfool":
            res = deepfool(model, x)
            r, ok = res.r, res.converged
        else:
            with torch.no_grad():
                k = model(x).argmax(1)
            offset = torch.randint(1, test.num_classes, (n,), generator=gen).to(args.device)
            res = lbfgs(model, x, (k + offset) % test.num_classes, bounds=(0.0, 1.0))
            r, ok = res.r, res.success
        d = distortion(r)
        rows.append(
            {
                "row": f"adversarial for {arch}",
                "errors": errors(x + r),
                "distortion": float(d.mean()),
                "success": float(ok.float().mean()),
            }
        )
        noise = torch.randn(x.shape, generator=gen).to(x) * float(d.mean())
        rows.append(
            {
                "row": f"Gaussian noise, stddev={float(d.mean()):.3f}",
                "errors": errors(x + noise),
                "distortion": float(distortion(noise).mean()),
            }
        )
        if args.amplify > 0:
            unit = r / distortion(r).clamp_min(1e-12).view(-1, *([1] * (r.ndim - 1)))
            rows.append(
                {
                    "row": f"adversarial for {arch} amplified to {args.amplify}",
                    "errors": errors(x + args.amplify * unit),
                    "distortion": args.amplify,
                }
            )
    if args.amplify > 0:
        noise = torch.randn(x.shape, generator=gen).to(x) * args.amplify
        rows.append(
            {
                "row": f"Gaussian noise, stddev={args.amplify}",
                "errors": errors(x + noise),
                "distortion": float(distortion(noise).mean()),
            }
        )
    results = {
        "models": list(models),
        "test_accuracy": {a: float(getattr(m, "test_accuracy", np.nan)) for a, m in models.items()},
        "n": n,
        "attack": args.attack,
        "rows": rows,
    }
    C.save(name, args, results)


def table(results: dict) -> str:
    """The table as markdown."""
    head = "| examples | " + " | ".join(results["models"]) + " | av. distortion |"
    sep = "|" + " --- |" * (len(results["models"]) + 2)
    lines = [head, sep]
    for row in results["rows"]:
        cells = " | ".join(f"{100 * e:.1f}%" for e in row["errors"])
        lines.append(f"| {row['row']} | {cells} | {row['distortion']:.3f} |")
    acc = ", ".join(f"{a} {100 * v:.2f}%" for a, v in results["test_accuracy"].items())
    return (
        "\n".join(lines)
        + f"\n\n{results['attack']} on {results['n']} test images; test accuracy: {acc}"
    )


if __name__ == "__main__":
    main()
