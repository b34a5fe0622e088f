"""`sharp` command line: predict | serve (render and bench register the same way).

Argument parsing only. Each command is added by a small ``add_<name>(subparsers)`` function listed in
:data:`COMMANDS`; its handler is named as ``"module:function"`` and imported only when the command
runs, so ``sharp --help`` and ``sharp <cmd> --help`` never import torch. To add a command, write an
``add_<name>`` function here and append it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import codecs
import logging
import math
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .bench_cli import add_bench
from .common import Subparsers, common_options, lazy
from .render_cli import add_render


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cuda", "mps", "cpu"),
        default="auto",
        help="where the model runs; auto = cuda, else mps, else cpu (default: auto)",
    )


PRECISIONS = (
    "auto",
    "fp32",
    "bf16",
    "bf16-eager",
    "fp16",
    "fp16-eager",
    "bf16-graphs",
)  # precision.CHOICES (no torch here)


def precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="numerics: auto = the bf16 fast path on CUDA (compiled once per process), fp32 elsewhere; "
        "fp32 = the exact reference path (default: auto, or $SHARP_PRECISION)",
    )


def add_predict(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        parents=[common_options()],
        help="photo(s) -> 3D Gaussian PLY files",
        description=(
            "Predict metric 3D Gaussians from photos and write one 3DGS PLY per photo. A folder is searched "
            "recursively; the outputs mirror its sub-folders."
        ),
    )
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="folder for the PLY files")
    p.add_argument(
        "-c",
        "--checkpoint",
        default=None,
        help="checkpoint file (default: $SHARP_CHECKPOINT, else torch hub's cache, downloaded on first use)",
    )
    device_option(p)
    precision_option(p)
    focal = p.add_mutually_exclusive_group()
    focal.add_argument(
        "--focal-mm", type=positive_float, default=None, help="35 mm-equivalent focal length, overriding EXIF"
    )
    focal.add_argument("--focal-px", type=positive_float, default=None, help="focal length in pixels, overriding EXIF")
    p.add_argument("--plain-ply", action="store_true", help="write the vertex element only (no SHARP metadata)")
    p.set_defaults(handler=lazy("..inference.predict:run"))


def add_serve(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        parents=[common_options()],
        help="the Blender add-on's sidecar: JSON lines on stdin/stdout",
        description=(
            "Run as the add-on's persistent sidecar: requests arrive as JSON lines on stdin, events leave on "
            "stdout, logs go to stderr (protocol: sharp_sidecar.io.protocol). Opens no network port."
        ),
    )
    precision_option(p)
    p.set_defaults(handler=lazy("..serve.server:run"))


COMMANDS: list[Callable[[Subparsers], None]] = [add_predict, add_render, add_serve, add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharp",
        description="SHARP: one photo -> metric 3D Gaussians (3DGS PLY), previews and a sidecar for Blender.",
    )
    parser.add_argument("--version", action="version", version=f"sharp-sidecar {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _escape_unprintable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a file name's undecodable byte (surrogate escape) as ``\\xNN``, as in the file
    system; any other character the stream cannot encode as ``\\uNNNN``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" for c in text
    ), exc.end


codecs.register_error("sharp-escape", _escape_unprintable)


def safe_streams() -> None:
    """Print any file name, whatever its encoding: undecodable bytes (surrogate escapes) as backslash escapes,
    instead of a UnicodeEncodeError that stops a batch halfway."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="sharp-escape")
            except (ValueError, OSError):  # a stream that cannot change (closed, redirected oddly)
                pass


def main(argv: Sequence[str] | None = None) -> int:
    """The command line's one boundary: every failure ends as ``error: ...`` and an exit code, never a traceback
    (0 done, 1 failed, 2 usage, 130 interrupted)."""
    safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    setup_logging(getattr(args, "verbose", 0))
    from ..errors import SharpError

    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SharpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory (RAM); close other programs or use a smaller photo", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unexpected fault: say so plainly, traceback only with -v
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with -vv for the details, and please report it)",
            file=sys.stderr,
        )
        return 1
