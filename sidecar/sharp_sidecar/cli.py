"""`sharp` command line: predict | render | serve | bench.

Argument parsing only; each command imports its (torch-heavy) module lazily, so ``sharp --help``
and ``sharp <cmd> --help`` never import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharp",
        description="SHARP: one photo -> metric 3D Gaussians (3DGS PLY), previews and a sidecar for Blender.",
    )
    parser.add_argument("--version", action="version", version=f"sharp-sidecar {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args))
