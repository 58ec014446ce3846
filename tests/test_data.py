"""Tests of geomrob.data: the embedded digits, the real MNIST / Fashion-MNIST files when present,
and small files written here in the exact IDX and CIFAR-10 formats."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geomrob import data
from geomrob.data import DATASETS, MD5SUMS, Dataset, load, resolve_roots

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
EXPECTED_COUNTS = {
    ("mnist", "train"): MNIST_TRAIN_COUNTS,
    ("mnist", "test"): MNIST_TEST_COUNTS,
    ("fashion-mnist", "train"): [6000] * 10,
    ("fashion-mnist", "test"): [1000] * 10,
}
# Sum of the uint8 pixels of the first image and its label, observed on the publishers' files
# (and recomputed from the raw .gz below), to catch a parser regression.
FIRST_IMAGE = {
    ("mnist", "train"): (27525, 5),
    ("mnist", "test"): (18454, 7),
    ("fashion-mnist", "train"): (76247, 9),
    ("fashion-mnist", "test"): (33456, 9),
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"] + [
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# ---------------------------------------------------------------------------------- fixtures


def _find_shared_data() -> Path | None:
    env = os.environ.get("GEOMROB_DATA", "")
    candidates = [Path(p) for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    candidates += [base / "shared" / "data" for base in (here, *here.parents)]
    for candidate in candidates:
        if (candidate / "mnist").is_dir() or (candidate / "fashion-mnist").is_dir():
            return candidate
    return None


SHARED_ROOT = _find_shared_data()  # read before `_no_env` clears GEOMROB_DATA for each test


@pytest.fixture(scope="module")
def shared_root() -> Path:
    """The folder with the publishers' MNIST / Fashion-MNIST files."""
    root = SHARED_ROOT
    if root is None:
        pytest.skip(
            "MNIST / Fashion-MNIST files not found: set GEOMROB_DATA or place shared/data "
            "(with mnist/ and fashion-mnist/) beside the checkout"
        )
    return root


@pytest.fixture(scope="module")
def real(shared_root):
    """``real(name, split)``: the loaded dataset, loaded once per module."""
    cache: dict[tuple[str, str], Dataset] = {}

    def get(name: str, split: str) -> Dataset:
        if not (shared_root / name).is_dir():
            pytest.skip(f"{shared_root / name} not found")
        if (name, split) not in cache:
            cache[name, split] = load(name, split=split, root=shared_root)
        return cache[name, split]

    return get


