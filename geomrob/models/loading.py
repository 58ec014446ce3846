"""Load a user's classifier: a TorchScript file, a ``package.module:factory`` spec, or a geomrob
checkpoint.

Nothing here unpickles arbitrary objects: weights are read with ``torch.load(weights_only=True)``
and whole pickled ``nn.Module`` files are refused (save TorchScript or a state dict instead).
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .zoo import build

CHECKPOINT_FORMAT = "geomrob-checkpoint"

__all__ = ["CHECKPOINT_FORMAT", "load_model"]

_IDENT = r"[A-Za-z_]\w*"
_FACTORY_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_SPEC_EXAMPLES = (
    "Valid specs: a file 'model.pt' saved by torch.jit.save, a geomrob checkpoint "
    "'runs/models/lenet-mnist-<hash>/model.pt', or a factory 'package.module:factory' such as "
    "'torchvision.models:resnet18' or 'mypkg.nets:make_cnn' (with factory_kwargs={...} and "
    "state_dict='weights.pt')."
)


def load_model(
    spec: str | os.PathLike,
    *,
    state_dict: str | os.PathLike | Mapping[str, Tensor] | None = None,
    map_location: str | torch.device = "cpu",
    factory_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load a classifier and return it in eval mode on ``map_location``.

    ``spec`` is one of:

    - a path to a TorchScript file (``torch.jit.save``), loaded with ``torch.jit.load``;
    - a path to a geomrob checkpoint, a ``torch.save``-d dict ``{"format": "geomrob-checkpoint",
      "config": model.geomrob_config, "state_dict": ...}`` as written by
      :func:`geomrob.models.train`: the model is rebuilt with ``build(**config)`` and its weights
      loaded (other keys of the dict are ignored);
    - ``"package.module:factory"`` (``factory`` may be a dotted attribute path): the module is
      imported, ``factory(**factory_kwargs)`` must return an ``nn.Module``.

    Args:
        spec: the file or factory spec (a string containing ``:`` that is not an existing file is
            read as a factory spec).
        state_dict: weights loaded strictly after construction: a path to a file saved by
            ``torch.save(model.state_dict(), path)`` (or a geomrob checkpoint, whose weights are
            taken), or the mapping itself.
        map_location: device of the returned model (also passed to ``torch.load`` /
            ``torch.jit.load``).
        factory_kwargs: keyword arguments for the factory; only with a factory spec.

    Returns:
        The model, in eval mode.

    Raises:
        TypeError: ``spec`` is not a string or path; ``factory_kwargs`` not a mapping with
            string keys; the factory is not callable or does not return an ``nn.Module``.
        ValueError: a malformed spec; ``factory_kwargs`` with a file spec; a file that is
            neither TorchScript nor a geomrob checkpoint; a checkpoint whose config cannot be
            built; weights that do not match the model; a bad ``map_location``.
        FileNotFoundError: the file of ``spec`` or ``state_dict`` does not exist.
        ImportError: the module of a factory spec cannot be imported.

    Example:
        >>> net = load_model("torch.nn:Linear", factory_kwargs={"in_features": 4, "out_features": 2})
        >>> net, net.training
        (Linear(in_features=4, out_features=2, bias=True), False)
    """  # noqa: E501
    device = _check_device(map_location)
    if factory_kwargs is not None:
        if not isinstance(factory_kwargs, Mapping) or not all(
            isinstance(k, str) for k in factory_kwargs
        ):
            raise TypeError(
                "`factory_kwargs` must be a dict of keyword arguments (str keys) or None; "
                f"got {type(factory_kwargs).__name__} {factory_kwargs!r}."
            )
    kind, target = _parse_spec(spec)
    if kind == "factory":
        model = _from_factory(str(spec), target, dict(factory_kwargs or {}))
    else:
        if factory_kwargs is not None:
            raise ValueError(
                f"`factory_kwargs` is only used with a 'package.module:factory' spec; `spec` "
                f"{str(spec)!r} is a file. Drop factory_kwargs."
            )
        model = _from_file(target, device)
    if state_dict is not None:
        weights = _read_state_dict(state_dict, device)
        _load_weights(model, weights, f"`state_dict` {_describe(state_dict)}")
    return model.to(device).eval()


def _check_device(map_location: object) -> torch.device:
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            "`map_location` must be a device string such as 'cpu' or 'cuda:0', or a "
            f"torch.device; got {type(map_location).__name__} {map_location!r}."
        )
    try:
        return torch.device(map_location)
    except RuntimeError as err:
        raise ValueError(
            f"`map_location` must name a device such as 'cpu' or 'cuda:0'; got {map_location!r}."
        ) from err


