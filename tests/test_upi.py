"""Universal perturbations for interpretation (000 Algs. 1-2, Prop. 2) and their baselines.

References: ``torch.linalg.svd`` of the same matrix ``G`` for the stochastic power method (000
Prop. 2: the limit is the top right singular vector); closed forms on a quadratic logit
``S(x) = w.x - c + x^T A x / 2``, whose saliency is ``w + A x``, so that with raw maps
``D(x, x + z) = ||A z||^2``, ``grad_z D = 2 A^2 z`` and the UPI-Grad objective
``E ||A (delta + z)||^2`` is maximised on the l2 ball by the top eigenvector of ``A^2``; a loop
over images with the public maps and ``metrics.dissimilarity`` for 000 Eq. 9, and
``geomrob.fooling_rate`` for the label-change rate. The comparison with random noise uses a tiny
ReLU network trained on the embedded 8x8 digits in a second (gradients through a softplus
surrogate, evaluation on the ReLU network). float64 throughout.
"""

from __future__ import annotations

import pytest
import torch
from reference import Quadratic, assert_close, train_digits_fcn
from torch import nn

import geomrob
from geomrob.interpret import (
    IntegratedGradients,
    PowerIteration,
    UniversalDissimilarity,
    UPIResult,
    classification_uap,
    interpretation_gradients,
    pgd_attack,
    random_noise,
    saliency,
    stochastic_power_method,
    universal_dissimilarity,
    upi_grad,
    upi_pca,
)
from geomrob.interpret.metrics import dissimilarity

DT = torch.float64
INF = float("inf")


# ---------------------------------------------------------------------------------------------
# problems


@pytest.fixture(scope="module")
def digits():
    net, x, _ = train_digits_fcn()
    return net, x[:150], x[600:900]  # fitting and held-out images


def quadratic(d: int = 5, seed: int = 0):
    """Logit 1 is ``w.x + 20 + x^T A x / 2`` (always predicted near 0), A symmetric, gap in A^2."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    eig = torch.tensor([2.0, -1.0, 0.7, 0.5, 0.3][:d], dtype=DT)
    A = q @ torch.diag(eig) @ q.T
    w = torch.randn(d, generator=g, dtype=DT)
    return Quadratic(w, -20.0, A).eval(), A, q[:, 0]


def spectrum_rows(n: int = 40, d: int = 10, seed: int = 0) -> torch.Tensor:
    """``G = U diag(s) V^T`` with singular values 5, 2, 1.5, 1, ... (a clear top gap)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=DT))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    s = torch.tensor([5.0, 2.0, 1.5, 1.0] + [0.5] * (d - 4), dtype=DT)
    return u @ torch.diag(s) @ v.T


def abs_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(), b.flatten()
    return float((a @ b).abs() / (a.norm() * b.norm()))


