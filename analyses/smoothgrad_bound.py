"""002 Theorem 2 checked numerically: SmoothGrad is 2F/sigma^2-Lipschitz.

Wang et al., "Smoothed geometry for robust attribution" (NeurIPS 2020, ``002``), Theorem 2 (proof
in Supp. A3): for a scalar function ``f`` with ``sup_{x in R^d} |f(x)| = F < inf``, SmoothGrad
``g(x) = E_{e ~ N(0, sigma^2 I)} grad f(x + e)`` (the gradient of the Gaussian convolution
``f * q``, Prop. 1) satisfies ``||g(x) - g(x')|| <= (2F / sigma^2) ||x - x'||`` for all ``x, x'``.

For a trained zoo model (``--arch``, cached as in the other analyses) and each ``sigma`` of
``--sigmas``, we estimate the ratio ``||g(x) - g(x')|| / ||x - x'||`` over pairs of the first
``--n`` test images, for the class ``c`` the model predicts at ``x`` (fixed for both points):

- "near, random direction": ``x' = x + (sigma / 4) u``, ``u`` a random unit vector;
- "near, gradient direction": ``u = grad f(x) / ||grad f(x)||`` (the plain saliency direction);
- "random pairs": ``x'`` another test image.

Two functions ``f``:

- ``probability``: ``f = softmax(logits)_c``. It lies in (0, 1), so ``F <= 1`` and the theorem
  applies: the bound used is ``2 / sigma^2`` (``F = 1``; the largest ``p_c`` met in the samples is
  reported beside it, and ``sup p_c = 1`` whenever class ``c`` wins along some ray, the usual
  case for a ReLU network).
- ``logit``: ``f = S_c``, the map geomrob's :func:`~geomrob.interpret.smoothgrad` explains. A
  ReLU network's logit grows linearly along rays, so ``F = sup |S_c| = inf`` and the theorem
  gives no finite bound. As a heuristic we report ``F_hat = max |S_c|`` over all the noisy
  points evaluated and ``2 F_hat / sigma^2`` (not a certified bound).

``g`` is a Monte Carlo mean over ``--samples`` draws with common random numbers (the same
``e_s`` at ``x`` and ``x'``), so the estimate of ``g(x) - g(x')`` is the mean of the per-sample
differences ``d_s``; its standard error ``sqrt((E||d||^2 - ||E d||^2) / S)`` is reported. By
Jensen's inequality the estimated norm is biased upwards by the noise, so a ratio found below
the bound is not an artefact of the estimate.

    python analyses/smoothgrad_bound.py                       # digits, cnn2, under a minute
    python analyses/smoothgrad_bound.py --dataset mnist --n 200
    python analyses/smoothgrad_bound.py --quick               # seconds
"""

from __future__ import annotations

import _common as C
import numpy as np
import torch

from geomrob.plotting import save_figure

FUNCTIONS = ("probability", "logit")
PAIRS = ("near, random direction", "near, gradient direction", "random pairs")
SHORT = dict(zip(PAIRS, ("near_random", "near_gradient", "random_pairs"), strict=True))


def main(argv: list[str] | None = None) -> None:
    p = C.parser(__doc__.splitlines()[0], dataset="digits", n=100)
    p.add_argument("--arch", default="cnn2")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    p.add_argument("--samples", type=int, default=256, help="Monte Carlo draws per point")
    p.add_argument("--near", type=float, default=0.25, help="near pairs at distance NEAR*sigma")
    p.add_argument("--chunk", type=int, default=8192, help="points per forward/backward pass")
    args = p.parse_args(argv)
    C.setup(args)
    name = f"smoothgrad_bound_{args.dataset}_{args.arch}"
    if not args.plot_only:
        compute(args, name)
    record, _ = C.load(name, args)
    print(table(record["results"]))
    print(f"figure: {plot(record['results'], args, name)}")


