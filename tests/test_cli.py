"""The ``geomrob`` command: help, a smoke run of the demo, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from geomrob.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("demo", "train", "data"):
        assert name in out


def test_python_m_geomrob_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "geomrob", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("geomrob ")


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--quiet", "--epochs", "2", "--arch", "fcn2"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_accuracy"] > 0.5
    assert (out / "figures" / "demo_training.png").stat().st_size > 1000
    assert results["train"]["cached"] is False
    assert results["deepfool"]["success_rate"] == 1.0 and results["deepfool"]["n"] == 450
    # second run reuses the cached model
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["train"]["cached"] is True


def test_train_smoke(tmp_path, capsys):
    args = [
        "train",
        "--dataset",
        "digits",
        "--arch",
        "fcn2",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "train.json").exists()


def test_missing_data_is_one_line_error(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-root",
            str(tmp_path),
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "error" in err and "train-images-idx3-ubyte.gz" in err
    assert "Traceback" not in err


def test_bad_option_value(tmp_path, capsys):
    code = main(
        ["train", "--dataset", "digits", "--epochs", "0", "--quiet", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "`epochs` must be >= 1" in capsys.readouterr().err


def test_unknown_dataset_rejected_by_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "imagenet"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_fool_smoke(tmp_path, capsys):
    out = tmp_path / "fool"
    args = [
        "fool",
        "--out",
        str(out),
        "--quiet",
        "--arch",
        "fcn2",
        "--epochs",
        "5",
        "--n",
        "20",
        "--uap-n",
        "40",
        "--eval-n",
        "30",
        "--xi",
        "1.0",
        "3.0",
        "--max-passes",
        "2",
    ]
    with warnings.catch_warnings():  # a small UAP may not reach 1 - delta: it warns
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    df = results["deepfool"]
    assert df["n"] == 20 and df["success_rate"] == 1.0
    assert 0 < df["median_norm"] < 10
    assert [u["xi"] for u in results["uap"]] == [1.0, 3.0]
    for u in results["uap"]:
        assert 0.0 <= u["held_out_fooling_rate"] <= 1.0
        assert 1 <= u["passes"] <= 2
    assert (out / "figures" / "fool_uap.png").exists()
    printed = capsys.readouterr().out
    assert "DeepFool on 20 test images" in printed and "UAP p=2" in printed
    # the DeepFool result is cached: a second run reuses it and gives the same statistics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["deepfool"] == df
    assert list((out / "cache").glob("deepfool-*.pt"))