def _parse_spec(spec: object) -> tuple[str, Any]:
    """``("file", Path)`` or ``("factory", (module, attribute))``."""
    if isinstance(spec, os.PathLike):
        return "file", _existing_file(Path(spec), spec)
    if not isinstance(spec, str):
        raise TypeError(
            f"`spec` must be a path or a 'package.module:factory' string; got "
            f"{type(spec).__name__} {spec!r}. {_SPEC_EXAMPLES}"
        )
    text = spec.strip()
    if not text:
        raise ValueError(f"`spec` is empty. {_SPEC_EXAMPLES}")
    path = Path(text)
    if path.exists():
        return "file", _existing_file(path, spec)
    match = _FACTORY_SPEC.match(text)
    if match is not None:
        return "factory", (match.group(1), match.group(2))
    if ":" in text and "/" not in text and "\\" not in text:
        raise ValueError(
            f"`spec` {spec!r} is neither an existing file nor a 'package.module:factory' spec "
            f"(dotted Python names on both sides of one ':'). {_SPEC_EXAMPLES}"
        )
    raise FileNotFoundError(
        f"`spec`: no file {str(path.resolve())!r} (from {spec!r}). {_SPEC_EXAMPLES}"
    )


def _existing_file(path: Path, spec: object) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"`spec`: no file {str(path.resolve())!r} (from {spec!r}). {_SPEC_EXAMPLES}"
        )
    if path.is_dir():
        raise ValueError(
            f"`spec` {str(path)!r} is a directory; give the model file inside it. {_SPEC_EXAMPLES}"
        )
    return path


def _from_factory(spec: str, target: tuple[str, str], kwargs: dict[str, Any]) -> nn.Module:
    module_name, attribute = target
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"`spec` {spec!r}: cannot import module {module_name!r} ({err}). Install its package "
            "or put its folder on sys.path (PYTHONPATH).",
            name=module_name,
        ) from err
    factory: Any = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ValueError(
                f"`spec` {spec!r}: module {module_name!r} has no attribute {attribute!r}."
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise TypeError(
            f"`spec` {spec!r}: {module_name}.{attribute} must be callable (a class or a function "
            f"returning an nn.Module); got {type(factory).__name__}."
        )
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`spec` {spec!r}: the factory must return a torch.nn.Module; it returned "
            f"{type(model).__name__}."
        )
    return model


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.split("/")[1:2] == ["code"] or name.startswith("code/") for name in names)


def _torch_load(path: Path, device: torch.device, name: str) -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(
            f"{name} {str(path)!r} is neither a TorchScript file nor a weights-only torch.save "
            f"file ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "Whole pickled nn.Module objects are refused, because unpickling runs arbitrary "
            "code: save the model with torch.jit.save(torch.jit.script(model), path), or save "
            "model.state_dict() and load it with spec='package.module:factory', state_dict=path."
        ) from err


def _from_file(path: Path, device: torch.device) -> nn.Module:
    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location=device)
    obj = _torch_load(path, device, "`spec`")
    if not (isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT):
        hint = ""
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            hint = (
                " It looks like a bare state_dict: load it with "
                f"load_model('package.module:factory', state_dict={str(path)!r})."
            )
        raise ValueError(
            f"`spec` {str(path)!r} is not a TorchScript file and not a geomrob checkpoint (a dict "
            f"with 'format': {CHECKPOINT_FORMAT!r}, 'config' and 'state_dict').{hint}"
        )
    return model_from_checkpoint(obj, f"`spec` {str(path)!r}")


def model_from_checkpoint(obj: Mapping[str, Any], what: str = "checkpoint") -> nn.Module:
    """Rebuild a zoo model from a loaded geomrob checkpoint dict (``config`` + ``state_dict``)."""
    config = obj.get("config")
    weights = obj.get("state_dict")
    if not isinstance(config, Mapping) or not isinstance(weights, Mapping):
        raise ValueError(
            f"{what}: a geomrob checkpoint needs a 'config' dict and a 'state_dict' dict."
        )
    try:
        model = build(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{what}: the checkpoint's config {dict(config)!r} does not build a zoo model: {err}"
        ) from err
    _load_weights(model, weights, what)
    return model


def _read_state_dict(
    state_dict: str | os.PathLike | Mapping[str, Tensor], device: torch.device
) -> Mapping[str, Tensor]:
    if isinstance(state_dict, Mapping):
        weights: Any = state_dict
    elif isinstance(state_dict, (str, os.PathLike)):
        path = Path(state_dict)
        if not path.is_file():
            raise FileNotFoundError(
                f"`state_dict`: no file {str(path.resolve())!r}. Give the path of a file saved "
                "with torch.save(model.state_dict(), path)."
            )
        weights = _torch_load(path, device, "`state_dict`")
        if isinstance(weights, Mapping) and weights.get("format") == CHECKPOINT_FORMAT:
            weights = weights.get("state_dict")
    else:
        raise TypeError(
            "`state_dict` must be a path, a mapping of parameter names to tensors, or None; got "
            f"{type(state_dict).__name__}."
        )
    if not isinstance(weights, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()
    ):
        raise ValueError(
            f"`state_dict` {_describe(state_dict)} must hold a mapping of parameter names to "
            f"tensors, as model.state_dict() returns; got {type(weights).__name__}."
        )
    return weights


def _load_weights(model: nn.Module, weights: Mapping[str, Tensor], what: str) -> None:
    try:
        model.load_state_dict(dict(weights), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{what} does not match the model: {err}") from err


def _describe(state_dict: object) -> str:
    if isinstance(state_dict, (str, os.PathLike)):
        return repr(str(state_dict))
    return f"({type(state_dict).__name__} of {len(state_dict)} entries)"  # type: ignore[arg-type]