def top_right_singular_vector(G: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svd(G, full_matrices=False).Vh[0]


# ---------------------------------------------------------------------------------------------
# the stochastic power method (000 Alg. 2, Prop. 2)


@pytest.mark.parametrize("project", [True, False])
@pytest.mark.parametrize("batch_size", [40, 8])
def test_power_method_finds_the_top_right_singular_vector(project, batch_size):
    G = spectrum_rows()
    top = top_right_singular_vector(G)
    res = stochastic_power_method(
        G, eps=3.0, epochs=60, batch_size=batch_size, project=project, generator=0
    )
    assert isinstance(res, PowerIteration) and res.updates == 60 * (40 // batch_size)
    # Full batches: the power method on I + alpha M, rate (1 + 4/n a)/(1 + 25/n a) ~ 0.6 per
    # update, exact after 60. Minibatches of 8: an Oja-type iteration with a constant step,
    # which stays within a small angle of the top vector (000 Prop. 2 is for the mean).
    tol = 1e-10 if batch_size == 40 else 1e-2
    assert abs_cos(res.vector, top) >= 1 - tol
    assert_close(res.vector.norm(), torch.tensor(3.0, dtype=DT), rtol=1e-12)
    s1 = torch.linalg.svdvals(G)[0]
    assert_close(res.history[-1], s1**2 / 40, rtol=tol)  # Rayleigh quotient of M = G^T G / n
    assert res.alpha == pytest.approx(40 / float(G.pow(2).sum()), rel=1e-12)
    # the exact top eigenvalue and the optimality the iteration reached
    assert res.top_value == pytest.approx(float(s1) ** 2 / 40, rel=1e-12)
    assert res.optimality == pytest.approx(1.0, abs=tol)
    # one pass from a tiny start is far from the optimum, and says so
    short = stochastic_power_method(G, eps=3.0, epochs=1, batch_size=40, generator=0)
    assert short.optimality < 0.99


def test_power_method_optimality_bounds_the_cosine():
    """q = Rayleigh / lambda_1 gives cos^2(d, u_1) >= (q - r) / (1 - r); r = l_2 / l_1."""
    G = spectrum_rows()
    lam = torch.linalg.svdvals(G) ** 2 / len(G)
    r = float(lam[1] / lam[0])
    top = top_right_singular_vector(G)
    for epochs in (1, 2, 3, 5):
        res = stochastic_power_method(G, eps=1.0, epochs=epochs, batch_size=8, generator=1)
        q = res.optimality
        assert 0 < q <= 1 + 1e-12
        assert abs_cos(res.vector, top) ** 2 >= (q - r) / (1 - r) - 1e-12


def test_power_method_linf_projection_and_reproducibility():
    G = spectrum_rows()
    a = stochastic_power_method(G, eps=0.2, p=INF, epochs=5, batch_size=8, generator=3)
    b = stochastic_power_method(G, eps=0.2, p=INF, epochs=5, batch_size=8, generator=3)
    assert torch.equal(a.vector, b.vector)
    assert float(a.vector.abs().max()) == pytest.approx(0.2, rel=1e-12)  # on the cube's surface
    c = stochastic_power_method(
        G, eps=0.2, p=INF, epochs=5, batch_size=8, project=False, generator=3
    )
    assert float(c.vector.abs().max()) == pytest.approx(0.2, rel=1e-12)
    # the literal step of Alg. 2 works when it is small enough, and a huge one is caught
    d = stochastic_power_method(G, eps=1.0, alpha=0.5, epochs=80, batch_size=40, generator=0)
    assert abs_cos(d.vector, top_right_singular_vector(G)) > 1 - 1e-8
    with pytest.raises(RuntimeError, match="NaN or infinite"):
        stochastic_power_method(G * 1e100, eps=1.0, alpha=1e200, project=False, generator=0)


def test_power_method_errors():
    G = spectrum_rows()
    with pytest.raises(ValueError, match="`rows` must be a matrix"):
        stochastic_power_method(G[0], eps=1.0)
    with pytest.raises(ValueError, match="all zero"):
        stochastic_power_method(torch.zeros(3, 4, dtype=DT), eps=1.0)
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        stochastic_power_method(G, eps=-1.0)
    with pytest.raises(ValueError, match="`alpha` must be > 0"):
        stochastic_power_method(G, eps=1.0, alpha=0.0)
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        stochastic_power_method(G, eps=1.0, sigma=0.0)
    with pytest.raises(ValueError, match="`epochs` must be >= 1"):
        stochastic_power_method(G, eps=1.0, epochs=0)
    with pytest.raises(TypeError, match="`project` must be True or False"):
        stochastic_power_method(G, eps=1.0, project="yes")
    with pytest.raises(TypeError, match="`rows` must be a torch.Tensor"):
        stochastic_power_method(G.tolist(), eps=1.0)
    with pytest.raises(ValueError, match="`rows` contains 1 NaN"):
        bad = G.clone()
        bad[0, 0] = float("nan")
        stochastic_power_method(bad, eps=1.0)


# ---------------------------------------------------------------------------------------------
# the rows G and UPI-PCA


def test_interpretation_gradients_closed_form_on_a_quadratic():
    net, A, _ = quadratic()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=DT) * 0.3
    assert bool((net(x).argmax(1) == 1).all())
    sigma = 0.1
    G = interpretation_gradients(net, x, sigma=sigma, normalize=None, generator=0)
    # raw saliency w + A x: D(x, x + z) = ||A z||^2 and grad_z D = 2 A^2 z, with z the first
    # draw of the generator (documented order: all images of a sample at once)
    z = sigma * torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert_close(G, 2 * z @ (A @ A), rtol=1e-12)
    # two samples: the mean of the two draws (a seed for the maps' noise is drawn in between)
    g = torch.Generator().manual_seed(0)
    z1 = sigma * torch.randn(7, 5, generator=g, dtype=DT)
    torch.randint(0, 2**62, (1,), generator=g)
    z2 = sigma * torch.randn(7, 5, generator=g, dtype=DT)
    G2 = interpretation_gradients(net, x, sigma=sigma, normalize=None, n_samples=2, generator=0)
    assert_close(G2, (z1 + z2) @ (A @ A), rtol=1e-12)
    # batch size changes only the rounding (the draws are made before any map)
    G3 = interpretation_gradients(net, x, sigma=sigma, normalize=None, batch_size=3, generator=0)
    assert_close(G3, G, rtol=1e-13)


@pytest.mark.parametrize("project", [True, False])
def test_upi_pca_is_the_top_right_singular_vector_of_its_rows(digits, project):
    net, x, _ = digits
    x = x[:60]
    kw = dict(sigma=0.01, surrogate=10.0, batch_size=60, generator=0)
    G = interpretation_gradients(net, x, **kw)
    res = upi_pca(net, x, eps=0.5, epochs=40, project=project, **kw)
    assert isinstance(res, UPIResult) and res.algorithm == "upi_pca" and res.variant == "grad"
    assert res.delta.shape == (1, 8, 8) and res.norm == pytest.approx(0.5, rel=1e-12)
    # 000 Prop. 2, on the same G: cosine >= 0.99 (full batches, the power method on I + aM)
    assert abs_cos(res.delta, top_right_singular_vector(G)) >= 0.99
    assert bool((res.history[1:] >= res.history[:-1] * (1 - 1e-9)).all())  # Rayleigh rises
    s1 = torch.linalg.svdvals(G.double())[0]
    assert res.optimality == pytest.approx(float(res.history[-1]) / (float(s1) ** 2 / 60))
    assert res.optimality > 0.98


@pytest.mark.parametrize("variant", ["fgm", "pgd"])
def test_upi_pca_fgm_pgd_rows_are_the_per_image_perturbations(digits, variant):
    net, x, _ = digits
    x = x[:20]
    res = upi_pca(
        net,
        x,
        eps=0.5,
        variant=variant,
        steps=3,
        epochs=30,
        batch_size=20,
        surrogate=10.0,
        generator=0,
    )
    g = torch.Generator().manual_seed(0)
    attack = geomrob.interpret.fgm_attack if variant == "fgm" else pgd_attack
    extra = {} if variant == "fgm" else {"steps": 3}
    rows = attack(net, x, eps=0.5, sigma=0.05 * 0.5 / 8, surrogate=10.0, generator=g, **extra)
    top = top_right_singular_vector(rows.delta.flatten(1))
    assert abs_cos(res.delta, top) >= 0.99
    assert res.variant == variant and res.norm == pytest.approx(0.5, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# UPI-Grad (000 Alg. 1)


@pytest.mark.parametrize("alpha", [None, 0.05])
def test_upi_grad_finds_the_top_eigenvector_on_a_quadratic(alpha):
    """E ||A (delta + z)||^2 = ||A delta||^2 + const: maximised by the top eigenvector of A^2."""
    net, A, top = quadratic()
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1), dtype=DT) * 0.3
    res = upi_grad(
        net,
        x,
        eps=0.5,
        alpha=alpha,
        epochs=12,
        batch_size=10,
        sigma=0.01,
        normalize=None,
        generator=0,
    )
    assert res.updates == 48 and res.norm == pytest.approx(0.5, rel=1e-12)
    # z adds noise of relative size sigma / eps = 2% to each step: cosine within 1e-3
    assert abs_cos(res.delta, top) >= 1 - 1e-3
    # history: mean D = ||A (delta + z)||^2 rises to about 4 eps^2 = 1 (eigenvalue 2 of A)
    assert float(res.history[-1]) == pytest.approx(1.0, rel=0.05)
    assert float(res.history[0]) < float(res.history[-1])


