"""The ``geomrob`` command.

Each subcommand is a pair ``_add_<name>(subparsers, common)`` / ``_run_<name>(args)``; the common
options (``--device``, ``--data-root``, ``--out``, ``--seed``, ``--quiet``) come from one parent
parser. A run directory (``--out``, default ``runs/<subcommand>``) caches trained models by a hash
of their config, so a second run reuses them.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from . import data as _data
from ._io import atomic_write, config_hash, save_json, save_torch
from .models import ARCHITECTURES, TrainConfig, train

log = logging.getLogger("geomrob")

Runner = Callable[[argparse.Namespace], int]
_RUNNERS: dict[str, Runner] = {}


class CLIError(Exception):
    """A user error the CLI reports in one line (exit status 2), without a traceback."""


def versions() -> dict[str, str]:
    """Versions of Python and the main libraries, stored with every result."""
    import numpy
    import scipy

    return {
        "geomrob": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    g.add_argument(
        "--data-root",
        default=None,
        help="folder with mnist/, fashion-mnist/, cifar-10-batches-py/ (default $GEOMROB_DATA)",
    )
    g.add_argument("--out", default=None, help="run directory (default runs/<subcommand>)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return common


def _add_train_options(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    g = p.add_argument_group("model and training")
    g.add_argument("--arch", default=defaults.arch, choices=ARCHITECTURES)
    g.add_argument("--dataset", default=defaults.dataset, choices=_data.DATASETS)
    g.add_argument("--size", type=int, default=defaults.size, help="resize images to SIZE x SIZE")
    g.add_argument(
        "--activation",
        default=defaults.activation,
        help="relu | softplus | softplus(BETA) | tanh | gelu",
    )
    g.add_argument("--beta", type=float, default=defaults.beta, help="softplus sharpness")
    g.add_argument("--optimizer", default=defaults.optimizer, choices=("adam", "sgd"))
    g.add_argument("--lr", type=float, default=None, help="default: the dataset's recipe")
    g.add_argument("--momentum", type=float, default=defaults.momentum)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--epochs", type=int, default=None, help="default: the dataset's recipe")
    g.add_argument("--batch-size", type=int, default=None, help="default: the dataset's recipe")
    g.add_argument("--train-size", type=int, default=defaults.train_size)
    g.add_argument(
        "--ssr-beta",
        type=float,
        default=defaults.ssr_beta,
        help="Smooth Surface Regularization: penalty beta on the top eigenvalue of the input "
        "Hessian of the loss (Wang et al. 2020 used 0.3; default off)",
    )
    g.add_argument(
        "--ssr-scale",
        type=float,
        default=defaults.ssr_scale,
        help="SSR scale s (default 1 with --ssr-beta)",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The training config of the options; unset epochs, lr and batch size follow the
    dataset's recipe (:data:`geomrob.models.training.RECIPES`)."""
    recipe = {
        k: getattr(args, k) for k in ("epochs", "lr", "batch_size") if getattr(args, k) is not None
    }
    return TrainConfig.for_dataset(
        args.dataset,
        arch=args.arch,
        size=args.size,
        activation=args.activation,
        beta=args.beta,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        seed=args.seed,
        train_size=args.train_size,
        ssr_beta=getattr(args, "ssr_beta", None),
        ssr_scale=getattr(args, "ssr_scale", None),
        **recipe,
    )


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path("runs") / args.command


def _train(args: argparse.Namespace) -> Any:
    config = _train_config(args)
    t0 = time.perf_counter()
    result = train(
        config,
        run_dir=_out(args),
        data_root=args.data_root,
        device=args.device,
        progress=not args.quiet,
    )
    verb = "loaded from cache" if result.cached else f"trained in {time.perf_counter() - t0:.1f} s"
    log.info(
        "%s on %s: %s, test accuracy %.4f (%s)",
        config.arch,
        config.dataset,
        verb,
        result.test_accuracy,
        result.path,
    )
    return result


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model from a file (instead of training a zoo model)")
    g.add_argument(
        "--model",
        default=None,
        help="TorchScript file, geomrob checkpoint, or package.module:factory (see load_model)",
    )
    g.add_argument("--state-dict", default=None, help="weights for a --model factory spec")


def _model(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    """The classifier of a run: loaded with --model, else trained (cached) from the options.

    Returns the model in eval mode and a key naming it in cache hashes.
    """
    if getattr(args, "model", None):
        from .models import load_model

        model = load_model(args.model, state_dict=args.state_dict, map_location=args.device)
        stamp = [
            str(Path(p).resolve()) + f"@{Path(p).stat().st_mtime_ns}"
            for p in (args.model, args.state_dict)
            if p and Path(p).exists()
        ]
        return model, config_hash({"model": args.model, "files": stamp})
    result = _train(args)
    return result.model, result.config.key()


def _cached(out: Path, name: str, config: dict[str, Any], compute: Callable[[], dict]) -> dict:
    """Load ``out/cache/<name>-<hash(config)>.pt`` or compute, save atomically and return it."""
    path = out / "cache" / f"{name}-{config_hash(config)}.pt"
    if path.exists():
        log.info("reusing %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    value = compute()
    save_torch(value, path)
    return value


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a zoo model (cached by config; resumes after an interruption)",
        description="Train a zoo model. The result is cached under OUT/models/ by a hash of the "
        "config; an interrupted run resumes after its last finished epoch.",
    )
    _add_train_options(p, TrainConfig(dataset="mnist"))


def _run_train(args: argparse.Namespace) -> int:
    result = _train(args)
    out = _out(args)
    save_json(
        {"train": result.to_dict(), "versions": versions(), "seed": args.seed},
        out / "train.json",
    )
    print(
        f"{args.arch} on {args.dataset}: test accuracy {result.test_accuracy:.4f}, "
        f"train time {result.train_seconds:.1f} s, model in {result.path}"
    )
    return 0


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole pipeline on the embedded digits data",
        description="Run geomrob's pipeline on scikit-learn's embedded digits: train the default "
        "model and write results.json and figures to the run directory.",
    )
    p.add_argument("--figures", default=None, help="folder for the figures (default OUT/figures)")
    _add_train_options(p, TrainConfig())


