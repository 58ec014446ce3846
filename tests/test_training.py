"""Training: determinism, the config-keyed cache, resume after interruption."""

from __future__ import annotations

import pytest
import torch

from geomrob.models import TrainConfig, train

CFG = TrainConfig(arch="cnn2", dataset="digits", epochs=3, batch_size=64, train_size=400)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_bitwise(tmp_path):
    a = train(CFG, run_dir=tmp_path / "a")
    b = train(CFG, run_dir=tmp_path / "b")
    assert not a.cached and not b.cached
    assert _same_weights(a.model, b.model)
    assert a.history[-1]["loss"] == b.history[-1]["loss"]


def test_other_seed_other_weights(tmp_path):
    a = train(CFG, run_dir=tmp_path)
    b = train(TrainConfig(**{**CFG.to_dict(), "seed": 1}), run_dir=tmp_path)
    assert a.path != b.path
    assert not _same_weights(a.model, b.model)


def test_cache_is_reused(tmp_path):
    a = train(CFG, run_dir=tmp_path)
    b = train(CFG, run_dir=tmp_path)
    assert b.cached and b.path == a.path
    assert _same_weights(a.model, b.model)
    assert b.history == a.history
    assert not b.model.training


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    full = train(CFG, run_dir=tmp_path / "full")

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(CFG, run_dir=tmp_path / "cut", callback=stop_after_first)
    folder = tmp_path / "cut" / "models" / CFG.key()
    assert (folder / "state.pt").exists() and not (folder / "model.pt").exists()
    seen = []
    resumed = train(CFG, run_dir=tmp_path / "cut", callback=lambda row: seen.append(row["epoch"]))
    assert seen == [2, 3]  # epoch 1 was not trained again
    assert _same_weights(full.model, resumed.model)
    assert not (folder / "state.pt").exists()


def test_training_learns_digits(tmp_path):
    res = train(TrainConfig(arch="fcn2", dataset="digits", epochs=20), run_dir=tmp_path)
    assert res.test_accuracy > 0.95


def test_global_rng_untouched(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TrainConfig(arch="fcn2", dataset="digits", epochs=1, train_size=100), run_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("arch", "alexnet", "`arch` must be one of"),
        ("dataset", "imagenet", "`dataset` must be one of"),
        ("optimizer", "rmsprop", "`optimizer` must be one of"),
        ("epochs", 0, "`epochs` must be >= 1"),
        ("lr", -1.0, "`lr` must be >"),
        ("batch_size", 2.5, "`batch_size` must be an int"),
        ("activation", "sigmoid", "`activation` must be one of"),
        ("size", 0, "`size` must be >= 1"),
    ],
)
def test_bad_config(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**{field: value})


def test_native_size_names_the_same_model():
    # size=28 on MNIST is no resize: the same config, hash and cached model as size=None
    a = TrainConfig.for_dataset("mnist", arch="cnn2", size=28)
    b = TrainConfig.for_dataset("mnist", arch="cnn2")
    assert a.size is None and a == b and a.to_dict() == b.to_dict()
    assert TrainConfig.for_dataset("digits", size=8) == TrainConfig.for_dataset("digits")
    assert TrainConfig.for_dataset("digits", size=16).size == 16


def test_bad_config_type(tmp_path):
    with pytest.raises(TypeError, match="`config` must be a TrainConfig"):
        train({"arch": "lenet"}, run_dir=tmp_path)
