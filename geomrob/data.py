"""Image datasets from a local folder, plus scikit-learn's embedded digits.

geomrob never downloads anything. ``"digits"`` is scikit-learn's bundled copy of the UCI 8x8
handwritten digits (1797 images), so it works everywhere and is the default of the demos.
``"mnist"``, ``"fashion-mnist"`` (gzipped IDX files) and ``"cifar10"`` (the "python version"
pickles) are read from a *data root* that holds the publisher's files:

==================  ==========================================================================
dataset             folders tried under each root, in order
==================  ==========================================================================
``mnist``           ``<root>/mnist/``, ``<root>/MNIST/raw/`` (torchvision), ``<root>/``
``fashion-mnist``   ``<root>/fashion-mnist/``, ``<root>/FashionMNIST/raw/`` (torchvision),
                    ``<root>/``
``cifar10``         ``<root>/cifar-10-batches-py/`` (torchvision),
                    ``<root>/cifar10/cifar-10-batches-py/``
==================  ==========================================================================

A folder is used when it holds every file the requested split needs; ``<root>/`` itself is
tried last, so a root that directly holds one dataset's ``.gz`` files also works. The roots
come from :func:`resolve_roots`: the ``root`` argument, else the ``GEOMROB_DATA`` environment
variable, else a ``shared/data`` folder next to the working directory (see there).

Every file is checked against the publisher's MD5 (:data:`MD5SUMS`) before it is parsed; a
mismatch is a ``ValueError`` that gives the path and both checksums. ``verify=False`` skips the
check, for files written in the same format by yourself (the tests do this for CIFAR-10).
Parsed files are cached in-process, keyed by real path, modification time and size, so a
second :func:`load` is fast; each call still returns new tensors that callers may modify.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._random import as_generator
from ._validation import check_batch, check_choice, check_int, check_labels
from .results import Result

__all__ = [
    "DATASETS",
    "DIGITS_SIZES",
    "ENV_VAR",
    "NATIVE_SIDES",
    "MD5SUMS",
    "SPLITS",
    "Dataset",
    "load",
    "resolve_roots",
]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`load`.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
#: Splits accepted by :func:`load`.
SPLITS: tuple[str, ...] = ("train", "test")
#: The native image side of each dataset (what ``size=None`` keeps).
NATIVE_SIDES: dict[str, int] = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "cifar10": 32}
#: Image sides accepted for ``"digits"`` (``None`` means the native 8).
DIGITS_SIZES: tuple[int, ...] = (8, 16, 28)
#: Environment variable naming the data root(s).
ENV_VAR = "GEOMROB_DATA"

#: Fraction of the 1797 digits held out as the test split (stratified, seed below): 1347 / 450.
DIGITS_TEST_FRACTION = 0.25
#: ``random_state`` of scikit-learn's ``train_test_split`` for the digits split.
DIGITS_SPLIT_SEED = 0

#: The publishers' MD5 checksums, per dataset and file name. MNIST and Fashion-MNIST: the
#: values of ``shared/data/MD5SUMS`` (Fashion-MNIST's t10k labels end in ``...ee83cd310``;
#: ``...ee83fd310`` in some lists is a typo). CIFAR-10: the values torchvision checks.
MD5SUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
}

_DIGIT_CLASSES = tuple(str(k) for k in range(10))
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# Sub-folders of a root, tried in order; () is the root itself.
_LAYOUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "mnist": (("mnist",), ("MNIST", "raw"), ()),
    "fashion-mnist": (("fashion-mnist",), ("FashionMNIST", "raw"), ()),
    "cifar10": (("cifar-10-batches-py",), ("cifar10", "cifar-10-batches-py")),
}
_IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim
_CIFAR_SIDE = 32
# The only globals a CIFAR-10 pickle needs (numpy arrays under protocols 2 to 5).
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)
_CACHE_SIZE = 12


@dataclass(frozen=True, eq=False)
class Dataset(Result):
    """Images and labels of one split of a dataset.

    ``eq=False``: two datasets compare by identity (comparing tensors with ``==`` is
    elementwise). :meth:`~geomrob.results.Result.to_dict` turns the images into nested lists,
    which is large for the full datasets.

    Attributes:
        x: images ``(n, C, H, W)``, float32 in ``[0, 1]``.
        y: labels ``(n,)``, int64 in ``[0, num_classes - 1]``.
        classes: class names, ``classes[k]`` is the name of label ``k``.
        name: dataset name, one of :data:`DATASETS` for loaded data.
        split: ``"train"`` or ``"test"`` for loaded data.

    Raises:
        TypeError: if ``x`` is not a floating tensor or ``y`` does not hold integers.
        ValueError: if ``x`` is not ``(n, C, H, W)`` with finite values in ``[0, 1]``, ``y``
            is not ``(n,)`` or holds a label outside ``[0, len(classes) - 1]``.
    """

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self) -> None:
        """Check the fields (see Raises above)."""
        check_batch(self.x, "x", min_ndim=4)
        if self.x.ndim != 4:
            raise ValueError(f"`x` must have shape (n, C, H, W); got {tuple(self.x.shape)}.")
        lo, hi = torch.aminmax(self.x)
        if lo < 0 or hi > 1:
            raise ValueError(
                f"`x` must hold images in [0, 1]; got values in [{float(lo)}, {float(hi)}]."
            )
        check_labels(self.y, self.x.shape[0], "y", num_classes=len(self.classes))

    def __repr__(self) -> str:
        """A one-line summary (not the tensors)."""
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )

    def __len__(self) -> int:
        """The number of images ``n``."""
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(classes)``."""
        return len(self.classes)

    def subset(self, n: int, *, seed: int | torch.Generator = 0) -> Dataset:
        """A random subset of ``n`` distinct images (not stratified), in random order.

        Args:
            n: number of images, ``1 <= n <= len(self)``.
            seed: an int or a CPU ``torch.Generator``; the same seed gives the same subset.

        Returns:
            A new :class:`Dataset` with the same ``classes``, ``name`` and ``split``.

        Raises:
            TypeError: if ``n`` is not an int or ``seed`` not an int or generator.
            ValueError: if ``n < 1`` or ``n > len(self)``.

        Example:
            >>> ds = load("digits", split="test")
            >>> small = ds.subset(10, seed=0)
            >>> len(small), bool((small.y == ds.subset(10, seed=0).y).all())
            (10, True)
        """
        n = check_int(n, "n", low=1)
        if n > len(self):
            raise ValueError(
                f"`n` must be at most the dataset size {len(self)} (sampling without "
                f"replacement); got {n}."
            )
        if seed is None:
            raise TypeError("`seed` must be an int or a torch.Generator; got None.")
        index = torch.randperm(len(self), generator=as_generator(seed))[:n]
        return Dataset(
            x=self.x[index],
            y=self.y[index],
            classes=self.classes,
            name=self.name,
            split=self.split,
        )


