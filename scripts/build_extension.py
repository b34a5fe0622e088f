#!/usr/bin/env python3
"""Validate blender_manifest.toml and build the installable extension zip.

The package ``sharp_blender/``, the top-level ``blender_manifest.toml`` and the sidecar's source tree
(``sidecar/``: pyproject.toml, README.md, sharp_sidecar/, which the add-on's *Install SHARP Runtime*
installs with pip) are staged into ``build/extension/`` (links resolved, no caches or build outputs),
then validated and zipped with Blender's own tooling:
``blender_ext.py`` from the ``bpy`` wheel when importable, else ``blender --command extension``.

Usage: python scripts/build_extension.py [--out-dir dist] [--validate-only] [--blender PATH]
Prints the path of the zip on its last line.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_blender_ext() -> Path | None:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for candidate in Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"):
            return candidate
    return None


def find_blender(explicit: str | None) -> str | None:
    return explicit or os.environ.get("BLENDER") or shutil.which("blender")


SIDECAR_FILES = ("pyproject.toml", "README.md")
SIDECAR_PACKAGE = "sharp_sidecar"


def stage(staging: Path) -> Path:
    if staging.exists():
        shutil.rmtree(staging)
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(ROOT / "sharp_blender", staging, ignore=caches)
    shutil.copy2(ROOT / "blender_manifest.toml", staging / "blender_manifest.toml")
    sidecar = staging / "sidecar"
    sidecar.mkdir()
    for name in SIDECAR_FILES:
        shutil.copy2(ROOT / "sidecar" / name, sidecar / name)
    # copytree follows links (symlinks=False): the zip holds plain files only.
    shutil.copytree(ROOT / "sidecar" / SIDECAR_PACKAGE, sidecar / SIDECAR_PACKAGE, ignore=caches)
    return staging


def tool_command(blender_ext: Path | None, blender: str | None) -> list[str] | None:
    if blender_ext is not None:
        return [sys.executable, str(blender_ext)]
    if blender is not None:
        return [blender, "--factory-startup", "--command", "extension"]
    return None


def plain_zip(staging: Path, zip_path: Path) -> None:
    """Without Blender's tooling: the same layout (manifest and package at the zip's root), unvalidated."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(staging).as_posix())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist")
    parser.add_argument("--validate-only", action="store_true")
    parser.add_argument("--blender", help="Blender executable to use when the bpy module is not installed")
    args = parser.parse_args()

    staging = stage(ROOT / "build" / "extension" / "sharp_blender")
    command = tool_command(find_blender_ext(), find_blender(args.blender))
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    zip_path = args.out_dir.resolve() / f"{manifest['id']}-{manifest['version']}.zip"
    if command is None:
        if args.validate_only:
            raise SystemExit(
                "error: validation needs Blender's blender_ext.py: install the bpy module (pip install bpy==5.0.1) "
                "or put a blender executable on PATH (or in the BLENDER variable)"
            )
        print("warning: no bpy module or blender executable: zipping without Blender's validation", file=sys.stderr)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        plain_zip(staging, zip_path)
        print(zip_path)
        return 0
    subprocess.run([*command, "validate", str(staging)], check=True)
    if args.validate_only:
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*command, "build", "--source-dir", str(staging), "--output-dir", str(args.out_dir.resolve())], check=True
    )
    if not zip_path.is_file():
        raise SystemExit(f"error: the build did not produce {zip_path}")
    print(zip_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
