"""Which torch for this machine, and the command lines that build the SHARP runtime. Pure: no bpy.

One implementation for the in-Blender installer (:mod:`.installer`) and for ``scripts/setup.sh``, which
runs ``python -m sharp_blender.runtime.plan --shell``. Every command is an argv list (never a shell
string), so paths with spaces need no quoting on any OS.

No package index is named here: pip's own default index (or the user's pip configuration) is used unless
the user gives one (``SHARP_TORCH_INDEX`` or the *Torch Wheel Index* preference), which is how PyTorch's
CUDA builds for Windows and its small CPU builds for Linux are reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

DEFAULT_TORCH = "torch>=2.4"
# Linux without NVIDIA and without a CPU index: the version the tests and reference vectors use, whose CPU
# wheel offline mirrors (such as CI's) carry; from pip's default index it is the CUDA-bundled build.
LINUX_CPU_TORCH = "torch==2.13.0"
TORCH_ENV = "SHARP_TORCH"
INDEX_ENV = "SHARP_TORCH_INDEX"
MIN_PYTHON = (3, 10)
# Build requirements of sidecar/pyproject.toml: an offline install builds the sidecar from its source.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")
# Rough size of a finished runtime, checked against the free disk space before anything is written.
NEEDED_BYTES = {"cuda": 8 << 30, "mps": 2 << 30, "cpu": 2 << 30}

CUDA, MPS, CPU = "cuda", "mps", "cpu"


@dataclass(frozen=True)
class Machine:
    system: str  # "linux", "windows" or "darwin"
    arch: str  # platform.machine(), lower case: "x86_64", "amd64", "arm64", "aarch64"
    nvidia: str | None = None  # what revealed an NVIDIA GPU (an nvidia-smi line, the driver), None if none


@dataclass(frozen=True)
class TorchChoice:
    build: str  # CUDA, MPS or CPU: what the installed torch will run on
    requirements: tuple[str, ...]  # installed in one pip resolve (torchvision pins the torch it was built for)
    index_url: str | None  # the torch step's --index-url; None: pip's default index
    sidecar_extras: str  # "[cuda]" (gsplat) or ""
    reason: str  # plain words for the log and the preferences
    note: str = ""  # what the user can set to get a better build, if anything


def system_name(platform_name: str = sys.platform) -> str:
    if platform_name == "win32":
        return "windows"
    return "darwin" if platform_name == "darwin" else "linux"


def nvidia_smi_candidates(system: str, env: Mapping[str, str], which: Callable[[str], str | None]) -> list[str]:
    found = which("nvidia-smi")
    candidates = [found] if found else []
    if system == "windows":
        # The driver installs nvidia-smi into System32 (older drivers: NVSMI), which Blender's PATH may lack.
        system_root = env.get("SystemRoot") or env.get("SYSTEMROOT") or "C:\\Windows"
        program_files = env.get("ProgramFiles") or env.get("PROGRAMFILES") or "C:\\Program Files"
        candidates += [
            str(PureWindowsPath(system_root, "System32", "nvidia-smi.exe")),
            str(PureWindowsPath(program_files, "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe")),
        ]
    elif system == "linux":
        candidates += ["/usr/bin/nvidia-smi", "/usr/local/bin/nvidia-smi"]
    return list(dict.fromkeys(candidates))


def find_nvidia(
    system: str,
    env: Mapping[str, str] = os.environ,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    driver_file: Path = Path("/proc/driver/nvidia/version"),
) -> str | None:
    """The first GPU line of ``nvidia-smi -L``, else the Linux driver's version line; None without NVIDIA."""
    if system == "darwin":
        return None
    for exe in nvidia_smi_candidates(system, env, which):
        try:
            done = run([exe, "-L"], capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            continue
        lines = [line.strip() for line in (done.stdout or "").splitlines() if line.strip().startswith("GPU")]
        if done.returncode == 0 and lines:
            return lines[0]
    if system == "linux":
        try:
            return driver_file.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip() or None
        except (OSError, IndexError):
            return None
    return None


def detect_machine() -> Machine:
    system = system_name()
    return Machine(system, platform.machine().lower(), find_nvidia(system))


def torch_settings(env: Mapping[str, str] = os.environ) -> tuple[str | None, str | None]:
    """(torch requirement, torch index) from ``SHARP_TORCH`` / ``SHARP_TORCH_INDEX``; None where unset."""
    return (env.get(TORCH_ENV, "").strip() or None, env.get(INDEX_ENV, "").strip() or None)


def choose_torch(machine: Machine, requirement: str | None = None, index_url: str | None = None) -> TorchChoice:
    """The torch build for ``machine``: CUDA on NVIDIA, the default wheel on macOS (MPS), CPU elsewhere."""
    torch = requirement or DEFAULT_TORCH
    index = index_url or None
    set_index = f"set {INDEX_ENV} (or the add-on's 'Torch Wheel Index' preference) to PyTorch's"
    if machine.system == "darwin":
        apple_gpu = machine.arch in ("arm64", "aarch64")
        return TorchChoice(
            MPS if apple_gpu else CPU,
            (torch,),
            index,
            "",
            "macOS: the default torch wheel" + (", which runs on the Apple GPU (MPS)" if apple_gpu else " (CPU)"),
        )
    if machine.nvidia:
        if machine.system == "windows" and index is None:
            return TorchChoice(
                CPU,
                (torch,),
                None,
                "",
                f"NVIDIA GPU found ({machine.nvidia}), but the default index's Windows torch wheels are CPU-only",
                f"for the CUDA build {set_index} CUDA wheel index (the cu12x index URL on PyTorch's "
                "'Get Started' page) and install again",
            )
        return TorchChoice(
            CUDA,
            (torch, "torchvision"),
            index,
            "[cuda]",
            f"NVIDIA GPU found ({machine.nvidia}): the CUDA build of torch, torchvision (nvJPEG) and gsplat",
        )
    if machine.system == "linux" and index is None:
        return TorchChoice(
            CPU,
            (requirement or LINUX_CPU_TORCH,),
            None,
            "",
            "no NVIDIA GPU: torch runs on the CPU",
            f"the default index's Linux torch bundles CUDA libraries (several GB); for the small CPU build "
            f"{set_index} CPU wheel index",
        )
    return TorchChoice(CPU, (torch,), index, "", "no NVIDIA GPU: the CPU build of torch")


# -- paths ----------------------------------------------------------------------------------------


def _pure(path: str | PurePath, system: str) -> PurePath:
    return PureWindowsPath(path) if system == "windows" else PurePosixPath(path)


def venv_python(venv: str | PurePath, system: str) -> PurePath:
    """The interpreter of a venv: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    base = _pure(venv, system)
    return base / "Scripts" / "python.exe" if system == "windows" else base / "bin" / "python"


def venv_script(venv: str | PurePath, name: str, system: str) -> PurePath:
    """A console script of a venv (``sharp``): ``Scripts\\sharp.exe`` on Windows, ``bin/sharp`` elsewhere."""
    base = _pure(venv, system)
    return base / "Scripts" / f"{name}.exe" if system == "windows" else base / "bin" / name


# -- command lines --------------------------------------------------------------------------------

PROBE = (
    "import json, sys, importlib.util as u; "
    "print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, "
    "'venv': u.find_spec('venv') is not None, 'ensurepip': u.find_spec('ensurepip') is not None}))"
)


class UnsupportedPython(Exception):
    pass


def probe_argv(python: str | PurePath) -> list[str]:
    return [str(python), "-I", "-c", PROBE]


def check_probe(python: str | PurePath, returncode: int, stdout: str, stderr: str = "") -> tuple[int, ...]:
    """The Python version from :data:`PROBE`'s output; UnsupportedPython (plain words) if it cannot make venvs."""
    pick = "Pick a Python 3.10 or newer, with its venv module, in the add-on's 'Runtime Python' preference."
    try:
        info = json.loads(stdout.strip().splitlines()[-1])
        version = tuple(int(v) for v in info["version"])
    except (ValueError, IndexError, KeyError, TypeError):
        detail = (stderr or stdout).strip().splitlines()[-1:] or [f"exit code {returncode}"]
        raise UnsupportedPython(f"unsupported Python: {python} is not a working Python ({detail[0]}). {pick}") from None
    shown = ".".join(map(str, version))
    if version[:2] < MIN_PYTHON:
        raise UnsupportedPython(f"unsupported Python: {python} is Python {shown}; the sidecar needs 3.10+. {pick}")
    if not (info.get("venv") and info.get("ensurepip")):
        raise UnsupportedPython(
            f"unsupported Python: {python} (Python {shown}) has no venv/ensurepip module (Debian and Ubuntu: "
            f"apt install python{version[0]}.{version[1]}-venv). {pick}"
        )
    return version


def venv_argv(base_python: str | PurePath, venv: str | PurePath, clear: bool = False) -> list[str]:
    return [str(base_python), "-m", "venv", *(["--clear"] if clear else []), str(venv)]


def pip_argv(
    python: str | PurePath,
    packages: Sequence[str],
    index_url: str | None = None,
    wheels_dir: str | PurePath | None = None,
    upgrade: bool = False,
) -> list[str]:
    """``python -m pip install`` with no prompts; offline (``wheels_dir``) it reads nothing but that folder."""
    argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    # No byte-compiling of every installed file (sympy, torch: thousands): Python caches what it imports.
    argv.append("--no-compile")
    if upgrade:
        argv.append("--upgrade")
    if wheels_dir is not None:
        argv += ["--no-index", "--find-links", str(wheels_dir)]
    elif index_url:
        argv += ["--index-url", index_url]
    return [*argv, *packages]


def torch_argv(python: str | PurePath, choice: TorchChoice, wheels_dir: str | PurePath | None = None) -> list[str]:
    return pip_argv(python, choice.requirements, choice.index_url, wheels_dir, upgrade=True)


def sidecar_argv(
    python: str | PurePath, sidecar_dir: str | PurePath, choice: TorchChoice, wheels_dir: str | PurePath | None = None
) -> list[str]:
    # torch is already there, so the default index only brings the small pure dependencies.
    return pip_argv(python, [f"{sidecar_dir}{choice.sidecar_extras}"], None, wheels_dir)


def download_instructions(
    choice: TorchChoice, python_version: Sequence[int], sidecar_requirements: Sequence[str], folder: str
) -> str:
    """What to fetch on a machine with internet access, for an offline install from ``folder``."""
    packages = [*choice.requirements, *sidecar_requirements, *BUILD_REQUIREMENTS]
    index = ["--index-url", choice.index_url] if choice.index_url else []
    major_minor = ".".join(str(v) for v in python_version[:2])
    command = shlex.join(["python", "-m", "pip", "download", "--dest", folder, *index, *packages])
    return (
        f"Blender's online access is off. To install offline, download these wheels (for Python {major_minor} on "
        f"this OS) on a computer with internet access: {', '.join(packages)}. With Python {major_minor} there: "
        f"{command} ; then copy the folder here and pick it as 'Offline Wheels'. "
        "Or allow online access (Preferences > System > Network) and install again."
    )


def shell_assignments(choice: TorchChoice) -> str:
    """Bash variables for scripts/setup.sh (``eval``-ed there), every value quoted."""
    args = [*(["--index-url", choice.index_url] if choice.index_url else []), *choice.requirements]
    return "\n".join(
        [
            f"SHARP_TORCH_BUILD={shlex.quote(choice.build)}",
            f"SHARP_TORCH_ARGS=({' '.join(shlex.quote(a) for a in args)})",
            f"SHARP_SIDECAR_EXTRAS={shlex.quote(choice.sidecar_extras)}",
            f"SHARP_TORCH_REASON={shlex.quote(choice.reason)}",
            f"SHARP_TORCH_NOTE={shlex.quote(choice.note)}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Which torch build the SHARP runtime needs on this machine.")
    parser.add_argument("--shell", action="store_true", help="print bash assignments (for scripts/setup.sh)")
    args = parser.parse_args(argv)
    requirement, index = torch_settings()
    choice = choose_torch(detect_machine(), requirement, index)
    if args.shell:
        print(shell_assignments(choice))
    else:
        print(json.dumps(choice.__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