@pytest.fixture(scope="module")
def digits() -> dict[str, Dataset]:
    return {split: load("digits", split=split) for split in ("train", "test")}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """Tests pass `root=` explicitly; the environment must not leak in."""
    monkeypatch.delenv("GEOMROB_DATA", raising=False)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, dims=None) -> Path:
    """Write ``array`` (uint8) as a gzipped IDX file, optionally with a wrong header."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    dims = array.shape if dims is None else dims
    header = np.array([magic, *dims], dtype=">i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.tobytes()))
    return path


def _write_mnist(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    image_file, label_file = IDX_FILES[split]
    _write_idx(folder / image_file, images)
    _write_idx(folder / label_file, labels)


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def _write_cifar(folder: Path, n: int = 20) -> dict[str, dict]:
    """Write the seven CIFAR-10 files, ``n`` images per batch, in the official format."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{k}": _cifar_batch(n, k) for k in range(1, 6)}
    batches["test_batch"] = _cifar_batch(n, 99)
    meta = {
        b"num_cases_per_batch": n,
        b"label_names": [s.encode() for s in CIFAR_NAMES],
        b"num_vis": 3072,
    }
    for file_name, content in [*batches.items(), ("batches.meta", meta)]:
        with open(folder / file_name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    return batches


# ------------------------------------------------------------------------------------ digits


def test_digits_shapes_dtype_range(digits):
    train, test = digits["train"], digits["test"]
    assert (len(train), len(test)) == (1347, 450)
    assert len(train) + len(test) == 1797
    for split, ds in digits.items():
        assert ds.x.shape == (len(ds), 1, 8, 8)
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.y.shape == (len(ds),)
        assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
        assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
        assert ds.classes == tuple("0123456789")
        assert (ds.name, ds.split) == ("digits", split)
        # pixel values are k / 16 exactly
        assert torch.equal(ds.x * 16, (ds.x * 16).round())


def test_digits_split_is_a_partition_of_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    both = torch.cat([load("digits", split=s).x for s in ("train", "test")]).flatten(1) * 16
    ref = torch.tensor(bunch.data, dtype=torch.float32)
    key = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert key(both) == key(ref)


def test_digits_split_is_stratified(digits):
    overall = np.bincount(np.concatenate([digits[s].y.numpy() for s in digits]), minlength=10)
    overall = overall / overall.sum()
    for ds in digits.values():
        share = np.bincount(ds.y.numpy(), minlength=10) / len(ds)
        np.testing.assert_allclose(share, overall, atol=0.005)


def test_digits_deterministic_and_fresh(digits):
    again = load("digits", split="train")
    assert torch.equal(again.x, digits["train"].x) and torch.equal(again.y, digits["train"].y)
    again.x.zero_()
    again.y.zero_()
    third = load("digits", split="train")
    assert torch.equal(third.x, digits["train"].x) and torch.equal(third.y, digits["train"].y)


@pytest.mark.parametrize("size", [8, 16, 28])
def test_digits_resize(digits, size):
    ds = load("digits", split="test", size=size)
    assert ds.x.shape == (450, 1, size, size) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    assert torch.equal(ds.y, digits["test"].y)
    # bilinear resizing (align_corners=False) keeps the mean brightness of each image
    torch.testing.assert_close(
        ds.x.mean((1, 2, 3)), digits["test"].x.mean((1, 2, 3)), atol=0.02, rtol=0
    )
    if size == 8:
        assert torch.equal(ds.x, digits["test"].x)


def test_resize_clamps_only_rounding():
    # A constant white image resized by non-integer factors overshoots 1 by float32 rounding.
    ones = torch.ones(2, 1, 8, 8)
    for size in (5, 17, 21, 30, 41):
        out = data._resize(ones, size)
        assert out.shape == (2, 1, size, size)
        torch.testing.assert_close(out, torch.ones_like(out), atol=1e-6, rtol=0)
        assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0


# --------------------------------------------------------------- real MNIST / Fashion-MNIST


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_sizes_and_histograms(real, name, split):
    ds = real(name, split)
    n = 60000 if split == "train" else 10000
    assert len(ds) == n
    assert ds.x.shape == (n, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert torch.bincount(ds.y, minlength=10).tolist() == EXPECTED_COUNTS[name, split]
    assert (ds.name, ds.split, ds.input_shape, ds.num_classes) == (name, split, (1, 28, 28), 10)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_first_image_pixel_sum(real, shared_root, name, split):
    ds = real(name, split)
    image_file, label_file = IDX_FILES[split]
    raw = gzip.open(shared_root / name / image_file).read()
    first = np.frombuffer(raw, np.uint8, count=784, offset=16)
    label = np.frombuffer(gzip.open(shared_root / name / label_file).read(), np.uint8, 1, 8)[0]
    pixel_sum, first_label = FIRST_IMAGE[name, split]
    assert int(first.sum(dtype=np.int64)) == pixel_sum and int(label) == first_label
    assert int((ds.x[0] * 255).round().sum()) == pixel_sum
    assert int(ds.y[0]) == first_label
    expected = torch.from_numpy(first.astype(np.float32)).div(255).reshape(1, 28, 28)
    assert torch.equal(ds.x[0], expected)


def test_real_class_names(real):
    assert real("mnist", "test").classes == tuple("0123456789")
    fashion = real("fashion-mnist", "test").classes
    assert fashion[0] == "T-shirt/top" and fashion[9] == "Ankle boot" and len(fashion) == 10


def test_real_md5_table_matches_md5sums_file(shared_root):
    md5sums = shared_root / "MD5SUMS"
    if not md5sums.is_file():
        pytest.skip(f"{md5sums} not found")
    for line in md5sums.read_text().splitlines():
        md5, rel = line.split()
        dataset, file_name = rel.split("/")
        assert MD5SUMS[dataset][file_name] == md5


@pytest.mark.parametrize(("name", "sub"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_layout(real, shared_root, tmp_path, name, sub):
    raw = tmp_path / sub / "raw"
    raw.mkdir(parents=True)
    for file_name in IDX_FILES["test"]:
        (raw / file_name).symlink_to(shared_root / name / file_name)
    ds = load(name, split="test", root=tmp_path)
    assert torch.equal(ds.x, real(name, "test").x) and torch.equal(ds.y, real(name, "test").y)


def test_root_holding_the_files_directly(real, shared_root, tmp_path):
    for file_name in IDX_FILES["test"]:
        (tmp_path / file_name).symlink_to(shared_root / "mnist" / file_name)
    ds = load("mnist", split="test", root=tmp_path)
    assert torch.equal(ds.y, real("mnist", "test").y)
    # the same files are not Fashion-MNIST: the checksum says whose they are
    with pytest.raises(ValueError, match=r"MD5 found 9fb629c4.*MNIST's t10k-images"):
        load("fashion-mnist", split="test", root=tmp_path)


def test_loads_return_fresh_tensors(shared_root, real):
    first = load("mnist", split="test", root=shared_root)
    first.x.fill_(0.5)
    first.y.fill_(3)
    second = load("mnist", split="test", root=shared_root)
    assert torch.equal(second.y, real("mnist", "test").y)
    assert torch.equal(second.x, real("mnist", "test").x)


def test_corrupt_file_fails_md5(shared_root, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images, labels = IDX_FILES["test"]
    (folder / images).symlink_to(shared_root / "mnist" / images)
    shutil.copyfile(shared_root / "mnist" / labels, folder / labels)
    blob = bytearray((folder / labels).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / labels).write_bytes(bytes(blob))
    found = _md5(folder / labels)
    with pytest.raises(ValueError, match="MD5") as info:
        load("mnist", split="test", root=tmp_path)
    message = str(info.value)
    assert str(folder / labels) in message
    assert found in message and MD5SUMS["mnist"][labels] in message
    # without the checksum the damaged gzip stream is still caught, naming the file
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz is not a valid gzip"):
        load("mnist", split="test", root=tmp_path, verify=False)


# ------------------------------------------------------------------ IDX files written here


def test_idx_written_here_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    _write_mnist(tmp_path / "fashion-mnist", "train", images, labels)
    ds = load("fashion-mnist", root=tmp_path, verify=False)
    assert ds.x.shape == (7, 1, 28, 28)
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255)).unsqueeze(1)
    assert torch.equal(ds.x, expected)
    assert ds.y.tolist() == labels.tolist()
    small = load("fashion-mnist", root=tmp_path, verify=False, size=14)
    assert small.x.shape == (7, 1, 14, 14)
    assert float(small.x.min()) >= 0 and float(small.x.max()) <= 1
    with pytest.raises(ValueError, match="Checksum mismatch.*expected 8d4fb7e6"):
        load("fashion-mnist", root=tmp_path)


def test_idx_rewritten_file_is_reread(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    _write_mnist(tmp_path / "mnist", "test", images, np.array([1, 2, 3], np.uint8))
    assert load("mnist", split="test", root=tmp_path, verify=False).y.tolist() == [1, 2, 3]
    label_file = tmp_path / "mnist" / IDX_FILES["test"][1]
    _write_idx(label_file, np.array([4, 5, 6], np.uint8))
    stat = label_file.stat()
    os.utime(label_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load("mnist", split="test", root=tmp_path, verify=False).y.tolist() == [4, 5, 6]


def test_idx_bad_magic(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist(folder, "test", np.zeros((2, 28, 28)), np.zeros(2))
    _write_idx(folder / IDX_FILES["test"][0], np.zeros((2, 28, 28)), magic=2049)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz is not an IDX images.*2049"):
        load("mnist", split="test", root=tmp_path, verify=False)


def test_idx_header_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist(folder, "test", np.zeros((2, 28, 28)), np.zeros(2))
    _write_idx(folder / IDX_FILES["test"][0], np.zeros((2, 28, 28)), dims=(3, 28, 28))
    with pytest.raises(ValueError, match=r"header gives dimensions \(3, 28, 28\)"):
        load("mnist", split="test", root=tmp_path, verify=False)


def test_idx_truncated_header(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist(folder, "test", np.zeros((2, 28, 28)), np.zeros(2))
    (folder / IDX_FILES["test"][1]).write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(ValueError, match="too short for an IDX labels"):
        load("mnist", split="test", root=tmp_path, verify=False)


def test_idx_images_and_labels_disagree(tmp_path):
    _write_mnist(tmp_path / "mnist", "test", np.zeros((5, 28, 28)), np.zeros(4))
    with pytest.raises(ValueError, match="holds 5 images but .* holds 4 labels"):
        load("mnist", split="test", root=tmp_path, verify=False)


def test_idx_label_out_of_range(tmp_path):
    _write_mnist(tmp_path / "mnist", "test", np.zeros((2, 28, 28)), np.array([3, 12]))
    with pytest.raises(ValueError, match="holds label 12; expected 0 to 9"):
        load("mnist", split="test", root=tmp_path, verify=False)


def test_missing_file_lists_names_and_folders(tmp_path):
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28)))
    with pytest.raises(FileNotFoundError) as info:
        load("mnist", root=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert f"{tmp_path / 'mnist'}  (missing train-labels-idx1-ubyte.gz)" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert f"{tmp_path}  (missing" in message
    missing_root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="root does not exist"):
        load("fashion-mnist", root=missing_root)


# ------------------------------------------------------------------------------- CIFAR-10


def test_cifar_pixel_layout_labels_classes(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load("cifar10", root=tmp_path, verify=False)
    assert ds.x.shape == (100, 3, 32, 32) and ds.x.dtype == torch.float32
    assert ds.classes == tuple(CIFAR_NAMES) and (ds.name, ds.split) == ("cifar10", "train")
    raw = np.concatenate([batches[f"data_batch_{k}"][b"data"] for k in range(1, 6)])
    labels = sum((batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)), [])
    assert ds.y.tolist() == labels
    rng = np.random.default_rng(1)
    for i, c, h, w in zip(*(rng.integers(0, m, 50) for m in (100, 3, 32, 32)), strict=True):
        assert float(ds.x[i, c, h, w]) == np.float32(raw[i, c * 1024 + h * 32 + w]) / 255
    i, c, h, w = np.meshgrid(*map(np.arange, (100, 3, 32, 32)), indexing="ij")
    full = raw[i, c * 1024 + h * 32 + w].astype(np.float32) / np.float32(255)
    assert torch.equal(ds.x, torch.from_numpy(full))


def test_cifar_test_split_nested_layout_and_resize(tmp_path):
    batches = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py", n=8)
    ds = load("cifar10", split="test", root=tmp_path, verify=False)
    assert len(ds) == 8 and ds.y.tolist() == batches["test_batch"][b"labels"]
    small = load("cifar10", split="test", root=tmp_path, verify=False, size=16)
    assert small.x.shape == (8, 3, 16, 16)
    assert float(small.x.min()) >= 0 and float(small.x.max()) <= 1


def test_cifar_verify_rejects_files_written_here(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", n=2)
    with pytest.raises(ValueError, match=r"batches\.meta: MD5 found [0-9a-f]{32}, expected 5ff9c5"):
        load("cifar10", root=tmp_path)


def test_cifar_missing_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, n=2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_1, .*data_batch_5, batches\.meta"):
        load("cifar10", root=tmp_path, verify=False)
    with pytest.raises(FileNotFoundError, match=str(folder) + r"  \(missing data_batch_3\)"):
        load("cifar10", root=tmp_path, verify=False)
    assert len(load("cifar10", split="test", root=tmp_path, verify=False)) == 2


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must not run",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_Sneaky(), r"global (__builtin__|builtins)\.print is not allowed"),
        ([1, 2], "must hold a dict; got list"),
        ({b"labels": [0]}, "has no 'data' entry"),
        ({b"data": np.zeros((1, 100), np.uint8), b"labels": [0]}, r"shape \(n, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "'labels' must be 2 integers"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "range over .* 10 classes"),
    ],
)
def test_cifar_malformed_batches(tmp_path, capsys, content, match):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, n=2)
    (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match=match):
        load("cifar10", split="test", root=tmp_path, verify=False)
    assert "must not run" not in capsys.readouterr().out


# ----------------------------------------------------------------------------------- roots


def test_resolve_roots_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("GEOMROB_DATA", f"{a}{os.pathsep}{b}")
    assert resolve_roots() == [a, b]
    assert resolve_roots(tmp_path / "x") == [tmp_path / "x"]
    with pytest.raises(TypeError, match="`root` must be a path"):
        resolve_roots(3)


def test_resolve_roots_walks_up_three_parents(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "a" / "b" / "c"
    (deep / "d").mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert resolve_roots() == [tmp_path / "shared" / "data"]
    monkeypatch.chdir(deep / "d")
    with pytest.raises(FileNotFoundError, match="set the environment variable GEOMROB_DATA"):
        resolve_roots()


def test_load_without_any_root_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if any((base / "shared" / "data").is_dir() for base in (tmp_path, *tmp_path.parents[:3])):
        pytest.skip("a shared/data folder lies above the temporary directory")
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz.*GEOMROB_DATA"):
        load("mnist", split="test")


# ---------------------------------------------------------------------- arguments, Dataset


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`name` must be one of .*'fashion-mnist', 'cifar10'"):
        load("svhn")
    with pytest.raises(TypeError, match="`name` must be a str"):
        load(None)
    with pytest.raises(ValueError, match="`split` must be one of"):
        load("digits", split="validation")
    with pytest.raises(ValueError, match=r"`size` must be one of \[8, 16, 28\]; got 12"):
        load("digits", size=12)
    with pytest.raises(ValueError, match="`size` must be >= 1; got 0"):
        load("mnist", size=0)
    with pytest.raises(TypeError, match="`size` must be an int"):
        load("digits", size=16.0)
    with pytest.raises(TypeError, match="`verify` must be a bool"):
        load("digits", verify="yes")
    assert load("Digits", split="test").name == "digits"
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10"}


def test_subset(digits):
    ds = digits["test"]
    a, b, c = ds.subset(50, seed=0), ds.subset(50, seed=0), ds.subset(50, seed=1)
    assert len(a) == 50 and a.classes == ds.classes and (a.name, a.split) == ("digits", "test")
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ds.subset(50, seed=g).y, a.y)
    # without replacement: tag each image with its index
    n = 30
    tagged = Dataset(
        x=torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 1, 2, 2),
        y=torch.zeros(n, dtype=torch.int64),
        classes=("a",),
        name="tagged",
        split="train",
    )
    assert sorted(tagged.subset(n, seed=3).x[:, 0, 0, 0].mul(n).round().tolist()) == list(range(n))
    with pytest.raises(ValueError, match=r"`n` must be at most the dataset size 450.*got 451"):
        ds.subset(451)
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        ds.subset(0)
    with pytest.raises(TypeError, match="`seed` must be an int or a torch.Generator"):
        ds.subset(5, seed=None)


def test_dataset_validates_and_summarises():
    x, y = torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 1, 0])
    ds = Dataset(x=x, y=y, classes=("a", "b"), name="toy", split="train")
    assert repr(ds) == (
        "Dataset(name='toy', split='train', n=4, input_shape=(1, 3, 3), num_classes=2)"
    )
    as_dict = ds.to_dict()
    assert as_dict["classes"] == ["a", "b"] and len(as_dict["x"]) == 4
    with pytest.raises(ValueError, match=r"must hold images in \[0, 1\]"):
        Dataset(x=x * 2, y=y, classes=("a", "b"), name="toy", split="train")
    with pytest.raises(ValueError, match=r"shape \(n, C, H, W\)"):
        Dataset(x=x[..., None], y=y, classes=("a", "b"), name="toy", split="train")
    with pytest.raises(ValueError, match="at least 4 dims"):
        Dataset(x=x[:, 0], y=y, classes=("a", "b"), name="toy", split="train")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        Dataset(x=x, y=y + 1, classes=("a", "b"), name="toy", split="train")
    with pytest.raises(ValueError, match=r"`y` must have shape \(4,\)"):
        Dataset(x=x, y=y[:3], classes=("a", "b"), name="toy", split="train")
