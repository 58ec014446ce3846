"""The ``geomrob curvature`` subcommand: a tiny run on the embedded digits, its cache, errors."""

from __future__ import annotations

import json

import pytest

from geomrob.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

TINY = ["--arch", "fcn2", "--epochs", "1", "--n", "10", "--m", "3", "--n-eval", "5", "--quiet"]


def test_curvature_smoke_and_cache(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["curvature", "--dataset", "digits", "--out", str(out), *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "S_c (surrogate)" in printed and "K_S" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "surrogate"  # auto: the ReLU zoo model gets the softplus surrogate
    assert len(results["eigenvalues"]) == 3 and len(results["residuals"]) == 3
    assert results["eigenvalues"] == sorted(results["eigenvalues"], reverse=True)
    assert results["train_points"]["n"] == 10
    prof = results["profile"]
    assert prof["ms"] == [1, 2, 3] and prof["n_eval"] == 5
    for key in ("mean", "std", "random_mean", "random_std", "raw_mean"):
        assert len(prof[key]) == 3
    for name in ("spectrum", "profile"):
        assert (out / "figures" / f"curvature_{name}.png").stat().st_size > 1000
    cache = sorted(p.name.split("-")[0] for p in (out / "cache").iterdir())
    assert cache == ["boundary", "boundary", "eigenpairs", "profile"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    # a second run reuses every cached step and gives the same numbers
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["eigenvalues"] == results["eigenvalues"]
    assert again["profile"]["mean"] == prof["mean"]
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == stamps


def test_curvature_user_errors_are_one_line(tmp_path, capsys):
    base = ["curvature", "--dataset", "digits", "--out", str(tmp_path / "run"), *TINY]
    assert main([*base, "--mode", "exact"]) == 2
    err = capsys.readouterr().err
    assert "piecewise linear" in err and "surrogate" in err and "Traceback" not in err
    assert main([*base, "--m", "65"]) == 2
    assert "`m` must be <= d = 64" in capsys.readouterr().err
    assert main([*base, "--n-dirs", "0"]) == 2
    assert "--n-dirs must be >= 1" in capsys.readouterr().err
