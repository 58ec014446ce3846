"""Brute-force dense references for tests (STYLE.md section 10).

Each function computes a quantity the slow, obvious way -- one point at a time, full matrices,
``torch.func.hessian`` -- so that the batched library code can be compared against it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import geomrob
from geomrob._model import eval_mode


def _margin(model: nn.Module, label: int, adv: int, input_shape: tuple[int, ...]):
    def F(z: Tensor) -> Tensor:
        out = model(z.view(1, *input_shape))[0]
        return out[adv] - out[label]

    return F


def dense_gradients(model: nn.Module, points) -> Tensor:
    """``(n, d)``: ``grad F_i(z_i)``, one autograd call per point."""
    shape = tuple(points.z.shape[1:])
    rows = []
    with eval_mode(model):
        for i in range(len(points)):
            F = _margin(model, int(points.label[i]), int(points.adv_label[i]), shape)
            rows.append(torch.func.grad(F)(points.z[i].flatten().detach()).detach())
    return torch.stack(rows)


def dense_boundary_hessians(model: nn.Module, points) -> Tensor:
    """``(n, d, d)``: ``Hess F_i(z_i)`` by ``torch.func.hessian``, one point at a time."""
    shape = tuple(points.z.shape[1:])
    out = []
    with eval_mode(model):
        for i in range(len(points)):
            F = _margin(model, int(points.label[i]), int(points.adv_label[i]), shape)
            out.append(torch.func.hessian(F)(points.z[i].flatten().detach()).detach())
    return torch.stack(out)


def dense_operator(
    model: nn.Module, points, *, project: bool = False, normalize: bool = False
) -> Tensor:
    """``(d, d)``: ``mean_i A_i`` with ``A_i = H_i`` or ``P_i H_i P_i`` (``/ ||grad F_i||``)."""
    H = dense_boundary_hessians(model, points)
    g = dense_gradients(model, points)
    d = H.shape[1]
    total = torch.zeros(d, d, dtype=H.dtype)
    for i in range(H.shape[0]):
        A = H[i]
        if project:
            n = g[i] / g[i].norm()
            P = torch.eye(d, dtype=H.dtype) - torch.outer(n, n)
            A = P @ A @ P
        if normalize:
            A = A / g[i].norm()
        total += A
    return total / H.shape[0]


def fd_matrix(model: nn.Module, points, h: float) -> Tensor:
    """``(d, d)``: mean over points of the coordinate central differences of the gradient.

    Column ``j`` is ``mean_i (grad F_i(z_i + h e_j) - grad F_i(z_i - h e_j)) / (2h)``, one
    autograd call per point and per sign.
    """
    shape = tuple(points.z.shape[1:])
    d = points.z[0].numel()
    total = torch.zeros(d, d, dtype=points.z.dtype)
    with eval_mode(model):
        for i in range(len(points)):
            F = _margin(model, int(points.label[i]), int(points.adv_label[i]), shape)
            z = points.z[i].flatten().detach()
            for j in range(d):
                e = torch.zeros(d, dtype=z.dtype)
                e[j] = h
                total[:, j] += (
                    (torch.func.grad(F)(z + e) - torch.func.grad(F)(z - e)) / (2 * h)
                ).detach()
    return total / len(points)


def top_eigh(A: Tensor, k: int, which: str = "LA") -> tuple[Tensor, Tensor]:
    """``(values (k,), vectors (k, d))`` of a symmetric matrix by ``torch.linalg.eigh``.

    Ordered like :func:`geomrob.curvature.lanczos.lanczos`: descending for ``"LA"``,
    ascending for ``"SA"``, by descending magnitude for ``"LM"``.
    """
    values, vectors = torch.linalg.eigh((A + A.T) / 2)
    if which == "LA":
        order = torch.argsort(values, descending=True)
    elif which == "SA":
        order = torch.argsort(values)
    elif which == "LM":
        order = torch.argsort(values.abs(), descending=True)
    else:
        raise ValueError(f"which must be LA, SA or LM; got {which!r}")
    order = order[:k]
    return values[order], vectors[:, order].T


def principal_cosines(a: Tensor, b: Tensor) -> Tensor:
    """Cosines of the principal angles between the row spans of ``a`` and ``b``, descending."""
    qa = torch.linalg.qr(a.T).Q
    qb = torch.linalg.qr(b.T).Q
    return torch.linalg.svdvals(qa.T @ qb)


def assert_close(actual: Tensor, expected: Tensor, *, rtol: float, atol: float = 0.0) -> None:
    """``|actual - expected| <= atol + rtol * max|expected|`` entrywise; reports the worst."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    err = (actual - expected).abs()
    bound = atol + rtol * scale
    worst = float(err.max()) if err.numel() else 0.0
    if worst > bound:
        idx = torch.topk(err.flatten(), min(5, err.numel())).indices
        rows = [
            f"  [{i}] actual {float(actual.flatten()[i]):.6g} expected "
            f"{float(expected.flatten()[i]):.6g}"
            for i in idx.tolist()
        ]
        raise AssertionError(
            f"max |error| {worst:.3g} > {bound:.3g} (rtol {rtol:g} x max|expected| {scale:.3g} "
            f"+ atol {atol:g}); worst entries:\n" + "\n".join(rows)
        )


class Quadratic(nn.Module):
    """Two logits, ``f_0 = 0`` and ``f_1 = w.x - c + x^T A x / 2``: F = f_1 - f_0 has Hessian A."""

    def __init__(self, w: torch.Tensor, c: float, A: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.A = nn.Parameter(A.clone())
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        f1 = x @ self.w - self.c + 0.5 * ((x @ self.A) * x).sum(1)
        return torch.stack([torch.zeros_like(f1), f1], dim=1)


def train_digits_fcn(seed: int = 0, epochs: int = 15):
    """A float64 ReLU fcn2 (width 32) fitted to the 8x8 digits by Adam: ~99% train accuracy,
    ~1 s. Returns ``(net in eval mode, x, y)`` over the whole digits training split."""
    ds = geomrob.data.load("digits", size=8)
    x, y = ds.x.to(torch.float64), ds.y
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = geomrob.models.build("fcn2", input_shape=(1, 8, 8), num_classes=10, width=32)
        net = net.to(torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), x, y