def _run_demo(args: argparse.Namespace) -> int:
    from .attacks import deepfool
    from .curvature import boundary_points
    from .models.training import accuracy
    from .plotting import (
        cross_section_figure,
        curvature_profile_figure,
        curvature_spectrum_figure,
        fooling_vs_dim_figure,
        save_figure,
        training_figure,
    )
    from .sections import normal_section
    from .study import StudyConfig, subspace_study
    from .subspaces import principal_angles, random_subspace, sample_subspace

    t0 = time.perf_counter()
    out = _out(args)
    fig_dir = Path(args.figures) if args.figures else out / "figures"
    result = _train(args)
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    train_set = _data.load(args.dataset, split="train", root=args.data_root, size=args.size)
    model = result.model
    with torch.no_grad():
        pred = model(test.x[:16].to(args.device)).argmax(1).cpu()
    fig = training_figure(
        result.history,
        test.x[:16].numpy(),
        test.y[:16].tolist(),
        pred.tolist(),
        title=f"{args.arch} on {args.dataset}: test accuracy {result.test_accuracy:.3f}",
    )
    figures = {"training": save_figure(fig, fig_dir / "demo_training.png")}
    x_test = test.x.to(args.device)
    df = deepfool(model, x_test)
    stats = df.statistics(x_test, test.y)
    print(
        f"DeepFool on the {stats['n']} test images: success {stats['success_rate']:.3f}, "
        f"median ||r|| {stats['median_norm']:.4f}, mean ||r||/||x|| "
        f"{stats['mean_relative_norm']:.4f}"
    )

    # 001 Sec. 5 on the whole digits data: S_c from 100 training points, the UAP and S_f from
    # all training points, every rate and K_S on unseen test points.
    d = x_test[0].numel()
    gen = torch.Generator().manual_seed(args.seed)
    x_train = train_set.x[torch.randperm(len(train_set), generator=gen)].to(args.device)
    # 5 passes of the UAP algorithm instead of 10 keep the demo under 3 minutes (its rate
    # oscillates from pass to pass on digits; analyses/fooling_vs_dim.py runs 10).
    config = StudyConfig(
        ms=tuple(m for m in (1, 2, 5, 10, 20) if m <= d), uap_max_passes=5, seed=args.seed
    )
    study = subspace_study(
        model,
        x_train[:100],
        x_train,
        x_test,
        config,
        cache_dir=out / "cache" / "study",
        progress=not args.quiet,
    )
    summary = study.summary()
    prof = study.profile
    k = min(5, study.curved.m)
    figures["fooling_vs_dim"] = save_figure(
        fooling_vs_dim_figure(
            summary["ms"],
            {
                "S_c (curved)": (summary["curved_mean"], summary["curved_best"]),
                "S_f (normals)": (summary["normal_mean"], summary["normal_best"]),
                "random subspace": (summary["random_mean"], None),
            },
            {"UAP algorithm": study.uap_rate, "isotropic noise": study.noise_rate},
            title=f"random vectors of norm rho_rand/5 = {study.norm:.3g} ({study.mode})",
        ),
        fig_dir / "demo_fooling_vs_dim.png",
    )
    figures["curvature_profile"] = save_figure(
        curvature_profile_figure(
            summary["ms"],
            prof.mean.tolist(),
            prof.std.tolist(),
            prof.random_mean.tolist(),
            prof.random_std.tolist(),
            title=f"K_S on {int(prof.converged.sum())} unseen points ({study.mode})",
        ),
        fig_dir / "demo_curvature_profile.png",
    )
    figures["spectrum"] = save_figure(
        curvature_spectrum_figure(
            study.curved.values.tolist(), title="top eigenvalues of the averaged Hessian"
        ),
        fig_dir / "demo_spectrum.png",
    )
    # Normal sections through the first correctly classified, converged test image.
    pts_all = boundary_points(model, x_test[:20])
    ok = (pts_all.converged & (pts_all.label.cpu() == test.y[:20])).nonzero().flatten()
    sections, titles = [], []
    if len(ok):
        i = int(ok[0])
        pts = pts_all.select(torch.tensor([i]))
        directions = {
            "v = UAP": study.uap,
            "v = top S_c vector": study.curved.basis[0],
            "v random in S_c (m=5)": sample_subspace(study.curved.first(k), 1, 1.0, generator=1)[0],
            "v random": random_subspace(d, 1, generator=2, dtype=x_test.dtype).basis[0],
        }
        for title, v in directions.items():
            sections.append(normal_section(model, x_test[i : i + 1], v.to(x_test), points=pts))
            titles.append(title)
        figures["sections"] = save_figure(
            cross_section_figure(sections, titles=titles, title=f"normal sections, test image {i}"),
            fig_dir / "demo_sections.png",
        )
    cos = principal_angles(study.curved.first(k), study.normal.first(k)).tolist()
    seconds = time.perf_counter() - t0
    results = {
        "seed": args.seed,
        "versions": versions(),
        "train": result.to_dict(),
        "test_accuracy": accuracy(model, test.x, test.y),
        "deepfool": stats,
        "study": summary,
        "cosines_Sc_Sf": cos,
        "figures": {k_: str(v) for k_, v in figures.items()},
        "seconds": seconds,
    }
    path = save_json(results, out / "results.json")
    report = _demo_report(args, results, figures, out)
    print(f"demo: test accuracy {results['test_accuracy']:.4f}; results in {path}")
    print(f"  report: {report}")
    for name, fig_path in figures.items():
        print(f"  figure {name}: {fig_path}")
    print(f"  {seconds:.0f} s")
    return 0


