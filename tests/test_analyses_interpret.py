"""The analyses of 000 / 002 and the ``upi`` / ``attribution`` commands, end to end.

``analyses/upi_tables.py``, ``upi_correlation.py`` and ``attribution_attacks.py`` are imported
and their ``main(argv)`` run in-process with ``--quick`` on 8 x 8 digits, sharing one run
directory so the quick models are trained once; the CLI commands run through
:func:`geomrob.cli.main`. Checked: the JSON keys and value ranges, the figures, and the pieces
with a closed form (002's four metrics on identical and on shifted maps, the cosine matrix of
the UPIs against a recomputation from the saved vectors, the expected ``|cos|`` of random
directions against Monte Carlo).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _analyses import script as _script

from geomrob.cli import main
from geomrob.interpret.metrics import ROBUSTNESS_METRICS as METRICS
from geomrob.interpret.metrics import robustness_metrics as map_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = ["--quick", "--quiet", "--size", "8"]


def _record(out: Path, stem: str) -> dict:
    path = out / f"{stem}.json"
    assert path.exists(), f"{path} was not written"
    record = json.loads(path.read_text())
    assert {"config", "seed", "versions", "results"} <= set(record)
    assert record["config"]["quick"] is True
    png = out / f"{stem}.png"
    assert png.exists() and png.stat().st_size > 5_000, f"{png} missing or empty"
    return record["results"]


# --------------------------------------------------------------------------------------------
# closed forms


def test_map_metrics_identical_maps():
    """Identical maps: k-in 1, cor 1, cdl 0, cosd 0 (exactly, up to rounding)."""
    a = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values = map_metrics(a, a.clone(), 4)
    assert tuple(values) == METRICS
    torch.testing.assert_close(values["k-in"], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(values["cor"], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(values["cdl"], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(
        values["cosd"], torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )


def test_map_metrics_single_pixels():
    """Two one-pixel maps at (1, 1) and (4, 5): disjoint top-1, cdl = 5 pixels, cosd = 1; a
    sign flip keeps the pixel map (k-in 1, cdl 0) but gives cosd = 2 (catches |.| mistakes)."""
    a = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[0, 0, 1, 1], b[0, 0, 4, 5] = 2.0, 3.0
    v = map_metrics(a, b, 1)
    assert float(v["k-in"]) == 0.0
    assert math.isclose(float(v["cdl"]), 5.0, rel_tol=1e-12)
    assert math.isclose(float(v["cosd"]), 1.0, rel_tol=1e-12)
    w = map_metrics(a, -a, 1)
    assert float(w["k-in"]) == 1.0 and float(w["cdl"]) == 0.0
    assert math.isclose(float(w["cosd"]), 2.0, rel_tol=1e-12)


def test_expected_abs_cosine_matches_monte_carlo():
    """E|cos| of random directions in R^d against 20000 seeded samples: the standard error is
    below 0.003 for d = 16, so 0.01 is > 3 standard errors."""
    corr = _script("upi_correlation")
    d = 16
    g = torch.randn(2, 20000, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(g[0], g[1], dim=1).abs().mean()
    assert abs(corr.expected_abs_cosine(d) - float(cos)) < 0.01
    assert math.isclose(corr.expected_abs_cosine(2), 2 / math.pi, rel_tol=1e-12)


def test_to_sphere_and_paper_values():
    tables = _script("upi_tables")
    v = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(tables.to_sphere(v, 0.5), torch.tensor([0.3, 0.4]))
    with pytest.raises(ValueError, match="zero"):
        tables.to_sphere(torch.zeros(3), 1.0)
    # 000 Table 1, MNIST 2-layer CNN, Simple Gradient, UPI-PCA-PGD; no FGM row in Table 2
    assert tables.paper_value(tables.PAPER_TABLE1, "simple", "upi_pca_pgd", "cnn2") == 1.501
    assert tables.paper_value(tables.PAPER_TABLE1, "ig", "random_per_image", "fcn2") == 0.028
    assert tables.paper_value(tables.PAPER_TABLE2, "simple", "fgm_per_image", "cnn2") is None
    assert tables.paper_value(tables.PAPER_TABLE1, "simple", "upi_pca", "cnn2") is None


# --------------------------------------------------------------------------------------------
# the scripts


def test_upi_tables_quick(tmp_path, run_dir, capsys, monkeypatch):
    tables = _script("upi_tables")
    tables.main([*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--archs", "fcn2"])
    res = _record(tmp_path, "upi_tables_digits8")
    assert res["n_eval"] == 16 and res["n_fit"] == 16 and math.isclose(res["eps"], 100 / 256)
    for key in tables.METHODS:
        rows = res["models"]["fcn2"]["rows"][key]
        assert set(rows) == {r[0] for r in tables.ROWS}
        for row in rows.values():
            assert 0.0 <= row["mean"] < 10.0 and 0.0 <= row["label_change_rate"] <= 1.0
        for row in tables.UNIVERSAL:
            assert 0.0 < rows[row]["fitted_norm"] <= res["eps"] * (1 + 1e-5)
        for row in ("pgd_per_image", "fgm_per_image"):
            assert rows[row]["label_change_rate"] == 0.0  # the attacks keep the label
            assert rows[row]["mean_norm"] <= res["eps"] * (1 + 1e-5)
    # every saved universal perturbation has norm eps (000 Sec. 4)
    arrays = np.load(tmp_path / "upi_tables_digits8.npz")
    norms = [np.linalg.norm(arrays[k]) for k in arrays.files]
    assert len(norms) == 2 * len(tables.UNIVERSAL)
    np.testing.assert_allclose(norms, 100 / 256, rtol=1e-5)
    out = capsys.readouterr().out
    assert "| Simple Gradient | Interpretation | UPI-Grad |" in out
    assert "0.242" in out  # 000's FCN UPI-Grad number is printed beside ours
    for key in tables.METHODS:  # UPI-PCA rows say how far the power method got
        for row in ("upi_pca", "upi_pca_fgm", "upi_pca_pgd"):
            # float32 rows: the Rayleigh quotient may pass the float64 eigenvalue by rounding
            assert 0.0 < res["models"]["fcn2"]["rows"][key][row]["optimality"] <= 1 + 1e-5
    # upi_correlation with the same fitting flags reads these UPIs instead of refitting them
    # (fit_upis is not called), and they are the vectors it would have fitted (same seeds)
    corr = _script("upi_correlation")
    real_fit = corr.T.fit_upis

    def no_fit(*a, **k):
        raise AssertionError("refitted although upi_tables saved the same UPIs")

    monkeypatch.setattr(corr.T, "fit_upis", no_fit)
    corr.main([*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--archs", "fcn2"])
    monkeypatch.setattr(corr.T, "fit_upis", real_fit)
    fit_dir = tmp_path / "fit"
    corr.main([*QUICK, "--out", str(fit_dir), "--run-dir", str(run_dir), "--archs", "fcn2"])
    reused = np.load(tmp_path / "upi_correlation_digits8.npz")["upis"]
    fitted = np.load(fit_dir / "upi_correlation_digits8.npz")["upis"]
    np.testing.assert_allclose(reused, fitted, rtol=0, atol=1e-6)
    # other fitting flags: nothing is reused
    monkeypatch.setattr(corr.T, "fit_upis", no_fit)
    with pytest.raises(AssertionError, match="refitted"):
        corr.main(
            [*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--archs", "fcn2"]
            + ["--power-epochs", "7"]
        )


def test_upi_tables_one_map(tmp_path, run_dir, capsys, monkeypatch):
    """``--maps simple`` computes, prints and plots the Simple Gradient rows only, and
    upi_correlation does not take that run's UPIs for a run of both maps."""
    tables = _script("upi_tables")
    flags = [*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--archs", "fcn2"]
    tables.main([*flags, "--maps", "simple", "simple"])
    res = _record(tmp_path, "upi_tables_digits8")
    assert set(res["models"]["fcn2"]["rows"]) == {"simple"}
    out = capsys.readouterr().out
    assert "| Simple Gradient | Interpretation | UPI-Grad |" in out
    assert "Integrated Gradients" not in out
    assert len(np.load(tmp_path / "upi_tables_digits8.npz").files) == len(tables.UNIVERSAL)
    corr = _script("upi_correlation")
    fitted = []
    real_fit = corr.T.fit_upis
    monkeypatch.setattr(
        corr.T, "fit_upis", lambda *a, **k: fitted.append(a[2]) or real_fit(*a, **k)
    )
    corr.main(flags)
    assert len(fitted) == 2  # both maps refitted: the saved run lacks the IG ones
    with pytest.raises(SystemExit):
        tables.main([*flags, "--maps", "gradcam"])


def test_upi_correlation_quick(tmp_path, run_dir):
    corr = _script("upi_correlation")
    corr.main([*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--archs", "fcn2"])
    res = _record(tmp_path, "upi_correlation_digits8")
    n = 2 * 4 + 1  # two maps x four UPIs, one UAP
    assert len(res["labels"]) == n
    cos = np.asarray(res["cosine"])
    arrays = np.load(tmp_path / "upi_correlation_digits8.npz")
    v = arrays["upis"].astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(cos, v @ v.T, atol=1e-6)  # float32 storage of the vectors
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-12)
    for value in res["summary"].values():
        assert value is None or 0.0 <= value <= 1.0
    assert res["summary"]["between_models"] is None  # one model
    assert math.isclose(res["summary"]["random_directions"], corr.expected_abs_cosine(64))
    for tab in res["transfer"].values():
        assert 0.0 <= tab["fcn2"]["fcn2"] < 10.0


@pytest.mark.slow
def test_upi_correlation_two_models(tmp_path, run_dir):
    corr = _script("upi_correlation")
    corr.main([*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir)])
    res = _record(tmp_path, "upi_correlation_digits8")
    assert 0.0 <= res["summary"]["between_models"] <= 1.0
    assert set(res["transfer"]["SG/UPI-Grad"]) == {"cnn2", "fcn2"}


def test_attribution_attacks_quick(tmp_path, run_dir, capsys):
    attacks = _script("attribution_attacks")
    attacks.main([*QUICK, "--out", str(tmp_path), "--run-dir", str(run_dir), "--arch", "fcn2"])
    res = _record(tmp_path, "attribution_attacks_digits8_fcn2")
    assert res["eps_255"] == [2, 4, 8, 16] and res["n"] == 4 and res["k"] == 1
    for key in ("auc", "transfer_auc"):
        for a in attacks.ATTACKS:
            for m in attacks.METHODS:
                auc = res[key][a][m]
                assert set(auc) == set(METRICS)
                # log2 eps spans 3: metrics in [0, 1] give AUC in [0, 3]; cor in [-1, 1]
                assert 0.0 <= auc["k-in"] <= 3.0 + 1e-9 and -3.0 <= auc["cor"] <= 3.0 + 1e-9
                assert 0.0 <= auc["cosd"] <= 6.0 and auc["cdl"] >= 0.0
    # the SM column of Exp. III is the direct attack on SM
    for a in attacks.ATTACKS:
        assert res["transfer_auc"][a]["SM"] == res["auc"][a]["SM"]
    assert "002 Exp. III" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# the commands


def _cli_model(run: Path) -> list[str]:
    return ["--out", str(run), "--quiet", "--size", "8", "--epochs", "2", "--train-size", "300"]


def test_cli_upi(tmp_path):
    run = tmp_path / "upi"
    args = ["upi", *_cli_model(run), "--arch", "fcn2", "--n-fit", "24", "--n-eval", "16"]
    assert main([*args, "--upi-epochs", "2", "--algorithm", "grad", "--method", "ig"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["algorithm"] == "UPI-Grad" and res["method"] == "ig"
    assert res["n_fit"] == 24 and res["n_eval"] == 16
    assert 0.0 < res["fitted_norm"] <= res["eps"] * (1 + 1e-5)
    assert 0.0 <= res["label_change_rate"] <= 1.0 and res["dissimilarity_mean"] >= 0.0
    assert res["random_universal"]["mean"] >= 0.0
    delta = torch.load(run / "upi.pt")
    assert math.isclose(float(delta.norm()), 100 / 256, rel_tol=1e-5)
    for fig in ("upi.png", "upi_maps.png"):
        assert (run / "figures" / fig).stat().st_size > 2_000


def test_cli_attribution(tmp_path):
    run = tmp_path / "attr"
    args = ["attribution", *_cli_model(run), "--arch", "fcn2", "--n", "4", "--steps", "3"]
    assert main([*args, "--attack", "topk", "--method", "saliency"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["label_kept"] == 4 and res["k"] == 1 and res["attack"] == "topk"
    assert set(res["metrics"]) == set(METRICS)
    assert 0.0 <= res["metrics"]["k-in"] <= 1.0 and 0.0 <= res["metrics"]["cosd"] <= 2.0
    assert all(len(v) == 4 for v in res["per_image"].values())
    assert (run / "figures" / "attribution.png").stat().st_size > 2_000


def test_cli_rejects_bad_options(tmp_path, capsys):
    run = tmp_path / "bad"
    assert main(["upi", *_cli_model(run), "--arch", "fcn2", "--eps", "-1"]) == 2
    assert "--eps must be > 0" in capsys.readouterr().err
    assert main(["attribution", *_cli_model(run), "--arch", "fcn2", "--k", "100"]) == 2
    assert "--k must be between 1 and the 64 pixels" in capsys.readouterr().err