def test_upi_grad_beats_random_noise_on_a_trained_relu_net(digits):
    net, x, held_out = digits
    res = upi_grad(net, x, eps=0.5, epochs=4, batch_size=50, surrogate=10.0, generator=0)
    assert res.history[-1] > 2 * res.history[0]  # mean dissimilarity rises over the epochs
    assert bool((res.history[1:] > res.history[:-1]).all())
    upi = universal_dissimilarity(net, held_out, res.delta)
    # 000 Table 1 averages random noise over 10 seeds; 5 here, universal and per image
    rand_u = [
        universal_dissimilarity(net, held_out, random_noise(x, eps=res.norm, generator=s)).mean
        for s in range(5)
    ]
    noise = random_noise(held_out, eps=res.norm, universal=False, generator=0)
    rand_i = universal_dissimilarity(net, held_out, noise).mean
    # measured: UPI 0.33, 2.6x the largest of the random draws (0.12); require 1.5x
    assert upi.mean > 1.5 * max(rand_u) and upi.mean > 1.5 * rand_i, (upi.mean, rand_u, rand_i)
    pca = upi_pca(net, x, eps=0.5, surrogate=10.0, batch_size=50, generator=0)
    assert universal_dissimilarity(net, held_out, pca.delta).mean > 1.5 * max(rand_u)


