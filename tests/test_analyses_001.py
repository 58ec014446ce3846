"""The analysis scripts of 001: readouts against closed forms, end-to-end ``--quick`` runs.

The scripts (``analyses/cross_sections.py``, ``diversity.py``, ``subspace_transfer.py``,
``theory_check.py``, ``fooling_vs_dim.py``, ``curvature_profile.py``, ``ablation.py``) are
imported and their ``main(argv)`` called in-process on digits, all sharing one run directory
so that the trained models and the subspace studies are computed once (they share one study
plumbing, ``analyses/_common.py``). The readouts they add to the library (distance to the
boundary along ``v``, parabola curvature of a section, empirical universal norm) are checked on
analytic classifiers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _analyses import script as _script
from torch import nn

from geomrob import diversity, normal_section
from geomrob.theory import theorem1_radius

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(name: str, out: Path, run_dir: Path, *extra: str) -> dict:
    module = _script(name)
    module.main(["--quick", "--quiet", "--out", str(out), "--run-dir", str(run_dir), *extra])
    return module


def _record(out: Path, stem: str) -> dict:
    path = out / f"{stem}.json"
    assert path.exists(), f"{path} was not written"
    record = json.loads(path.read_text())
    assert {"config", "seed", "versions", "results"} <= set(record)
    assert record["config"]["quick"] is True
    png = out / f"{stem}.png"
    assert png.exists() and png.stat().st_size > 10_000, f"{png} missing or empty"
    return record["results"]


def _rate(value: float) -> bool:
    return 0.0 <= value <= 1.0


# --------------------------------------------------------------------------------------------
# readouts against closed forms


class Parabola(nn.Module):
    """Two classes in R^2: ``f_1 - f_0 = a - 1 + (k/2) b^2`` at ``(a, b)``.

    From ``x = 0`` the nearest boundary point is ``z = (1, 0)`` (for ``k < 1``), ``r = e_1``,
    and the boundary ``a = 1 - (k/2) b^2`` has curvature ``k`` at ``z``, bending towards ``x``
    when ``k > 0`` (DESIGN.md section 3).
    """

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, 0], x[:, 1]
        return torch.stack([torch.zeros_like(a), a - 1 + 0.5 * self.k * b**2], dim=1)


@pytest.mark.parametrize("k", [0.4, -0.4, 0.0])
def test_section_readouts_on_a_parabola(k: float) -> None:
    cs = _script("cross_sections")
    model = Parabola(k).double()
    x = torch.zeros(1, 2, dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    s = normal_section(model, x, e2, extent=3.0, resolution=301)
    assert s.distance == pytest.approx(1.0, abs=1e-6)
    # the margin is affine in a, so boundary_distance is exact and the parabola fit recovers k
    # to rounding (the fit window |b| <= 1.2 keeps a* = 1 - (k/2) b^2 inside the grid)
    assert cs.parabola_curvature(s, 1.2) == pytest.approx(k, abs=1e-8)
    plus, minus = cs.along_v(s)
    if k > 0:
        # the margin 1 - (k/2) b^2 along a = 0 crosses at sqrt(2/k); linear interpolation of a
        # quadratic between grid points (step 0.02) errs by at most step^2 * k / 8 < 1e-4
        assert plus == pytest.approx(math.sqrt(2 / k), abs=1e-4)
        assert minus == pytest.approx(math.sqrt(2 / k), abs=1e-4)
    else:
        # flat or bending away: the line x + b v never leaves x's region
        assert math.isnan(plus) and math.isnan(minus)


def test_crossing_is_exact_for_a_linear_margin() -> None:
    cs = _script("cross_sections")
    b = np.linspace(0.0, 2.0, 5)
    assert cs.crossing(b, 0.7 - b) == pytest.approx(0.7, abs=1e-12)
    assert math.isnan(cs.crossing(b, 1.0 + b))  # never crosses
    assert math.isnan(cs.crossing(b, -1.0 + b))  # starts outside


def test_universal_norm_on_a_linear_classifier() -> None:
    """Binary ``f_1 - f_0 = x_1 - 1``: every point of the line ``x_1 = 0`` is at distance 1."""
    tc = _script("theory_check")
    lin = nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, -1.0]))
    x = torch.stack([torch.zeros(7), torch.linspace(-3, 3, 7)], dim=1).double()
    clean = lin(x).argmax(1)
    e1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # +e1 fools every point from norm 1 on; the search returns an upper bracket within 5 %
    rho = tc.universal_norm(lin, x, clean, e1, 1.0, 0.3, both=False)
    assert 1.0 <= rho <= 1.0 / (1 - tc.REL_TOL)
    # -e1 never fools one-sided; two-sided (Theorem 1's direction) it does, from norm 1
    assert tc.universal_norm(lin, x, clean, -e1, 0.5, 0.3, both=False, max_doublings=8) is None
    rho = tc.universal_norm(lin, x, clean, -e1, 1.0, 0.3, both=True)
    assert 1.0 <= rho <= 1.0 / (1 - tc.REL_TOL)
    # a direction along the boundary never fools; the mean over two directions is their average
    e2 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    both = torch.cat([e1, e2])
    assert tc.fooled_fraction(lin, x, clean, both, 2.0, both=False) == pytest.approx(0.5)
    assert tc.fooled_fraction(lin, x, clean, both, 0.5, both=True) == pytest.approx(0.0)


def test_flags_are_checked() -> None:
    with pytest.raises(SystemExit):
        _script("diversity").main(["--k", "1"])
    with pytest.raises(SystemExit):
        _script("diversity").main(["--n-uap", "0"])
    with pytest.raises(SystemExit):
        _script("fooling_vs_dim").main(["--ms", "5", "2"])
    with pytest.raises(SystemExit):
        _script("curvature_profile").main(["--h", "0.1", "--h-scale", "0.1"])
    with pytest.raises(SystemExit):
        _script("ablation").main(["--variants", "no such variant"])
    with pytest.raises(SystemExit):
        _script("theory_check").main(["--surrogate-beta", "0"])
    with pytest.raises(SystemExit):
        _script("subspace_transfer").main(["--arch", "lenet", "--arch-b", "lenet"])
    with pytest.raises(SystemExit):
        _script("cross_sections").main(["--resolution", "40"])
    with pytest.raises(SystemExit):
        _script("theory_check").main(["--delta", "0.5", "--beta", "0.3", "--quantile", "0.2"])


# --------------------------------------------------------------------------------------------
# end-to-end, --quick on digits


def test_diversity_quick(tmp_path: Path, run_dir: Path) -> None:
    _run("diversity", tmp_path, run_dir)
    res = _record(tmp_path, "diversity_digits_lenet")
    arrays = np.load(tmp_path / "diversity_digits_lenet.npz")
    V = torch.from_numpy(arrays["vectors"]).double()
    assert V.shape == (res["k"], 1, 8, 8)
    # the vectors have the study's norm and the saved cosines are theirs
    assert V.flatten(1).norm(dim=1).numpy() == pytest.approx(res["norm"], rel=1e-5)
    div = diversity(V, m=res["m"])
    assert div.cosines.numpy() == pytest.approx(arrays["cosines_curved"], abs=1e-6)
    for key, s in res["sets"].items():
        assert 0 <= s["mean_abs"] <= s["max_abs"] <= 1
        assert _rate(s["fraction_below_threshold"])
        assert len(s["rates"]) == res["k"] and all(_rate(r) for r in s["rates"])
        assert s["worst_rate"] <= s["mean_rate"] <= s["best_rate"]
        assert s["mean_rate"] == pytest.approx(np.mean(arrays[f"rates_{key}"]))
    # E|cos| of uniform directions in m dimensions, Gamma(m/2) / (sqrt(pi) Gamma((m+1)/2))
    m = res["m"]
    expected = math.exp(math.lgamma(m / 2) - math.lgamma((m + 1) / 2)) / math.sqrt(math.pi)
    assert res["sets"]["curved"]["expected_abs"] == pytest.approx(expected)
    # the sweep over the study's dimensions: m = 1 gives +-u (|cos| = 1), then E|cos| falls
    sweep = res["sweep"]
    assert [r["m"] for r in sweep] == sorted({r["m"] for r in sweep}) and sweep[0]["m"] == 1
    assert sweep[0]["mean_abs"] == pytest.approx(1.0)
    assert sweep[0]["expected_abs"] == pytest.approx(1.0)
    assert all(0 <= r["mean_abs"] <= r["max_abs"] <= 1 + 1e-12 for r in sweep)
    assert all(_rate(r["mean_rate"]) and r["mean_rate"] <= r["best_rate"] for r in sweep)
    assert np.all(np.diff([r["expected_abs"] for r in sweep]) < 0)
    # re-plot from the saved file without recomputing
    _script("diversity").main(["--plot-only", "--quick", "--quiet", "--out", str(tmp_path)])


def test_theory_check_quick(tmp_path: Path, run_dir: Path) -> None:
    _run("theory_check", tmp_path, run_dir)
    res = _record(tmp_path, "theory_check_digits_lenet")
    assert res["lemma1"], "no Lemma 1 configuration"
    for row in res["lemma1"]:
        assert _rate(row["probability"]) and _rate(row["exact"])
        assert row["exact_holds"], row  # Lemma 1 itself, through the exact Beta law
        assert row["bound"] == pytest.approx(1 - row["delta"])
    assert res["level_theorem1"] == pytest.approx(1 - res["delta"] - res["quantile"])
    assert res["n_points"] >= 2 and res["median_r"] > 0
    for row in res["theorems"]:
        assert 0 <= row["xi"] <= row["xi_min"] <= 1
        if row["theorem1_rho"] is not None:
            assert row["theorem1_rho"] == pytest.approx(
                theorem1_radius(row["m"], res["delta"], row["xi"])
            )
            assert row["theorem1_norm"] == pytest.approx(row["theorem1_rho"] * res["median_r"])
        # no radius unless the curvature hypothesis holds (kappa > 0)
        has_kappa = row["kappa"] is not None and row["kappa"] > 0
        assert (row["theorem2_rho"] is not None) == has_kappa
        assert _rate(row["kappa_positive"]) and _rate(row["points_kappa_positive"])
        for value in row["empirical_norm"].values():
            assert value is None or value > 0


def test_cross_sections_quick(tmp_path: Path, run_dir: Path) -> None:
    cs = _run("cross_sections", tmp_path, run_dir)
    stem = "cross_sections_digits_lenet"
    res = _record(tmp_path, stem)
    assert res["other_arch"] == "cnn2"
    assert res["keys"] == ["uap", "sc_top", "sc_random", "random", "other_sc_top"]
    assert 1 <= len(res["images"]) <= 2
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    sections = cs.sections_from_arrays(record, dict(np.load(tmp_path / f"{stem}.npz")))
    assert len(sections) == len(res["images"]) * len(res["keys"])
    for i, img in enumerate(res["images"]):
        assert img["label"] != img["adv_label"] and img["r_norm"] > 0
        for j, panel in enumerate(img["panels"]):
            assert -1 <= panel["cosine_with_r"] <= 1
            for key in ("dist_plus", "dist_minus"):
                assert panel[key] is None or 0 < panel[key] <= res["extent"] + 1e-9
            s = sections[i * len(res["keys"]) + j]
            # the saved section crosses the boundary at z = x + r(x): (||r||, 0), up to one
            # grid step (the margin is only piecewise linear in a)
            j0 = len(s.b) // 2
            step = float(s.a[1] - s.a[0])
            assert float(s.boundary_distance()[j0]) == pytest.approx(img["r_norm"], abs=step)
            assert abs(float(s.u @ s.v)) < 1e-5  # normal section: v orthogonal to r(x)


def test_subspace_transfer_quick(tmp_path: Path, run_dir: Path) -> None:
    _run("subspace_transfer", tmp_path, run_dir)
    res = _record(tmp_path, "subspace_transfer_digits_lenet_cnn2")
    m = res["m"]
    for key in ("cosines_curved", "cosines_normal", "cosines_random_mean"):
        cos = np.array(res[key])
        assert cos.shape == (m,) and ((cos >= 0) & (cos <= 1)).all()
    assert (np.diff(res["cosines_curved"]) <= 1e-12).all()  # descending
    assert (np.array(res["cosines_random_q05"]) <= np.array(res["cosines_random_q95"])).all()
    for f in res["fooling_on_b"].values():
        assert len(f["mean"]) == len(res["ms"])
        assert all(_rate(v) for v in f["mean"] + f["best"])
        assert all(b >= a - 1e-12 for a, b in zip(f["mean"], f["best"], strict=True))
    assert _rate(res["uap_b_rate"]) and _rate(res["uap_a_on_b_rate"])


# --------------------------------------------------------------------------------------------
# the study plumbing shared by every script of 001 (analyses/_common.py)


def _study_args(*argv: str):
    C = _script("_common")
    p = C.parser("test")
    C.add_study_options(p)
    return C, C.parse_study_args(p, list(argv))


def test_study_flags_give_the_paper_config() -> None:
    """Without flags the config is 001's, ``StudyConfig()``: the cache keys of every script."""
    from geomrob.study import StudyConfig

    C, args = _study_args()
    assert (args.n, args.n_uap, args.n_eval) == (100, 2000, 1000)
    assert C.study_config(args, 64) == StudyConfig()
    # ms above the input dimension are left out
    assert C.study_config(args, 12).ms == (1, 2, 5, 10)
    C, args = _study_args("--quick")
    assert (args.n, args.n_uap, args.n_eval) == (20, 200, 100)
    quick = C.study_config(args, 64)
    assert quick == StudyConfig(**C.QUICK_STUDY)
    # a given flag wins over --quick; --surrogate-beta is StudyConfig.beta
    C, args = _study_args("--quick", "--ms", "1", "3", "--n", "7", "--surrogate-beta", "5")
    config = C.study_config(args, 64)
    assert args.n == 7 and config.ms == (1, 3) and config.beta == 5.0
    assert config.n_vectors == C.QUICK_STUDY["n_vectors"]
    C, args = _study_args("--h-scale", "0.5", "--which", "SA", "--mode", "exact")
    config = C.study_config(args, 64)
    assert (config.h_scale, config.h, config.which, config.mode) == (0.5, None, "SA", "exact")


