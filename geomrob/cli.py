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
from ._io import save_json
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
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--momentum", type=float, default=defaults.momentum)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--epochs", type=int, default=defaults.epochs)
    g.add_argument("--batch-size", type=int, default=defaults.batch_size)
    g.add_argument("--train-size", type=int, default=defaults.train_size)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        arch=args.arch,
        dataset=args.dataset,
        size=args.size,
        activation=args.activation,
        beta=args.beta,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        train_size=args.train_size,
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


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a zoo model (cached by config; resumes after an interruption)",
        description="Train a zoo model. The result is cached under OUT/models/ by a hash of the "
        "config; an interrupted run resumes after its last finished epoch.",
    )
    _add_train_options(p, TrainConfig(dataset="mnist", epochs=5, batch_size=128))


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
    from .models.training import accuracy
    from .plotting import save_figure, training_figure

    t0 = time.perf_counter()
    out = _out(args)
    fig_dir = Path(args.figures) if args.figures else out / "figures"
    result = _train(args)
    test = _data.load(args.dataset, split="test", root=args.data_root, size=args.size)
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
    figures = {"training": str(save_figure(fig, fig_dir / "demo_training.png"))}
    results = {
        "seed": args.seed,
        "versions": versions(),
        "train": result.to_dict(),
        "test_accuracy": accuracy(model, test.x, test.y),
        "figures": figures,
        "seconds": time.perf_counter() - t0,
    }
    path = save_json(results, out / "results.json")
    print(f"demo: test accuracy {results['test_accuracy']:.4f}; results in {path}")
    for name, fig_path in figures.items():
        print(f"  figure {name}: {fig_path}")
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


_SUBCOMMANDS = {
    "demo": (_add_demo, _run_demo),
    "train": (_add_train, _run_train),
    "data": (_add_data, _run_data),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geomrob`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
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