# ---------------------------------------------------------------------------------------------
# evaluation and baselines


def test_universal_dissimilarity_matches_a_loop_over_images(digits):
    net, _, held_out = digits
    x = held_out[:40]
    v = random_noise(x, eps=2.0, generator=1)
    res = universal_dissimilarity(net, x, v, batch_size=16)
    assert isinstance(res, UniversalDissimilarity)
    ref = []
    for i in range(40):
        xi, xa = x[i : i + 1], x[i : i + 1] + v
        a = saliency(net, xi, normalize="l1").attribution
        b = saliency(net, xa, normalize="l1").attribution  # the class predicted at x + v
        ref.append(dissimilarity(a, b))
    ref = torch.cat(ref)
    assert_close(res.dissimilarity, ref, rtol=1e-12)
    assert res.mean == pytest.approx(float(ref.mean()), rel=1e-12)
    assert res.median == pytest.approx(float(ref.quantile(0.5)), rel=1e-12)
    assert res.label_change_rate == pytest.approx(geomrob.fooling_rate(net, x, v), abs=1e-12)
    assert 0 < res.label_change_rate < 1  # eps = 2 changes some labels, not all
    assert_close(res.norm, torch.full((40,), 2.0, dtype=DT), rtol=1e-12)
    # same_class explains the clean class at x + v: differs exactly where the label changed
    same = universal_dissimilarity(net, x, v, same_class=True)
    changed = res.label_changed
    assert torch.equal(same.dissimilarity[~changed], res.dissimilarity[~changed])
    assert bool((same.dissimilarity[changed] != res.dissimilarity[changed]).all())
    # flat and per-image forms of the same perturbation, and batch size, change nothing
    flat = universal_dissimilarity(net, x, v.flatten(), batch_size=7)
    per_image = universal_dissimilarity(net, x, v.expand_as(x).clone())
    assert_close(flat.dissimilarity, res.dissimilarity, rtol=1e-12)
    assert_close(per_image.dissimilarity, res.dissimilarity, rtol=1e-12)
    # bounds clip x + v to the box (and only then)
    boxed = universal_dissimilarity(net, x, v, bounds=(0.0, 1.0))
    assert bool((boxed.norm < res.norm).all())


