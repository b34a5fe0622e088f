"""Why a runtime install failed, in plain words: the kinds of failure and the reading of pip's output. No bpy."""

from __future__ import annotations

from collections.abc import Sequence

TAIL_LINES = 12  # of pip's output, kept with its error

# Failure kinds (InstallError.kind)
OFFLINE, NETWORK, DISK, PIP, PYTHON, CANCELLED, VERIFY, SOURCE = (
    "offline",
    "network",
    "disk",
    "pip",
    "python",
    "cancelled",
    "verify",
    "source",
)

_NETWORK_SIGNS = (
    "failed to establish a new connection",
    "temporary failure in name resolution",
    "name or service not known",
    "network is unreachable",
    "connection refused",
    "max retries exceeded",
    "connectionerror",
    "read timed out",
    "readtimeouterror",
    "could not fetch url",
    "sslerror",
    "getaddrinfo failed",
)
_DISK_SIGNS = ("no space left on device", "errno 28", "disk quota exceeded", "not enough space on the disk")


class InstallError(Exception):
    def __init__(self, kind: str, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.tail = tail

    def __str__(self) -> str:
        return f"{self.message}\n{self.tail}" if self.tail else self.message


def explain_pip_failure(step: str, returncode: int, lines: Sequence[str], offline: bool) -> InstallError:
    """Plain words for a failed pip run, with pip's own last lines."""
    tail = "\n".join(lines[-TAIL_LINES:])
    text = "\n".join(lines).lower()
    if any(sign in text for sign in _DISK_SIGNS):
        return InstallError(DISK, f"no disk space left while {step}: free some space and install again", tail)
    if not offline and any(sign in text for sign in _NETWORK_SIGNS):
        return InstallError(
            NETWORK,
            f"no network: pip could not reach the package index while {step}. Check the internet connection "
            "(or proxy), or install offline from a folder of wheels",
            tail,
        )
    missing = [line for line in lines if "no matching distribution found for" in line.lower()]
    if missing:
        where = "the offline wheels folder has no" if offline else "pip found no"
        found = missing[-1].split("for", 1)[-1].strip()
        return InstallError(
            PIP,
            f"{where} {found} for this Python and OS while {step} (pip exit code {returncode}); see pip's last lines",
            tail,
        )
    # No version fits both the request and a constraint (a pip configuration's cap, say): nothing to install.
    conflicts = [line for line in lines if line.lower().startswith("error: cannot install ")]
    if conflicts and "resolutionimpossible" in text:
        where = "the offline wheels folder has no" if offline else "pip found no"
        found = conflicts[-1][len("ERROR: Cannot install ") :].split(" because", 1)[0].strip()
        return InstallError(
            PIP,
            f"{where} {found} for this Python and OS that pip's constraints allow while {step} "
            f"(pip exit code {returncode}); see pip's last lines",
            tail,
        )
    return InstallError(PIP, f"pip failed while {step} (exit code {returncode}); pip's last lines:", tail)