def resolve_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The data roots that :func:`load` searches, in order.

    1. ``root`` when given (and nothing else);
    2. else the ``GEOMROB_DATA`` environment variable (several folders may be joined with
       ``os.pathsep``);
    3. else, as a convenience for checkouts beside a shared data folder, the first
       ``shared/data`` folder found in the current working directory or one of its first
       three parents (``./shared/data``, ``../shared/data``, ``../../shared/data``,
       ``../../../shared/data``).

    Args:
        root: an explicit data root, or ``None``.

    Returns:
        Absolute paths (not checked for existence when given explicitly).

    Raises:
        TypeError: if ``root`` is not a path.
        FileNotFoundError: if no root is given, ``GEOMROB_DATA`` is unset and no
            ``shared/data`` folder is found; the message says how to set one.

    Example:
        >>> [path.as_posix() for path in resolve_roots("/data/images")]
        ['/data/images']
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(
                f"`root` must be a path (str or os.PathLike) or None; got {type(root).__name__}."
            )
        return [Path(root).expanduser().absolute()]
    env = os.environ.get(ENV_VAR, "")
    parts = [part for part in env.split(os.pathsep) if part.strip()]
    if parts:
        return [Path(part).expanduser().absolute() for part in parts]
    cwd = Path.cwd()
    tried = [base / "shared" / "data" for base in (cwd, *list(cwd.parents)[:3])]
    for candidate in tried:
        if candidate.is_dir():
            return [candidate]
    raise FileNotFoundError(
        "No data root: pass `root=` to geomrob.data.load (`--data-root` on the command line) "
        f"or set the environment variable {ENV_VAR} to the folder that holds mnist/, "
        "fashion-mnist/ or cifar-10-batches-py/ (e.g. `export GEOMROB_DATA=/path/to/data`). "
        f"No shared/data folder either: tried {', '.join(map(str, tried))}. "
        "geomrob never downloads; copy the publishers' files there."
    )


