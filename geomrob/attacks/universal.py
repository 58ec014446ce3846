"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi and Frossard, CVPR 2017).

One perturbation ``v`` of small norm that changes the label of most inputs:
:func:`universal_perturbation` is Algorithm 1 of the paper, :func:`fooling_rate` /
:func:`fooling_rates` measure ``P[k(x + v) != k(x)]`` on a set of inputs, and
:func:`noise_fooling_curve` / :func:`rho_rand` give the reference against which a universal
perturbation is judged: the norm at which *isotropic random* noise fools as many points
(DESIGN.md section 3, ``rho_rand``).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._io import config_hash, save_torch
from .._io import model_fingerprint as _model_fingerprint
from .._io import tensor_fingerprint as _fingerprint
from .._model import check_inputs, eval_mode, functional
from .._random import as_generator
from .._threads import few_threads
from .._validation import (
    check_batch,
    check_bounds,
    check_finite,
    check_floating,
    check_int,
    check_p,
    check_positive,
    check_real,
    check_tensor,
)
from ..results import Result
from .deepfool import _deepfool

__all__ = [
    "NoiseCurve",
    "NoiseReference",
    "UAPResult",
    "fooling_rate",
    "fooling_rates",
    "noise_fooling_curve",
    "rho_rand",
    "universal_perturbation",
]

log = logging.getLogger(__name__)

#: Inputs per forward pass when ``batch_size`` is None.
DEFAULT_BATCH_SIZE = 1024

#: Version of the resumable UAP state file.
_STATE_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, eq=False)
class UAPResult(Result):
    """A universal perturbation and how it was found (Moosavi-Dezfooli et al., 2017).

    Attributes:
        v: ``(*input_shape)`` the perturbation, ``||v||_p <= xi``.
        fooling_rate: fraction of the fitting set with ``k(x + v) != k(x)`` (after the last
            pass; with ``bounds``, ``k(clip(x + v))``).
        history: fooling rate after each pass, ``history[-1] == fooling_rate``.
        passes: passes over the data done (resumed ones included).
        converged: whether ``fooling_rate >= 1 - delta`` was reached.
        norm: ``||v||_p`` for the ``p`` of the run.
        updates: per pass, the number of DeepFool updates of ``v``.
        deepfool_failures: per pass, the number of DeepFool calls that did not change the
            label within ``max_iter`` (``v`` is then left unchanged, as in the authors' code).
        resumed_passes: passes loaded from ``state_path`` (0 for a fresh run).
    """

    v: Tensor
    fooling_rate: float
    history: list[float]
    passes: int
    converged: bool
    norm: float
    updates: list[int]
    deepfool_failures: list[int]
    resumed_passes: int = 0


@dataclass(frozen=True, eq=False)
class NoiseCurve(Result):
    """Fooling rate of isotropic random noise as a function of its l2 norm.

    Attributes:
        norms: ``(k,)`` float64, the noise norms ``rho``.
        fooling_rates: ``(k,)`` float64, the fraction of (input, direction) pairs with
            ``k(x_i + rho u) != k(x_i)`` at each norm.
    """

    norms: Tensor
    fooling_rates: Tensor


@dataclass(frozen=True, eq=False)
class NoiseReference(Result):
    """``rho_rand``: the smallest l2 norm at which random noise fools a ``target`` fraction.

    Attributes:
        rho: the norm found (``inf`` when no evaluated norm reached ``target``).
        curve: the fooling rates at every norm evaluated by the search, sorted by norm.
        target: the fooling rate asked for.
        converged: whether a norm reaching ``target`` was found (``rho`` finite).
    """

    rho: float
    curve: NoiseCurve
    target: float
    converged: bool


# --------------------------------------------------------------------------------------------
# Validation helpers


def _check_batch_size(batch_size: object) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    return check_int(batch_size, "batch_size", low=1)


def _check_like(v: object, name: str, x: Tensor) -> Tensor:
    """A finite floating tensor on the device and with the dtype of ``x``."""
    v = check_tensor(v, name)
    check_floating(v, name)
    if v.device != x.device:
        raise ValueError(f"`{name}` is on {v.device} but `x` is on {x.device}; move one of them.")
    if v.dtype != x.dtype:
        raise TypeError(
            f"`{name}` has dtype {v.dtype} but `x` has dtype {x.dtype}; convert it with "
            f"`{name}.to({x.dtype})`."
        )
    check_finite(v, name)
    return v