def test_per_image_attack_rows_of_table_1(digits):
    """The "Per image-PGD" row: label kept everywhere, higher dissimilarity than random."""
    net, _, held_out = digits
    x = held_out[:20]
    res = pgd_attack(net, x, eps=0.5, steps=10, surrogate=10.0, generator=0)
    row = universal_dissimilarity(net, x, res.delta)
    assert row.label_change_rate == 0.0
    assert_close(row.dissimilarity, res.metric_after, rtol=1e-10)
    rand = universal_dissimilarity(net, x, random_noise(x, eps=0.5, universal=False, generator=0))
    assert row.mean > 2 * rand.mean


def test_random_noise_norms_and_reproducibility():
    x = torch.zeros(4, 3, 5, dtype=DT)
    v = random_noise(x, eps=0.7, generator=0)
    assert v.shape == (3, 5) and float(v.norm()) == pytest.approx(0.7, rel=1e-14)
    assert torch.equal(v, random_noise(x, eps=0.7, generator=0))
    w = random_noise(x, eps=0.7, universal=False, generator=0)
    assert w.shape == (4, 3, 5)
    assert_close(w.flatten(1).norm(dim=1), torch.full((4,), 0.7, dtype=DT), rtol=1e-14)
    assert not torch.equal(w[0], w[1])
    u = random_noise(x, eps=0.7, p=INF, universal=False, generator=0)
    assert_close(u.flatten(1).abs().amax(1), torch.full((4,), 0.7, dtype=DT), rtol=1e-14)


def test_classification_uap_fools_more_than_noise(digits):
    net, x, held_out = digits
    res = classification_uap(net, x, eps=2.0, epochs=4, batch_size=50, generator=0)
    assert res.algorithm == "classification_uap" and res.norm <= 2.0 * (1 + 1e-12)
    assert res.history[-1] > res.history[0]  # the cross-entropy rises
    fooled = geomrob.fooling_rate(net, held_out, res.delta)
    noise = geomrob.fooling_rate(net, held_out, random_noise(x, eps=res.norm, generator=0))
    assert fooled > noise + 0.2, (fooled, noise)
    clipped = classification_uap(
        net, x, eps=2.0, epochs=2, batch_size=50, max_loss=1.0, generator=0
    )
    assert float(clipped.history.max()) <= 1.0
    with torch.no_grad():
        labels = net(x).argmax(1)
    same = classification_uap(net, x, eps=2.0, epochs=2, batch_size=50, labels=labels, generator=0)
    again = classification_uap(net, x, eps=2.0, epochs=2, batch_size=50, generator=0)
    assert torch.equal(same.delta, again.delta)


def test_upi_with_integrated_gradients_and_method_objects(digits):
    net, x, held_out = digits
    ig = IntegratedGradients(steps=8)
    res = upi_grad(
        net, x[:20], eps=0.5, method=ig, epochs=2, batch_size=10, surrogate=10.0, generator=0
    )
    assert bool(torch.isfinite(res.history).all()) and res.history[-1] > res.history[0]
    by_name = upi_pca(
        net, x[:20], eps=0.5, method="ig", epochs=5, batch_size=20, surrogate=10.0, generator=0
    )
    by_object = upi_pca(
        net,
        x[:20],
        eps=0.5,
        method=IntegratedGradients(),
        epochs=5,
        batch_size=20,
        surrogate=10.0,
        generator=0,
    )
    assert torch.equal(by_name.delta, by_object.delta)  # "ig" is IntegratedGradients()
    row = universal_dissimilarity(net, held_out[:20], res.delta, ig)
    assert row.mean > 0 and row.dissimilarity.shape == (20,)


# ---------------------------------------------------------------------------------------------
# warnings, progress, bad input


def test_relu_without_surrogate_warns_and_progress_runs(digits):
    net, x, _ = digits
    with pytest.warns(UserWarning, match="surrogate"):
        upi_grad(net, x[:10], eps=0.5, epochs=1, batch_size=10, generator=0)
    with pytest.warns(UserWarning, match="surrogate"):
        interpretation_gradients(net, x[:10], sigma=0.01)
    res = upi_grad(net, x[:10], eps=0.5, epochs=1, batch_size=5, surrogate=10.0, progress=True)
    assert res.updates == 2
    upi_pca(net, x[:10], eps=0.5, epochs=1, batch_size=5, surrogate=10.0, progress=True)
    classification_uap(net, x[:10], eps=0.5, epochs=1, batch_size=5, progress=True)
    assert res.to_dict()["algorithm"] == "upi_grad"