def gradients(model, z: torch.Tensor, target: torch.Tensor, chunk: int):
    """``grad p_c`` and ``grad S_c`` at each row of ``z`` ``(m, *shape)``, and ``p_c``, ``S_c``."""
    gp, gs, pv, sv = [], [], [], []
    for i in range(0, len(z), chunk):
        zi = z[i : i + chunk].detach().requires_grad_(True)
        ti = target[i : i + chunk, None]
        with torch.enable_grad():
            logits = model(zi)
            s = logits.gather(1, ti).squeeze(1)
            p = torch.softmax(logits, 1).gather(1, ti).squeeze(1)
            (g_p,) = torch.autograd.grad(p.sum(), zi, retain_graph=True)
            (g_s,) = torch.autograd.grad(s.sum(), zi)
        gp.append(g_p.flatten(1))
        gs.append(g_s.flatten(1))
        pv.append(p.detach())
        sv.append(s.detach())
    return torch.cat(gp), torch.cat(gs), torch.cat(pv), torch.cat(sv)


def pair_ratios(model, x, x2, target, sigma: float, args, gen: torch.Generator) -> dict:
    """Per pair: ratio ``||g(x) - g(x2)|| / ||x - x2||`` and its standard error, for each ``f``."""
    P, shape = len(x), tuple(x.shape[1:])
    dist = (x - x2).flatten(1).norm(dim=1)
    sums = {f: torch.zeros(P, x[0].numel(), dtype=torch.float64) for f in FUNCTIONS}
    sq = {f: torch.zeros(P, dtype=torch.float64) for f in FUNCTIONS}
    p_max = torch.zeros(P, dtype=torch.float64)
    s_max = torch.zeros(P, dtype=torch.float64)
    per_block = max(1, args.chunk // (2 * P))
    for s0 in range(0, args.samples, per_block):
        b = min(per_block, args.samples - s0)
        e = sigma * torch.randn(b, P, *shape, generator=gen).to(x)
        z = torch.cat([(x + e).reshape(b * P, *shape), (x2 + e).reshape(b * P, *shape)])
        t = target.repeat(2 * b)
        gp, gs, pv, sv = gradients(model, z, t, args.chunk)
        for f, g in (("probability", gp), ("logit", gs)):
            g = g.double().view(2, b, P, -1)
            d = g[0] - g[1]  # (b, P, d): per-sample differences, common noise
            sums[f] += d.sum(0)
            sq[f] += d.pow(2).sum((0, 2))
        p_max = torch.maximum(p_max, pv.double().view(2 * b, P).amax(0))
        s_max = torch.maximum(s_max, sv.double().abs().view(2 * b, P).amax(0))
    out = {"distance": dist.double(), "p_max": p_max, "s_max": s_max}
    S = args.samples
    for f in FUNCTIONS:
        mean = sums[f] / S
        var = (sq[f] / S - mean.pow(2).sum(1)).clamp_min(0.0)  # trace of the covariance
        out[f"{f}_ratio"] = mean.norm(dim=1) / dist.double()
        out[f"{f}_se"] = (var / S).sqrt() / dist.double()
    return out


def compute(args, name: str) -> None:
    test = C.dataset(args, "test")
    n = min(args.n, len(test), 12 if args.quick else args.n)
    if args.quick:
        args.samples = min(args.samples, 64)
    model = C.model(args, args.arch).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    x = test.x[:n].to(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        target = model(x).argmax(1)
    u = torch.randn(x.shape, generator=gen).to(x)
    u = u / u.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))
    g0, _, _, _ = gradients(model, x, target, args.chunk)
    grad_dir = (g0 / g0.norm(dim=1, keepdim=True).clamp_min(1e-30)).view_as(x)
    perm = (torch.arange(n) + 1 + torch.randint(0, n - 1, (1,), generator=gen)) % n
    results = {"n": n, "arch": args.arch, "samples": args.samples, "rows": []}
    arrays: dict[str, np.ndarray] = {"target": target.cpu().numpy()}
    for i, sigma in enumerate(args.sigmas):
        partners = {
            "near, random direction": x + args.near * sigma * u,
            "near, gradient direction": x + args.near * sigma * grad_dir,
            "random pairs": x[perm],
        }
        rows = {}
        for kind, x2 in partners.items():
            r = pair_ratios(model, x, x2, target, sigma, args, gen)
            rows[kind] = r
            for key in ("distance", *(f"{f}_{s}" for f in FUNCTIONS for s in ("ratio", "se"))):
                arrays[f"sigma{i}_{SHORT[kind]}_{key}"] = r[key].cpu().numpy()
        F_hat = float(max(r["s_max"].max() for r in rows.values()))
        p_hat = float(max(r["p_max"].max() for r in rows.values()))
        entry = {
            "sigma": sigma,
            "bound_probability": 2.0 / sigma**2,
            "p_max_observed": p_hat,
            "F_hat_logit": F_hat,
            "heuristic_bound_logit": 2.0 * F_hat / sigma**2,
            "pairs": {},
        }
        for kind, r in rows.items():
            entry["pairs"][kind] = {
                "median_distance": float(r["distance"].median()),
                **{
                    f"{f}_{stat}": float(v)
                    for f in FUNCTIONS
                    for stat, v in (
                        ("max_ratio", r[f"{f}_ratio"].max()),
                        ("median_ratio", r[f"{f}_ratio"].median()),
                        ("se_at_max", r[f"{f}_se"][r[f"{f}_ratio"].argmax()]),
                    )
                },
            }
        for f in FUNCTIONS:
            bound = (
                entry["bound_probability"] if f == "probability" else entry["heuristic_bound_logit"]
            )
            worst = max(v[f"{f}_max_ratio"] for v in entry["pairs"].values())
            entry[f"{f}_max_ratio"] = worst
            entry[f"{f}_max_ratio_over_bound"] = worst / bound
        results["rows"].append(entry)
    C.save(name, args, results, arrays)