def test_study_points_and_stems() -> None:
    C, args = _study_args("--quick", "--n-uap", "100000")
    x_fit, x_uap, x_eval = C.study_points(args)
    train, test = C.dataset(args, "train"), C.dataset(args, "test")
    # the fitting points are the first of the UAP points (one permutation of the training
    # split, then one of the test split, from one generator seeded by --seed)
    gen = torch.Generator().manual_seed(args.seed)
    tr = torch.randperm(len(train), generator=gen)
    te = torch.randperm(len(test), generator=gen)
    assert torch.equal(x_uap, train.x[tr])  # --n-uap capped at the split
    assert torch.equal(x_fit, x_uap[: args.n]) and len(x_fit) == 20
    assert torch.equal(x_eval, test.x[te[:100]])
    # the names of the saved files (figures/ holds the defaults' ones)
    assert C.stem(args, "fooling_vs_dim") == "fooling_vs_dim_digits_lenet"
    assert C.stem(args, "subspace_transfer", "lenet", "cnn2") == (
        "subspace_transfer_digits_lenet_cnn2"
    )
    _, args = _study_args("--activation", "softplus", "--mode", "exact", "--project")
    assert C.stem(args, "ablation") == "ablation_digits_lenet_softplus_exact_proj"
    _, args = _study_args("--which", "SA", "--arch", "cnn2")
    assert C.stem(args, "curvature_profile") == "curvature_profile_digits_cnn2_SA"


