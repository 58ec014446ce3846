"""Training zoo models with a config-keyed, resumable checkpoint cache.

A trained model lives in ``<run_dir>/models/<arch>-<dataset>-<hash>/`` where ``hash`` is a hash of
the full :class:`TrainConfig`. ``model.pt`` (the finished checkpoint) is reused on the next call;
``state.pt`` holds the state after the last finished epoch (weights, optimiser, shuffling
generator, history) so that an interrupted run resumes there. Every file is written atomically.
On CPU, the same config gives bitwise the same weights, interrupted or not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import data as _data
from .._io import config_hash, save_json, save_torch
from .._model import eval_mode, model_device
from .._validation import check_choice, check_int, check_positive, check_real
from ..results import Result
from .loading import CHECKPOINT_FORMAT, model_from_checkpoint
from .zoo import ACTIVATIONS, ARCHITECTURES, build

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")


# Per-dataset training recipes: the defaults of the CLI and the analyses. The small embedded
# digits set needs many short epochs; MNIST-sized sets reach the README's accuracies in 5.
RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 50, "lr": 3e-3, "batch_size": 64},
    "mnist": {"epochs": 5, "lr": 1e-3, "batch_size": 128},
    "fashion-mnist": {"epochs": 5, "lr": 1e-3, "batch_size": 128},
    "cifar10": {"epochs": 30, "lr": 1e-3, "batch_size": 128},
}


@dataclass(frozen=True)
class TrainConfig(Result):
    """Everything that determines a trained model (its hash keys the cache).

    Attributes:
        arch: zoo architecture, see :data:`geomrob.models.ARCHITECTURES`.
        dataset: dataset name, see :data:`geomrob.data.DATASETS`.
        size: image side passed to :func:`geomrob.data.load` (``None``: native; the native
            side itself is stored as ``None``, so both name one model).
        activation: ``"relu" | "softplus" | "tanh" | "gelu"``.
        beta: softplus sharpness when ``activation="softplus"``.
        optimizer: ``"adam"`` or ``"sgd"`` (with Nesterov momentum).
        lr: learning rate; a cosine schedule decays it to 0 over the epochs.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        epochs: passes over the training set.
        batch_size: minibatch size.
        seed: seeds the initial weights and the shuffling.
        train_size: use a seeded subset of this many training images (``None``: all).
        ssr_beta: Smooth Surface Regularization (Wang et al., NeurIPS 2020, 002 Def. 7): add
            ``ssr_beta * ssr_scale * mean_i lambda_max(H_i)`` to the loss, ``H_i`` the
            closed-form input Hessian of the cross-entropy
            (:func:`geomrob.interpret.ssr_loss`). ``None`` (default): natural training.
        ssr_scale: the scale ``s`` of SSR (``None``: 1.0 when ``ssr_beta`` is set; an error
            without ``ssr_beta``).

    Fields in :attr:`OPTIONAL_FIELDS` are left out of :meth:`to_dict` (so of the cache hash)
    while they are ``None``: a config that does not use them keeps the hash, and so the cached
    model, it had before they existed.
    """

    #: Fields added after the first release, omitted from ``to_dict()`` while ``None``.
    OPTIONAL_FIELDS: ClassVar[tuple[str, ...]] = ("ssr_beta", "ssr_scale")

    arch: str = "lenet"
    dataset: str = "digits"
    size: int | None = None
    activation: str = "relu"
    beta: float = 10.0
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    train_size: int | None = None
    ssr_beta: float | None = None
    ssr_scale: float | None = None

    def __post_init__(self) -> None:
        check_choice(self.arch, "arch", ARCHITECTURES)
        check_choice(self.dataset, "dataset", _data.DATASETS)
        check_choice(self.activation.split("(")[0], "activation", ACTIVATIONS)
        check_positive(self.beta, "beta")
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_positive(self.lr, "lr")
        check_real(self.momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
        check_real(self.weight_decay, "weight_decay", low=0.0)
        check_int(self.epochs, "epochs", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.seed, "seed", low=0)
        if self.size is not None:
            check_int(self.size, "size", low=1)
            if self.size == _data.NATIVE_SIDES[self.dataset]:
                # the native side is no resize: one config (and one cached model) for both
                object.__setattr__(self, "size", None)
        if self.train_size is not None:
            check_int(self.train_size, "train_size", low=1)
        if self.ssr_beta is None:
            if self.ssr_scale is not None:
                raise ValueError(
                    f"`ssr_scale` ({self.ssr_scale!r}) applies only with `ssr_beta`; set "
                    "`ssr_beta` (002 used 0.3) or leave `ssr_scale` as None."
                )
        else:
            # stored as floats so that 1 and 1.0 give the same hash
            object.__setattr__(self, "ssr_beta", check_positive(self.ssr_beta, "ssr_beta"))
            scale = 1.0 if self.ssr_scale is None else check_positive(self.ssr_scale, "ssr_scale")
            object.__setattr__(self, "ssr_scale", scale)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python, without the :attr:`OPTIONAL_FIELDS` that are ``None``."""
        out = super().to_dict()
        for name in self.OPTIONAL_FIELDS:
            if out.get(name, 0) is None:
                del out[name]
        return out

    @classmethod
    def for_dataset(cls, dataset: str, **changes: Any) -> TrainConfig:
        """The config with the dataset's recipe (:data:`RECIPES`), then ``changes`` applied.

        Example:
            >>> TrainConfig.for_dataset("mnist", arch="cnn2").epochs
            5
        """
        check_choice(dataset, "dataset", _data.DATASETS)
        return cls(**{"dataset": dataset, **RECIPES[dataset], **changes})

    def key(self) -> str:
        """Folder name in the cache: ``<arch>-<dataset>-<hash of the config>``."""
        return f"{self.arch}-{self.dataset}-{config_hash(self.to_dict())}"


