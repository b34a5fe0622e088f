from __future__ import annotations

import subprocess
import sys


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from sharp_sidecar.cli import main\n"
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