def test_fooling_vs_dim_quick(tmp_path: Path, run_dir: Path) -> None:
    _run("fooling_vs_dim", tmp_path, run_dir)
    stem = "fooling_vs_dim_digits_lenet"
    res = _record(tmp_path, stem)
    arrays = np.load(tmp_path / f"{stem}.npz")
    assert res["ms"] == [1, 2, 5, 10] and arrays["ms"].tolist() == res["ms"]
    assert (res["n_fit"], res["n_uap"], res["n_eval"]) == (20, 200, 100)
    assert 0 <= res["fit_converged"] <= res["n_fit"]
    assert _rate(res["test_accuracy"]) and res["rho_rand"] > 0
    assert res["norm"] == pytest.approx(0.2 * res["rho_rand"], rel=1e-12)
    for key in ("curved", "normal", "random"):
        rates = arrays[f"{key}_rates"]
        assert rates.shape == (len(res["ms"]), 4)  # the quick n_vectors
        assert ((rates >= 0) & (rates <= 1)).all()
        # the saved mean and best are those of the saved rates
        assert res[f"{key}_mean"] == pytest.approx(rates.mean(1).tolist(), abs=1e-12)
        assert res[f"{key}_best"] == pytest.approx(rates.max(1).tolist(), abs=1e-12)
    assert _rate(res["uap_rate"]) and _rate(res["noise_rate"])
    # the 2017 algorithm projects onto the l2 ball of the study's norm (float32 rounding)
    assert float(np.linalg.norm(arrays["uap"])) <= res["norm"] * (1 + 1e-5)
    assert (np.diff(res["curved_values"]) <= 0).all()  # S_c: the largest eigenvalues first
    # the second run reads every stage from <run-dir>/study (only the fooling rates, forward
    # passes, are never cached) and gives the same numbers
    again = tmp_path / "again"
    _run("fooling_vs_dim", again, run_dir)
    res2 = _record(again, stem)
    assert {k: v for k, v in res2["seconds"].items() if k != "fooling"}
    assert all(v == 0 for k, v in res2["seconds"].items() if k != "fooling"), res2["seconds"]
    for key in ("curved_mean", "normal_mean", "uap_rate", "K_mean", "rho_rand"):
        assert res2[key] == res[key]


