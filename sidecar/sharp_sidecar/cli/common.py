"""What every `sharp` command's parser shares: the lazy handler and the common options (argparse only, no torch).

Below :mod:`.main` and the ``*_cli`` modules, so that each of them imports it without an import circle.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

Subparsers = Any  # argparse's _SubParsersAction is private


def lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``"module:function"`` (relative to this package) when called."""
    module_name, function_name = target.split(":")

    def handler(args: argparse.Namespace) -> int:
        module = importlib.import_module(module_name, __package__)
        return int(getattr(module, function_name)(args))

    handler.__qualname__ = f"lazy({target})"
    return handler


def common_options() -> argparse.ArgumentParser:
    """Options every command takes (as a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: without -v here the top-level value (``sharp -v predict``) is kept, not reset to 0.
    parent.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-vv for debug)"
    )
    return parent
