"""Import a repository script that is not in a package (benchmarks/*.py, launch/*.launch.py) by its path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str | None = None) -> ModuleType:
    """The module at REPO/`relative`, executed fresh (module name: `name` or the file's stem)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(name or path.name.split(".")[0], path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module