def test_curvature_profile_quick(tmp_path: Path, run_dir: Path) -> None:
    _run("curvature_profile", tmp_path, run_dir)
    stem = "curvature_profile_digits_lenet"
    res = _record(tmp_path, stem)
    arrays = np.load(tmp_path / f"{stem}.npz")
    k = len(res["ms"])
    assert res["ms"] == [1, 2, 5, 10] and res["mode"] == "finite_difference"  # ReLU lenet
    assert (res["n_dirs"], res["n_random"]) == (8, 2)
    ok = arrays["converged"]
    assert ok.shape == (20,) and res["n_points"] == int(ok.sum()) >= 2
    per_point = arrays["per_point"]
    assert per_point.shape == (k, 20) and arrays["random_per_point"].shape == (k, 20)
    # the saved statistics are those of the converged points (population std)
    assert res["mean"] == pytest.approx(per_point[:, ok].mean(1).tolist(), rel=1e-6, abs=1e-9)
    assert res["std"] == pytest.approx(per_point[:, ok].std(1).tolist(), rel=1e-6, abs=1e-9)
    n = res["n_points"]
    assert res["stderr"] == pytest.approx((np.array(res["std"]) / math.sqrt(n)).tolist())
    assert all(_rate(f) for f in res["fraction_positive"])
    assert res["fraction_positive"] == pytest.approx((per_point[:, ok] > 0).mean(1).tolist())
    assert len(res["eigenvalues"]) == 10 and (np.diff(res["eigenvalues"]) <= 0).all()


