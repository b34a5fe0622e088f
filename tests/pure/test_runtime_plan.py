"""Which torch for which machine, the venv paths and the pip command lines, for Windows, macOS and Linux."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import pytest

from sharp_blender.runtime import plan
from sharp_blender.runtime.plan import CPU, CUDA, MPS, Machine

REPO = Path(__file__).resolve().parents[2]
GPU_LINE = "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-1234)"


@pytest.mark.parametrize(
    ("machine", "index", "build", "requirements", "extras", "note_mentions"),
    [
        (Machine("linux", "x86_64", GPU_LINE), None, CUDA, ("torch>=2.4", "torchvision"), "[cuda]", None),
        (Machine("linux", "x86_64"), None, CPU, ("torch==2.13.0",), "", plan.INDEX_ENV),
        (Machine("linux", "x86_64"), "file:///wheels/cpu", CPU, ("torch>=2.4",), "", None),
        (Machine("windows", "amd64", GPU_LINE), None, CPU, ("torch>=2.4",), "", "CUDA wheel index"),
        (Machine("windows", "amd64", GPU_LINE), "file:///w/cu128", CUDA, ("torch>=2.4", "torchvision"), "[cuda]", None),
        (Machine("windows", "amd64"), None, CPU, ("torch>=2.4",), "", None),
        (Machine("darwin", "arm64"), None, MPS, ("torch>=2.4",), "", None),
        (Machine("darwin", "x86_64"), None, CPU, ("torch>=2.4",), "", None),
    ],
)
def test_choose_torch_per_machine(
    machine: Machine,
    index: str | None,
    build: str,
    requirements: tuple[str, ...],
    extras: str,
    note_mentions: str | None,
) -> None:
    choice = plan.choose_torch(machine, index_url=index)
    assert (choice.build, choice.requirements, choice.sidecar_extras) == (build, requirements, extras)
    assert choice.index_url == (
        index if build != CPU or machine.system != "windows" or machine.nvidia is None else None
    )
    if note_mentions is None:
        assert choice.note == ""
    else:
        assert note_mentions in choice.note and plan.INDEX_ENV in choice.note


def test_requirement_override_is_used_as_given() -> None:
    choice = plan.choose_torch(Machine("linux", "x86_64", GPU_LINE), requirement="torch==2.13.0")
    assert choice.requirements == ("torch==2.13.0", "torchvision")
    assert plan.torch_settings({"SHARP_TORCH": " torch==2.13.0 ", "SHARP_TORCH_INDEX": ""}) == ("torch==2.13.0", None)


def _fake_run(outputs: dict[str, tuple[int, str]]):  # type: ignore[no-untyped-def]
    def run(argv, **kwargs):  # type: ignore[no-untyped-def]
        if argv[0] not in outputs:
            raise FileNotFoundError(argv[0])
        code, out = outputs[argv[0]]
        return subprocess.CompletedProcess(argv, code, out, "")

    return run


def test_windows_finds_nvidia_smi_in_system32_when_path_lacks_it(tmp_path: Path) -> None:
    exe = str(PureWindowsPath("D:\\Win dows", "System32", "nvidia-smi.exe"))
    found = plan.find_nvidia(
        "windows", env={"SystemRoot": "D:\\Win dows"}, which=lambda name: None, run=_fake_run({exe: (0, GPU_LINE)})
    )
    assert found == GPU_LINE


def test_linux_falls_back_to_the_driver_when_nvidia_smi_fails(tmp_path: Path) -> None:
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86\nGCC version\n")
    run = _fake_run({"/usr/bin/nvidia-smi": (9, "NVIDIA-SMI has failed")})
    found = plan.find_nvidia("linux", env={}, which=lambda name: None, run=run, driver_file=driver)
    assert found is not None and "570.86" in found
    missing = tmp_path / "absent"
    assert plan.find_nvidia("linux", env={}, which=lambda name: None, run=run, driver_file=missing) is None


def test_macos_never_looks_for_nvidia() -> None:
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("nvidia-smi must not be run on macOS")

    assert plan.find_nvidia("darwin", env={}, which=lambda name: "/usr/bin/nvidia-smi", run=run) is None


def test_venv_paths_per_os() -> None:
    win = plan.venv_python("C:\\Users\\Ann Lee\\AppData\\Roaming\\Blender Foundation\\runtime\\venv", "windows")
    assert str(win) == "C:\\Users\\Ann Lee\\AppData\\Roaming\\Blender Foundation\\runtime\\venv\\Scripts\\python.exe"
    assert str(plan.venv_script("C:\\r\\venv", "sharp", "windows")) == "C:\\r\\venv\\Scripts\\sharp.exe"
    mac = plan.venv_python("/Users/ann/Library/Application Support/Blender/5.0/extensions/runtime/venv", "darwin")
    assert str(mac).endswith("Application Support/Blender/5.0/extensions/runtime/venv/bin/python")
    assert str(plan.venv_python("/home/ann/runtime/venv", "linux")) == "/home/ann/runtime/venv/bin/python"
    assert str(plan.venv_script("/home/ann/runtime/venv", "sharp", "linux")) == "/home/ann/runtime/venv/bin/sharp"


def test_pip_commands_keep_paths_with_spaces_whole() -> None:
    python = plan.venv_python("C:\\Program Data\\venv", "windows")
    choice = plan.choose_torch(Machine("windows", "amd64", GPU_LINE), index_url="file:///C:/my wheels/cu128")
    argv = plan.torch_argv(python, choice)
    assert argv[:4] == ["C:\\Program Data\\venv\\Scripts\\python.exe", "-m", "pip", "install"]
    assert argv[argv.index("--index-url") + 1] == "file:///C:/my wheels/cu128"
    assert argv[-2:] == ["torch>=2.4", "torchvision"] and "--upgrade" in argv
    # What Windows' CreateProcess receives: each path quoted as one argument.
    assert '"C:\\Program Data\\venv\\Scripts\\python.exe" -m pip' in subprocess.list2cmdline(argv)
    sidecar = plan.sidecar_argv(python, "C:\\Users\\Ann Lee\\ext\\sidecar", choice)
    assert sidecar[-1] == "C:\\Users\\Ann Lee\\ext\\sidecar[cuda]" and "--index-url" not in sidecar


def test_offline_commands_read_only_the_wheels_folder() -> None:
    choice = plan.choose_torch(Machine("linux", "x86_64"), index_url="file:///idx")
    argv = plan.torch_argv("/r/venv/bin/python", choice, wheels_dir="/media/usb/sharp wheels")
    assert argv[argv.index("--find-links") + 1] == "/media/usb/sharp wheels"
    assert "--no-index" in argv and "--index-url" not in argv
    sidecar = plan.sidecar_argv("/r/venv/bin/python", "/ext/sidecar", choice, wheels_dir="/w")
    assert sidecar[-1] == "/ext/sidecar" and "--no-index" in sidecar


def test_venv_command() -> None:
    assert plan.venv_argv("C:\\Py 3\\python.exe", "C:\\a b\\venv") == [
        "C:\\Py 3\\python.exe",
        "-m",
        "venv",
        "C:\\a b\\venv",
    ]
    assert "--clear" in plan.venv_argv("python3", "/v", clear=True)


def test_probe_of_this_python_passes() -> None:
    done = subprocess.run(plan.probe_argv(sys.executable), capture_output=True, text=True)
    assert plan.check_probe(sys.executable, done.returncode, done.stdout, done.stderr)[:2] == sys.version_info[:2]


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "says"),
    [
        (0, json.dumps({"version": [3, 9, 18], "venv": True, "ensurepip": True}), "", "is Python 3.9.18"),
        (0, json.dumps({"version": [3, 12, 3], "venv": True, "ensurepip": False}), "", "python3.12-venv"),
        (1, "", "blender: unknown argument -I", "not a working Python (blender: unknown argument -I)"),
        (0, "Blender 5.0.1\n", "", "not a working Python"),
    ],
)
def test_probe_rejects_unsupported_pythons(returncode: int, stdout: str, stderr: str, says: str) -> None:
    with pytest.raises(plan.UnsupportedPython, match="unsupported Python") as caught:
        plan.check_probe("/opt/blender/blender", returncode, stdout, stderr)
    assert says in str(caught.value) and "Runtime Python" in str(caught.value)


def test_download_instructions_list_every_wheel_and_the_command() -> None:
    choice = plan.choose_torch(Machine("windows", "amd64", GPU_LINE), index_url="file:///w/cu128")
    text = plan.download_instructions(choice, (3, 11, 9), ["numpy>=1.26,<3", "pillow>=10.3,<14"], "sharp-wheels")
    for package in ("torch>=2.4", "torchvision", "numpy>=1.26,<3", "pillow>=10.3,<14", "setuptools>=68", "wheel"):
        assert package in text
    assert "Python 3.11" in text and "pip download --dest sharp-wheels --index-url file:///w/cu128" in text
    assert "'numpy>=1.26,<3'" in text  # quoted for the shell it is pasted into


def test_shell_assignments_survive_bash_eval() -> None:
    choice = plan.TorchChoice(CUDA, ("torch>=2.4", "torchvision"), "file:///a b/idx", "[cuda]", "it's found", "")
    script = plan.shell_assignments(choice) + '\nprintf "%s\\n" "${#SHARP_TORCH_ARGS[@]}" "${SHARP_TORCH_ARGS[@]}" '
    script += '"$SHARP_SIDECAR_EXTRAS" "$SHARP_TORCH_REASON"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["4", "--index-url", "file:///a b/idx", "torch>=2.4", "torchvision", "[cuda]", "it's found"]


def test_the_module_runs_without_blender_as_setup_sh_calls_it() -> None:
    env = {"PATH": "/usr/bin:/bin", "SHARP_TORCH": "torch==2.13.0", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "sharp_blender.runtime.plan", "--shell"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "SHARP_TORCH_ARGS=(torch==2.13.0" in done.stdout and "SHARP_TORCH_BUILD=" in done.stdout


def test_no_package_index_host_is_baked_in() -> None:
    for path in (REPO / "scripts" / "setup.sh", *sorted((REPO / "sharp_blender" / "runtime").glob("*.py"))):
        assert "://" not in path.read_text(encoding="utf-8"), path
