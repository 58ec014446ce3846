"""Argument checks shared by every public entry point.

Each helper raises a ``TypeError`` for a wrong type and a ``ValueError`` for a bad value, with a
message that names the argument, says what was expected and what came in, and how to fix it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def check_tensor(x: object, name: str) -> Tensor:
    """Require a torch tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(x).__name__}.")
    return x


def check_floating(x: Tensor, name: str) -> Tensor:
    """Require a floating-point tensor (images as integers are a common mistake)."""
    if not x.is_floating_point():
        hint = " Convert uint8 images with `x.float() / 255`." if x.dtype == torch.uint8 else ""
        raise TypeError(f"`{name}` must be a floating-point tensor; got dtype {x.dtype}.{hint}")
    return x


def check_finite(x: Tensor, name: str) -> Tensor:
    """Require every entry to be finite."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite entries; all must be finite.")
    return x


def check_batch(
    x: object,
    name: str = "x",
    *,
    min_ndim: int = 2,
    input_shape: tuple[int, ...] | None = None,
) -> Tensor:
    """Check a non-empty, finite, floating, batch-first tensor ``(B, *input_shape)``."""
    x = check_tensor(x, name)
    if x.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must be batch-first with at least {min_ndim} dims; got shape "
            f"{tuple(x.shape)}. Add a batch axis with `{name}.unsqueeze(0)`."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(x.shape)}); give at least one.")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"`{name}` must have shape (B, {', '.join(map(str, input_shape))}); "
            f"got {tuple(x.shape)}."
        )
    check_floating(x, name)
    check_finite(x, name)
    return x


def check_labels(y: object, n: int, name: str = "y", num_classes: int | None = None) -> Tensor:
    """Check integer class labels of shape ``(n,)``."""
    y = check_tensor(y, name)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},); got {tuple(y.shape)}.")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer class labels; got dtype {y.dtype}.")
    if num_classes is not None and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"`{name}` labels must lie in [0, {num_classes - 1}]; "
            f"got range [{int(y.min())}, {int(y.max())}]."
        )
    return y


def check_model(model: object, name: str = "model") -> nn.Module:
    """Require an ``nn.Module`` (a plain callable has no parameters, device or eval mode)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`{name}` must be a torch.nn.Module mapping (n, *input_shape) to logits (n, L); "
            f"got {type(model).__name__}."
        )
    return model


def check_logits(out: object, n: int, name: str = "model output") -> Tensor:
    """Check that a classifier returned logits of shape ``(n, L)`` with ``L >= 2``."""
    if not isinstance(out, Tensor):
        raise TypeError(
            f"The {name} must be a tensor of logits (n, L); got {type(out).__name__}. "
            "Wrap models that return tuples or dicts so that they return the logits alone."
        )
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(
            f"The {name} must have shape (n, L) = ({n}, L); got {tuple(out.shape)}. "
            "geomrob expects a classifier that returns one row of class logits per input."
        )
    if out.shape[1] < 2:
        raise ValueError(f"The {name} must have at least 2 classes; got L = {out.shape[1]}.")
    return out


def warn_if_probabilities(out: Tensor, stacklevel: int = 3) -> None:
    """Warn when the rows look like probabilities rather than logits (the geometry differs)."""
    with torch.no_grad():
        rows = out.detach()
        if (
            rows.numel()
            and bool(((rows >= 0) & (rows <= 1)).all())
            and bool(torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-4))
        ):
            warnings.warn(
                "The model's outputs are non-negative and sum to 1 per row: they look like "
                "probabilities. geomrob's geometry (DeepFool, boundary Hessians) is that of the "
                "logits; remove the final softmax.",
                UserWarning,
                stacklevel=stacklevel,
            )


def check_real(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check a finite real scalar within optional bounds; return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite; got {value}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"`{name}` must be {op} {low}; got {value}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"`{name}` must be {op} {high}; got {value}.")
    return value


def check_positive(value: object, name: str) -> float:
    """Check a finite real scalar > 0."""
    return check_real(value, name, low=0.0, low_inclusive=False)


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Check an integer (not a bool) within optional inclusive bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__} {value!r}.")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be >= {low}; got {value}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}; got {value}.")
    return value


def check_choice(value: object, name: str, choices: Iterable[object]) -> object:
    """Check that ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")
    return value


def check_p(p: object, name: str = "p") -> float:
    """Check a norm order: 2 or infinity."""
    p = check_real(p, name) if not (isinstance(p, float) and math.isinf(p)) else p
    if p not in (2.0, math.inf):
        raise ValueError(f"`{name}` must be 2 or float('inf'); got {p!r}.")
    return float(p)


def check_bounds(bounds: object, x: Tensor) -> tuple[float, float] | None:
    """Check an optional box ``(lo, hi)`` with ``lo < hi`` that contains ``x``."""
    if bounds is None:
        return None
    if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
        raise TypeError(f"`bounds` must be None or a pair (lo, hi); got {bounds!r}.")
    lo = check_real(bounds[0], "bounds[0]")
    hi = check_real(bounds[1], "bounds[1]")
    if not lo < hi:
        raise ValueError(f"`bounds` must satisfy lo < hi; got {bounds!r}.")
    if bool((x < lo).any()) or bool((x > hi).any()):
        raise ValueError(
            f"`x` lies outside `bounds` {bounds!r} (range [{float(x.min())}, {float(x.max())}])."
        )
    return lo, hi


def check_target(target: object, n: int, num_classes: int, device: torch.device) -> Tensor:
    """An int (the same class for every input) or a ``(n,)`` integer tensor, in ``[0, L)``."""
    if isinstance(target, Tensor):
        target = check_labels(target, n, "target", num_classes=num_classes)
        return target.to(device=device, dtype=torch.long)
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(
            f"`target` must be an int or a ({n},) tensor of class indices; "
            f"got {type(target).__name__} {target!r}."
        )
    t = check_int(target, "target", low=0, high=num_classes - 1)
    return torch.full((n,), t, dtype=torch.long, device=device)