def _single_perturbation(v: object, name: str, x: Tensor) -> Tensor:
    """``v`` of shape ``(d,)`` or ``(*input_shape)``, returned as ``(*input_shape)``."""
    v = _check_like(v, name, x)
    shape = tuple(x.shape[1:])
    d = math.prod(shape)
    if tuple(v.shape) not in ((d,), shape):
        raise ValueError(
            f"`{name}` must have shape ({d},) or {shape} (the input shape of `x`, "
            f"{d} entries); got {tuple(v.shape)} with {v.numel()} entries."
        )
    return v.reshape(shape)


def _many_perturbations(V: object, name: str, x: Tensor) -> Tensor:
    """``V`` of shape ``(m, d)`` or ``(m, *input_shape)``, returned as ``(m, *input_shape)``."""
    V = _check_like(V, name, x)
    shape = tuple(x.shape[1:])
    d = math.prod(shape)
    if V.ndim < 2 or V.shape[0] == 0 or tuple(V.shape[1:]) not in ((d,), shape):
        raise ValueError(
            f"`{name}` must have shape (m, {d}) or (m, {', '.join(map(str, shape))}) with "
            f"m >= 1 (one perturbation per row); got {tuple(V.shape)}. For one perturbation "
            f"use `fooling_rate` or `{name}.unsqueeze(0)`."
        )
    return V.reshape(len(V), *shape)


def _check_generator(generator: object) -> torch.Generator | None:
    try:
        return as_generator(generator, "cpu")
    except TypeError:
        raise TypeError(
            f"`generator` must be None, an int seed or a torch.Generator; got {generator!r}."
        ) from None


def _setup(model: nn.Module, x: object) -> Tensor:
    """Validate ``x`` in full and the model on its first input (call inside eval_mode)."""
    x = check_batch(x, "x")
    check_inputs(model, x[:1], "x")
    return x


# --------------------------------------------------------------------------------------------
# Batched predictions


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """``(n,)`` labels ``argmax f(x)``, in chunks of ``batch_size``."""
    if len(x) <= batch_size:
        return model(x).argmax(1)
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _clip(x: Tensor, box: tuple[float, float] | None) -> Tensor:
    return x if box is None else x.clamp(box[0], box[1])


@torch.no_grad()
def _fooled_counts(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    V: Tensor,
    batch_size: int,
    box: tuple[float, float] | None = None,
) -> Tensor:
    """``(m,)`` int64 counts of ``i`` with ``k(clip(x_i + V_j)) != labels_i``.

    The ``m * n`` pairs ``(j, i)`` are enumerated in order and evaluated in chunks of
    ``batch_size`` inputs, so the memory does not depend on ``m``.
    """
    m, n = len(V), len(x)
    counts = torch.zeros(m, dtype=torch.long, device=x.device)
    total = m * n
    for start in range(0, total, batch_size):
        pair = torch.arange(start, min(start + batch_size, total), device=x.device)
        j, i = pair // n, pair % n
        pred = model(_clip(x[i] + V[j], box)).argmax(1)
        counts.index_add_(0, j, (pred != labels[i]).long())
    return counts


# --------------------------------------------------------------------------------------------
# Fooling rates


def fooling_rate(
    model: nn.Module,
    x: Tensor,
    v: Tensor,
    *,
    batch_size: int | None = None,
    bounds: tuple[float, float] | None = None,
) -> float:
    r"""Fraction of ``x`` whose label a single perturbation ``v`` changes.

    The fooling rate of Moosavi-Dezfooli et al. (CVPR 2017):
    :math:`\frac{1}{n} \#\{i : k(x_i + v) \ne k(x_i)\}`, with ``k`` the argmax of the
    logits. Nothing is clipped unless ``bounds`` is given.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(n, *input_shape)`` inputs, on the model's device and with its dtype.
        v: ``(d,)`` or ``(*input_shape)`` perturbation, same device and dtype as ``x``.
        batch_size: inputs per forward pass (``None``: ``DEFAULT_BATCH_SIZE`` = 1024).
        bounds: optional box ``(lo, hi)``; with it the model sees ``clip(x + v, lo, hi)``
            (``x`` must lie inside). Default: no clipping.

    Returns:
        The fooling rate in ``[0, 1]``.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(1, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0], [1.0]]))
        ...     _ = lin.bias.zero_()
        >>> x = torch.tensor([[-3.0], [-2.0], [-1.0], [1.0]], dtype=torch.float64)
        >>> fooling_rate(lin, x, torch.tensor([2.5], dtype=torch.float64))
        0.5
    """
    chunk = _check_batch_size(batch_size)
    with eval_mode(model):
        x = _setup(model, x)
        v = _single_perturbation(v, "v", x)
        box = check_bounds(bounds, x)
        labels = _predict(model, x, chunk)
        count = _fooled_counts(model, x, labels, v.unsqueeze(0), chunk, box)
    return float(count[0]) / len(x)