def _demo_report(args: argparse.Namespace, results: dict, figures: dict, out: Path) -> Path:
    """``out/report.md``: the demo's numbers and figures in one page."""
    s = results["study"]
    df = results["deepfool"]
    lines = [
        f"# geomrob demo: {args.arch} on {args.dataset}",
        "",
        f"Test accuracy {results['test_accuracy']:.4f} (seed {args.seed}, "
        f"{results['seconds']:.0f} s for the whole demo).",
        "",
        "## DeepFool (minimal l2 perturbations, test images)",
        "",
        f"Success {df['success_rate']:.3f}, median ||r|| {df['median_norm']:.4f}, mean "
        f"||r||/||x|| {df['mean_relative_norm']:.4f}, mean iterations {df['mean_iterations']:.2f}.",
        "",
        "## Universal perturbations from subspaces (001 Sec. 5, Fig. 7)",
        "",
        f"S_c: top eigenvectors of the averaged boundary Hessian of {s['n_fit']} training points "
        f"({s['mode']} Hessian-vector products); S_f: top singular vectors of the DeepFool "
        f"normals of {s['n_uap']} training points. Random vectors of norm rho_rand/5 = "
        f"{s['norm']:.4g} (rho_rand = {s['rho_rand']:.4g}: isotropic noise of that norm fools "
        f"half of the test points), fooling rates on the {s['n_eval']} test points (mean and "
        "best of 10 vectors per m). The UAP algorithm fitted on the training points at the same "
        f"norm ({len(s['uap_history'])} passes) fools {s['uap_rate']:.3f}; isotropic noise of "
        f"that norm {s['noise_rate']:.3f}.",
        "",
        "| m | S_c mean | S_c best | S_f mean | S_f best | random subspace | K_S(S_c) | "
        "K_S(random) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, m in enumerate(s["ms"]):
        lines.append(
            f"| {m} | {s['curved_mean'][i]:.3f} | {s['curved_best'][i]:.3f} | "
            f"{s['normal_mean'][i]:.3f} | {s['normal_best'][i]:.3f} | {s['random_mean'][i]:.3f} "
            f"| {s['K_mean'][i]:.4f} | {s['K_random_mean'][i]:.4f} |"
        )
    cos = ", ".join(f"{c:.2f}" for c in results["cosines_Sc_Sf"])
    lines += ["", f"Principal-angle cosines between S_c and S_f (top 5): {cos}.", ""]
    for name, path in figures.items():
        rel = Path(path).resolve()
        try:
            rel = rel.relative_to(out.resolve())
        except ValueError:
            pass
        lines += [f"![{name}]({rel})", ""]
    path = out / "report.md"
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines)))
    return path


# --------------------------------------------------------------------------- fool
def _add_fool(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fool",
        parents=[common],
        help="DeepFool statistics and universal perturbations (UAP) of a model",
        description="DeepFool minimal perturbations on test images (mean/median ||r||, "
        "||r||/||x||, iterations, success), then universal perturbations (Moosavi-Dezfooli et "
        "al. 2017) fitted on training images at several norms xi and evaluated on held-out "
        "test images. Results and figures go to the run directory; DeepFool results and UAP "
        "passes are cached and resumed.",
    )
    g = p.add_argument_group("fooling")
    g.add_argument("--n", type=int, default=256, help="test images for DeepFool statistics")
    g.add_argument("--overshoot", type=float, default=0.02)
    g.add_argument("--max-iter", type=int, default=50)
    g.add_argument("--uap-n", type=int, default=1000, help="training images to fit the UAP on")
    g.add_argument("--eval-n", type=int, default=1000, help="held-out test images for rates")
    g.add_argument("--p", default="2", choices=("2", "inf"), help="norm of the UAP")
    g.add_argument("--xi", type=float, nargs="*", default=None, help="UAP norms (absolute)")
    g.add_argument(
        "--xi-rel",
        type=float,
        nargs="*",
        default=[1.0, 2.0, 4.0],
        help="UAP norms as multiples of the median DeepFool ||r|| (l2) or of its l-inf "
        "counterpart, used when --xi is not given (default 1 2 4)",
    )
    g.add_argument("--delta", type=float, default=0.2, help="UAP target fooling rate 1 - delta")
    g.add_argument("--max-passes", type=int, default=5)
    _add_model_options(p)
    _add_train_options(p, TrainConfig())


def _run_fool(args: argparse.Namespace) -> int:
    import math

    from .attacks import DeepFoolResult, deepfool, fooling_rate, universal_perturbation
    from .plotting import save_figure, uap_figure

    out = _out(args)
    model, model_key = _model(args)
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    train_set = _data.load(args.dataset, split="train", root=args.data_root, size=args.size)
    device = torch.device(args.device)
    n = min(args.n, len(test))
    x = test.x[:n].to(device)
    df_config = {
        "model": model_key,
        "data": [args.dataset, args.size, n],
        "overshoot": args.overshoot,
        "max_iter": args.max_iter,
    }

    def run_deepfool() -> dict:
        res = deepfool(model, x, overshoot=args.overshoot, max_iter=args.max_iter)
        return {k: v.cpu() for k, v in vars(res).items()}

    df = DeepFoolResult(**_cached(out, "deepfool", df_config, run_deepfool))
    stats = df.statistics(test.x[:n], test.y[:n])
    print(
        f"DeepFool on {n} test images: success {stats['success_rate']:.3f}, median ||r|| "
        f"{stats['median_norm']:.4f}, mean ||r||/||x|| {stats['mean_relative_norm']:.4f}, "
        f"mean iterations {stats['mean_iterations']:.2f}"
    )

    p = math.inf if args.p == "inf" else 2.0
    scale = stats["median_norm"] if p == 2.0 else stats["mean_linf"]
    xis = args.xi if args.xi else [round(r * scale, 4) for r in args.xi_rel]
    fit = train_set.subset(min(args.uap_n, len(train_set)), seed=args.seed).x.to(device)
    held = test.x[n : n + args.eval_n] if len(test) > n else test.x[: args.eval_n]
    held = held.to(device)
    uaps = []
    for xi in xis:
        state = (
            out
            / "cache"
            / (
                "uap-"
                + config_hash(
                    {
                        **df_config,
                        "xi": xi,
                        "p": args.p,
                        "delta": args.delta,
                        "max_passes": args.max_passes,
                        "uap_n": len(fit),
                        "seed": args.seed,
                    }
                )
                + ".pt"
            )
        )
        res = universal_perturbation(
            model,
            fit,
            xi=xi,
            p=p,
            delta=args.delta,
            max_passes=args.max_passes,
            overshoot=args.overshoot,
            max_iter=args.max_iter,
            generator=args.seed,
            state_path=state,
            progress=not args.quiet,
        )
        held_rate = fooling_rate(model, held, res.v)
        uaps.append(
            {
                "xi": xi,
                "fit_fooling_rate": res.fooling_rate,
                "history": res.history,
                "held_out_fooling_rate": held_rate,
                "passes": res.passes,
                "converged": res.converged,
                "v": res.v.cpu(),
            }
        )
        print(
            f"UAP p={args.p} xi={xi:.4g}: fooling rate {res.fooling_rate:.3f} on the "
            f"{len(fit)} fitting images, {held_rate:.3f} on {len(held)} held-out images"
        )
    fig = uap_figure(
        [u["xi"] for u in uaps],
        [u["held_out_fooling_rate"] for u in uaps],
        [u["v"].numpy() for u in uaps],
        held[:4].cpu().numpy(),
        title=f"UAP ({args.p}) on {args.dataset}",
    )
    fig_path = save_figure(fig, out / "figures" / "fool_uap.png")
    results = {
        "seed": args.seed,
        "versions": versions(),
        "model": model_key,
        "p": args.p,
        "deepfool": stats,
        "uap": [{k: v for k, v in u.items() if k != "v"} for u in uaps],
        "figures": {"uap": str(fig_path)},
    }
    save_torch({str(u["xi"]): u["v"] for u in uaps}, out / "uap_vectors.pt")
    path = save_json(results, out / "results.json")
    print(f"results in {path}; figure {fig_path}")
    return 0