@dataclass(frozen=True, eq=False)
class TrainResult(Result):
    """A trained model and how it got there.

    Attributes:
        model: the trained network, in eval mode, on the requested device.
        config: the :class:`TrainConfig`.
        history: one dict per epoch: ``epoch``, ``loss``, ``train_accuracy``,
            ``test_accuracy``, ``seconds``; with SSR also ``ssr_penalty``, the mean top
            eigenvalue of the input Hessian of the loss (``loss`` is then the whole objective).
        test_accuracy: accuracy on the test split after the last epoch.
        train_seconds: total training time over all (possibly interrupted) runs.
        path: folder of the cached model.
        cached: True when the model was loaded from the cache without training.
    """

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, float]]
    test_accuracy: float
    train_seconds: float
    path: Path
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the model itself is left out)."""
        return {
            "config": self.config.to_dict(),
            "history": self.history,
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "path": str(self.path),
            "cached": self.cached,
        }


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``model`` labels ``y`` (eval mode restored afterwards)."""
    correct = 0
    with eval_mode(model), torch.no_grad():
        device = model_device(model)
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(x)


def build_for(config: TrainConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the untrained network of ``config`` with its seeded initial weights.

    The global RNG is forked, so the caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build(
            config.arch,
            input_shape=input_shape,
            num_classes=num_classes,
            activation=config.activation,
            beta=config.beta,
        )


def train(
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path = "runs/default",
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a zoo model, or load it from the cache when this config was trained before.

    Args:
        config: what to train (default: ``TrainConfig()``, lenet on digits).
        run_dir: run directory; the model goes to ``run_dir/models/<config.key()>/``.
        data_root: root of the datasets (see :func:`geomrob.data.load`).
        device: where to train.
        progress: show a tqdm bar per epoch.
        callback: called with each epoch's history row after its state is saved (an exception
            raised there interrupts training; the next call resumes after that epoch).

    Returns:
        A :class:`TrainResult`.

    Example:
        >>> import tempfile
        >>> cfg = TrainConfig(arch="fcn2", dataset="digits", epochs=1)
        >>> res = train(cfg, run_dir=tempfile.mkdtemp())
        >>> res.cached, res.test_accuracy > 0.5
        (False, True)
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig; got {type(config).__name__}.")
    device = torch.device(device)
    folder = Path(run_dir) / "models" / config.key()
    final, state_path = folder / "model.pt", folder / "state.pt"

    if final.exists():
        ckpt = torch.load(final, map_location="cpu", weights_only=True)
        model = model_from_checkpoint(ckpt, f"cached model {final}").to(device).eval()
        log.info("loaded cached model %s", final)
        return TrainResult(
            model=model,
            config=config,
            history=ckpt["history"],
            test_accuracy=ckpt["history"][-1]["test_accuracy"],
            train_seconds=float(sum(h["seconds"] for h in ckpt["history"])),
            path=folder,
            cached=True,
        )

    train_set = _data.load(config.dataset, split="train", root=data_root, size=config.size)
    test_set = _data.load(config.dataset, split="test", root=data_root, size=config.size)
    if config.train_size is not None:
        train_set = train_set.subset(config.train_size, seed=config.seed)
    model = build_for(config, train_set.input_shape, train_set.num_classes).to(device)
    optimizer = _make_optimizer(config, model)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine(config.epochs * steps_per_epoch)
    )
    shuffle = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state.get("config") == config.to_dict():
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["shuffle"])
            history = state["history"]
            start_epoch = len(history)
            log.info("resuming %s after epoch %d", folder, start_epoch)

    save_json(config.to_dict(), folder / "config.json")
    x_train, y_train = train_set.x, train_set.y
    loss_fn = nn.CrossEntropyLoss()
    if config.ssr_beta is not None:
        from ..interpret.hessian import ssr_loss  # a lazy import: interpret imports models
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        total_loss, total_correct = 0.0, 0
        total_penalty = 0.0
        batches = range(0, len(order), config.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches, desc=f"train {config.arch} epoch {epoch + 1}/{config.epochs}", leave=False
            )
        for i in batches:
            idx = order[i : i + config.batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            if config.ssr_beta is None:
                out = model(xb)
                loss = loss_fn(out, yb)
            else:
                ssr = ssr_loss(model, xb, yb, beta=config.ssr_beta, scale=config.ssr_scale)
                out, loss = ssr.logits, ssr.loss
                total_penalty += float(ssr.penalty.detach().sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((out.detach().argmax(1) == yb).sum())
        model.eval()
        row = {
            "epoch": epoch + 1,
            "loss": total_loss / len(order),
            "train_accuracy": total_correct / len(order),
            "test_accuracy": accuracy(model, test_set.x, test_set.y),
            "seconds": time.perf_counter() - t0,
        }
        if config.ssr_beta is not None:
            row["ssr_penalty"] = total_penalty / len(order)
        history.append(row)
        log.info("epoch %d/%d %s", epoch + 1, config.epochs, row)
        save_torch(
            {
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "shuffle": shuffle.get_state(),
                "history": history,
            },
            state_path,
        )
        if callback is not None:
            callback(row)

    model.eval()
    save_torch(
        {
            "format": CHECKPOINT_FORMAT,
            "config": model.geomrob_config,
            "train_config": config.to_dict(),
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "history": history,
        },
        final,
    )
    save_json({"history": history}, folder / "history.json")
    state_path.unlink(missing_ok=True)
    return TrainResult(
        model=model,
        config=config,
        history=history,
        test_accuracy=history[-1]["test_accuracy"],
        train_seconds=float(sum(h["seconds"] for h in history)),
        path=folder,
        cached=False,
    )


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def _cosine(total_steps: int) -> Callable[[int], float]:
    import math

    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return factor
