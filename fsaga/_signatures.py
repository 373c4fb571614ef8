"""Whether a function can be called the way a saga will call it, told when the saga is built.

A step's action is called with no argument, its compensation with one (the action's result),
a `bind` or `map` function with one (the previous result). A function that cannot take that
would fail only when the run reaches it, perhaps in the middle of an undo, with Python's own
message. These checks tell it when the saga is built instead, for every function whose
signature can be read cheaply: plain functions and lambdas, methods, `functools.partial` of
them, and instances of classes whose ``__call__`` is a plain function. Anything else (builtins,
classes, C extensions) is let through: the run will say.

`inspect.signature` would read more callables, but costs several microseconds a call, too much
for a check run on every step of a saga built from a million steps; reading the code object
costs a fraction of that. `inspect.signature` is used only to word the error.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from types import FunctionType, MethodType
from typing import Final

__all__ = ["call_problem", "function_name"]

_VARARGS: Final = inspect.CO_VARARGS
_VARKEYWORDS: Final = inspect.CO_VARKEYWORDS


def call_problem(function: object, given: int) -> str | None:
    """Why `function` cannot be called with `given` positional arguments, or ``None`` when it can
    (or when its signature cannot be read cheaply).

    >>> call_problem(lambda: 1, 0) is None
    True
    >>> call_problem(lambda result: None, 0)
    '<lambda>() cannot be called with no argument: its signature is (result)'
    >>> def release(sku: str, count: int) -> None: ...
    >>> call_problem(partial(release, "sku-1"), 1) is None
    True
    >>> call_problem(release, 1)
    'release() cannot be called with one argument: its signature is (sku, count)'
    """
    if type(function) is FunctionType:
        # The common case (a def or a lambda), kept short: it runs for every step built.
        code = function.__code__
        defaults = function.__defaults__
        count = code.co_argcount
        if (
            count - (len(defaults) if defaults else 0) <= given
            and (given <= count or code.co_flags & _VARARGS)
            and not code.co_kwonlyargcount
        ):
            return None
    code_owner, bound, keywords = _unwrap(function)
    if code_owner is None or _binds(code_owner, bound + given, keywords):
        return None
    return _describe(function, given)


def _unwrap(function: object) -> tuple[FunctionType | None, int, Mapping[str, object]]:
    """The plain function `function` finally calls, how many positional arguments are bound
    before the caller's, and which keywords; ``None`` for a callable that is not read."""
    bound = 0
    keywords: dict[str, object] = {}
    # Arguments bound by an outer wrapper come after those of an inner one, so counting them
    # in any order gives the total; an outer partial's keywords override an inner one's.
    for _ in range(64):  # deeper nesting than this is not worth reading
        if isinstance(function, partial):
            bound += len(function.args)
            keywords = {**function.keywords, **keywords}
            function = function.func
        elif isinstance(function, MethodType):
            bound += 1
            function = function.__func__
        elif isinstance(function, FunctionType):
            return function, bound, keywords
        elif isinstance(function, type):
            return None, 0, keywords
        else:
            call = inspect.getattr_static(type(function), "__call__", None)
            if not isinstance(call, FunctionType):
                return None, 0, keywords
            bound += 1
            function = call
    return None, 0, keywords


def _binds(function: FunctionType, positional: int, keywords: Mapping[str, object]) -> bool:
    """Whether calling `function` with `positional` positional arguments and `keywords` binds
    every parameter (the rules of `inspect.Signature.bind`, read off the code object)."""
    code = function.__code__
    count = code.co_argcount
    names = code.co_varnames
    if positional > count and not code.co_flags & _VARARGS:
        return False
    positional_names = names[:count]
    keyword_only = names[count : count + code.co_kwonlyargcount]
    varkeywords = bool(code.co_flags & _VARKEYWORDS)
    for name in keywords:
        if name in positional_names:
            index = positional_names.index(name)
            if index < code.co_posonlyargcount:
                if not varkeywords:
                    return False  # a positional-only parameter passed by keyword
            elif index < positional:
                return False  # given twice: by position and by keyword
        elif name not in keyword_only and not varkeywords:
            return False
    defaults = len(function.__defaults__ or ())
    for index in range(positional, count - defaults):
        name = positional_names[index]
        if index < code.co_posonlyargcount or name not in keywords:
            return False  # a required parameter left without a value
    keyword_defaults = function.__kwdefaults__ or {}
    return all(name in keywords or name in keyword_defaults for name in keyword_only)


def _describe(function: object, given: int) -> str:
    name = f"{function_name(function)}()"
    if isinstance(function, partial):
        name = f"functools.partial({name[:-2]}, ...)"
    arguments = {0: "no argument", 1: "one argument"}.get(given, f"{given} arguments")
    try:
        signature = inspect.signature(function) if callable(function) else None
    except (TypeError, ValueError):
        signature = None
    if signature is None:
        return f"{name} cannot be called with {arguments}"
    # Annotations are left out: under postponed evaluation they would read as strings.
    bare = signature.replace(
        parameters=[
            parameter.replace(annotation=inspect.Parameter.empty)
            for parameter in signature.parameters.values()
        ],
        return_annotation=inspect.Signature.empty,
    )
    return f"{name} cannot be called with {arguments}: its signature is {bare}"


def function_name(function: object) -> str:
    """How messages name a function: its qualified name, without the path of a function that
    defines it (``release``, ``Gateway.refund``, ``<lambda>``), through partials.

    >>> function_name(partial(print, "a"))
    'print'
    """
    while isinstance(function, partial):
        function = function.func
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(function).__qualname__
    return qualname.rpartition(".<locals>.")[2]
