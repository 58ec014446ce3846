r"""Layerwise spectral Lipschitz bounds and empirical estimates (Szegedy et al., ``004``).

A network ``phi = phi_K o ... o phi_1`` with layer Lipschitz constants ``L_k`` satisfies
``||phi(x + r) - phi(x)|| <= (prod_k L_k) ||r||`` (004, "Spectral analysis of unstability",
Table 5): the product is a global upper bound on the Lipschitz constant of the logits in the
l2 norm. :func:`lipschitz_bounds` computes one row per layer of the actual model on the actual
input shape (a forward pass with hooks traces the shapes and the data flow):

=====================  ===========================================================================
layer                  bound
=====================  ===========================================================================
Linear                 ``sigma_max(W)``, exactly (``torch.linalg.matrix_norm(W, ord=2)``)
Conv1d/2d/3d,          operator norm of the linear map on the real input shape (stride, padding,
ConvTranspose1d/2d     dilation, groups, padding mode), block power iteration with the layer and
                       its adjoint (``torch.func.vjp``), to a relative residual ``tol``
AvgPool, AdaptiveAvg   the same (they are linear maps)
BatchNorm1d/2d (eval)  ``max_c |gamma_c| / sqrt(var_c + eps)`` (a diagonal affine map: exact)
ReLU, ReLU6, Hardtanh,
Softplus, Tanh         1 (``sup |f'|``)
LeakyReLU, ELU         ``max(1, |slope|)``, ``max(1, |alpha|)``
Sigmoid                1/4
GELU, SiLU             ``sup |f'|`` computed: 1.1289 (GELU, at ``x = sqrt 2``), 1.0998 (SiLU)
MaxPool, AdaptiveMax   ``sqrt(c)``, ``c`` the largest number of windows that cover one input
                       element: 1 (exact) for non-overlapping windows, an upper bound otherwise
Flatten, Unflatten,
Dropout (eval),
Identity               1
nn.Sequential          product of its layers
zoo BasicBlock         ``L(act) (L(branch) + L(shortcut))``, ``L(shortcut) = 1`` for an identity
=====================  ===========================================================================

Anything else (a module with its own ``forward``, a layer used twice, a layer not listed) raises
a ``ValueError`` naming the layer and its type: the walk never guesses what a forward does.

:func:`empirical_lipschitz` gives the matching lower bound, ``max_x ||J(x)||_2`` over data, by
power iteration on ``J^T J`` with ``torch.func.jvp`` / ``vjp``, batched over the points.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._model import check_inputs, eval_mode, functional, model_device, model_dtype
from ._random import as_generator, randn
from ._threads import few_threads
from ._validation import check_int, check_model, check_positive
from .models.zoo import BasicBlock
from .results import Result

__all__ = [
    "EmpiricalLipschitz",
    "LipschitzReport",
    "LipschitzRow",
    "activation_constant",
    "empirical_lipschitz",
    "lipschitz_bounds",
    "operator_norm",
]

#: Elementwise nonlinearities with a constant Lipschitz bound (``sup |f'|``).
_ONE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Softplus, nn.Tanh)
_NEUTRAL = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class LipschitzRow(Result):
    """One layer of a :class:`LipschitzReport`.

    Attributes:
        name: qualified module name in the model (``"model"`` for the root).
        kind: the module's type name, e.g. ``"Conv2d"``; ``"BasicBlock"`` for a residual block.
        input_shape: shape of one input of the layer (no batch axis).
        output_shape: shape of one output.
        bound: Lipschitz bound of the layer in the l2 norm.
        method: how ``bound`` was obtained, and whether it is exact or an upper bound.
        factor: whether ``bound`` enters the product; the layers inside a residual block do
            not (their block's row does).
        iterations: power iterations used (``None`` when not iterative).
        residual: final relative residual ``||M v - s^2 v|| / s^2`` of the power iteration on
            ``M = A^T A`` (``None`` when not iterative).
        converged: ``residual <= tol`` (``None`` when not iterative).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    bound: float
    method: str
    factor: bool = True
    iterations: int | None = None
    residual: float | None = None
    converged: bool | None = None


@dataclass(frozen=True)
class LipschitzReport(Result):
    """Layerwise Lipschitz bounds of a model (004, Table 5).

    Attributes:
        rows: one :class:`LipschitzRow` per layer, in execution order (a residual block's row
            comes before the rows of its layers).
        product: the product of the bounds of the rows with ``factor=True``: an upper bound on
            ``||f(x + r) - f(x)||_2 / ||r||_2`` for the logits ``f``.
        input_shape: the input shape it was computed for.
        tol: the power iterations' relative residual tolerance.
    """

    rows: tuple[LipschitzRow, ...]
    product: float
    input_shape: tuple[int, ...]
    tol: float

    @property
    def converged(self) -> bool:
        """Whether every power iteration reached ``tol``."""
        return all(r.converged is not False for r in self.rows)

    def table(self) -> str:
        """The rows as a text table in the style of 004 Table 5, with the product."""
        head = f"{'layer':<28} {'kind':<18} {'input -> output':<34} {'upper bound':>12}  how"
        lines = [head, "-" * (len(head) + 24)]
        for r in self.rows:
            indent = "" if r.factor else "  "
            shape = f"{_fmt_shape(r.input_shape)} -> {_fmt_shape(r.output_shape)}"
            lines.append(
                f"{indent + r.name:<28} {r.kind:<18} {shape:<34} {r.bound:>12.4g}  {_note(r)}"
            )
        lines.append("-" * (len(head) + 24))
        lines.append(f"{'product':<28} {'':<18} {'':<34} {self.product:>12.4g}")
        return "\n".join(lines)


def _note(row: LipschitzRow) -> str:
    """A few words on how a row's bound was obtained, for :meth:`LipschitzReport.table`."""
    if row.iterations is not None:
        flag = "" if row.converged else ", NOT converged"
        return f"power iteration, {row.iterations} it, residual {row.residual:.0e}{flag}"
    if row.kind == "BasicBlock":
        return "residual block: " + row.method.split(" = ")[0]
    if not row.factor:
        return "(inside the block above)"
    if row.kind == "Linear":
        return "sigma_max(W), exact"
    if "overlapping" in row.method:
        return row.method.split(":")[0] + (f": sqrt({row.bound**2:.0f})" if row.bound > 1 else "")
    return row.method if len(row.method) <= 40 else row.method[:37] + "..."


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


# ---------------------------------------------------------------------------------------------
# operator norms of linear maps

#: Work (elements per batched product) below which the iterations run on one thread.
_SMALL_WORK = 2**16


def _few_threads(work: int) -> few_threads:
    """One thread for iterations whose batched products have at most ``_SMALL_WORK`` elements."""
    return few_threads(work, _SMALL_WORK)


def operator_norm(
    fn: Callable[[Tensor], Tensor],
    input_shape: Sequence[int],
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    block: int = 4,
    generator: torch.Generator | int | None = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[float, int, float]:
    r"""Largest singular value of a linear map ``A`` by block power iteration on ``A^T A``.

    ``fn`` maps a batch ``(b, *input_shape)`` to ``(b, ...)`` linearly and independently per
    row; ``A^T`` is its vector-Jacobian product (``torch.func.vjp`` at zero, exact for a linear
    map). Subspace iteration with ``block`` orthonormal vectors and a Rayleigh-Ritz step: the
    top Ritz value ``s^2`` rises monotonically to ``sigma_max^2`` (it is never above it), at
    the rate ``(lambda_{block+1} / lambda_1)^k``, faster than single-vector power iteration
    when the top of the spectrum is clustered, as for convolutions. It stops when the top
    Ritz pair's relative residual ``||A^T A v - s^2 v|| / s^2 <= tol``, which bounds the
    relative error of ``s^2`` by about ``tol^2 / gap``.

    Args:
        fn: the linear map (a function of a batch).
        input_shape: shape of one input.
        tol: relative residual at which to stop.
        max_iter: iterations at most (each costs ``block`` products with ``A`` and ``A^T``).
        block: vectors iterated together (at most ``prod(input_shape)``).
        generator: the random start.
        dtype: computation dtype (float64 by default).
        device: computation device.

    Returns:
        ``(sigma, iterations, residual)``.

    Example:
        >>> A = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
        >>> sigma, it, res = operator_norm(lambda v: v @ A.T, (2,))
        >>> round(sigma, 12), res <= 1e-6
        (3.0, True)
    """
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)
    block = check_int(block, "block", low=1)
    shape = tuple(int(s) for s in input_shape)
    d = math.prod(shape)
    b = min(block, d)
    gen = as_generator(generator, "cpu")
    zero = torch.zeros(b, *shape, dtype=dtype, device=device)
    _, vjp_fn = torch.func.vjp(fn, zero)

    def gram(V: Tensor) -> Tensor:  # A^T A on rows of V
        return vjp_fn(fn(V.view(b, *shape)))[0].reshape(b, d)

    with _few_threads(b * d):
        return _block_power(gram, d, b, gen, tol, max_iter, dtype, device)


def _block_power(
    gram: Callable[[Tensor], Tensor],
    d: int,
    b: int,
    gen: torch.Generator | None,
    tol: float,
    max_iter: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> tuple[float, int, float]:
    V = torch.linalg.qr(randn(d, b, generator=gen, device=device, dtype=dtype)).Q.T
    theta, res, it = 0.0, math.inf, 0
    for it in range(1, max_iter + 1):
        W = gram(V)
        H = V @ W.T
        evals, Q = torch.linalg.eigh((H + H.T) / 2)
        order = evals.argsort(descending=True)
        evals, Q = evals[order], Q[:, order]
        V, W = Q.T @ V, Q.T @ W
        theta = float(evals[0])
        if theta <= 0:  # then A V = 0 for a random V: A = 0 (with probability 1)
            return 0.0, it, 0.0
        res = float((W[0] - theta * V[0]).norm()) / max(theta, torch.finfo(dtype).tiny)
        if res <= tol:
            break
        V = torch.linalg.qr(W.T).Q.T
    return math.sqrt(max(theta, 0.0)), it, res


# ---------------------------------------------------------------------------------------------
# elementwise nonlinearities


def _sup_abs_derivative(
    f: Callable[[Tensor], Tensor], lo: float = -20.0, hi: float = 20.0
) -> float:
    """``sup |f'|`` on ``[lo, hi]``: a fine grid, then golden-section refinement (float64)."""
    t = torch.linspace(lo, hi, 400_001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(t).sum(), t)
    k = int(g.abs().argmax())

    def dabs(x: float) -> float:
        z = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        (gz,) = torch.autograd.grad(f(z).sum(), z)
        return abs(float(gz))

    grid = t.detach()
    a, c = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, 400_000)])
    phi = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        x1, x2 = c - phi * (c - a), a + phi * (c - a)
        if dabs(x1) >= dabs(x2):
            c = x2
        else:
            a = x1
    return max(dabs((a + c) / 2), float(g.abs().max()))


