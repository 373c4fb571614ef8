"""Names a package exports but imports only on first use (a module `__getattr__`, PEP 562).

A facade binds these under ``if TYPE_CHECKING:`` as plain re-exports, so type checkers and
IDEs see them exactly as if they were imported eagerly, and installs what `lazy_exports`
returns as its module's `__getattr__` and `__dir__` otherwise. Nothing user code can observe
changes but when the module behind the names is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping


def lazy_exports(
    package: str, namespace: MutableMapping[str, object], origins: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package` for the names in `origins`.

    `origins` maps each lazily exported name to the module that defines it, or a submodule's
    name to the submodule itself (``"asynchronous": "fsaga.interpreter.asynchronous"``, so that
    ``fsaga.interpreter.asynchronous`` still works after a plain ``import fsaga``). The first
    access to a name imports its module and binds the name in `namespace` (the package's
    globals), so later accesses are plain lookups.

    >>> namespace: dict[str, object] = {}
    >>> getattr_, dir_ = lazy_exports("pkg", namespace, {"dedent": "textwrap"})
    >>> dir_()
    ['dedent']
    >>> import textwrap
    >>> getattr_("dedent") is textwrap.dedent and namespace["dedent"] is textwrap.dedent
    True
    >>> getattr_("indent")
    Traceback (most recent call last):
    AttributeError: module 'pkg' has no attribute 'indent'
    >>> xml_getattr, _ = lazy_exports("xml", {}, {"dom": "xml.dom"})
    >>> import xml.dom
    >>> xml_getattr("dom") is xml.dom
    True
    """

    def module_getattr(name: str) -> object:
        origin = origins.get(name)
        if origin is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(origin)
        value: object = module if origin == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    def module_dir() -> list[str]:
        return sorted({*namespace, *origins})

    return module_getattr, module_dir
