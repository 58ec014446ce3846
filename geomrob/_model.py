"""How geomrob calls a user's classifier: eval mode, no parameter gradients, checked outputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._validation import check_batch, check_logits, check_model, warn_if_probabilities


class eval_mode:  # noqa: N801 - used like torch.no_grad
    """Context manager: put a module in eval mode and restore every submodule's mode on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = check_model(model)

    def __enter__(self) -> nn.Module:
        self.modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.modes.items():
            m.training = mode


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer (CPU for a parameter-free module)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """Floating dtype of the first floating parameter, or None."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def functional(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``x -> model(x)`` with detached parameters and buffers, for ``torch.func`` transforms.

    Parameters then never collect gradients and autograd graphs never reach them.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    state = {**params, **buffers}

    def call(x: Tensor) -> Tensor:
        return torch.func.functional_call(model, state, (x,))

    return call


def check_inputs(model: object, x: object, name: str = "x", *, warn_probs: bool = True) -> Tensor:
    """Validate a classifier and a batch together; return the logits of ``x``.

    Checks: ``model`` is an ``nn.Module``; ``x`` is a finite floating batch on the model's device
    with the model's dtype; the output is ``(n, L)``. Warns when the rows look like
    probabilities. Call inside :class:`eval_mode` (a model in training mode is
    evaluated in eval mode by every geomrob function, and restored afterwards).
    """
    model = check_model(model)
    x = check_batch(x, name)
    device, dtype = model_device(model), model_dtype(model)
    if x.device != device:
        raise ValueError(
            f"`{name}` is on {x.device} but the model is on {device}; move one of them."
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"`{name}` has dtype {x.dtype} but the model's parameters are {dtype}; convert one "
            f"(e.g. `model.to({x.dtype})` or `{name}.to({dtype})`)."
        )
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        raise ValueError(
            f"The model failed on `{name}` of shape {tuple(x.shape)}: {exc}. Check that `{name}` "
            "has the input shape the model was built for."
        ) from exc
    out = check_logits(out, x.shape[0])
    if warn_probs:
        warn_if_probabilities(out, stacklevel=4)
    return out