# --------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "data",
        parents=[common],
        help="check and describe a dataset (sizes, checksums, class counts)",
    )
    p.add_argument("dataset", choices=_data.DATASETS)
    p.add_argument("--size", type=int, default=None)


def _run_data(args: argparse.Namespace) -> int:
    for split in ("train", "test"):
        ds = _data.load(args.dataset, split=split, root=args.data_root, size=args.size)
        counts = torch.bincount(ds.y, minlength=ds.num_classes).tolist()
        print(f"{ds.name} {split}: {len(ds)} images of shape {ds.input_shape}; per class {counts}")
    return 0


# --------------------------------------------------------------------------- curvature
#: ``--mode`` choices; "auto" is exact for smooth models, surrogate for piecewise-linear ones.
CURVATURE_MODES = ("auto", "exact", "finite_difference", "surrogate", "smoothed")


def _add_curvature(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "curvature",
        parents=[common],
        help="curved subspace S_c (averaged boundary Hessian) and the curvature profile K_S",
        description="Boundary points of --n training images, the top --m eigenpairs of their "
        "averaged boundary Hessian (the curved subspace S_c of Moosavi-Dezfooli et al. 2018, "
        "by Lanczos), then the average normal curvature K_S along the first m directions of "
        "S_c at the boundary points of --n-eval unseen test images, against random subspaces "
        "of the same dimension. results.json and figures go to the run directory; boundary "
        "points, eigenpairs and the profile are cached by config and reused.",
    )
    g = p.add_argument_group("curvature")
    g.add_argument("--n", type=int, default=100, help="training images for S_c (default 100)")
    g.add_argument("--m", type=int, default=20, help="dimension of S_c (default 20)")
    g.add_argument(
        "--mode",
        default="auto",
        choices=CURVATURE_MODES,
        help="Hessian-vector products: exact (smooth models), surrogate (ReLU -> "
        "Softplus(--surrogate-beta)), smoothed (Gaussian-smoothed Hessian, scale --sigma), "
        "finite_difference (step --h, d <= 4096); auto (default): exact for smooth models, "
        "surrogate for piecewise-linear (ReLU / max-pool) ones, whose exact Hessian is zero",
    )
    g.add_argument(
        "--surrogate-beta",
        type=float,
        default=10.0,
        help="Softplus sharpness of the surrogate mode (default 10)",
    )
    g.add_argument("--h", type=float, default=None, help="finite-difference step (0.1 ||r||)")
    g.add_argument("--sigma", type=float, default=None, help="smoothing scale (0.1 ||r||)")
    g.add_argument("--n-samples", type=int, default=None, help="Stein samples per point (64)")
    g.add_argument("--project", action="store_true", help="tangent projection P H P")
    g.add_argument("--normalize", action="store_true", help="divide H by ||grad F||")
    g.add_argument(
        "--dtype",
        default="float64",
        choices=("float32", "float64"),
        help="precision of the curvature computation (a float64 copy of the model by default)",
    )
    g.add_argument("--tol", type=float, default=1e-6, help="Lanczos relative residual tolerance")
    g.add_argument("--n-eval", type=int, default=100, help="unseen test images for K_S")
    g.add_argument("--n-dirs", type=int, default=32, help="random directions per subspace")
    g.add_argument("--n-random", type=int, default=4, help="random subspaces per m (baseline)")
    g.add_argument(
        "--ms",
        type=int,
        nargs="*",
        default=None,
        help="subspace dimensions of the profile (default 1, 2, 3, 5, 10, 20, 50, ... up to m)",
    )
    g.add_argument("--overshoot", type=float, default=0.02, help="DeepFool overshoot")
    g.add_argument("--max-iter", type=int, default=50, help="DeepFool iterations")
    g.add_argument("--chunk", type=int, default=None, help="points per batched pass")
    _add_model_options(p)
    _add_train_options(p, TrainConfig())


def _profile_ms(m: int, given: Sequence[int] | None) -> list[int]:
    if given:
        return sorted(set(given))
    steps = [1, 2, 3, 5]
    k = 10
    while k <= m:
        steps += [k, 2 * k, 5 * k]
        k *= 10
    return sorted({s for s in steps if s <= m} | {m})


