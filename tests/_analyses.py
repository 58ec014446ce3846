"""Import the scripts of ``analyses/`` as modules, so tests can call their ``main(argv)``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


def script(name: str) -> ModuleType:
    """``analyses/<name>.py`` as a module (the folder goes on ``sys.path`` once, for the scripts'
    own ``import _common``)."""
    if str(ANALYSES) not in sys.path:
        sys.path.insert(0, str(ANALYSES))
    return importlib.import_module(name)
