"""The analyses of 003, 004 and 002's SSR and SmoothGrad bound, end to end.

``analyses/nullspace.py``, ``smoothgrad_bound.py``, ``ssr.py`` and ``cross_model.py`` are
imported and their ``main(argv)`` run in-process with ``--quick`` on the embedded digits,
sharing one run directory so the quick models are trained once. Checked: what each script
promises and can be checked without the paper's data: the null-space dimension against 003
Theorem 1, the softmax invariance along null directions, 002 Theorem 2's bound against the
measured ratio, SSR lowering the quantity it penalises, the recipe flags reaching both SSR
models, and the distortions of 004's Gaussian and amplified rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _analyses import script as _script

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(name: str, out: Path, run_dir: Path, *extra: str) -> dict:
    _script(name).main(["--quick", "--quiet", "--out", str(out), "--run-dir", str(run_dir), *extra])
    paths = list(out.glob(f"{name}_*.json"))
    assert len(paths) == 1, f"{name} wrote {paths}"
    record = json.loads(paths[0].read_text())
    assert {"config", "seed", "versions", "results"} <= set(record)
    assert record["config"]["quick"] is True
    return record["results"]


def test_nullspace_quick(tmp_path, run_dir):
    res = _run("nullspace", tmp_path, run_dir)
    assert set(res["models"]) == set(res["archs"])
    for arch, r in res["models"].items():
        # 003 Theorem 1: at least l - m adversarial directions (l - m + 1 with the all-ones
        # shift of the logits, which softmax ignores)
        assert r["null_dimension"] >= r["l"] - r["m"], arch
        assert r["null_dimension"] == r["l"] - r["m"] + 1, arch
        # moving the features along null directions changes no probability (to rounding,
        # relative to theta up to 1e3) and no label
        assert max(r["null_max_change"]) < 1e-6, arch
        assert all(k == 1.0 for k in r["null_label_kept"]), arch
        assert r["null_logit_spread"] < 1e-10
        assert r["parallel"] is False and 0 < r["min_sine"] <= 1
        for kind in ("null", "plain"):
            c = r["collision"][kind]
            assert 0.0 <= c["success_rate"] <= 1.0 and c["median_distance"] > 0


def test_smoothgrad_bound_quick(tmp_path, run_dir):
    res = _run("smoothgrad_bound", tmp_path, run_dir)
    assert len(res["rows"]) >= 2
    for row in res["rows"]:
        # F = 1 for a probability: the bound is 2 / sigma^2 and 002 Theorem 2 must hold
        assert row["bound_probability"] == pytest.approx(2 / row["sigma"] ** 2)
        assert 0 < row["probability_max_ratio"] <= row["bound_probability"]
        assert row["probability_max_ratio_over_bound"] == pytest.approx(
            row["probability_max_ratio"] / row["bound_probability"]
        )
        assert 0 < row["p_max_observed"] <= 1
    # larger smoothing, smaller bound
    bounds = [row["bound_probability"] for row in res["rows"]]
    assert bounds == sorted(bounds, reverse=True)


def test_ssr_quick(tmp_path, run_dir):
    res = _run("ssr", tmp_path, run_dir, "--train-size", "300", "--epochs", "3")
    assert res["recipe"] == {"train_size": 300, "epochs": 3}
    record = json.loads(next(tmp_path.glob("ssr_*.json")).read_text())
    assert record["config"]["train_size"] == 300
    models = res["models"]
    assert set(models) == {"natural", "ssr"}
    for r in models.values():
        assert len(r["per_eps"]) == len(res["eps"])
        assert all(row["linf"] <= row["eps"] * (1 + 1e-5) for row in r["per_eps"])
        assert 0 <= r["test_accuracy"] <= 1 and r["lambda_max_mean"] > 0
        assert set(r["auc_log2_eps"]) == {
            "topk_intersection",
            "spearman",
            "mass_center_dislocation",
            "cosine_distance",
        }
    # SSR penalises the top eigenvalue of the input Hessian of the loss: it must go down
    assert models["ssr"]["lambda_max_mean"] < models["natural"]["lambda_max_mean"]
    # the recipe reached both trained models: the cached configs say so
    configs = [json.loads(p.read_text()) for p in run_dir.glob("models/cnn2-*/config.json")]
    ours = [c for c in configs if c.get("train_size") == 300 and c.get("epochs") == 3]
    assert sorted(c.get("ssr_beta") is not None for c in ours) == [False, True]


def test_ssr_rejects_bad_flags(tmp_path, run_dir):
    with pytest.raises(SystemExit):
        _run("ssr", tmp_path, run_dir, "--train-size", "0")


def test_cross_model_quick(tmp_path, run_dir):
    res = _run("cross_model", tmp_path, run_dir)
    k = len(res["models"])
    rows = {row["row"]: row for row in res["rows"]}
    assert rows["clean test images"]["distortion"] == 0.0
    for arch in res["models"]:
        adv = rows[f"adversarial for {arch}"]
        assert 0 <= adv["success"] <= 1 and adv["distortion"] > 0
        # 004's Gaussian rows have the same average distortion as the examples they follow
        noise = next(
            r
            for r in res["rows"]
            if r["row"].startswith("Gaussian") and r is not adv and _follows(res["rows"], r, adv)
        )
        assert noise["distortion"] == pytest.approx(adv["distortion"], rel=0.1)
        assert rows[f"adversarial for {arch} amplified to 0.1"]["distortion"] == pytest.approx(0.1)
    for row in res["rows"]:
        assert len(row["errors"]) == k and all(0 <= e <= 1 for e in row["errors"])


def _follows(rows: list[dict], row: dict, prev: dict) -> bool:
    """``row`` comes right after ``prev`` in the table."""
    i = next(j for j, r in enumerate(rows) if r is prev)
    return i + 1 < len(rows) and rows[i + 1] is row