def _run_curvature(args: argparse.Namespace) -> int:
    import copy
    import warnings

    from .curvature import BoundaryPoints, boundary_points
    from .models import is_piecewise_linear
    from .plotting import curvature_profile_figure, curvature_spectrum_figure, save_figure
    from .subspaces import Subspace, curvature_profile, curved_subspace

    t0 = time.perf_counter()
    out = _out(args)
    for name in ("n", "m", "n_eval", "n_dirs", "n_random"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}.")
    model, model_key = _model(args)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model = copy.deepcopy(model).to(dtype).eval()
    mode = args.mode
    if mode == "auto":
        mode = "surrogate" if is_piecewise_linear(model) else "exact"
    kw: dict[str, Any] = {}
    if mode == "surrogate":
        kw["beta"] = args.surrogate_beta
    for name in ("h", "sigma", "n_samples"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    train_set = _data.load(args.dataset, split="train", root=args.data_root, size=args.size)
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    device = torch.device(args.device)
    n = min(args.n, len(train_set))
    n_eval = min(args.n_eval, len(test))
    m = args.m
    x_fit = train_set.subset(n, seed=args.seed).x.to(device=device, dtype=dtype)
    x_eval = test.x[:n_eval].to(device=device, dtype=dtype)
    df_options = {"overshoot": args.overshoot, "max_iter": args.max_iter}

    def points_config(split: str, count: int) -> dict[str, Any]:
        return {
            "model": model_key,
            "data": [args.dataset, args.size, split, count, args.seed],
            "dtype": args.dtype,
            **df_options,
        }

    def points(split: str, x: torch.Tensor) -> BoundaryPoints:
        def compute() -> dict:
            bp = boundary_points(model, x, **df_options)
            return {k: v.cpu() for k, v in vars(bp).items()}

        cached = _cached(out, f"boundary-{split}", points_config(split, len(x)), compute)
        return BoundaryPoints(**{k: v.to(device) for k, v in cached.items()})

    fit_points = points("train", x_fit)
    eigen_config = {
        "points": points_config("train", n),
        "mode": mode,
        **kw,
        "project": args.project,
        "normalize": args.normalize,
        "m": m,
        "tol": args.tol,
        "seed": args.seed,
    }

    def eigenpairs() -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # excluded points: reported below
            s = curved_subspace(
                model,
                None,
                m,
                mode=mode,
                points=fit_points,
                project=args.project,
                normalize=args.normalize,
                chunk=args.chunk,
                tol=args.tol,
                generator=args.seed,
                progress=not args.quiet,
                **kw,
            )
        return {
            "basis": s.basis.cpu(),
            "values": s.values.cpu(),
            "residuals": s.residuals.cpu(),
            "excluded": s.excluded.cpu(),
            "n_points": s.n_points,
            "matvecs": s.matvecs,
            "ritz_converged": s.info["ritz_converged"],
        }

    t_eig = time.perf_counter()
    eig = _cached(out, "eigenpairs", eigen_config, eigenpairs)
    t_eig = time.perf_counter() - t_eig
    if len(eig["excluded"]):
        log.warning(
            "%d of %d training boundary points did not converge and were excluded from S_c",
            len(eig["excluded"]),
            n,
        )
    subspace = Subspace(
        basis=eig["basis"].to(device),
        values=eig["values"],
        kind="curved",
        residuals=eig["residuals"],
        mode=mode,
    )
    ms = [k for k in _profile_ms(m, args.ms) if 1 <= k <= m]
    if not ms:
        raise CLIError(f"--ms: no dimension in [1, m = {m}]; got {args.ms}.")
    eval_points = points("test", x_eval)
    profile_config = {
        "eigen": eigen_config,
        "points": points_config("test", n_eval),
        "ms": ms,
        "n_dirs": args.n_dirs,
        "n_random": args.n_random,
    }

    def profile() -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-converged points: NaN, counted
            prof = curvature_profile(
                model,
                eval_points,
                subspace,
                ms,
                n_dirs=args.n_dirs,
                mode=mode,
                generator=args.seed,
                chunk=args.chunk,
                n_random=args.n_random,
                **kw,
            )
        return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(prof).items()}

    t_prof = time.perf_counter()
    prof = _cached(out, "profile", profile_config, profile)
    t_prof = time.perf_counter() - t_prof
    fig_dir = out / "figures"
    title = f"{model_key} ({mode})"
    figures = {
        "spectrum": str(
            save_figure(
                curvature_spectrum_figure(eig["values"].tolist(), title=f"S_c spectrum, {title}"),
                fig_dir / "curvature_spectrum.png",
            )
        ),
        "profile": str(
            save_figure(
                curvature_profile_figure(
                    ms,
                    prof["mean"].tolist(),
                    prof["std"].tolist(),
                    prof["random_mean"].tolist(),
                    prof["random_std"].tolist(),
                    title=f"K_S on {int(prof['converged'].sum())} test points, {title}",
                ),
                fig_dir / "curvature_profile.png",
            )
        ),
    }
    results = {
        "seed": args.seed,
        "versions": versions(),
        "model": model_key,
        "mode": mode,
        "options": {
            **kw,
            "project": args.project,
            "normalize": args.normalize,
            "dtype": args.dtype,
            "tol": args.tol,
            "n_dirs": args.n_dirs,
            "n_random": args.n_random,
        },
        "train_points": {
            "n": n,
            "converged": eig["n_points"],
            "excluded": eig["excluded"].tolist(),
        },
        "eigenvalues": eig["values"].tolist(),
        "residuals": eig["residuals"].tolist(),
        "ritz_converged": eig["ritz_converged"],
        "matvecs": eig["matvecs"],
        "profile": {
            "curvature": "normalised by ||grad F(z)|| (mean, std); raw_* without",
            "ms": ms,
            "n_eval": n_eval,
            "n_converged": int(prof["converged"].sum()),
            **{
                k: prof[k].tolist()
                for k in (
                    "mean",
                    "std",
                    "raw_mean",
                    "raw_std",
                    "random_mean",
                    "random_std",
                    "random_raw_mean",
                    "random_raw_std",
                )
            },
        },
        "seconds": {
            "eigenpairs": t_eig,
            "profile": t_prof,
            "total": time.perf_counter() - t0,
        },
        "figures": figures,
    }
    path = save_json(results, out / "results.json")
    top = ", ".join(f"{v:.4g}" for v in eig["values"][:5].tolist())
    print(
        f"S_c ({mode}) from {eig['n_points']} of {n} training boundary points: top eigenvalues "
        f"{top}{' ...' if m > 5 else ''} ({eig['matvecs']} products)"
    )
    for k, mu, rm in zip(ms, prof["mean"].tolist(), prof["random_mean"].tolist(), strict=True):
        print(f"  K_S (normalised) m={k:<4d} S_c {mu:+.4g}   random {rm:+.4g}")
    print(f"results in {path}; figures {figures['spectrum']}, {figures['profile']}")
    return 0


