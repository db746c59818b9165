"""Find the WSGI application named on the command line, the way gunicorn does: ``module:attribute``.

``pkg.module:app`` imports ``pkg.module`` and takes ``app``; ``module`` alone means ``module:application``;
``module:create_app()`` calls a factory, and ``module:create_app('prod', debug=False)`` passes literal
arguments. The current directory is importable, as a user running ``python -m server`` from a project expects.
Every failure is a ``LoadError`` whose message says which module or attribute and why.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Callable


class LoadError(Exception):
    """The application could not be loaded; the message is meant for the person at the terminal."""


def load_app(spec: str) -> Callable:
    """Import and return the WSGI callable that ``spec`` names."""
    module_name, _, expression = spec.partition(":")
    expression = expression.strip() or "application"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise LoadError(f"{spec!r} is not of the form module:attribute (for example myproject.wsgi:app)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    target = _evaluate(module, module_name, expression)
    if not callable(target):
        raise LoadError(f"{module_name}:{expression} is a {type(target).__name__}, not a callable WSGI application")
    return target


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise LoadError(f"cannot import {module_name!r}: no module named {error.name!r}") from None
        raise LoadError(f"importing {module_name!r} failed: {error}") from None
    except SyntaxError as error:
        raise LoadError(f"importing {module_name!r} failed: syntax error in {error.filename}:{error.lineno}") from None
    except Exception as error:
        raise LoadError(f"importing {module_name!r} failed: {type(error).__name__}: {error}") from None


def _evaluate(module, module_name: str, expression: str):
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise LoadError(f"{expression!r} is not an attribute name or a factory call") from None
    call = None
    if isinstance(node, ast.Call):
        call, node = node, node.func
    target = _resolve_attribute(module, module_name, node)
    if call is None:
        return target
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except ValueError:
        raise LoadError(f"factory arguments in {expression!r} must be literals") from None
    if not callable(target):
        raise LoadError(f"{module_name}:{ast.unparse(node)} is not callable, so it cannot be a factory")
    try:
        return target(*args, **kwargs)
    except Exception as error:
        raise LoadError(f"factory {module_name}:{expression} failed: {type(error).__name__}: {error}") from None


def _resolve_attribute(module, module_name: str, node: ast.expr):
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise LoadError(f"{ast.unparse(node)!r} is not an attribute name")
    names.append(node.id)
    target = module
    for name in reversed(names):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {'.'.join(reversed(names))!r}") from None
    return target