def activation_constant(module: nn.Module) -> tuple[float, str]:
    """Lipschitz constant ``sup |f'|`` of an elementwise nonlinearity module, with the reason.

    Args:
        module: ``nn.ReLU``, ``ReLU6``, ``Hardtanh``, ``Softplus``, ``Tanh``, ``LeakyReLU``,
            ``ELU``, ``Sigmoid``, ``GELU`` (both approximations) or ``SiLU``.

    Returns:
        ``(constant, method)``.

    Raises:
        ValueError: for another module.

    Example:
        >>> round(activation_constant(torch.nn.GELU())[0], 6)
        1.128904
        >>> activation_constant(torch.nn.LeakyReLU(0.1))[0]
        1.0
    """
    if isinstance(module, _ONE):
        return 1.0, f"sup |{type(module).__name__}'| = 1"
    if isinstance(module, nn.LeakyReLU):
        s = abs(float(module.negative_slope))
        return max(1.0, s), f"max(1, |negative_slope| = {s:g})"
    if isinstance(module, nn.ELU):
        a = abs(float(module.alpha))
        return max(1.0, a), f"max(1, |alpha| = {a:g})"
    if isinstance(module, nn.Sigmoid):
        return 0.25, "sup sigmoid' = sigmoid'(0) = 1/4"
    if isinstance(module, nn.GELU):
        if module.approximate == "none":
            r2 = math.sqrt(2.0)
            value = 0.5 * (1 + math.erf(1.0)) + r2 * math.exp(-1.0) / math.sqrt(2 * math.pi)
            return value, "sup GELU' = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) (GELU'' = 0 at sqrt 2)"
        value = _sup_abs_derivative(lambda t: F.gelu(t, approximate=module.approximate))
        return value, f"sup |GELU'| (approximate={module.approximate!r}), computed numerically"
    if isinstance(module, nn.SiLU):
        return _sup_abs_derivative(F.silu), "sup |SiLU'|, computed numerically"
    raise ValueError(f"no Lipschitz constant for the activation {type(module).__name__}.")


