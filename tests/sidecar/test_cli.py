from __future__ import annotations

import subprocess
import sys


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from sharp_sidecar.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'sharp --help imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "usage: sharp" in out.stdout


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sharp_sidecar", "--version"], check=True, capture_output=True, text=True
    )
    assert out.stdout.startswith("sharp-sidecar ")


def _run_without_torch(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from sharp_sidecar.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    print('exit', e.code, file=sys.stderr)\n"
        "assert 'torch' not in sys.modules, 'imported torch'\n"
    )
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_subcommand_help_does_not_import_torch() -> None:
    for command in ("predict", "serve"):
        out = _run_without_torch([command, "--help"])
        assert f"usage: sharp {command}" in out.stdout and "exit 0" in out.stderr
    predict = _run_without_torch(["predict", "--help"]).stdout
    for option in ("--input", "--output", "--checkpoint", "--device", "--focal-mm", "--focal-px", "--plain-ply"):
        assert option in predict


def test_bad_arguments_are_rejected_before_any_work() -> None:
    for argv in (
        ["predict", "-i", "x.jpg", "-o", "out", "--focal-mm", "0"],
        ["predict", "-i", "x.jpg", "-o", "out", "--focal-px", "-3"],
        ["predict", "-i", "x.jpg", "-o", "out", "--focal-mm", "nan"],
        ["predict", "-i", "x.jpg", "-o", "out", "--focal-mm", "30", "--focal-px", "500"],
        ["predict", "-i", "x.jpg", "-o", "out", "--device", "tpu"],
        ["predict", "-o", "out"],
    ):
        out = _run_without_torch(argv)
        assert "exit 2" in out.stderr, argv


def test_commands_register_through_small_functions() -> None:
    from sharp_sidecar.cli import main as cli

    def add_hello(subparsers: object) -> None:
        p = subparsers.add_parser("hello")  # type: ignore[attr-defined]
        p.set_defaults(handler=lambda args: 7)

    cli.COMMANDS.append(add_hello)
    try:
        assert cli.main(["hello"]) == 7
    finally:
        cli.COMMANDS.remove(add_hello)
    assert "hello" not in cli.build_parser().format_help()


def test_verbose_before_or_after_the_command() -> None:
    from sharp_sidecar.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "serve"]).verbose == 1
    assert parser.parse_args(["serve", "-vv"]).verbose == 2
    assert parser.parse_args(["predict", "-i", "x", "-o", "y"]).verbose == 0