def fooling_rates(
    model: nn.Module,
    x: Tensor,
    V: Tensor,
    *,
    batch_size: int | None = None,
    bounds: tuple[float, float] | None = None,
) -> Tensor:
    """Fooling rates of many perturbations at once: ``rates[j] = fooling_rate(model, x, V[j])``.

    The labels ``k(x)`` are computed once; the ``m * n`` perturbed inputs are evaluated in
    chunks of at most ``batch_size`` inputs.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(n, *input_shape)`` inputs, on the model's device and with its dtype.
        V: ``(m, d)`` or ``(m, *input_shape)`` perturbations, one per row.
        batch_size: inputs per forward pass (``None``: ``DEFAULT_BATCH_SIZE`` = 1024).
        bounds: optional box ``(lo, hi)`` as in :func:`fooling_rate`.

    Returns:
        ``(m,)`` float64 fooling rates on the device of ``x`` (exact fractions ``count / n``,
        equal to :func:`fooling_rate` of each row).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(1, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0], [1.0]]))
        ...     _ = lin.bias.zero_()
        >>> x = torch.tensor([[-3.0], [-2.0], [-1.0], [1.0]], dtype=torch.float64)
        >>> V = torch.tensor([[0.0], [1.5], [2.5], [3.5]], dtype=torch.float64)
        >>> fooling_rates(lin, x, V).tolist()
        [0.0, 0.25, 0.5, 0.75]
    """
    chunk = _check_batch_size(batch_size)
    with eval_mode(model):
        x = _setup(model, x)
        V = _many_perturbations(V, "V", x)
        box = check_bounds(bounds, x)
        labels = _predict(model, x, chunk)
        counts = _fooled_counts(model, x, labels, V, chunk, box)
    return counts.double() / len(x)


# --------------------------------------------------------------------------------------------
# Universal perturbation (Algorithm 1 of the 2017 paper)


def _project(v: Tensor, xi: float, p: float) -> Tensor:
    """Projection on the l_p ball of radius ``xi``: l2 rescales, l_inf clamps."""
    if p == 2:
        norm = v.norm()
        scale = (xi / norm.clamp_min(torch.finfo(v.dtype).tiny)).clamp(max=1.0)
        return v * scale
    return v.clamp(-xi, xi)


def _lp_norm(v: Tensor, p: float) -> float:
    return float(v.norm()) if p == 2 else float(v.abs().max())


