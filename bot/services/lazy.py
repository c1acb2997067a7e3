"""Package names loaded on first use (PEP 562): a process that needs one part of a feature package (the inbound
door needs the store, unsubscribe tokens and the lifecycle's address hold, not the OAuth client, DKIM or the SMTP
client) does not import the rest, and starts in a fraction of the time."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `names[name]` (a module path) when `name` is first used."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
