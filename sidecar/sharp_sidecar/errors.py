"""Errors a user can act on. Each has a stable ``code`` (a protocol error kind) and says what to do."""

from __future__ import annotations

from .io import protocol


class SharpError(Exception):
    code = protocol.INTERNAL


class BadImageError(SharpError):
    code = protocol.BAD_IMAGE


class BadPlyError(SharpError):
    code = protocol.BAD_PLY


class CheckpointError(SharpError):
    code = protocol.CHECKPOINT


class DeviceError(SharpError):
    code = protocol.DEVICE


class OutOfMemoryError(DeviceError):
    code = protocol.OUT_OF_MEMORY


class Cancelled(SharpError):
    code = protocol.CANCELLED


class BadRequestError(SharpError):
    """A request or command-line value that cannot be used (e.g. a negative focal length)."""

    code = protocol.BAD_REQUEST


class OutputError(SharpError):
    """The output location cannot take the file: read-only, full, missing permission, an input, a folder."""

    code = protocol.OUTPUT


class NonFiniteError(SharpError):
    """The model produced NaN or infinite values; writing them would make a silently broken PLY."""

    code = protocol.NON_FINITE