def _load_state(path: Path, key: str) -> dict | None:
    """The saved state when it exists and matches ``key``; otherwise None (with a warning)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(state, dict) and state.get("format") == _STATE_FORMAT
    except Exception as exc:  # any unreadable file means "start afresh"
        warnings.warn(
            f"universal_perturbation: cannot read the state file {path} ({exc}); starting "
            "afresh (it will be overwritten).",
            stacklevel=3,
        )
        return None
    if not ok or state.get("key") != key:
        warnings.warn(
            f"universal_perturbation: the state file {path} was written for other options, "
            "data or model; starting afresh (it will be overwritten).",
            stacklevel=3,
        )
        return None
    return state


def universal_perturbation(
    model: nn.Module,
    x: Tensor,
    *,
    xi: float,
    p: float = 2,
    delta: float = 0.2,
    max_passes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
    bounds: tuple[float, float] | None = None,
    generator: int | torch.Generator | None = None,
    state_path: str | os.PathLike | None = None,
    progress: bool = False,
    callback: Callable[[int, float], object] | None = None,
    batch_size: int | None = None,
) -> UAPResult:
    r"""A universal perturbation by Algorithm 1 of Moosavi-Dezfooli et al. (CVPR 2017).

    Moosavi-Dezfooli, Fawzi, Fawzi and Frossard, "Universal adversarial perturbations".
    Start from ``v = 0`` and pass over the data in a shuffled order. For each ``x_i`` that
    ``v`` does not fool yet (``k(x_i + v) == k(x_i)``), DeepFool (l2, :func:`deepfool`) gives
    the minimal perturbation ``dv`` that sends ``x_i + v`` out of its class, and

    .. math:: v \leftarrow \mathcal{P}_{p,\xi}(v + dv),

    the projection on the l_p ball of radius ``xi`` (l2: rescale onto the ball; l_inf: clamp
    every entry to ``[-xi, xi]``). After each pass the fooling rate on ``x`` is computed; the
    loop stops when it reaches ``1 - delta`` or after ``max_passes`` passes. As in the
    authors' code, DeepFool is the l2 attack for both norms, and a DeepFool call that does not
    change the label within ``max_iter`` leaves ``v`` unchanged (counted in
    ``deepfool_failures``).

    Each pass draws one permutation from ``generator``: same seed, same ``v``. Images are
    tested in look-ahead batches while ``v`` stays unchanged (one forward pass for many
    already-fooled images), which changes nothing but the speed.

    Resuming: with ``state_path``, the state after each pass (``v``, passes done, history,
    generator state, and a hash of the options, of ``x``, of the model's parameters and of the
    generator's initial state) is written atomically. A later call with the same arguments
    continues after the last saved pass and gives bitwise the same ``v`` as an uninterrupted
    run; a state written for anything else is ignored with a warning (and overwritten).
    ``max_passes`` is not part of the hash: call again with a larger one to run more passes;
    a saved state with ``passes >= max_passes`` or that already converged is returned as it is.
    To resume, pass the same int seed (or a generator in the same *initial* state: a generator
    object that the interrupted run has advanced no longer matches); without a seed
    (``generator=None``) any saved state with matching options is resumed.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(n, *input_shape)`` the fitting set, on the model's device and with its dtype.
        xi: radius of the l_p ball, ``> 0``.
        p: ``2`` or ``float("inf")``.
        delta: target fooling rate ``1 - delta``, ``0 < delta < 1``.
        max_passes: at most this many passes over ``x``.
        overshoot: DeepFool's overshoot (see :func:`deepfool`).
        max_iter: DeepFool's iteration budget per call.
        num_candidates: DeepFool's number of candidate classes.
        bounds: optional box ``(lo, hi)`` of valid inputs (``x`` must lie inside). With it the
            classifier always sees ``clip(x_i + v, lo, hi)``: in the test ``k(x_i + v) ==
            k(x_i)``, as DeepFool's starting point (DeepFool keeps its iterates in the box, and
            ``dv`` is measured from the clipped point), and in the fooling rates. ``v`` itself
            is only projected on the l_p ball, not clipped, so apply it as
            ``clip(x + v, lo, hi)``. Default: nothing is clipped.
        generator: ``torch.Generator`` or int seed of the shuffles; ``None`` draws a seed from
            torch's global generator.
        state_path: file for the resumable state (``None``: no state is written).
        progress: show a tqdm bar over the images of each pass.
        callback: ``callback(pass_index, fooling_rate)`` after each pass (0-based index, so
            ``fooling_rate == history[pass_index]``), after the state is saved. An exception
            raised there interrupts the run; the next call with ``state_path`` resumes.
        batch_size: inputs per forward pass for the fooling rates and the cap of the
            look-ahead batches (``None``: ``DEFAULT_BATCH_SIZE`` = 1024).

    Returns:
        A :class:`UAPResult`. Not reaching ``1 - delta`` is not an error: ``converged`` is
        False and a warning says so.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(2, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        ...     _ = lin.bias.zero_()
        >>> x = -torch.rand(20, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> res = universal_perturbation(lin, x, xi=1.5, delta=0.1, generator=0)
        >>> res.converged, res.fooling_rate >= 0.9, res.norm <= 1.5
        (True, True, True)
    """
    xi = check_positive(xi, "xi")
    p = check_p(p, "p")
    delta = check_real(delta, "delta", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    max_passes = check_int(max_passes, "max_passes", low=1)
    overshoot = check_real(overshoot, "overshoot", low=0.0)
    max_iter = check_int(max_iter, "max_iter", low=1)
    num_candidates = check_int(num_candidates, "num_candidates", low=2)
    chunk = _check_batch_size(batch_size)
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be a bool; got {type(progress).__name__}.")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable or None; got {type(callback).__name__}.")
    if state_path is not None:
        if not isinstance(state_path, (str, os.PathLike)):
            raise TypeError(
                f"`state_path` must be None, a str or a path; got {type(state_path).__name__}."
            )
        state_path = Path(state_path)
    gen = _check_generator(generator)
    if gen is None:
        seed = int(torch.randint(0, 2**62, (1,)))
        gen_hash = None  # any seed resumes a run started without one
        gen = torch.Generator().manual_seed(seed)
    else:
        gen_hash = _fingerprint(gen.get_state())
    target = 1.0 - delta - 1e-12  # so that e.g. 30/100 counts as reaching 1 - 0.7

    with eval_mode(model):
        x = _setup(model, x)
        box = check_bounds(bounds, x)
        n, shape = len(x), tuple(x.shape[1:])
        labels = _predict(model, x, chunk)
        v = torch.zeros(shape, dtype=x.dtype, device=x.device)
        history: list[float] = []
        updates: list[int] = []
        failures: list[int] = []
        resumed = 0
        key = None
        if state_path is not None:
            key = config_hash(
                {
                    "algorithm": "universal_perturbation/2017",
                    "xi": xi,
                    "p": p,
                    "delta": delta,
                    "overshoot": overshoot,
                    "max_iter": max_iter,
                    "num_candidates": num_candidates,
                    "bounds": None if box is None else list(box),
                    "generator": gen_hash,
                    "x": _fingerprint(x),
                    "model": _model_fingerprint(model),
                },
                length=32,
            )
            state = _load_state(state_path, key)
            if state is not None:
                v = state["v"].to(device=x.device, dtype=x.dtype)
                history = [float(r) for r in state["history"]]
                updates = [int(u) for u in state["updates"]]
                failures = [int(f) for f in state["deepfool_failures"]]
                gen.set_state(state["generator"])
                resumed = len(history)
                log.info(
                    "universal_perturbation: resuming after pass %d from %s", resumed, state_path
                )

        converged = bool(history) and history[-1] >= target
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"UAP on {x.device}", unit="img", leave=False)
        try:
            while not converged and len(history) < max_passes:
                index = len(history)
                if bar is not None:
                    bar.reset()
                    bar.set_description(f"UAP pass {index + 1}/{max_passes} on {x.device}")
                order = torch.randperm(n, generator=gen, device=gen.device).tolist()
                v, n_up, n_fail = _uap_pass(
                    model,
                    x,
                    labels,
                    v,
                    order,
                    xi=xi,
                    p=p,
                    box=box,
                    deepfool_kw={
                        "overshoot": overshoot,
                        "max_iter": max_iter,
                        "num_candidates": num_candidates,
                        "box": box,
                        "box_step": "clip",
                        "batch_size": None,
                    },
                    cap=chunk,
                    bar=bar,
                )
                rate = float(_fooled_counts(model, x, labels, v.unsqueeze(0), chunk, box)[0]) / n
                history.append(rate)
                updates.append(n_up)
                failures.append(n_fail)
                converged = rate >= target
                if bar is not None:
                    bar.set_postfix(fooling_rate=f"{rate:.3f}")
                log.info("universal_perturbation: pass %d fooling rate %.4f", index + 1, rate)
                if state_path is not None:
                    save_torch(
                        {
                            "format": _STATE_FORMAT,
                            "key": key,
                            "v": v.detach().cpu(),
                            "history": history,
                            "updates": updates,
                            "deepfool_failures": failures,
                            "generator": gen.get_state(),
                        },
                        state_path,
                    )
                if callback is not None:
                    callback(index, rate)
        finally:
            if bar is not None:
                bar.close()

    if not converged:
        warnings.warn(
            f"universal_perturbation did not reach the fooling rate 1 - delta = {1 - delta:.4g} "
            f"within max_passes={max_passes} (reached {history[-1]:.4g} with xi={xi:g}); the "
            "result is marked converged=False.",
            stacklevel=2,
        )
    return UAPResult(
        v=v.detach(),
        fooling_rate=history[-1],
        history=history,
        passes=len(history),
        converged=converged,
        norm=_lp_norm(v, p),
        updates=updates,
        deepfool_failures=failures,
        resumed_passes=resumed,
    )


def _uap_pass(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    v: Tensor,
    order: list[int],
    *,
    xi: float,
    p: float,
    box: tuple[float, float] | None,
    deepfool_kw: dict,
    cap: int,
    bar,
) -> tuple[Tensor, int, int]:
    """One pass of Algorithm 1 over ``x[order]``; returns ``(v, updates, failures)``.

    The test ``k(x_i + v) == k(x_i)`` runs on look-ahead batches of the next images in the
    order: while ``v`` does not change their predictions stay valid, and the batch doubles
    (up to ``cap``); after an update of ``v`` it shrinks back to one image. The sequence of
    updates is that of the one-image-at-a-time loop.
    """
    n = len(order)
    pos, look = 0, 1
    n_up = n_fail = 0
    call = functional(model)  # checked once by the caller; no per-image validation pass
    while pos < n:
        idx = torch.tensor(order[pos : pos + look], device=x.device)
        with torch.no_grad():
            xs = _clip(x[idx] + v, box)
            logits = call(xs)
            same = (logits.argmax(1) == labels[idx]).tolist()
        consumed = len(same)
        changed = False
        for j, unfooled in enumerate(same):
            if not unfooled:
                continue
            # Per-image non-convergence is counted in `deepfool_failures`.
            with few_threads(xs[j].numel(), limit=2**13):
                res = _deepfool(call, xs[j : j + 1], logits[j : j + 1], **deepfool_kw)
            if bool(res.converged[0]):
                v = _project(v + res.r[0], xi, p)
                n_up += 1
                changed, consumed = True, j + 1
                break
            n_fail += 1
        pos += consumed
        look = 1 if changed else min(2 * look, cap)
        if bar is not None:
            bar.update(consumed)
    return v, n_up, n_fail


# --------------------------------------------------------------------------------------------
# Random-noise reference


def _unit_directions(
    n: int, n_draws: int, d: int, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """``(n * n_draws, d)`` directions uniform on the unit sphere, row ``i * n_draws + s``.

    Drawn in float64 on the generator's device (CPU unless the caller passes another
    generator), normalised, then cast to the dtype and device of ``like``.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(n * n_draws, d, generator=generator, device=gen_device, dtype=torch.float64)
    z = z / z.norm(dim=1, keepdim=True)
    return z.to(device=like.device, dtype=like.dtype)


class _NoiseProblem:
    """Fixed inputs, labels and directions; ``rate(rho)`` uses the same directions each time."""

    def __init__(
        self, model: nn.Module, x: Tensor, n_draws: int, generator: object, batch_size: int
    ) -> None:
        self.model, self.x, self.batch_size = model, x, batch_size
        self.shape = tuple(x.shape[1:])
        n, d = len(x), math.prod(self.shape)
        gen = _check_generator(generator)
        self.labels = _predict(model, x, batch_size)
        self.U = _unit_directions(n, n_draws, d, gen, x)
        self.owner = torch.arange(n * n_draws, device=x.device) // n_draws
        self.x_flat = x.reshape(n, d)
        self.pairs = n * n_draws

    @torch.no_grad()
    def counts(self, rho: float) -> Tensor:
        count = torch.zeros((), dtype=torch.long, device=self.x.device)
        for start in range(0, self.pairs, self.batch_size):
            i = self.owner[start : start + self.batch_size]
            inputs = self.x_flat[i] + rho * self.U[start : start + self.batch_size]
            pred = self.model(inputs.view(-1, *self.shape)).argmax(1)
            count += (pred != self.labels[i]).sum()
        return count

    def rate(self, rho: float) -> float:
        return float(self.counts(rho)) / self.pairs


def _check_n_draws(n_draws: object) -> int:
    return check_int(n_draws, "n_draws", low=1)


def noise_fooling_curve(
    model: nn.Module,
    x: Tensor,
    norms: Sequence[float] | Tensor,
    *,
    n_draws: int = 1,
    generator: int | torch.Generator | None = None,
    batch_size: int | None = None,
) -> NoiseCurve:
    r"""Fooling rate of isotropic random noise of each l2 norm in ``norms``.

    The random-noise reference of Fawzi, Moosavi-Dezfooli and Frossard ("Robustness of
    classifiers: from adversarial to random noise", NIPS 2016) and of DESIGN.md section 3: for
    each input ``x_i``, ``n_draws`` directions ``u`` uniform on the unit sphere of
    :math:`\mathbb{R}^d` are drawn (normalised Gaussians, in float64 on the generator's device,
    CPU by default, then moved to the model's device, so the numbers do not depend on the
    device), and the rate at ``rho`` is the fraction of the ``n * n_draws`` pairs with
    ``k(x_i + rho u) != k(x_i)`` (no clipping). The *same* directions serve every norm
    (common random numbers): when the region of each class is star-shaped around its points
    (convex regions, e.g. a linear classifier), each pair is fooled on an interval
    ``(t, inf)``, so the measured curve is non-decreasing in ``rho`` and its differences are
    free of draw-to-draw noise.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(n, *input_shape)`` inputs, on the model's device and with its dtype.
        norms: ``(k,)`` non-negative noise norms (any order; the output keeps it).
        n_draws: random directions per input.
        generator: ``torch.Generator`` or int seed of the directions.
        batch_size: inputs per forward pass (``None``: ``DEFAULT_BATCH_SIZE`` = 1024).
            The ``n * n_draws`` directions are held in memory.

    Returns:
        A :class:`NoiseCurve` (float64 tensors on the device of ``x``).

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(3, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, -1.0]))
        >>> x = torch.zeros(4, 3, dtype=torch.float64)  # at distance 1 from the boundary
        >>> curve = noise_fooling_curve(lin, x, [0.5, 1e6], n_draws=50, generator=0)
        >>> curve.fooling_rates[0].item(), 0.3 < curve.fooling_rates[1].item() < 0.7
        (0.0, True)
    """
    chunk = _check_batch_size(batch_size)
    n_draws = _check_n_draws(n_draws)
    rhos = _check_norms(norms)
    with eval_mode(model):
        x = _setup(model, x)
        problem = _NoiseProblem(model, x, n_draws, generator, chunk)
        counts = torch.stack([problem.counts(rho) for rho in rhos])
    return NoiseCurve(
        norms=torch.tensor(rhos, dtype=torch.float64, device=x.device),
        fooling_rates=counts.double() / problem.pairs,
    )


def _check_norms(norms: object) -> list[float]:
    if isinstance(norms, Tensor):
        if norms.ndim != 1 or norms.is_complex() or norms.dtype == torch.bool:
            raise ValueError(
                f"`norms` must be a 1-D real tensor or a sequence of numbers; got a tensor of "
                f"shape {tuple(norms.shape)} and dtype {norms.dtype}."
            )
        norms = norms.tolist()
    if isinstance(norms, (str, bytes)) or not isinstance(norms, Sequence):
        raise TypeError(
            f"`norms` must be a 1-D tensor or a sequence of numbers; got {type(norms).__name__}."
        )
    if len(norms) == 0:
        raise ValueError("`norms` is empty; give at least one noise norm.")
    return [check_real(r, f"norms[{k}]", low=0.0) for k, r in enumerate(norms)]


def rho_rand(
    model: nn.Module,
    x: Tensor,
    *,
    target: float = 0.5,
    n_draws: int = 1,
    generator: int | torch.Generator | None = None,
    rel_tol: float = 1e-3,
    batch_size: int | None = None,
    max_doublings: int = 40,
) -> NoiseReference:
    """``rho_rand``: the smallest l2 norm at which isotropic random noise fools ``target``.

    The reference norm of DESIGN.md section 3 (Fig. 7b of Moosavi-Dezfooli et al., "Robustness
    of classifiers to universal perturbations: a geometric perspective", ICLR 2018): the
    smallest ``rho`` with ``rate(rho) >= target``, where ``rate`` is the curve of
    :func:`noise_fooling_curve` on *fixed* directions (``n_draws`` per input, drawn once).

    Search: the first guess is the mean l2 norm of the inputs, ``mean_i ||x_i||`` (1 if that is
    0), the scale of the data, which needs no gradient and no DeepFool run; the guess is
    halved until the rate is below ``target`` (at most ``max_doublings`` times; if the rate
    still reaches ``target`` there, e.g. for inputs on the boundary, that norm is returned) or
    doubled until it reaches ``target`` (at most
    ``max_doublings`` times), then the bracket ``lo < rho <= hi`` is bisected on the same
    directions until ``hi - lo <= rel_tol * hi``; ``rho = hi`` is an evaluated norm whose rate
    is ``>= target``. When every pair's fooled set is an interval ``(t, inf)`` (star-shaped
    class regions) the curve is monotone and ``rho`` is within ``rel_tol`` of the smallest such
    norm; otherwise it is a crossing of ``target``, not necessarily the first.

    Some targets are never reached: a binary linear classifier fools at most half of the
    directions at any norm. Then ``rho = inf``, ``converged = False`` and a warning says so.

    Args:
        model: classifier ``(n, *input_shape) -> (n, L)`` logits (evaluated in eval mode).
        x: ``(n, *input_shape)`` inputs, on the model's device and with its dtype.
        target: the fooling rate to reach, ``0 < target <= 1``.
        n_draws: random directions per input.
        generator: ``torch.Generator`` or int seed of the directions.
        rel_tol: relative width of the final bracket, ``0 < rel_tol < 1``.
        batch_size: inputs per forward pass (``None``: ``DEFAULT_BATCH_SIZE`` = 1024).
        max_doublings: at most this many halvings or doublings of the first guess.

    Returns:
        A :class:`NoiseReference`; its ``curve`` holds every evaluated norm, sorted.

    Raises:
        TypeError, ValueError: for a bad model, input or option (the message names it).

    Example:
        >>> lin = torch.nn.Linear(3, 2).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        ...     _ = lin.bias.copy_(torch.tensor([0.0, -1.0]))
        >>> x = torch.zeros(10, 3, dtype=torch.float64)  # at distance 1 from the boundary
        >>> ref = rho_rand(lin, x, target=0.25, n_draws=20, generator=0)
        >>> ref.converged, 1.0 < ref.rho < 10.0
        (True, True)
    """
    target = check_real(target, "target", low=0.0, high=1.0, low_inclusive=False)
    n_draws = _check_n_draws(n_draws)
    rel_tol = check_real(
        rel_tol, "rel_tol", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
    )
    max_doublings = check_int(max_doublings, "max_doublings", low=1)
    chunk = _check_batch_size(batch_size)
    evaluated: dict[float, float] = {}
    with eval_mode(model):
        x = _setup(model, x)
        problem = _NoiseProblem(model, x, n_draws, generator, chunk)

        def rate(rho: float) -> float:
            if rho not in evaluated:
                evaluated[rho] = problem.rate(rho) if rho > 0 else 0.0
            return evaluated[rho]

        guess = float(x.flatten(1).norm(dim=1).mean())
        guess = guess if guess > 0 and math.isfinite(guess) else 1.0
        lo, hi = None, None
        if rate(guess) >= target:
            hi = guess
            for _ in range(max_doublings):
                if rate(hi / 2) < target:
                    lo = hi / 2
                    break
                hi /= 2
            else:
                lo = 0.0
        else:
            lo = guess
            for _ in range(max_doublings):
                if not math.isfinite(2 * lo):
                    break
                if rate(2 * lo) >= target:
                    hi = 2 * lo
                    break
                lo *= 2
        if hi is not None:
            # lo == 0: the target is met down to guess / 2**max_doublings (inputs on the
            # boundary); rho is that norm. The mid guard stops at the float resolution.
            while lo > 0 and hi - lo > rel_tol * hi:
                mid = 0.5 * (lo + hi)
                if not lo < mid < hi:
                    break
                if rate(mid) >= target:
                    hi = mid
                else:
                    lo = mid
    norms = sorted(evaluated)
    curve = NoiseCurve(
        norms=torch.tensor(norms, dtype=torch.float64, device=x.device),
        fooling_rates=torch.tensor(
            [evaluated[r] for r in norms], dtype=torch.float64, device=x.device
        ),
    )
    if hi is None:
        warnings.warn(
            f"rho_rand: random noise did not fool a fraction {target:g} of the pairs at any "
            f"evaluated norm (up to {lo:.4g}, best rate {max(evaluated.values()):.4g}); "
            "returning rho=inf and converged=False.",
            stacklevel=2,
        )
        return NoiseReference(rho=math.inf, curve=curve, target=target, converged=False)
    return NoiseReference(rho=hi, curve=curve, target=target, converged=True)
