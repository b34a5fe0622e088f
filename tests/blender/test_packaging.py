"""One source for the shared modules: the extension zip and the sidecar's wheel each hold them once.

The zip carries the add-on with its ``io/`` package and the sidecar's source as ``sidecar/``; the runtime
installer builds the sidecar from there (``pip install <extension>/sidecar``), so the wheel is built here
from the unpacked zip exactly that way, and from the repository's layout as well.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO / "sharp_blender" / "io"
SHARED = sorted(p.name for p in SHARED_DIR.glob("*.py") if p.name != "__init__.py")
PIP_WHEEL = ("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q")
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info", "build")


def build_wheel(source: Path, out_dir: Path) -> Path:
    # No build isolation: the test venv's setuptools builds it, offline.
    run = subprocess.run(
        [sys.executable, *PIP_WHEEL, "-w", str(out_dir), str(source)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = out_dir.glob("sharp_sidecar-*.whl")
    return wheel


def copies_of_shared_modules(names: list[str]) -> dict[str, list[str]]:
    return {module: sorted(n for n in names if n.rsplit("/", 1)[-1] == module) for module in SHARED}


def sidecar_sources() -> set[str]:
    root = REPO / "sidecar"
    return {
        p.relative_to(root).as_posix() for p in (root / "sharp_sidecar").rglob("*.py") if "__pycache__" not in p.parts
    }


def check_wheel(wheel: Path, tmp_path: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    # The shared modules once, as sharp_sidecar.io, byte for byte the add-on's files.
    assert copies_of_shared_modules(names) == {m: [f"sharp_sidecar/io/{m}"] for m in SHARED}
    for module in SHARED:
        assert archive.read(f"sharp_sidecar/io/{module}") == (SHARED_DIR / module).read_bytes(), module
    assert sidecar_sources() | {"sharp_sidecar/io/__init__.py"} <= set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "sharp = sharp_sidecar.cli.main:main" in archive.read(entry_points).decode()
    # Unpacked, it imports from itself: the shared package resolves inside the wheel's files.
    site = tmp_path / "site"
    archive.extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.modules['torch'] = None\n"
        "import sharp_sidecar.io.ply, sharp_sidecar.errors, sharp_sidecar.cli.main as m\n"
        "print(sharp_sidecar.io.ply.__file__); print(sharp_sidecar.errors.__file__)\n"
        "m.main(['--help'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ply_file, errors_file = run.stdout.splitlines()[:2]
    assert Path(ply_file) == site / "sharp_sidecar" / "io" / "ply.py"
    assert Path(errors_file) == site / "sharp_sidecar" / "errors.py"
    assert "predict" in run.stdout


def test_the_shared_modules_are_the_five_expected() -> None:
    assert {"ply.py", "protocol.py", "conventions.py", "trajectory.py", "atomic.py"} <= set(SHARED)


def test_zip_holds_each_shared_module_once_and_the_sidecar_source(extension_zip: Path) -> None:
    names = zipfile.ZipFile(extension_zip).namelist()
    assert copies_of_shared_modules(names) == {m: [f"io/{m}"] for m in SHARED}
    assert {"sidecar/pyproject.toml", "sidecar/setup.py", "sidecar/README.md"} <= set(names)
    assert {f"sidecar/{name}" for name in sidecar_sources()} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or ".egg-info" in n or "/build/" in n]


def test_zip_validates_with_blenders_own_tool(extension_zip: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_extension
    finally:
        sys.path.pop(0)
    blender_ext = build_extension.find_blender_ext()
    assert blender_ext is not None, "the bpy module ships blender_ext.py"
    run = subprocess.run(
        [sys.executable, str(blender_ext), "validate", str(extension_zip)], capture_output=True, text=True
    )
    assert run.returncode == 0 and "Success" in run.stdout, run.stdout + run.stderr


def test_sidecar_wheel_built_from_the_unpacked_zip(extension_zip: Path, tmp_path: Path) -> None:
    extension = tmp_path / "extension"
    zipfile.ZipFile(extension_zip).extractall(extension)
    check_wheel(build_wheel(extension / "sidecar", tmp_path / "wheels"), tmp_path)


def test_sidecar_wheel_built_from_the_repository_layout(tmp_path: Path) -> None:
    # A copy of the repository's two folders, so the in-tree build leaves the checkout untouched.
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "sidecar", repo / "sidecar", ignore=CACHES)
    shutil.copytree(SHARED_DIR, repo / "sharp_blender" / "io", ignore=CACHES)
    check_wheel(build_wheel(repo / "sidecar", tmp_path / "wheels"), tmp_path)


def test_sidecar_build_without_the_shared_modules_says_where_it_looked(tmp_path: Path) -> None:
    shutil.copytree(REPO / "sidecar", tmp_path / "sidecar", ignore=CACHES)
    run = subprocess.run(
        [sys.executable, *PIP_WHEEL, "-w", str(tmp_path / "wheels"), str(tmp_path / "sidecar")],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "shared modules" in run.stdout + run.stderr and str(tmp_path / "io") in run.stdout + run.stderr


@pytest.mark.parametrize("layout", ["repository", "extension"])
def test_setup_finds_the_shared_folder_in_both_layouts(layout: str, tmp_path: Path) -> None:
    sidecar = tmp_path / "sidecar"
    shutil.copytree(REPO / "sidecar", sidecar, ignore=CACHES)
    shared = tmp_path / ("sharp_blender/io" if layout == "repository" else "io")
    shutil.copytree(SHARED_DIR, shared, ignore=CACHES)
    code = (
        "import runpy, setuptools; setuptools.setup = lambda **kw: print(kw['package_dir']); runpy.run_path('setup.py')"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=sidecar, capture_output=True, text=True, check=True)
    expected = "../sharp_blender/io" if layout == "repository" else "../io"
    assert run.stdout.strip() == str({"sharp_sidecar.io": expected})