_ACTIVATIONS = (*_ONE, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.GELU, nn.SiLU)


# ---------------------------------------------------------------------------------------------
# max pooling: coverage of the windows


def _as_tuple(value: object, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _coverage_1d(
    n_in: int, n_out: int, kernel: int, stride: int, padding: int, dilation: int
) -> int:
    """The largest number of windows that contain one input index (PyTorch's window rule)."""
    counts = [0] * n_in
    for t in range(n_out):
        for j in range(kernel):
            p = t * stride - padding + j * dilation
            if 0 <= p < n_in:
                counts[p] += 1
    return max(counts) if counts else 0


def _adaptive_coverage_1d(n_in: int, n_out: int) -> int:
    counts = [0] * n_in
    for t in range(n_out):
        start, end = (t * n_in) // n_out, -((-(t + 1) * n_in) // n_out)
        for p in range(start, end):
            counts[p] += 1
    return max(counts) if counts else 0


def _max_pool_bound(module: nn.Module, in_shape: tuple, out_shape: tuple) -> tuple[float, str]:
    nd = 1 if isinstance(module, (nn.MaxPool1d, nn.AdaptiveMaxPool1d)) else 2
    if getattr(module, "return_indices", False):
        raise ValueError("max-pooling with return_indices=True returns a tuple, not a tensor.")
    sizes_in, sizes_out = in_shape[-nd:], out_shape[-nd:]
    cover = 1
    for axis in range(nd):
        if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            c = _adaptive_coverage_1d(sizes_in[axis], sizes_out[axis])
        else:
            k = _as_tuple(module.kernel_size, nd)[axis]
            s = _as_tuple(module.stride if module.stride is not None else k, nd)[axis]
            p = _as_tuple(module.padding, nd)[axis]
            dl = _as_tuple(module.dilation, nd)[axis]
            c = _coverage_1d(sizes_in[axis], sizes_out[axis], k, s, p, dl)
        cover *= c
    if cover <= 1:
        return 1.0, "non-overlapping windows: 1 (exact)"
    return math.sqrt(cover), (
        f"overlapping windows: sqrt(c) with c = {cover} windows covering one input element at "
        "most (|max_w x - max_w y| <= max_w |x - y|; an upper bound, not tight in general)"
    )


# ---------------------------------------------------------------------------------------------
# the walk


@dataclass
class _Call:
    args: tuple
    out: object


class _Walker:
    def __init__(
        self,
        calls: dict[nn.Module, list[_Call]],
        tol: float,
        max_iter: int,
        block: int,
        generator: torch.Generator | None,
    ):
        self.calls = calls
        self.tol, self.max_iter, self.block = tol, max_iter, block
        self.generator = generator

    def call(self, module: nn.Module, name: str) -> _Call:
        name = name or "model"
        calls = self.calls.get(module, [])
        if len(calls) != 1:
            what = "never runs" if not calls else f"runs {len(calls)} times"
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) {what} in one forward pass; "
                "lipschitz_bounds needs every layer to run exactly once."
            )
        c = calls[0]
        if not c.args or not isinstance(c.args[0], Tensor) or not isinstance(c.out, Tensor):
            raise ValueError(
                f"Layer {name!r} ({type(module).__name__}) must take and return one tensor."
            )
        return c

    def walk(self, module: nn.Module, name: str) -> tuple[float, list[LipschitzRow]]:
        c = self.call(module, name)
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            return self.sequential(module, name, c)
        if type(module) is BasicBlock:
            return self.residual(module, name, c)
        in_shape = tuple(c.args[0].shape[1:])
        out_shape = tuple(c.out.shape[1:])
        kind = type(module).__name__
        name = name or "model"
        iterations = residual = converged = None
        if isinstance(module, nn.Linear):
            W = module.weight.detach().to(torch.float64)
            bound = float(torch.linalg.matrix_norm(W, ord=2))
            method = "sigma_max(W), exact (torch.linalg.matrix_norm, ord=2)"
        elif isinstance(module, (*_CONV, *_AVG)):
            bound, iterations, residual = self.linear_norm(module, in_shape, c.args[0].device)
            converged = residual <= self.tol
            what = "layer" if isinstance(module, _CONV) else "pooling"
            method = (
                f"operator norm on input {_fmt_shape(in_shape)}: block power iteration with the "
                f"{what} and its adjoint (vjp), relative residual {residual:.1e} after "
                f"{iterations} iterations (tol {self.tol:g})"
            )
            if isinstance(module, _CONV):
                method += (
                    f"; stride {module.stride}, padding {module.padding}, dilation "
                    f"{module.dilation}, groups {module.groups}"
                )
        elif isinstance(module, _BN):
            bound, method = self.batchnorm(module, name)
        elif isinstance(module, _ACTIVATIONS):
            bound, method = activation_constant(module)
        elif isinstance(module, _MAX):
            bound, method = _max_pool_bound(module, tuple(c.args[0].shape), tuple(c.out.shape))
        elif isinstance(module, _NEUTRAL):
            bound, method = 1.0, "1 (identity up to a reshape; dropout is the identity in eval)"
        else:
            supported = ", ".join(
                sorted(
                    {
                        t.__name__
                        for t in (nn.Linear, *_CONV, *_AVG, *_BN, *_ACTIVATIONS, *_MAX, *_NEUTRAL)
                    }
                )
            )
            raise ValueError(
                f"Layer {name!r} of type {kind} is not supported by lipschitz_bounds. Supported: "
                f"nn.Sequential, geomrob's BasicBlock and {supported}. A module with its own "
                "forward cannot be read: write the model as nn.Sequential."
            )
        row = LipschitzRow(
            name=name,
            kind=kind,
            input_shape=in_shape,
            output_shape=out_shape,
            bound=bound,
            method=method,
            iterations=iterations,
            residual=residual,
            converged=converged,
        )
        return bound, [row]

    def sequential(self, seq: nn.Sequential, name: str, c: _Call) -> tuple[float, list]:
        bound, rows = 1.0, []
        current = c.args[0]
        for child_name, child in seq.named_children():
            full = f"{name}.{child_name}" if name else child_name
            cc = self.call(child, full)
            if cc.args[0] is not current:
                raise ValueError(
                    f"Layer {full!r} ({type(child).__name__}) does not receive the output of the "
                    "layer before it: the model's data flow is not the one of its Sequential."
                )
            b, r = self.walk(child, full)
            bound *= b
            rows += r
            current = cc.out
        if current is not c.out:
            raise ValueError(
                f"The output of {name or 'the model'!r} is not the output of its last layer."
            )
        return bound, rows

    def residual(self, block: BasicBlock, name: str, c: _Call) -> tuple[float, list]:
        x = c.args[0]
        parts = {}
        for part in ("branch", "shortcut", "act"):
            child = getattr(block, part)
            full = f"{name}.{part}" if name else part
            cc = self.call(child, full)
            if part != "act" and cc.args[0] is not x:
                raise ValueError(f"{full!r} does not receive the input of its block {name!r}.")
            parts[part] = (cc, *self.walk(child, full))
        act_in = parts["act"][0].args[0]
        expected = parts["branch"][0].out + parts["shortcut"][0].out
        if parts["act"][0].out is not c.out or not torch.equal(act_in, expected):
            raise ValueError(f"The block {name!r} does not compute act(branch(x) + shortcut(x)).")
        lb, ls, la = parts["branch"][1], parts["shortcut"][1], parts["act"][1]
        bound = la * (lb + ls)
        identity = isinstance(block.shortcut, nn.Identity)
        method = (
            f"L(act) (1 + L(branch)) = {la:.4g} (1 + {lb:.4g}), identity shortcut"
            if identity
            else f"L(act) (L(shortcut) + L(branch)) = {la:.4g} ({ls:.4g} + {lb:.4g}), "
            "projection shortcut"
        )
        inner = [
            dataclasses.replace(r, factor=False)
            for part in ("branch", "shortcut", "act")
            for r in parts[part][2]
        ]
        row = LipschitzRow(
            name=name or "model",
            kind=type(block).__name__,
            input_shape=tuple(x.shape[1:]),
            output_shape=tuple(c.out.shape[1:]),
            bound=bound,
            method=method,
        )
        return bound, [row, *inner]

    def batchnorm(self, bn: nn.Module, name: str) -> tuple[float, str]:
        # BatchNorm without running statistics is refused before the trace
        scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
        if bn.weight is not None:
            scale = bn.weight.detach().double().abs() * scale
        return float(scale.max()), "max_c |gamma_c| / sqrt(var_c + eps), exact (diagonal map)"

    def linear_norm(
        self, module: nn.Module, in_shape: tuple, device: torch.device
    ) -> tuple[float, int, float]:
        state = {k: v.detach().to(torch.float64) for k, v in module.named_parameters()}
        state.update({k: v.detach() for k, v in module.named_buffers()})
        if isinstance(module, _CONV) and module.bias is not None:
            state["bias"] = torch.zeros_like(state["bias"])

        def fn(v: Tensor) -> Tensor:
            return torch.func.functional_call(module, state, (v,))

        return operator_norm(
            fn,
            in_shape,
            tol=self.tol,
            max_iter=self.max_iter,
            block=self.block,
            generator=self.generator,
            device=device,
        )


