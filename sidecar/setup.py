"""Build step that puts the shared pure modules into the wheel as ``sharp_sidecar.io``.

The modules shared with the add-on (PLY, protocol, conventions, camera paths, atomic writes) have one
source, the add-on's ``io`` package. It sits beside this folder in two layouts:

- the repository: ``sidecar/`` next to ``sharp_blender/io/``;
- an installed extension: ``<extension>/sidecar/`` next to ``<extension>/io/`` (the extension zip
  carries this folder for the in-Blender runtime installer).

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
SHARED_CANDIDATES = (HERE.parent / "sharp_blender" / "io", HERE.parent / "io")


def shared_dir() -> str:
    for candidate in SHARED_CANDIDATES:
        if (candidate / "ply.py").is_file() and (candidate / "protocol.py").is_file():
            # setuptools wants package folders relative to this file, with forward slashes.
            return Path(os.path.relpath(candidate, HERE)).as_posix()
    raise SystemExit(
        "error: the shared modules (ply.py, protocol.py, ...) were not found in "
        + " or ".join(str(c) for c in SHARED_CANDIDATES)
        + "; build the sidecar from the repository or from an unpacked sharp_blender extension"
    )


# pip builds in this folder, and setuptools copies into build/lib without emptying it first: a module
# moved or deleted since an earlier build would still ship. Start each build from an empty build/lib.
shutil.rmtree(HERE / "build" / "lib", ignore_errors=True)

setup(
    packages=[*find_packages(include=["sharp_sidecar", "sharp_sidecar.*"]), "sharp_sidecar.io"],
    package_dir={"sharp_sidecar.io": shared_dir()},
)