def load(
    name: str,
    *,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    size: int | None = None,
    verify: bool = True,
) -> Dataset:
    """Load one split of a dataset as float32 images in ``[0, 1]``.

    ``"digits"`` comes from scikit-learn (pixel values 0..16 divided by 16); its train/test
    split is a fixed stratified ``train_test_split`` with ``test_size=0.25`` and
    ``random_state=0`` (1347 / 450 images), and ``root`` and ``verify`` are ignored. The other
    datasets are read from the roots of :func:`resolve_roots` (see the module docstring for the
    folders tried) and divided by 255.

    ``size`` resizes to ``size x size`` with bilinear interpolation
    (``align_corners=False``; antialiased when shrinking). Its weights are non-negative and sum
    to one, so the result stays in ``[0, 1]`` up to float32 rounding (about ``1e-7`` above 1 was
    measured); only that rounding is clamped away.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: data root, overriding ``GEOMROB_DATA`` (see :func:`resolve_roots`).
        size: image side; ``None`` keeps the native one (8 for digits, 28 for MNIST and
            Fashion-MNIST, 32 for CIFAR-10). Digits accept only 8, 16 or 28.
        verify: check each file's MD5 against the publisher's before parsing it. Set
            ``False`` only for files you wrote yourself in the same format (CIFAR-10 pickles
            are then unpickled with a restricted unpickler that only rebuilds numpy arrays).

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(n, C, size, size)`` and ``y`` of shape
        ``(n,)``.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: for an unknown ``name``, ``split`` or ``size``, for a file whose MD5 does
            not match (the message gives the path, the MD5 found and the one expected), or for
            a malformed file (bad IDX magic number or counts, bad pickle contents).
        FileNotFoundError: if no folder holds the needed files; the message lists the expected
            file names and every folder searched.

    Example:
        >>> ds = load("digits", split="test")
        >>> ds.x.shape, ds.y.dtype, ds.classes[:3]
        (torch.Size([450, 1, 8, 8]), torch.int64, ('0', '1', '2'))
        >>> load("digits", size=16).input_shape
        (1, 16, 16)
    """
    if not isinstance(name, str):
        raise TypeError(
            f"`name` must be a str, one of {list(DATASETS)}; got {type(name).__name__}."
        )
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"`name` must be one of {list(DATASETS)}; got {name!r}.")
    check_choice(split, "split", SPLITS)
    if not isinstance(verify, bool):
        raise TypeError(f"`verify` must be a bool; got {type(verify).__name__}.")
    if size is not None:
        size = check_int(size, "size", low=1)
        if key == "digits":
            check_choice(size, "size", DIGITS_SIZES)

    if key == "digits":
        images, labels = _digits_split()[split]
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        y = torch.from_numpy(labels.astype(np.int64))
        classes = _DIGIT_CLASSES
    else:
        files = _split_files(key, split)
        try:
            roots = resolve_roots(root)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"Cannot load {_TITLES[key]} {split!r}: it needs the files "
                f"{', '.join(files)}. {err}"
            ) from None
        folder = _find_folder(key, split, roots)
        logger.debug("loading %s %s from %s", key, split, folder)
        if key == "cifar10":
            x, y, classes = _load_cifar(folder, split, verify=verify)
        else:
            x, y = _load_idx_pair(key, folder, files, verify=verify)
            classes = _FASHION_CLASSES if key == "fashion-mnist" else _DIGIT_CLASSES
    if size is not None and size != x.shape[-1]:
        x = _resize(x, size)
    return Dataset(x=x, y=y, classes=classes, name=key, split=split)