def lipschitz_bounds(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    tol: float = 1e-6,
    max_iter: int = 2000,
    block: int = 4,
    generator: torch.Generator | int | None = 0,
) -> LipschitzReport:
    r"""Layerwise Lipschitz upper bounds of a classifier and their product (004, Table 5).

    For ``f = phi_K o ... o phi_1`` with ``||phi_k(u) - phi_k(v)|| <= L_k ||u - v||``,
    ``||f(x + r) - f(x)||_2 <= (prod_k L_k) ||r||_2`` (the module docstring lists ``L_k`` per
    layer type). A forward pass on zeros of ``input_shape`` with hooks records what every
    module receives and returns; the walk checks that the data flow is the one it assumes
    (each Sequential layer gets the previous layer's output; a residual block computes
    ``act(branch(x) + shortcut(x))``) and computes linear layers' norms on the traced input
    shapes. Runs in eval mode (BatchNorm uses its running statistics) and float64.

    Args:
        model: an ``nn.Sequential`` of supported layers (every zoo model).
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        tol: relative residual of the power iterations (convolutions, average pooling).
        max_iter: power iterations per layer at most; a layer that does not reach ``tol``
            is marked ``converged=False`` and a warning is raised.
        block: vectors per block power iteration.
        generator: random starts of the power iterations.

    Returns:
        A :class:`LipschitzReport`.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: for an unsupported layer (named, with its type), a layer run twice, a data
            flow that is not the walked one, or a bad ``input_shape`` / option.

    Example:
        >>> from geomrob.models import build
        >>> _ = torch.manual_seed(0)
        >>> model = build("cnn2", input_shape=(1, 8, 8), num_classes=10, width=4)
        >>> report = lipschitz_bounds(model, (1, 8, 8))
        >>> [r.name for r in report.rows][:4]
        ['conv1', 'act1', 'pool1', 'conv2']
        >>> report.product == math.prod(r.bound for r in report.rows)
        True
    """
    model = check_model(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(
            "`model` is a TorchScript module, whose layers cannot be traced with hooks; pass the "
            "nn.Module itself (e.g. a geomrob checkpoint or a package.module:factory spec)."
        )
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(f"`input_shape` must be a sequence of positive ints; got {input_shape!r}.")
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"`input_shape` must be a sequence of positive ints; got {input_shape!r}.")
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", low=1)
    block = check_int(block, "block", low=1)
    gen = as_generator(generator, "cpu")
    device = model_device(model)
    dtype = model_dtype(model) or next(
        (t.dtype for t in model.buffers() if t.is_floating_point()), torch.get_default_dtype()
    )
    for name, m in model.named_modules():
        if isinstance(m, _BN) and m.running_var is None:
            raise ValueError(
                f"Layer {name!r} ({type(m).__name__}) has no running statistics "
                "(track_running_stats=False): in eval it normalises by batch statistics, which "
                "is not a fixed affine map."
            )
    calls: dict[nn.Module, list[_Call]] = {}

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        calls.setdefault(module, []).append(_Call(args, out))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with eval_mode(model), torch.no_grad():
        try:
            model(torch.zeros(1, *shape, device=device, dtype=dtype))
        except RuntimeError as exc:
            raise ValueError(
                f"The model failed on an input of shape {(1, *shape)}: {exc}. Check `input_shape`."
            ) from exc
        finally:
            for h in handles:
                h.remove()
        _, rows = _Walker(calls, tol, max_iter, block, gen).walk(model, "")
    missed = [r.name for r in rows if r.converged is False]
    if missed:
        warnings.warn(
            f"lipschitz_bounds: the power iteration of {missed} did not reach tol={tol:g} within "
            f"max_iter={max_iter}; their bounds are lower estimates of the operator norm "
            "(marked converged=False).",
            stacklevel=2,
        )
    product = math.prod(r.bound for r in rows if r.factor)
    return LipschitzReport(rows=tuple(rows), product=product, input_shape=shape, tol=tol)


