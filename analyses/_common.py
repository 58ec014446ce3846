"""Shared plumbing of the analysis scripts: flags, models, data, saving, plot style.

Every script computes with ``geomrob``, saves its raw numbers with config, seed and versions
(``<name>.json`` and ``<name>.npz`` in ``--out``), then plots from the saved file.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python analyses/x.py` from a checkout
    sys.path.insert(0, str(REPO))

from geomrob import data as gdata  # noqa: E402
from geomrob._io import atomic_write, load_json, save_json  # noqa: E402
from geomrob.cli import configure_logging, versions  # noqa: E402
from geomrob.curvature.hvp import MODES  # noqa: E402
from geomrob.models import ARCHITECTURES, TrainConfig, train  # noqa: E402
from geomrob.study import StudyConfig, StudyResult, subspace_study  # noqa: E402

log = logging.getLogger("analyses")

QUICK = {"epochs": 2, "train_size": 500}


def parser(description: str, *, dataset: str = "digits", n: int = 100) -> argparse.ArgumentParser:
    """Flags every analysis takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default=dataset, choices=gdata.DATASETS)
    p.add_argument("--size", type=int, default=None, help="resize images to SIZE x SIZE")
    p.add_argument("--n", type=int, default=n, help="number of images")
    p.add_argument("--out", default="figures", help="folder for results and figures")
    p.add_argument("--run-dir", default="runs/analyses", help="cache of trained models")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny models and data, for CI")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--plot-only", action="store_true", help="re-plot from the saved results")
    return p


def setup(args: argparse.Namespace) -> None:
    """Logging as on the command line (``--quiet``: warnings only)."""
    configure_logging(args.quiet)


def model(args: argparse.Namespace, arch: str, **changes: Any) -> torch.nn.Module:
    """A trained zoo model for ``args.dataset`` (cached in ``args.run_dir``)."""
    recipe = dict(QUICK) if args.quick else {}
    recipe.update(changes)
    config = TrainConfig.for_dataset(
        args.dataset, arch=arch, size=args.size, seed=args.seed, **recipe
    )
    res = train(
        config,
        run_dir=args.run_dir,
        data_root=args.data_root,
        device=args.device,
        progress=not args.quiet,
    )
    log.info("%s: test accuracy %.4f (%s)", arch, res.test_accuracy, res.path)
    res.model.test_accuracy = res.test_accuracy  # type: ignore[attr-defined]
    return res.model


def dataset(args: argparse.Namespace, split: str) -> gdata.Dataset:
    """The dataset split of the run."""
    return gdata.load(args.dataset, split=split, root=args.data_root, size=args.size)


