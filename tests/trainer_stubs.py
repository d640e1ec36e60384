"""Stand-ins for what trainers import but the reward path never uses (a child process only).

Ray (the distributed runtime: the trainers' reward code runs in its actors), GPU-only
helpers and small utilities the reward path does not call are replaced by modules whose
attributes are inert classes. ``ray.remote`` runs the function in place and ``ray.get``
returns what it is given, so OpenRLHF's ``remote_rm_fn_ray.remote(...)`` calls the real
request code synchronously.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any


class _Remote:
    def __init__(self, target: Any) -> None:
        self._target = target

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        made = self._target(*args, **kwargs)
        return _Actor(made) if isinstance(self._target, type) else made

    def options(self, **_: Any) -> _Remote:
        return self


class _Actor:
    """A Ray actor handle: ``handle.method.remote(...)`` calls the method in place."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        return _Remote(getattr(self._obj, name))


def _remote(*args: Any, **kwargs: Any) -> Any:
    if args and callable(args[0]) and not kwargs:
        return _Remote(args[0])
    return _Remote


class _Inert(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(prefixes)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if any(fullname == p or fullname.startswith(p + ".") for p in self.prefixes):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _Inert(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ == "ray":
            ray: Any = module
            ray.remote = _remote
            ray.get = lambda refs, **_: refs
            ray.put = lambda value, **_: value
            ray.is_initialized = lambda: False
            ray.nodes = lambda: []


def install(prefixes: Sequence[str]) -> None:
    sys.meta_path.insert(0, _StubFinder(prefixes))


def package_without_init(name: str, folder: str) -> None:
    """Import ``name`` as a bare package at ``folder``, skipping its ``__init__`` (which
    pulls in training stacks); its submodules then import from the real files."""
    module = types.ModuleType(name)
    module.__path__ = [folder]
    sys.modules[name] = module


def answer(result: Any, dumps: Callable[[Any], str]) -> None:
    print(dumps(result), flush=True)