def test_ablation_quick(tmp_path: Path, run_dir: Path) -> None:
    ab = _script("ablation")
    variants = ["default (FD, h=0.1|r|)", "FD h=0.5|r|"]
    _run("ablation", tmp_path, run_dir, "--variants", *variants)
    res = _record(tmp_path, "ablation_digits_lenet")
    assert res["reference"] == variants[0] and res["order"] == variants
    assert set(res["variants"]) == set(variants)
    assert ab.table(res).splitlines()[2].startswith(f"| {variants[0]} |")  # in the order run
    ref, var = (res["variants"][v] for v in variants)
    assert var["changes"] == ab.VARIANTS[variants[1]] == {"h_scale": 0.5}
    for row in (ref, var):
        assert row["ms"] == [1, 2, 5, 10] and row["n_fit"] == 20
        assert all(_rate(v) for v in row["curved_mean"] + row["curved_best"])
        assert all(b >= a for a, b in zip(row["curved_mean"], row["curved_best"], strict=True))
        assert len(row["K_mean"]) == len(row["ms"])
        assert (np.diff(row["eigenvalues"]) <= 0).all()
        cos = np.array(row["cosines_with_reference"])
        assert cos.shape == (10,) and ((cos >= 0) & (cos <= 1 + 1e-9)).all()
    # S_c against itself: every principal cosine is 1 (float32 bases)
    assert ref["cosines_with_reference"] == pytest.approx([1.0] * 10, abs=1e-5)
    # the step changes S_c only: the same model, points, norm, S_f and UAP
    assert min(var["cosines_with_reference"]) < 1 - 1e-4
    for key in ("norm", "normal_mean", "uap_rate", "test_accuracy"):
        assert var[key] == ref[key]
    # a later run with another variant adds to the saved table (reference first, then the
    # order of VARIANTS); one with other settings replaces it
    _run("ablation", tmp_path, run_dir, "--variants", variants[0], "n=25")
    merged = _record(tmp_path, "ablation_digits_lenet")
    assert merged["order"] == [variants[0], "FD h=0.5|r|", "n=25"]
    assert merged["variants"]["FD h=0.5|r|"] == var
    assert merged["variants"]["n=25"]["n_fit"] == 25
    _run("ablation", tmp_path, run_dir, "--variants", variants[0], "--n-vectors", "3")
    assert _record(tmp_path, "ablation_digits_lenet")["order"] == [variants[0]]
