"""Shared plumbing of the analysis scripts: flags, models, data, saving, plot style.

Every script computes with ``geomrob``, saves its raw numbers with config, seed and versions
(``<name>.json`` and ``<name>.npz`` in ``--out``), then plots from the saved file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python analyses/x.py` from a checkout
    sys.path.insert(0, str(REPO))

from geomrob import data as gdata  # noqa: E402
from geomrob._io import atomic_write, load_json, save_json  # noqa: E402
from geomrob.cli import versions  # noqa: E402
from geomrob.models import TrainConfig, train  # noqa: E402

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
    """Logging and threads."""
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


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