def test_upi_errors(digits):
    net, x, _ = digits
    x = x[:10]
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        upi_grad(net, x, eps=0.0)
    with pytest.raises(ValueError, match="`p` must be 2 or float"):
        upi_grad(net, x, eps=0.5, p=1)
    with pytest.raises(ValueError, match="`epochs` must be >= 1"):
        upi_grad(net, x, eps=0.5, epochs=0)
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        upi_grad(net, x, eps=0.5, batch_size=0)
    with pytest.raises(ValueError, match="`alpha` must be > 0"):
        upi_grad(net, x, eps=0.5, alpha=-1.0)
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        upi_grad(net, x, eps=0.5, sigma=0.0)
    with pytest.raises(ValueError, match="`normalize` must be one of"):
        upi_grad(net, x, eps=0.5, normalize="l3")
    with pytest.raises(ValueError, match="`method` must be one of"):
        upi_grad(net, x, eps=0.5, method="lrp")
    with pytest.raises(TypeError, match="`progress` must be True or False"):
        upi_grad(net, x, eps=0.5, progress=None)
    with pytest.raises(ValueError, match="`chunk` must be >= 1"):
        upi_grad(net, x, eps=0.5, chunk=0)
    with pytest.raises(ValueError, match="`x` is an empty batch"):
        upi_grad(net, x[:0], eps=0.5)
    with pytest.raises(TypeError, match="`x` has dtype torch.float32"):
        upi_grad(net, x.float(), eps=0.5)
    with pytest.raises(ValueError, match="`variant` must be one of"):
        upi_pca(net, x, eps=0.5, variant="svd")
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        upi_pca(net, x, eps=0.5, variant="pgd", steps=0)
    with pytest.raises(ValueError, match="`n_samples` must be >= 1"):
        interpretation_gradients(net, x, sigma=0.1, n_samples=0)
    with pytest.raises(TypeError, match="`sigma` must be a real number"):
        interpretation_gradients(net, x, sigma=None)
    with pytest.raises(ValueError, match="`momentum` must be < 1.0"):
        classification_uap(net, x, eps=0.5, momentum=1.0)
    with pytest.raises(ValueError, match="`max_loss` must be > 0"):
        classification_uap(net, x, eps=0.5, max_loss=0.0)
    with pytest.raises(ValueError, match="`labels` labels must lie in"):
        classification_uap(net, x, eps=0.5, labels=torch.full((10,), 10))
    with pytest.raises(ValueError, match="`delta` must have the input shape"):
        universal_dissimilarity(net, x, torch.zeros(8, 8, dtype=DT))
    with pytest.raises(ValueError, match="`delta` must be on cpu with dtype torch.float64"):
        universal_dissimilarity(net, x, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="`delta` contains 1 NaN"):
        bad = torch.zeros(1, 8, 8, dtype=DT)
        bad[0, 0, 0] = float("nan")
        universal_dissimilarity(net, x, bad)
    with pytest.raises(TypeError, match="`same_class` must be True or False"):
        universal_dissimilarity(net, x, torch.zeros(64, dtype=DT), same_class=1)
    with pytest.raises(ValueError, match="`x` lies outside `bounds`"):
        universal_dissimilarity(net, x, torch.zeros(64, dtype=DT), bounds=(0.5, 1.0))
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).to(DT)  # constant maps: nothing to find
    with pytest.warns(UserWarning, match="gradient of the attack's objective is zero"):
        with pytest.raises(ValueError, match="Every per-image FGM perturbation is zero"):
            upi_pca(lin, x, eps=0.5, variant="fgm")
    with pytest.raises(TypeError, match="`universal` must be True or False"):
        random_noise(x, eps=0.5, universal="yes")
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        random_noise(x, eps=0.0)