def table(results: dict) -> str:
    lines = [
        "| sigma | f | max ratio (near rnd / near grad / random pairs) | bound 2F/sigma^2 | "
        "max / bound |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in results["rows"]:
        for f in FUNCTIONS:
            ratios = " / ".join(f"{e['pairs'][k][f'{f}_max_ratio']:.3g}" for k in PAIRS)
            if f == "probability":
                bound = f"{e['bound_probability']:.3g} (F = 1)"
            else:
                bound = f"{e['heuristic_bound_logit']:.3g} (F_hat = {e['F_hat_logit']:.3g})"
            lines.append(
                f"| {e['sigma']:g} | {f} | {ratios} | {bound} | "
                f"{e[f'{f}_max_ratio_over_bound']:.3g} |"
            )
    return (
        "\n".join(lines) + f"\n\n{results['arch']}, {results['n']} test images, "
        f"{results['samples']} Monte Carlo samples per point (common random numbers). "
        "The logit row's F_hat is the largest |S_c| met, not the sup over R^d (infinite)."
    )


def plot(results: dict, args, name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    sig = np.array([e["sigma"] for e in results["rows"]])
    markers = dict(zip(PAIRS, ("o", "s", "^"), strict=True))
    for j, f in enumerate(FUNCTIONS):
        ax = fig.add_subplot(1, 2, j + 1)
        for kind in PAIRS:
            ax.plot(
                sig,
                [e["pairs"][kind][f"{f}_max_ratio"] for e in results["rows"]],
                marker=markers[kind],
                label=f"max ratio, {kind}",
            )
        if f == "probability":
            bound = [e["bound_probability"] for e in results["rows"]]
            label = "2F/sigma^2, F = 1 (Theorem 2)"
        else:
            bound = [e["heuristic_bound_logit"] for e in results["rows"]]
            label = "2 F_hat/sigma^2, F_hat = max |S_c| seen (heuristic)"
        ax.plot(sig, bound, "k--", label=label)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="sigma",
            ylabel="||g(x) - g(x')|| / ||x - x'||",
            title=f"SmoothGrad of the {'softmax probability' if f == 'probability' else 'logit'}",
        )
        ax.set_xticks(sig, [f"{v:g}" for v in sig])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.suptitle(
        f"002 Theorem 2 on {results['arch']} ({args.dataset}), {results['n']} images, "
        f"{results['samples']} samples",
        fontsize=10,
    )
    return save_figure(fig, f"{args.out}/{name}.png")


if __name__ == "__main__":
    main()
