"""Find the WSGI application named on the command line, the way gunicorn does: ``module:attribute``.

``pkg.module:app`` imports ``pkg.module`` and takes ``app``; ``module`` alone means ``module:application`` (and
the error says so when there is none); ``module:create_app()`` calls a factory, and
``module:create_app('prod', debug=False)`` passes literal arguments. The current directory is importable, as a
user running ``python -m server`` from a project expects.
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


DEFAULT_ATTRIBUTE = "application"  # what ``module`` alone names, as in gunicorn and mod_wsgi
# Names a module commonly gives its application, offered when the default is not there.
_LIKELY_NAMES = ("app", "application", "api", "wsgi_app", "create_app", "make_app")


def load_app(spec: str) -> Callable:
    """Import and return the WSGI callable that ``spec`` names."""
    module_name, _, expression = spec.partition(":")
    expression = expression.strip()
    defaulted = not expression
    expression = expression or DEFAULT_ATTRIBUTE
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise LoadError(f"{spec!r} is not of the form module:attribute (for example myproject.wsgi:app)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    if defaulted and not hasattr(module, DEFAULT_ATTRIBUTE):
        raise LoadError(_no_default_attribute(module, module_name))
    target = _evaluate(module, module_name, expression)
    if not callable(target):
        kind = type(target).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise LoadError(f"{module_name}:{expression} is {article} {kind}, not a callable WSGI application")
    return target


def _no_default_attribute(module, module_name: str) -> str:
    """Say what was looked for when only a module was named, and how to name something else."""
    message = (
        f"module {module_name!r} has no attribute {DEFAULT_ATTRIBUTE!r}, the one used when no attribute is named;"
        f" name the application as module:attr"
    )
    for name in _LIKELY_NAMES:
        candidate = getattr(module, name, None)
        if callable(candidate):
            call = "()" if name.startswith(("create_", "make_")) else ""
            return f"{message} (did you mean {module_name}:{name}{call}?)"
    return f"{message}, as in {module_name}:app"


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (error.name == module_name or module_name.startswith(error.name + ".")):
            raise LoadError(f"cannot import {module_name!r}: no module named {error.name!r}") from None
        raise LoadError(
            f"importing {module_name!r} failed: ModuleNotFoundError: {error} (a module that {module_name!r} imports: "
            "is it installed in this Python, or on the path?)"
        ) from None
    except SyntaxError as error:
        raise LoadError(f"importing {module_name!r} failed: syntax error in {error.filename}:{error.lineno}") from None
    except SystemExit as error:
        # A module that calls sys.exit() while being imported would otherwise end the CLI with its own status
        # (1, 3, anything) and message: it is a failure to load like any other.
        raise LoadError(f"importing {module_name!r} failed: it called sys.exit({error.code!r})") from None
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing: the CLI ends quietly with the shell's status for it
    except BaseException as error:  # Exception, and the odd class of an app's own derived from BaseException
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
    except SystemExit as error:
        raise LoadError(f"factory {module_name}:{expression} failed: it called sys.exit({error.code!r})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # as on import
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