def save(
    name: str,
    args: argparse.Namespace,
    results: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``<out>/<name>.json`` (results, config, seed, versions) and ``<name>.npz``."""
    out = Path(args.out)
    record = {
        "config": {k: v for k, v in vars(args).items()},
        "seed": args.seed,
        "versions": versions(),
        "results": results,
    }
    if arrays:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        atomic_write(out / f"{name}.npz", write)
    return save_json(record, out / f"{name}.json")


def load(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read back what :func:`save` wrote."""
    out = Path(args.out)
    record = load_json(out / f"{name}.json")
    npz = out / f"{name}.npz"
    arrays = dict(np.load(npz)) if npz.exists() else {}
    return record, arrays


def finite_or_none(value: float) -> float | None:
    """``None`` for NaN / inf (JSON has no NaN), else the float.

    Args:
        value: a number.

    Returns:
        The number or ``None``.
    """
    value = float(value)
    return value if math.isfinite(value) else None


def check_positive_flags(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """``p.error`` unless every named flag is ``>= 1`` (``None``: not given, accepted).

    Args:
        p: the parser (its ``error`` exits with a usage message).
        args: the parsed flags.
        *names: attribute names of integer flags.
    """
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {value}.")


# ------------------------------------------------------------------------ the study of 001
#: The sizes of the study when a flag is not given: 001's (``--n`` = 100 fitting points of
#: S_c, >= 2000 training points of the UAP and S_f, capped at the split) ...
STUDY_SIZES = {"n": 100, "n_uap": 2000, "n_eval": 1000}
#: ... and with ``--quick``.
QUICK_SIZES = {"n": 20, "n_uap": 200, "n_eval": 100}
#: ``--quick`` trains the study's models longer than :data:`QUICK`'s 2 epochs: after 2 epochs
#: isotropic noise cannot fool half of the points, which leaves rho_rand undefined.
QUICK_EPOCHS = 10
#: ``--quick``: a smaller :class:`~geomrob.study.StudyConfig` (``ms``, ``n_vectors`` and
#: ``n_curvature`` only where their flags are not given).
QUICK_STUDY: dict[str, Any] = {
    "ms": (1, 2, 5, 10),
    "n_vectors": 4,
    "n_curvature": 20,
    "n_dirs": 8,
    "n_random": 2,
    "uap_max_passes": 2,
}
#: Flags of the study whose default (``None``) is resolved by :func:`fill_study_defaults`.
_DEFAULTED = ("n", "n_uap", "n_eval", "ms", "n_vectors", "n_curvature")


@dataclass
class Study:
    """A trained model, its :class:`~geomrob.study.StudyResult` and the unseen points used.

    Attributes:
        arch: the zoo architecture.
        model: the trained model (eval mode).
        result: the study.
        x_eval: ``(M, *input_shape)`` the unseen test images of every rate.
        test_accuracy: the model's test accuracy.
    """

    arch: str
    model: torch.nn.Module
    result: StudyResult
    x_eval: torch.Tensor
    test_accuracy: float


def add_study_options(p: argparse.ArgumentParser, *, arch: str = "lenet") -> None:
    """The flags of the subspace study of 001 (:class:`~geomrob.study.StudyConfig`).

    ``--n`` of :func:`parser` becomes the number of fitting points of S_c. The sizes and
    ``--ms``, ``--n-vectors``, ``--n-curvature`` default to ``None``: 001's settings, or the
    small ones of ``--quick`` (:func:`fill_study_defaults`).

    Args:
        p: the parser of :func:`parser`.
        arch: the default ``--arch``.
    """
    g = p.add_argument_group("subspace study (001 Sec. 5)")
    g.add_argument("--arch", default=arch, choices=ARCHITECTURES)
    g.add_argument(
        "--activation",
        default="relu",
        help="activation of the trained models (e.g. softplus, for exact Hessians)",
    )
    g.add_argument(
        "--mode",
        default=None,
        choices=MODES,
        help="Hessian-vector products (default: exact for smooth nets, finite_difference for "
        "ReLU / max-pool nets)",
    )
    g.add_argument(
        "--h", type=float, default=None, help="finite-difference step (default 0.1||r||)"
    )
    g.add_argument("--h-scale", type=float, default=None, help="finite-difference step / ||r||")
    g.add_argument(
        "--surrogate-beta",
        type=float,
        default=None,
        help="softplus sharpness of the surrogate (--mode surrogate)",
    )
    g.add_argument("--sigma", type=float, default=None, help="smoothing scale (--mode smoothed)")
    g.add_argument("--sigma-scale", type=float, default=None, help="smoothing scale / ||r||")
    g.add_argument("--project", action="store_true", help="tangent-projected Hessians")
    g.add_argument("--normalize", action="store_true", help="divide by ||grad F||")
    g.add_argument("--which", default="LA", choices=("LA", "SA"))
    g.add_argument(
        "--ms", type=int, nargs="+", default=None, help="subspace dimensions (001: 1 2 5 10 20 50)"
    )
    g.add_argument(
        "--n-uap",
        type=int,
        default=None,
        help="training points of the UAP algorithm and of S_f (001: >= 2000; capped at the "
        "training split)",
    )
    g.add_argument(
        "--n-eval",
        type=int,
        default=None,
        help="unseen test points of the rates (default 1000; capped at the test split)",
    )
    g.add_argument(
        "--n-curvature", type=int, default=None, help="unseen points of K_S (default 200)"
    )
    g.add_argument("--n-vectors", type=int, default=None, help="random vectors per m (default 10)")
    p.set_defaults(n=None)


def fill_study_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Set the study flags left at ``None`` to 001's settings (``--quick``: the small ones).

    Idempotent; changes ``args`` in place, so that the saved config shows the values used.

    Args:
        args: flags of :func:`add_study_options`.

    Returns:
        ``args``.
    """
    paper = {**STUDY_SIZES, "ms": StudyConfig.ms, "n_vectors": StudyConfig.n_vectors}
    paper["n_curvature"] = StudyConfig.n_curvature
    quick = {**QUICK_SIZES, **QUICK_STUDY}
    for name in _DEFAULTED:
        if getattr(args, name, None) is None:
            value = (quick if args.quick else paper)[name]
            setattr(args, name, list(value) if name == "ms" else value)
    return args


def parse_study_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, check the study flags (``p.error`` on a bad value) and fill their defaults.

    Args:
        p: a parser with :func:`add_study_options`.
        argv: the command line (``None``: ``sys.argv[1:]``).

    Returns:
        The flags, with :func:`fill_study_defaults` applied.
    """
    args = p.parse_args(argv)
    check_positive_flags(p, args, "n", "n_uap", "n_eval", "n_vectors", "n_curvature")
    if args.ms is not None:
        if min(args.ms) < 1 or list(args.ms) != sorted(set(args.ms)):
            p.error(f"--ms must be increasing distinct dimensions >= 1; got {args.ms}.")
    for name in ("h", "h_scale", "surrogate_beta", "sigma", "sigma_scale"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0; got {value}.")
    for name in ("h", "sigma"):
        if getattr(args, name) is not None and getattr(args, f"{name}_scale") is not None:
            p.error(f"give --{name} or --{name}-scale, not both.")
    return fill_study_defaults(args)


def study_config(args: argparse.Namespace, d: int) -> StudyConfig:
    """The :class:`~geomrob.study.StudyConfig` of the flags (``--quick``: a smaller one).

    ``--ms`` above the input dimension ``d`` are left out (with a warning; ``(1,)`` if none
    is left).

    Args:
        args: flags of :func:`add_study_options` (``None`` ones are filled first).
        d: the input dimension.

    Returns:
        The config.
    """
    fill_study_defaults(args)
    ms = tuple(m for m in args.ms if m <= d) or (1,)
    if len(ms) < len(args.ms):
        log.warning("--ms above the input dimension %d left out: using %s", d, ms)
    extra = {k: QUICK_STUDY[k] for k in ("n_dirs", "n_random", "uap_max_passes")}
    return StudyConfig(
        ms=ms,
        mode=args.mode,
        h=args.h,
        h_scale=args.h_scale,
        beta=args.surrogate_beta,
        sigma=args.sigma,
        sigma_scale=args.sigma_scale,
        project=args.project,
        normalize=args.normalize,
        which=args.which,
        n_vectors=args.n_vectors,
        n_curvature=args.n_curvature,
        seed=args.seed,
        **(extra if args.quick else {}),
    )


def study_points(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fitting, UAP / S_f and unseen points of the study (the same for every script).

    One generator seeded by ``--seed`` draws a permutation of the training split, then one of
    the test split. The fitting points of S_c are the first ``--n`` of the first (001: 100),
    the UAP / S_f points its first ``--n-uap`` (001: >= 2000), the unseen points the first
    ``--n-eval`` of the second; each capped at its split.

    Args:
        args: flags of :func:`add_study_options` (``None`` ones are filled first).

    Returns:
        ``(x_fit, x_uap, x_eval)`` on ``--device``.
    """
    fill_study_defaults(args)
    train_set, test_set = dataset(args, "train"), dataset(args, "test")
    gen = torch.Generator().manual_seed(args.seed)
    tr = torch.randperm(len(train_set), generator=gen)
    te = torch.randperm(len(test_set), generator=gen)
    x_fit = train_set.x[tr[: args.n]].to(args.device)
    x_uap = train_set.x[tr[: args.n_uap]].to(args.device)
    x_eval = test_set.x[te[: args.n_eval]].to(args.device)
    return x_fit, x_uap, x_eval


def study(
    args: argparse.Namespace, arch: str | None = None, *, model_seed: int | None = None
) -> Study:
    """Train (or load) a model and run :func:`~geomrob.study.subspace_study` on it (cached).

    The points are those of :func:`study_points` and the config that of :func:`study_config`,
    so that the scripts of 001 share one study per network: every stage is cached in
    ``<run-dir>/study`` by a hash of the weights, points and settings.

    Args:
        args: flags of :func:`add_study_options` (``None`` ones are filled first).
        arch: the zoo architecture (default ``--arch``).
        model_seed: the training seed (default ``--seed``); the study's own draws use
            ``--seed`` whatever the model.

    Returns:
        :class:`Study`.
    """
    fill_study_defaults(args)
    arch = args.arch if arch is None else arch
    seed = args.seed if model_seed is None else model_seed
    margs = argparse.Namespace(**{**vars(args), "seed": seed})
    changes = {"epochs": QUICK_EPOCHS} if args.quick else {}
    net = model(margs, arch, activation=args.activation, **changes).eval()
    x_fit, x_uap, x_eval = study_points(args)
    config = study_config(args, x_fit[0].numel())
    log.info(
        "study: %s on %s, n_fit %d, n_uap %d, n_eval %d, %s",
        arch,
        args.dataset,
        len(x_fit),
        len(x_uap),
        len(x_eval),
        config,
    )
    result = subspace_study(
        net,
        x_fit,
        x_uap,
        x_eval,
        config,
        cache_dir=Path(args.run_dir) / "study",
        progress=not args.quiet,
    )
    log.info(
        "%s study: rho_rand %.4f, norm %.4f, seconds %s",
        arch,
        result.rho_rand,
        result.norm,
        result.seconds,
    )
    return Study(arch, net, result, x_eval, float(getattr(net, "test_accuracy", math.nan)))


def stem(args: argparse.Namespace, script: str, *archs: str) -> str:
    """``<script>_<dataset>_<archs>[_<activation>][_<mode>][_proj][_SA]``: an output's stem.

    Args:
        args: the parsed flags.
        script: the script's name.
        *archs: its architectures (default ``--arch``).

    Returns:
        The stem; the suffixes only for flags away from their defaults (ReLU, the automatic
        mode, raw averaging, ``LA``).

    Example:
        >>> ns = argparse.Namespace(dataset="digits", arch="lenet", activation="softplus")
        >>> stem(ns, "fooling_vs_dim")
        'fooling_vs_dim_digits_lenet_softplus'
    """
    parts = [script, args.dataset, *(archs or (args.arch,))]
    if getattr(args, "activation", "relu") != "relu":
        parts.append(args.activation.replace("(", "").replace(")", ""))
    if getattr(args, "mode", None):
        parts.append(args.mode)
    if getattr(args, "project", False) or getattr(args, "normalize", False):
        parts.append("proj")
    if getattr(args, "which", "LA") == "SA":
        parts.append("SA")
    return "_".join(parts)
