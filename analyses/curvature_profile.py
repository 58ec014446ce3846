"""Average curvature K_S along S_c against the dimension m, on unseen points (001 Fig. 7a).

S_c is built from --n = 100 training points (top-m eigenvectors of the averaged boundary
Hessian); K_S(x) = E_v [(P v)^T H_z (P v) / ||P v||^2] / ||grad F(z)|| is averaged over
--n-dirs directions of the unit sphere of S_c at the boundary points z of --n-curvature unseen
test points (mean and standard deviation over points), against Haar-random subspaces of the same
dimension. Positive K_S: the boundary bends towards the data along S_c (DESIGN.md section 3).
The study is shared with fooling_vs_dim.py (cached in <run-dir>/study).

    python analyses/curvature_profile.py                                   # digits, ~1 min
    python analyses/curvature_profile.py --dataset mnist --arch lenet       # 001's setting
"""

from __future__ import annotations

import math
from pathlib import Path

import _common as C

from geomrob.plotting import curvature_profile_figure, save_figure


def main(argv: list[str] | None = None) -> None:
    """Compute (unless ``--plot-only``), save, plot and print the table."""
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    args = C.parse_study_args(p, argv)
    C.setup(args)
    name = C.stem(args, "curvature_profile")
    if not args.plot_only:
        st = C.study(args)
        res = st.result
        prof = res.profile
        ok = prof.converged
        n = int(ok.sum())
        summary = {
            "test_accuracy": st.test_accuracy,
            "mode": res.mode,
            "n_fit": res.n_fit,
            "n_points": n,
            "ms": list(res.config.ms),
            "mean": prof.mean.tolist(),
            "std": prof.std.tolist(),
            "stderr": (prof.std / math.sqrt(max(n, 1))).tolist(),
            "random_mean": prof.random_mean.tolist(),
            "random_std": prof.random_std.tolist(),
            "random_stderr": (prof.random_std / math.sqrt(max(n, 1))).tolist(),
            "raw_mean": prof.raw_mean.tolist(),
            "random_raw_mean": prof.random_raw_mean.tolist(),
            "fraction_positive": (prof.per_point[:, ok] > 0).double().mean(1).tolist(),
            # K_S is heavy-tailed (a point with a tiny ||grad F|| or ||r||): medians beside means
            "median": prof.per_point[:, ok].median(dim=1).values.tolist(),
            "random_median": prof.random_per_point[:, ok].median(dim=1).values.tolist(),
            "eigenvalues": res.curved.values.tolist(),
            "n_dirs": prof.n_dirs,
            "n_random": prof.n_random,
        }
        arrays = {
            "per_point": prof.per_point.numpy(),
            "random_per_point": prof.random_per_point.numpy(),
            "converged": ok.numpy(),
        }
        C.save(name, args, summary, arrays)
    record, _ = C.load(name, args)
    s = record["results"]
    fig = curvature_profile_figure(
        s["ms"],
        s["mean"],
        s["std"],
        s["random_mean"],
        s["random_std"],
        ylabel="average normal curvature K_S (1/length)",
        title=f"{args.dataset} {args.arch} ({s['mode']}): S_c from {s['n_fit']} training "
        f"points, K_S on {s['n_points']} unseen points",
    )
    path = save_figure(fig, Path(args.out) / f"{name}.png")
    print(table(s))
    print(f"figure: {path}")


def table(s: dict) -> str:
    """K_S per m with standard errors and the share of points where it is positive."""
    lines = [
        f"mode {s['mode']}, {s['n_points']} unseen points, {s['n_dirs']} directions per "
        f"subspace, {s['n_random']} random subspaces per m",
        "",
        "| m | K_S(S_c) mean +- s.e. | median | positive | K_S(random) mean +- s.e. | median "
        "| random within 2 s.e. of 0 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for i, m in enumerate(s["ms"]):
        near_zero = abs(s["random_mean"][i]) <= 2 * s["random_stderr"][i]
        lines.append(
            f"| {m} | {s['mean'][i]:.4g} +- {s['stderr'][i]:.2g} | {s['median'][i]:.4g} | "
            f"{s['fraction_positive'][i]:.2f} | {s['random_mean'][i]:.4g} +- "
            f"{s['random_stderr'][i]:.2g} | {s['random_median'][i]:.4g} | "
            f"{'yes' if near_zero else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
