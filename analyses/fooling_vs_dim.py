"""Fooling rate of random vectors of S_c and S_f against the dimension m (001 Fig. 7b, 11, 12).

Random vectors drawn uniformly from the unit sphere of the curved subspace S_c (top-m
eigenvectors of the averaged boundary Hessian of --n = 100 training points) and of the normal
subspace S_f (top-m right singular vectors of the DeepFool normals of --n-uap training points),
scaled to rho_rand / 5, are evaluated on --n-eval unseen test points; --n-vectors per m give
the mean (what one random draw achieves) and the best ("the best universal perturbation" of
001). The 2017 UAP algorithm fitted on the --n-uap training points at the same norm is the
dotted line, isotropic noise of that norm and a random subspace are the baselines. Everything
comes from geomrob.subspace_study (cached in <run-dir>/study).

    python analyses/fooling_vs_dim.py                                          # digits, ~1 min
    python analyses/fooling_vs_dim.py --dataset mnist --arch lenet              # 001's setting
    python analyses/fooling_vs_dim.py --dataset fashion-mnist --arch cnn2
    python analyses/fooling_vs_dim.py --dataset mnist --arch lenet --activation softplus
"""

from __future__ import annotations

from pathlib import Path

import _common as C
import numpy as np

from geomrob.plotting import fooling_vs_dim_figure, save_figure


def main(argv: list[str] | None = None) -> None:
    """Compute (unless ``--plot-only``), save, plot and print the table."""
    p = C.parser(__doc__.splitlines()[0])
    C.add_study_options(p)
    args = C.parse_study_args(p, argv)
    C.setup(args)
    name = C.stem(args, "fooling_vs_dim")
    if not args.plot_only:
        st = C.study(args)
        res = st.result
        summary = {"test_accuracy": st.test_accuracy, **res.summary()}
        arrays = {
            "ms": np.asarray(summary["ms"]),
            "curved_rates": res.curved_fooling.rates.numpy(),
            "normal_rates": res.normal_fooling.rates.numpy(),
            "random_rates": res.random_fooling.rates.numpy(),
            "uap": res.uap.numpy(),
        }
        C.save(name, args, summary, arrays)
    record, _ = C.load(name, args)
    s = record["results"]
    fig = fooling_vs_dim_figure(
        s["ms"],
        {
            "S_c (curved)": (s["curved_mean"], s["curved_best"]),
            "S_f (normals)": (s["normal_mean"], s["normal_best"]),
            "random subspace": (s["random_mean"], None),
        },
        {
            f"UAP algorithm ({s['n_uap']} points)": s["uap_rate"],
            "isotropic noise": s["noise_rate"],
        },
        title=f"{args.dataset} {args.arch} ({s['mode']}): norm rho_rand/5 = {s['norm']:.3g}, "
        f"{s['n_eval']} unseen points",
    )
    path = save_figure(fig, Path(args.out) / f"{name}.png")
    print(table(s))
    print(f"figure: {path}")


def table(s: dict) -> str:
    """The numbers of the figure as a markdown table."""
    lines = [
        f"rho_rand {s['rho_rand']:.4g}, norm {s['norm']:.4g}, mode {s['mode']}, S_c from "
        f"{s['fit_converged']}/{s['n_fit']} boundary points, UAP and S_f from {s['n_uap']}, "
        f"rates on {s['n_eval']} unseen points",
        "",
        "| m | S_c mean | S_c best | S_f mean | S_f best | random subspace | UAP | noise |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, m in enumerate(s["ms"]):
        lines.append(
            f"| {m} | {s['curved_mean'][i]:.3f} | {s['curved_best'][i]:.3f} | "
            f"{s['normal_mean'][i]:.3f} | {s['normal_best'][i]:.3f} | {s['random_mean'][i]:.3f} | "
            f"{s['uap_rate']:.3f} | {s['noise_rate']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