# ---------------------------------------------------------------------------------------------
# empirical lower bound


@dataclass(frozen=True, eq=False)
class EmpiricalLipschitz(Result):
    """``||J(x)||_2`` of the logits at data points: a lower bound on the Lipschitz constant.

    Attributes:
        values: ``(n,)`` the spectral norm of the Jacobian of the logits at each point.
        max: ``max(values)``, the empirical lower bound.
        argmax: index of the point attaining it.
        iterations: ``(n,)`` power iterations used per point.
        residuals: ``(n,)`` final relative residuals ``||J^T J v - s^2 v|| / s^2``.
        converged: ``(n,)`` bool, ``residuals <= tol``.
        tol: the tolerance.
    """

    values: Tensor
    max: float
    argmax: int
    iterations: Tensor
    residuals: Tensor
    converged: Tensor
    tol: float


def empirical_lipschitz(
    model: nn.Module,
    x: Tensor,
    *,
    tol: float | None = None,
    max_iter: int = 500,
    batch_size: int | None = None,
    generator: torch.Generator | int | None = 0,
) -> EmpiricalLipschitz:
    r"""Spectral norm of the input Jacobian of the logits at each point (power iteration).

    ``||J(x)||_2 = sigma_max(d f / d x)`` by power iteration on ``J^T J``: ``u = J v`` by
    ``torch.func.jvp``, ``J^T u`` by ``torch.func.vjp``, ``s^2 = ||J v||^2`` for unit ``v``,
    per point, for a whole batch at once (the model treats rows independently in eval mode,
    so one batched product is ``n`` per-point products). A point stops when
    ``||J^T J v - s^2 v|| <= tol s^2``. ``max_x ||J(x)||_2`` is a lower bound on the
    Lipschitz constant that :func:`lipschitz_bounds` bounds from above.

    Args:
        model: a classifier ``(n, *input_shape) -> (n, L)`` logits.
        x: ``(n, *input_shape)`` points, in the model's dtype and device.
        tol: relative residual (``None``: ``1e-6`` in float64, ``1e-4`` otherwise).
        max_iter: iterations at most per point (non-converged points are reported and warned).
        batch_size: points per batched pass (``None``: all).
        generator: random starting vectors.

    Returns:
        An :class:`EmpiricalLipschitz`.

    Raises:
        TypeError, ValueError: for a bad model, inputs or options.

    Example:
        >>> lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).double()
        >>> est = empirical_lipschitz(lin, torch.randn(5, 4, dtype=torch.float64))
        >>> sigma = torch.linalg.matrix_norm(lin[1].weight, ord=2).item()
        >>> abs(est.max - sigma) < 1e-9
        True
    """
    model = check_model(model)
    max_iter = check_int(max_iter, "max_iter", low=1)
    if tol is None:
        tol = 1e-6 if x.dtype == torch.float64 else 1e-4
    tol = check_positive(tol, "tol")
    gen = as_generator(generator, "cpu")
    with eval_mode(model):
        check_inputs(model, x, "x")
        n = x.shape[0]
        bs = n if batch_size is None else check_int(batch_size, "batch_size", low=1)
        f = functional(model)
        values, iters, residuals = [], [], []
        for s in range(0, n, bs):
            xc = x[s : s + bs].detach()
            with _few_threads(xc.numel()):
                v_, it_, r_ = _power_jacobian(f, xc, tol, max_iter, gen)
            values.append(v_)
            iters.append(it_)
            residuals.append(r_)
    values_t, iters_t, res_t = torch.cat(values), torch.cat(iters), torch.cat(residuals)
    converged = res_t <= tol
    if not bool(converged.all()):
        warnings.warn(
            f"empirical_lipschitz: {int((~converged).sum())} of {n} points did not reach "
            f"tol={tol:g} within max_iter={max_iter} (marked converged=False).",
            stacklevel=2,
        )
    k = int(values_t.argmax())
    return EmpiricalLipschitz(
        values=values_t,
        max=float(values_t[k]),
        argmax=k,
        iterations=iters_t,
        residuals=res_t,
        converged=converged,
        tol=tol,
    )