# --------------------------------------------------------------------------------------------
# helpers


def _split_files(key: str, split: str) -> tuple[str, ...]:
    if key == "cifar10":
        batches = [f"data_batch_{k}" for k in range(1, 6)] if split == "train" else ["test_batch"]
        return (*batches, "batches.meta")
    prefix = "train" if split == "train" else "t10k"
    return (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")


def _find_folder(key: str, split: str, roots: list[Path]) -> Path:
    files = _split_files(key, split)
    searched = []
    for root in roots:
        if not root.is_dir():
            searched.append(f"  {root}  (root does not exist)")
            continue
        for parts in _LAYOUTS[key]:
            folder = root.joinpath(*parts)
            if not folder.is_dir():
                searched.append(f"  {folder}  (no such folder)")
                continue
            missing = [f for f in files if not (folder / f).is_file()]
            if not missing:
                return folder
            searched.append(f"  {folder}  (missing {', '.join(missing)})")
    layouts = ", ".join("<root>/" + "/".join(p) + ("/" if p else "") for p in _LAYOUTS[key])
    raise FileNotFoundError(
        f"Cannot load {_TITLES[key]} {split!r}: no folder holds all of the expected files "
        f"{', '.join(files)}. Folders searched ({layouts} for each root "
        f"{', '.join(map(str, roots))}):\n" + "\n".join(searched) + "\n"
        f"Copy the publisher's files into one of them, or point `root=` / {ENV_VAR} at the "
        "folder that holds them. geomrob never downloads."
    )


def _file_md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _read_verified(path: Path, key: str, *, kind: str, verify: bool) -> Any:
    """Read, verify and parse one file through the in-process cache.

    Returns:
        The parsed content: a read-only uint8 array for IDX files, ``(images, labels)`` or
        the class names for CIFAR-10 pickles.
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    expected = MD5SUMS[key][path.name] if verify else None
    return _read_cached(real, stat.st_mtime_ns, stat.st_size, kind, key, path.name, expected)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _read_cached(
    real: str,
    mtime_ns: int,
    nbytes: int,
    kind: str,
    key: str,
    file_name: str,
    expected: str | None,
) -> Any:
    # mtime_ns and nbytes only key the cache: a rewritten file is read again.
    path = Path(real)
    raw = path.read_bytes()
    if expected is not None:
        found = _file_md5(raw)
        if found != expected:
            raise ValueError(_md5_message(path, key, file_name, found, expected))
    if kind == "pickle":
        return _parse_cifar_pickle(raw, path, file_name)
    try:
        raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path} is not a valid gzip file ({err}). Replace it with the publisher's file."
        ) from None
    array = _parse_idx(raw, path, kind)
    array.flags.writeable = False
    return array


def _md5_message(path: Path, key: str, file_name: str, found: str, expected: str) -> str:
    message = (
        f"Checksum mismatch for {path}: MD5 found {found}, expected {expected} (the "
        f"publisher's {_TITLES[key]} {file_name}). The file is corrupt or not the official "
        "one: copy the publisher's file again (geomrob never downloads). Pass verify=False "
        "only for files you wrote yourself in the same format."
    )
    for other, sums in MD5SUMS.items():
        for other_name, md5 in sums.items():
            if md5 == found:
                message += f" (This file is {_TITLES[other]}'s {other_name}.)"
    return message


def _parse_idx(raw: bytes, path: Path, kind: str) -> np.ndarray:
    magic_expected = _IDX_MAGIC[kind]
    ndim = magic_expected & 0xFF
    header = 4 + 4 * ndim
    what = "images (IDX3)" if kind == "images" else "labels (IDX1)"
    if len(raw) < header:
        raise ValueError(
            f"{path} is too short for an IDX {what} header ({len(raw)} bytes after gunzip)."
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != magic_expected:
        raise ValueError(
            f"{path} is not an IDX {what} file: magic number {magic}, expected {magic_expected}."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    payload = len(raw) - header
    if payload != math.prod(dims):
        raise ValueError(
            f"{path}: the IDX header gives dimensions {dims}, i.e. {math.prod(dims)} bytes of "
            f"data, but the file holds {payload}."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _load_idx_pair(
    key: str, folder: Path, files: tuple[str, ...], *, verify: bool
) -> tuple[Tensor, Tensor]:
    image_path, label_path = folder / files[0], folder / files[1]
    images = _read_verified(image_path, key, kind="images", verify=verify)
    labels = _read_verified(label_path, key, kind="labels", verify=verify)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels."
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{label_path} holds label {int(labels.max())}; expected 0 to 9.")
    x = torch.from_numpy(images.astype(np.float32)).div_(255).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing that could run other code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 pickle")


def _field(entry: dict, name: str, path: Path) -> Any:
    for k in (name.encode(), name):
        if k in entry:
            return entry[k]
    raise ValueError(f"{path} has no {name!r} entry; found keys {sorted(map(repr, entry))}.")


def _parse_cifar_pickle(raw: bytes, path: Path, file_name: str) -> Any:
    try:
        entry = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a malformed file
        raise ValueError(f"{path} is not a CIFAR-10 python pickle: {err}.") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} must hold a dict; got {type(entry).__name__}.")
    if file_name == "batches.meta":
        names = _field(entry, "label_names", path)
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    data = np.asarray(_field(entry, "data", path))
    labels = np.asarray(_field(entry, "labels", path))
    side = _CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side * side:
        raise ValueError(
            f"{path}: 'data' must be uint8 of shape (n, {3 * side * side}); got "
            f"{data.dtype} {data.shape}."
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must be {data.shape[0]} integers; got {labels.dtype} {labels.shape}."
        )
    images = data.reshape(-1, 3, side, side)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_cifar(folder: Path, split: str, *, verify: bool) -> tuple[Tensor, Tensor, tuple]:
    files = _split_files("cifar10", split)
    classes = _read_verified(folder / "batches.meta", "cifar10", kind="pickle", verify=verify)
    images, labels = [], []
    for file_name in files[:-1]:
        batch_images, batch_labels = _read_verified(
            folder / file_name, "cifar10", kind="pickle", verify=verify
        )
        images.append(batch_images)
        labels.append(batch_labels)
    y = torch.from_numpy(np.concatenate(labels))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise ValueError(
            f"Labels in {folder} range over [{int(y.min())}, {int(y.max())}] but batches.meta "
            f"names {len(classes)} classes."
        )
    x = torch.from_numpy(np.concatenate(images).astype(np.float32)).div_(255)
    return x, y, classes


def _resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of images in ``[0, 1]``.

    Returns:
        ``(n, C, size, size)`` images in ``[0, 1]``, from ``x`` of shape ``(n, C, H, W)``.
    """
    out = torch.nn.functional.interpolate(
        x,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=size < min(x.shape[-2:]),
    )
    # A convex combination of values in [0, 1] leaves [0, 1] only by float32 rounding.
    lo, hi = torch.aminmax(out)
    assert float(lo) > -1e-5 and float(hi) < 1 + 1e-5, (float(lo), float(hi))
    return out.clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # values 0..16: exact in float32
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    for array in (x_train, x_test, y_train, y_test):
        array.flags.writeable = False
    return {"train": (x_train, y_train), "test": (x_test, y_test)}
