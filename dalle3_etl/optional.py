"""Optional dependencies: one helper, one message style (`pip install 'dalle3-etl[EXTRA]'`)."""

from __future__ import annotations

import importlib
from types import ModuleType

from dalle3_etl.errors import MissingDependency


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingDependency naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name != module and not module.startswith(exc.name + "."):
            raise  # the package is there but broken: its own error says more
        raise MissingDependency(
            f"{purpose} needs the {module.split('.')[0]} package: pip install 'dalle3-etl[{extra}]'"
        ) from None


__all__ = ["require"]
