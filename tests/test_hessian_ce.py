"""The closed-form input Hessian of the cross-entropy (002 Prop. 3, Supp. A6 and B1).

References: ``torch.autograd.functional.hessian`` of the per-image cross-entropy (dense, one
image at a time) and ``torch.func.grad`` of it; ``torch.linalg.eigh`` of the dense matrices for
the c x c route; the dense product for ``matvec``. On a ReLU / max-pool network (also with
BatchNorm in eval mode) the autograd Hessian is exactly ``J^T (diag(p) - pp^T) J`` (the second
derivatives of ReLU are zero), so in float64 the two agree to rounding: we allow ``rtol=1e-9``
of the largest entry (the computations differ only in summation order, errors ~1e-15 relative;
the task's 1e-6 would hide nothing either, and a sign error in ``A`` is off by 100 %).
On a softplus network the difference is the second-order term ``sum_k (p_k - y_k) Hess f_k``,
checked against ``torch.func.hessian`` of the logits.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close
from torch import nn

from geomrob.interpret import CEHessianEigen, InputHessianCE, input_hessian_ce
from geomrob.interpret.hessian import ce_hessian_small_matrix
from geomrob.models import build

DT = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


# ---------------------------------------------------------------------------------------------
# problems: (model, x, y) factories, float64, seeded


def _mlp(seed: int, activation: type[nn.Module] = nn.ReLU):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Linear(6, 32), activation(), nn.Linear(32, 32), activation(), nn.Linear(32, 5)
        ).to(DT)
    with torch.no_grad():  # larger logits than at initialisation: spread-out probabilities
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.0)
    x = torch.randn(4, 6, generator=g, dtype=DT)
    y = torch.randint(0, 5, (4,), generator=g)
    return net, x, y


def _zoo(arch: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build(arch, input_shape=(1, 8, 8), num_classes=10, width=4).to(DT)
    with torch.no_grad():  # larger logits than at initialisation: spread-out probabilities
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(2.0)
    for m in net.modules():  # non-trivial eval-mode BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g, dtype=DT))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=DT))
    net.eval()
    x = 3 * torch.rand(3, 1, 8, 8, generator=g, dtype=DT)
    y = torch.randint(0, 10, (3,), generator=g)
    return net, x, y


PROBLEMS = {
    "mlp-relu": lambda: _mlp(0),
    "cnn2-maxpool": lambda: _zoo("cnn2", 1),
    "vgg-small-bn": lambda: _zoo("vgg-small", 2),
}


def _ce(model, shape, label):
    def loss(z):
        return F.cross_entropy(model(z.view(1, *shape)), torch.tensor([label]))

    return loss


def dense_ce_hessians(model, x, y) -> torch.Tensor:
    """``(B, d, d)`` by ``torch.autograd.functional.hessian``, one image at a time."""
    shape = tuple(x.shape[1:])
    return torch.stack(
        [
            torch.autograd.functional.hessian(
                _ce(model, shape, int(y[i])), x[i].flatten(), vectorize=True
            )
            for i in range(len(x))
        ]
    )


@functools.cache
def problem_with_reference(name: str):
    """``(model, x, y, dense autograd Hessians)`` of a problem, computed once per session."""
    model, x, y = PROBLEMS[name]()
    return model, x, y, dense_ce_hessians(model, x, y).detach()


# ---------------------------------------------------------------------------------------------
# the closed form against autograd


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_closed_form_equals_autograd_hessian_of_the_loss(name):
    model, x, y, expected = problem_with_reference(name)
    res = input_hessian_ce(model, x, y)
    assert isinstance(res, InputHessianCE) and res.piecewise_linear
    assert float(expected.abs().max()) > 1e-3  # not a vacuous comparison
    assert_close(res.dense(), expected, rtol=1e-9)
    # the Hessian does not depend on the label
    other = (y + 1) % res.logits.shape[1]
    assert_close(input_hessian_ce(model, x, other).dense(), expected, rtol=1e-9)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_loss_and_gradient_against_autograd(name):
    model, x, y = PROBLEMS[name]()
    res = input_hessian_ce(model, x, y)
    shape = tuple(x.shape[1:])
    for i in range(len(x)):
        f = _ce(model, shape, int(y[i]))
        z = x[i].flatten()
        assert_close(res.loss[i], f(z), rtol=1e-12)
        assert_close(res.gradient[i], torch.func.grad(f)(z), rtol=1e-10)
    assert torch.equal(res.label, y)
    pred = input_hessian_ce(model, x)
    assert torch.equal(pred.label, model(x).argmax(1))


def test_positive_semidefinite_and_rank_at_most_c_minus_1():
    model, x, y = _mlp(3)
    H = input_hessian_ce(model, x, y).dense()
    ev = torch.linalg.eigvalsh(H)  # ascending, (B, 6)
    top = ev[:, -1:]
    assert bool((ev >= -1e-12 * top).all())
    # d = 6 > c - 1 = 4: at least two zero eigenvalues (A 1 = 0 and rank J <= c)
    assert bool((ev[:, :2].abs() <= 1e-12 * top).all())


# ---------------------------------------------------------------------------------------------
# the c x c route


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_eigenvalues_through_the_small_matrix_match_dense_eigvalsh(name):
    model, x, y, expected = problem_with_reference(name)
    res = input_hessian_ce(model, x, y)
    c = res.logits.shape[1]
    dense_ev = torch.linalg.eigvalsh(expected).flip(-1)
    # all c eigenvalues of C are the top c of H (the rest of H's spectrum is zero)
    assert_close(res.eigenvalues(), dense_ev[:, :c], rtol=1e-9)
    assert_close(res.top_eigenvalue(), dense_ev[:, 0], rtol=1e-9)
    assert_close(dense_ev[:, c:], torch.zeros_like(dense_ev[:, c:]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_top_eigenvectors_are_eigenvectors_of_the_dense_hessian(name):
    model, x, y = PROBLEMS[name]()
    res = input_hessian_ce(model, x, y)
    k = 3
    eig = res.top_eigen(k)
    assert isinstance(eig, CEHessianEigen)
    assert eig.values.shape == (len(x), k) and eig.vectors.shape == (len(x), k, res.dim)
    H = res.dense()
    vals, vecs = torch.linalg.eigh(H)
    for i in range(len(x)):
        V = eig.vectors[i]
        assert_close(V @ V.T, torch.eye(k, dtype=DT), rtol=0, atol=1e-10)  # orthonormal rows
        assert_close(V @ H[i], eig.values[i, :, None] * V, rtol=1e-9)  # H v = lambda v
        # the top eigenvector agrees with eigh's up to sign (the top eigenvalue is simple here)
        assert float(vals[i, -1] - vals[i, -2]) > 1e-6 * float(vals[i, -1])
        assert abs(float(V[0] @ vecs[i, :, -1])) == pytest.approx(1.0, abs=1e-9)


def test_small_matrix_is_similar_to_sqrtA_JJt_sqrtA():
    """C = M J J^T M^T against A^{1/2} J J^T A^{1/2} (002 Supp. B1), both spectra."""
    model, x, y = _mlp(4)
    res = input_hessian_ce(model, x, y)
    p = res.probs
    A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    w, U = torch.linalg.eigh(A)
    root = U @ torch.diag_embed(w.clamp_min(0).sqrt()) @ U.transpose(1, 2)
    G = res.jacobian @ res.jacobian.transpose(1, 2)
    expected = torch.linalg.eigvalsh(root @ G @ root)
    assert_close(torch.linalg.eigvalsh(res.small_matrix()), expected, rtol=1e-9)
    # a sign error (pp^T - diag p) would make the spectrum non-positive
    assert float(expected[:, -1].min()) > 0


def test_zero_jacobian_gives_zero_eigenpairs():
    net = nn.Linear(4, 3).to(DT)
    nn.init.zeros_(net.weight)
    res = input_hessian_ce(net, torch.ones(2, 4, dtype=DT))
    eig = res.top_eigen(2)
    assert torch.equal(eig.values, torch.zeros(2, 2, dtype=DT))
    assert torch.equal(eig.vectors, torch.zeros(2, 2, 4, dtype=DT))


# ---------------------------------------------------------------------------------------------
# matvec, operator, chunking


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_matvec_matches_the_dense_product(name):
    model, x, y = PROBLEMS[name]()
    res = input_hessian_ce(model, x, y)
    H = res.dense()
    g = torch.Generator().manual_seed(5)
    n, d = len(x), res.dim
    v = torch.randn(d, generator=g, dtype=DT)
    V = torch.randn(n, d, generator=g, dtype=DT)
    W = torch.randn(n, 3, d, generator=g, dtype=DT)
    assert_close(res.matvec(v), H @ v, rtol=1e-12)
    assert_close(res.matvec(V), (H @ V[:, :, None])[:, :, 0], rtol=1e-12)
    assert_close(res.matvec(W), W @ H, rtol=1e-12)  # H symmetric: rows W H = (H W^T)^T
    # symmetry u.(Hv) = v.(Hu)
    U = torch.randn(n, d, generator=g, dtype=DT)
    assert_close((U * res.matvec(V)).sum(1), (V * res.matvec(U)).sum(1), rtol=1e-12)


def test_operator_for_one_image_and_lanczos():
    import geomrob

    model, x, y = _zoo("cnn2", 6)
    res = input_hessian_ce(model, x, y)
    op = res.operator(1)
    assert op.symmetric and op.shape == (res.dim, res.dim)
    assert_close(op.dense(), res.dense()[1], rtol=1e-12)
    eig = geomrob.lanczos(op, 2, generator=torch.Generator().manual_seed(0))
    assert_close(eig.values, res.top_eigen(2).values[1], rtol=1e-8)
    with pytest.raises(ValueError, match="`i` must be <= 2"):
        res.operator(3)


def test_batch_size_does_not_change_the_result():
    model, x, y = _zoo("cnn2", 7)
    a = input_hessian_ce(model, x, y)
    b = input_hessian_ce(model, x, y, batch_size=1)
    assert_close(b.jacobian, a.jacobian, rtol=1e-13)


def test_model_untouched_and_detached():
    model, x, y = _mlp(8)
    model.train()
    res = input_hessian_ce(model, x, y)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    assert not res.jacobian.requires_grad and not res.gradient.requires_grad
    d = res.to_dict()
    assert set(d) >= {"jacobian", "probs", "loss", "gradient", "label"}


def test_float32_smoke():
    model, x, y = _mlp(9)
    model32, x32 = model.float(), x.float()
    res = input_hessian_ce(model32, x32, y)
    assert res.jacobian.dtype == torch.float32
    expected = dense_ce_hessians(model.double(), x.double(), y)
    assert_close(res.dense(), expected, rtol=1e-5)  # float32 rounding
    assert_close(res.top_eigenvalue(), torch.linalg.eigvalsh(expected)[:, -1], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# smooth networks: the formula is the Gauss-Newton part, and says so


def test_smooth_model_warns_and_misses_exactly_the_second_order_term():
    model, x, y = _mlp(10, activation=nn.Softplus)
    with pytest.warns(UserWarning, match="drops the second-order term"):
        res = input_hessian_ce(model, x, y)
    assert not res.piecewise_linear
    full = dense_ce_hessians(model, x, y)
    onehot = F.one_hot(y, 5).to(DT)
    for i in range(len(x)):
        hess_f = torch.func.hessian(lambda z: model(z[None])[0])(x[i]).detach()  # (c, d, d)
        second = torch.einsum("c,cde->de", res.probs[i] - onehot[i], hess_f)
        assert float(second.abs().max()) > 1e-3  # the dropped term is not negligible here
        assert_close(res.dense()[i] + second, full[i], rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# errors


def test_bad_inputs():
    model, x, y = _mlp(11)
    with pytest.raises(ValueError, match="`y` must have shape"):
        input_hessian_ce(model, x, y[:2])
    with pytest.raises(ValueError, match="`y` labels must lie in"):
        input_hessian_ce(model, x, y + 10)
    with pytest.raises(TypeError, match="`y` must hold integer class labels"):
        input_hessian_ce(model, x, y.to(DT))
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        input_hessian_ce(model, x, batch_size=0)
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        input_hessian_ce(model, x.long())
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        input_hessian_ce(lambda t: t, x)
    res = input_hessian_ce(model, x, y)
    with pytest.raises(ValueError, match=r"`v` must have shape \(6,\), \(4, 6\) or \(4, k, 6\)"):
        res.matvec(torch.zeros(5, dtype=DT))
    with pytest.raises(TypeError, match="`v` has dtype torch.float32"):
        res.matvec(torch.zeros(6))
    with pytest.raises(ValueError, match="`k` must be <= 5"):
        res.top_eigen(6)
    with pytest.raises(ValueError, match="exceeds max_dim=5"):
        res.dense(max_dim=5)
    with pytest.raises(ValueError, match="`jacobian` must have shape"):
        ce_hessian_small_matrix(res.jacobian, res.logits[:, :3])
    with pytest.raises(TypeError, match="`logits` must be a floating-point tensor"):
        ce_hessian_small_matrix(res.jacobian, res.label[:, None].expand(4, 5))