def _power_jacobian(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    tol: float,
    max_iter: int,
    gen: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    n = x.shape[0]
    flat = x[0].numel()
    _, vjp_fn = torch.func.vjp(f, x)
    v = randn(n, flat, generator=gen, device=x.device, dtype=x.dtype)
    v = v / v.norm(dim=1, keepdim=True)
    sigma2 = torch.zeros(n, dtype=x.dtype, device=x.device)
    res = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    iters = torch.zeros(n, dtype=torch.long, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    tiny = torch.finfo(x.dtype).tiny
    for it in range(1, max_iter + 1):
        _, u = torch.func.jvp(f, (x,), (v.view_as(x),))
        w = vjp_fn(u)[0].reshape(n, flat)
        s2 = u.pow(2).sum(1)
        r = (w - s2[:, None] * v).norm(dim=1) / s2.clamp_min(tiny)
        r = torch.where(w.norm(dim=1) == 0, torch.zeros_like(r), r)  # J = 0: exact
        active = ~done
        sigma2 = torch.where(active, s2, sigma2)
        res = torch.where(active, r, res)
        iters = torch.where(active, torch.full_like(iters, it), iters)
        done = done | (r <= tol)
        if bool(done.all()):
            break
        wn = w.norm(dim=1, keepdim=True)
        v_new = torch.where(wn > 0, w / wn.clamp_min(tiny), v)
        v = torch.where(done[:, None], v, v_new)
    return sigma2.clamp_min(0).sqrt().detach(), iters.cpu(), res.detach().cpu()