# --------------------------------------------------------------------------- lipschitz
def _add_lipschitz(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "lipschitz",
        parents=[common],
        help="layerwise spectral Lipschitz bounds (Szegedy et al., Table 5) vs the data",
        description="Upper bound on the Lipschitz constant of the logits: one bound per layer "
        "(sigma_max of linear layers, power iteration for convolutions on the real input "
        "shape, BatchNorm, activations, pooling, residual blocks) and their product, against "
        "the empirical lower bound max ||J(x)||_2 over --n test images. Prints the table and "
        "writes results.json to the run directory.",
    )
    g = p.add_argument_group("lipschitz")
    g.add_argument("--n", type=int, default=256, help="test images for the empirical bound")
    g.add_argument("--tol", type=float, default=1e-6, help="power-iteration relative residual")
    g.add_argument("--max-iter", type=int, default=2000, help="power iterations per layer")
    g.add_argument(
        "--jacobian-batch-size",
        type=int,
        default=None,
        help="points per batched Jacobian pass of the empirical bound (default: all)",
    )
    _add_model_options(p)
    _add_train_options(p, TrainConfig())


def _run_lipschitz(args: argparse.Namespace) -> int:
    import warnings

    from .lipschitz import empirical_lipschitz, lipschitz_bounds

    t0 = time.perf_counter()
    if args.n < 1:
        raise CLIError(f"--n must be >= 1; got {args.n}.")
    out = _out(args)
    model, model_key = _model(args)
    model = model.eval()
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    n = min(args.n, len(test))
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
    x = test.x[:n].to(device=args.device, dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report = lipschitz_bounds(
            model, test.input_shape, tol=args.tol, max_iter=args.max_iter, generator=args.seed
        )
        emp = empirical_lipschitz(
            model,
            x,
            tol=args.tol if dtype == torch.float64 else max(args.tol, 1e-4),
            batch_size=args.jacobian_batch_size,
            generator=args.seed,
        )
    for w in caught:
        log.warning("%s", w.message)
    ratio = report.product / emp.max if emp.max > 0 else float("inf")
    print(report.table())
    print(
        f"upper bound (product of the layer bounds): {report.product:.6g}\n"
        f"empirical lower bound max ||J(x)||_2 over {n} test images: {emp.max:.6g} "
        f"(mean {float(emp.values.mean()):.4g}, {int(emp.converged.sum())}/{n} converged)\n"
        f"ratio upper / lower: {ratio:.4g}"
    )
    results = {
        "seed": args.seed,
        "versions": versions(),
        "model": model_key,
        "input_shape": list(test.input_shape),
        "bounds": report.to_dict(),
        "product": report.product,
        "bounds_converged": report.converged,
        "empirical": {
            "n": n,
            "max": emp.max,
            "argmax": emp.argmax,
            "mean": float(emp.values.mean()),
            "median": float(emp.values.median()),
            "values": emp.values.tolist(),
            "iterations": emp.iterations.tolist(),
            "converged": int(emp.converged.sum()),
            "tol": emp.tol,
        },
        "ratio": ratio,
        "seconds": time.perf_counter() - t0,
    }
    path = save_json(results, out / "results.json")
    print(f"results in {path}")
    return 0


# --------------------------------------------------------------------------- upi / attribution
#: The four metrics of Wang et al. (NeurIPS 2020, 002 Sec. 5, Supp. C1), in 002's order.
def _add_upi(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "upi",
        parents=[common],
        help="universal perturbation for interpretation (UPI-Grad / UPI-PCA) of a model",
        description="Fit a universal perturbation for interpretation (Ehsani Oskouie and "
        "Farnia: UPI-Grad, Alg. 1, or UPI-PCA, Alg. 2, with gradient / FGM / PGD rows) on "
        "training images, scale it to norm eps, and evaluate the dissimilarity of the maps "
        "(their Eq. 9) and the label-change rate on held-out test images, beside universal "
        "random noise of the same norm. Writes results.json, upi.pt and figures/upi.png, "
        "figures/upi_maps.png to the run directory.",
    )
    g = p.add_argument_group("UPI")
    g.add_argument("--method", default="simple", choices=("simple", "ig"), help="map (000)")
    g.add_argument("--algorithm", default="pca", choices=("grad", "pca"))
    g.add_argument("--variant", default="grad", choices=("grad", "fgm", "pgd"), help="UPI-PCA")
    g.add_argument("--eps", type=float, default=100 / 256, help="radius (default 100/256)")
    g.add_argument("--p", default="2", choices=("2", "inf"), help="norm of the ball")
    g.add_argument("--n-fit", type=int, default=256, help="training images to fit on")
    g.add_argument("--n-eval", type=int, default=256, help="held-out test images")
    g.add_argument(
        "--upi-epochs",
        type=int,
        default=None,
        help="passes of the UPI algorithm (default 10 for UPI-Grad; 100 for UPI-PCA, whose "
        "passes run over precomputed rows and cost no gradients)",
    )
    g.add_argument("--upi-batch-size", type=int, default=32)
    g.add_argument("--pgd-steps", type=int, default=20, help="per-image PGD rows (variant pgd)")
    g.add_argument("--ig-steps", type=int, default=20, help="Riemann steps of IG")
    g.add_argument(
        "--surrogate-beta",
        type=float,
        default=10.0,
        help="softplus beta of the smooth copy the gradients go through (default 10)",
    )
    _add_model_options(p)
    _add_train_options(p, TrainConfig(dataset="digits", arch="cnn2"))


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not value > 0:
            raise CLIError(f"--{name.replace('_', '-')} must be > 0; got {value}.")


def _attribution_method(args: argparse.Namespace, name: str, d: int) -> Any:
    from .interpret import IntegratedGradients, Saliency, SmoothGrad, UniGrad

    if name in ("simple", "saliency"):
        return Saliency(multiply_by_inputs=getattr(args, "times_input", False))
    if name == "ig":
        return IntegratedGradients(steps=args.ig_steps)
    if name == "smoothgrad":
        return SmoothGrad(
            sigma=args.sg_sigma, n_samples=args.samples, multiply_by_inputs=args.times_input
        )
    radius = args.ug_radius if args.ug_radius is not None else (4 / 255) * (d / 3) ** 0.5
    return UniGrad(radius=radius, n_samples=args.samples, multiply_by_inputs=args.times_input)


def _run_upi(args: argparse.Namespace) -> int:
    import math

    from .interpret import attribute, random_noise, universal_dissimilarity, upi_grad, upi_pca
    from .plotting import attribution_maps_figure, save_figure, upi_figure

    if args.upi_epochs is None:
        args.upi_epochs = 10 if args.algorithm == "grad" else 100
    _positive(args, "eps", "n_fit", "n_eval", "upi_epochs", "upi_batch_size", "pgd_steps")
    _positive(args, "ig_steps", "surrogate_beta")
    t0 = time.perf_counter()
    out = _out(args)
    model, model_key = _model(args)
    model = model.eval()
    train_set = _data.load(args.dataset, split="train", root=args.data_root, size=args.size)
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    fit = train_set.subset(min(args.n_fit, len(train_set)), seed=args.seed).x.to(args.device)
    held = test.subset(min(args.n_eval, len(test)), seed=args.seed).x.to(args.device)
    method = _attribution_method(args, args.method, held[0].numel())
    p = math.inf if args.p == "inf" else 2.0
    common = dict(
        eps=args.eps,
        method=method,
        p=p,
        epochs=args.upi_epochs,
        batch_size=args.upi_batch_size,
        surrogate=args.surrogate_beta,
        generator=args.seed,
        progress=not args.quiet,
    )
    if args.algorithm == "grad":
        res = upi_grad(model, fit, **common)
        name = "UPI-Grad"
    else:
        res = upi_pca(model, fit, variant=args.variant, steps=args.pgd_steps, **common)
        name = "UPI-PCA" + ("" if args.variant == "grad" else f"-{args.variant.upper()}")
    fitted = res.norm
    delta = res.delta
    scale = float(delta.abs().max()) if p == math.inf else float(delta.norm())
    if not scale > 0:
        raise CLIError(f"{name} returned a zero perturbation; try more --upi-epochs.")
    delta = delta * (args.eps / scale)  # 000 Sec. 4 scales every perturbation to norm eps
    ev = universal_dissimilarity(model, held, delta, method, p=p, generator=args.seed)
    noise = random_noise(held, eps=args.eps, p=p, generator=args.seed)
    base = universal_dissimilarity(model, held, noise, method, p=p, generator=args.seed)
    print(
        f"{name} ({args.method}, eps {args.eps:.4g}, l{args.p}) fitted on {len(fit)} training "
        f"images (norm reached {fitted:.4g}"
        + (
            ""
            if res.optimality is None
            else f", power-method optimality {res.optimality:.3f} of the top singular value"
        )
        + f", scaled to eps): on {len(held)} held-out images mean "
        f"dissimilarity {ev.mean:.4f} (median {ev.median:.4f}), label change rate "
        f"{ev.label_change_rate:.4f}; universal random noise: {base.mean:.4f}, "
        f"{base.label_change_rate:.4f}"
    )
    figs = out / "figures"
    shape = tuple(held.shape[1:])
    fig_upi = save_figure(
        upi_figure(
            [[delta.detach().cpu().numpy().reshape(shape)]],
            row_labels=[args.method],
            col_labels=[name],
            notes=[[f"D = {ev.mean:.3f}"]],
        ),
        figs / "upi.png",
    )
    shown = held[:4]
    before = attribute(model, shown, method, normalize="l1", generator=args.seed).attribution
    after = attribute(model, shown + delta, method, normalize="l1", generator=args.seed).attribution
    fig_maps = save_figure(
        attribution_maps_figure(
            shown.cpu().numpy(),
            {args.method: before.detach().cpu().numpy()},
            {args.method: after.detach().cpu().numpy()},
            perturbed=(shown + delta).cpu().numpy(),
            title=f"{name}: maps before / after",
        ),
        figs / "upi_maps.png",
    )
    torch.save(delta.detach().cpu(), out / "upi.pt")
    results = {
        "seed": args.seed,
        "versions": versions(),
        "model": model_key,
        "algorithm": name,
        "method": args.method,
        "eps": args.eps,
        "p": args.p,
        "n_fit": len(fit),
        "n_eval": len(held),
        "fitted_norm": fitted,
        "history": res.history.tolist(),
        "dissimilarity_mean": ev.mean,
        "dissimilarity_median": ev.median,
        "label_change_rate": ev.label_change_rate,
        "random_universal": {"mean": base.mean, "label_change_rate": base.label_change_rate},
        "figures": {"upi": str(fig_upi), "maps": str(fig_maps)},
        "seconds": time.perf_counter() - t0,
    }
    path = save_json(results, out / "results.json")
    print(f"results in {path}; figures {fig_upi}, {fig_maps}")
    return 0


def _add_attribution(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "attribution",
        parents=[common],
        help="attribution maps of a few images under one attack, with 002's four metrics",
        description="Maps (saliency, integrated gradients, SmoothGrad, Uniform Gradient) of a "
        "few test images before and after one attack on them (top-k, manipulate, mass-center "
        "or PGD on the dissimilarity; the label is kept, the gradients go through a softplus "
        "surrogate), compared with the four metrics of Wang et al. (NeurIPS 2020): top-k "
        "intersection, Spearman's correlation, mass-center dislocation, cosine distance. "
        "Writes results.json and figures/attribution.png to the run directory.",
    )
    g = p.add_argument_group("attribution")
    g.add_argument(
        "--method", default="saliency", choices=("saliency", "ig", "smoothgrad", "unigrad")
    )
    g.add_argument("--attack", default="topk", choices=("topk", "manipulate", "mass-center", "pgd"))
    g.add_argument("--eps", type=float, default=8 / 255, help="radius (default 8/255)")
    g.add_argument("--p", default="inf", choices=("2", "inf"), help="norm of the ball")
    g.add_argument("--n", type=int, default=8, help="test images")
    g.add_argument("--steps", type=int, default=50, help="attack iterations (002: 50)")
    g.add_argument("--k", type=int, default=None, help="top-k pixels (default ~2%% of them)")
    g.add_argument("--samples", type=int, default=20, help="SmoothGrad / UniGrad samples")
    g.add_argument("--ig-steps", type=int, default=20)
    g.add_argument("--sg-sigma", type=float, default=0.1, help="SmoothGrad noise")
    g.add_argument(
        "--ug-radius", type=float, default=None, help="UniGrad l2 radius (default (4/255)sqrt(d/3))"
    )
    g.add_argument(
        "--times-input",
        action="store_true",
        help="gradient x input maps for saliency, SmoothGrad, UniGrad (002 Supp. C1)",
    )
    g.add_argument("--surrogate-beta", type=float, default=10.0, help="softplus beta")
    _add_model_options(p)
    _add_train_options(p, TrainConfig(dataset="digits", arch="cnn2"))


def _run_attribution(args: argparse.Namespace) -> int:
    import math

    from .interpret import (
        attribute,
        manipulate_attack,
        mass_center_attack,
        pgd_attack,
        topk_attack,
    )
    from .plotting import attribution_maps_figure, save_figure

    _positive(args, "eps", "n", "steps", "samples", "ig_steps", "sg_sigma", "surrogate_beta")
    t0 = time.perf_counter()
    out = _out(args)
    model, model_key = _model(args)
    model = model.eval()
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
    x = test.subset(min(args.n, len(test)), seed=args.seed).x.to(args.device)
    if x.ndim != 4:
        raise CLIError(f"`attribution` needs images (n, C, H, W); got {tuple(x.shape)}.")
    method = _attribution_method(args, args.method, x[0].numel())
    h, w = x.shape[-2:]
    k = args.k if args.k is not None else max(1, round(20 / 1024 * h * w))
    if not 1 <= k <= h * w:
        raise CLIError(f"--k must be between 1 and the {h * w} pixels; got {k}.")
    p = math.inf if args.p == "inf" else 2.0
    with torch.no_grad():
        label = model(x).argmax(1)
    clean = attribute(model, x, method, target=label, generator=args.seed).attribution
    common = dict(
        eps=args.eps,
        p=p,
        bounds=(0.0, 1.0),
        surrogate=args.surrogate_beta,
        generator=args.seed,
        progress=not args.quiet,
    )
    if args.attack == "topk":
        res = topk_attack(model, x, method, k=k, steps=args.steps, **common)
    elif args.attack == "manipulate":
        target = clean.roll(1, 0)  # the map of another image (Dombrowski et al.)
        res = manipulate_attack(model, x, target, method, steps=args.steps, **common)
    elif args.attack == "mass-center":
        res = mass_center_attack(model, x, method, steps=args.steps, **common)
    else:
        res = pgd_attack(model, x, method, steps=args.steps, **common)
    after = attribute(model, res.x_adv, method, target=label, generator=args.seed).attribution
    from .interpret.metrics import robustness_metrics

    values = robustness_metrics(clean, after, k)
    means = {q: float(torch.nanmean(v.double())) for q, v in values.items()}
    print(
        f"{args.attack} attack (eps {args.eps:.4g}, l{args.p}, {args.steps} steps) on "
        f"{args.method} maps of {len(x)} test images, label kept "
        f"{int(res.label_kept.sum())}/{len(x)}: "
        + ", ".join(f"{q} {v:.4f}" for q, v in means.items())
    )
    fig = save_figure(
        attribution_maps_figure(
            x[:4].cpu().numpy(),
            {args.method: clean[:4].detach().cpu().numpy()},
            {args.method: after[:4].detach().cpu().numpy()},
            perturbed=res.x_adv[:4].cpu().numpy(),
            title=f"{args.attack} attack on {args.method}, eps = {args.eps:.4g} (l{args.p})",
        ),
        out / "figures" / "attribution.png",
    )
    results = {
        "seed": args.seed,
        "versions": versions(),
        "model": model_key,
        "method": args.method,
        "attack": args.attack,
        "eps": args.eps,
        "p": args.p,
        "k": k,
        "n": len(x),
        "label_kept": int(res.label_kept.sum()),
        "metrics": means,
        "per_image": {q: v.tolist() for q, v in values.items()},
        "figures": {"attribution": str(fig)},
        "seconds": time.perf_counter() - t0,
    }
    path = save_json(results, out / "results.json")
    print(f"results in {path}; figure {fig}")
    return 0


_SUBCOMMANDS = {
    "demo": (_add_demo, _run_demo),
    "train": (_add_train, _run_train),
    "fool": (_add_fool, _run_fool),
    "data": (_add_data, _run_data),
    "curvature": (_add_curvature, _run_curvature),
    "lipschitz": (_add_lipschitz, _run_lipschitz),
    "upi": (_add_upi, _run_upi),
    "attribution": (_add_attribution, _run_attribution),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``geomrob`` command."""
    parser = argparse.ArgumentParser(
        prog="geomrob",
        description="Geometry of classifiers' decision boundaries and universal perturbations.",
    )
    parser.add_argument("--version", action="version", version=f"geomrob {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_parser()
    for add, _ in _SUBCOMMANDS.values():
        add(sub, common)
    return parser


def configure_logging(quiet: bool) -> None:
    """The log format of the command line and the analyses: time, logger, message on stderr;
    warnings only when ``quiet``."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geomrob`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.quiet)
    try:
        torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    try:
        return _SUBCOMMANDS[args.command][1](args)
    except (CLIError, ValueError, TypeError, FileNotFoundError) as exc:
        # User errors (bad option values, missing data) in one line, no traceback.
        print(f"geomrob {args.command}: error: {exc}", file=sys.stderr)
        return 2
