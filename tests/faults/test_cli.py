"""`sharp predict` / `sharp render` (in-process through cli.main, one real subprocess): a batch goes on past any bad
entry and lists the failures at the end with exit code 1; unusable outputs are found before the model loads;
every error is one ``error:`` line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sharp_sidecar.cli import main as cli
from sharp_sidecar.io import ply

from tests.faults.helpers import digest, leftovers, make_photo, sidecar_env


def _predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["predict", "--device", "cpu", "--precision", "fp32", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_batch_goes_on_past_bad_entries_and_names_them_at_the_end(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photos"
    make_photo(src / "a.png")
    (src / "b.jpg").write_text("not a photo")
    os.symlink(src / "gone.jpg", src / "c.jpg")
    (src / "d.jpg").mkdir()
    make_photo(src / "d.jpg" / "inner.png")  # a folder named like a photo is searched like any folder
    (src / "e.png").write_bytes(b"")
    make_photo(src / "z.png")
    code, out, err = _predict(capsys, "-i", str(src), "-o", str(tmp_path / "out"), "-c", str(tiny_checkpoint))
    assert code == 1
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.ply"))
    assert written == ["a.ply", "d.jpg/inner.ply", "z.ply"]
    summary = err[err.index("failed:") :]
    for name, problem in (("b.jpg", "not an image"), ("c.jpg", "broken symbolic link"), ("e.png", "not an image")):
        assert any(name in line and problem in line for line in summary.splitlines()), summary
    assert "3 of 6 written" in out
    assert leftovers(tmp_path) == []


def test_unwritable_output_is_found_before_the_model_loads(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sharp_sidecar.inference import predict

    monkeypatch.setattr(predict, "load_model", lambda *a, **k: pytest.fail("the model must not load"))
    (tmp_path / "file").write_text("x")
    code, _, err = _predict(
        capsys,
        "-i",
        str(make_photo(tmp_path / "a.png")),
        "-o",
        str(tmp_path / "file" / "out"),
        "-c",
        str(tiny_checkpoint),
    )
    assert code == 1 and err.startswith("error: cannot write") and "a file is in the way" in err


@pytest.mark.parametrize(
    ("checkpoint", "problem"),
    [
        ("missing", "does not exist"),
        ("html", "not a readable PyTorch checkpoint"),
        ("evil", "must not be trusted|do not trust"),
    ],
)
def test_bad_checkpoint_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], malicious_checkpoint: Path, checkpoint: str, problem: str
) -> None:
    paths = {"missing": tmp_path / "none.pt", "html": tmp_path / "page.pt", "evil": malicious_checkpoint}
    paths["html"].write_text("<html>portal</html>")
    code, _, err = _predict(
        capsys, "-i", str(make_photo(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "-c", str(paths[checkpoint])
    )
    assert code == 1 and err.startswith("error: ") and str(paths[checkpoint]) in err
    assert __import__("re").search(problem, err) and "weights_only" not in err
    assert not (tmp_path / "o" / "a.ply").exists()


def test_nan_weights_are_an_error_not_a_ply(
    tmp_path: Path, nan_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _predict(
        capsys, "-i", str(make_photo(tmp_path / "a.png")), "-o", str(tmp_path / "o"), "-c", str(nan_checkpoint)
    )
    assert code == 1 and "NaN or infinite" in err and "a.png" in err
    assert "0 of 1 written" in out and not (tmp_path / "o" / "a.ply").exists() and leftovers(tmp_path) == []


def test_nan_weights_in_a_folder_batch_write_nothing(
    tmp_path: Path, nan_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "p"
    make_photo(src / "a.png")
    make_photo(src / "b.png")
    code, out, err = _predict(capsys, "-i", str(src), "-o", str(tmp_path / "o"), "-c", str(nan_checkpoint))
    assert code == 1 and err.count("NaN or infinite") >= 2 and "0 of 2 written" in out
    assert not list((tmp_path / "o").rglob("*.ply")) and leftovers(tmp_path) == []


def test_existing_outputs_stay_byte_identical_when_a_rerun_fails(
    tmp_path: Path, tiny_checkpoint: Path, nan_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = make_photo(tmp_path / "a.png")
    assert _predict(capsys, "-i", str(photo), "-o", str(tmp_path / "o"), "-c", str(tiny_checkpoint))[0] == 0
    before = digest(tmp_path / "o" / "a.ply")
    assert _predict(capsys, "-i", str(photo), "-o", str(tmp_path / "o"), "-c", str(nan_checkpoint))[0] == 1
    assert digest(tmp_path / "o" / "a.ply") == before


def test_unexpected_exception_in_a_command_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sharp_sidecar.cli import render_cli

    monkeypatch.setattr(render_cli, "run", lambda args: {}["boom"])
    code = cli.main(["render", "-i", str(tmp_path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: unexpected KeyError") and "Traceback" not in err


def _ply(path: Path, n: int = 40) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    cols = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols["z"] += 3.0
    ply.write_ply(path, ply.structured(cols), ply.sharp_metadata(40.0, (32, 24), n, [0.1, 1.0]))
    return path


def test_render_goes_on_past_bad_plys_and_reports_them_outside_sharp_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "plys"
    src.mkdir()
    _ply(src / "a_good.ply")
    (src / "b_text.ply").write_text("not a ply")
    (src / "c_empty.ply").write_bytes(b"")
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float x\nend_header\n"
    (src / "d_dup.ply").write_bytes(header.encode() + b"\0" * 8)
    code = cli.main(
        [
            "render",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "--frames",
            "2",
            "--resolution",
            "32x24",
            "--device",
            "cpu",
            "--backend",
            "torch",
            "--no-depth",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert (tmp_path / "o" / "a_good.mp4").is_file()
    summary = captured.err[captured.err.index("3 of 4 failed") :]
    for name, problem in (("b_text.ply", "not a PLY"), ("c_empty.ply", "not a PLY"), ("d_dup.ply", "two properties")):
        assert any(name in line and problem in line for line in summary.splitlines()), summary
    assert leftovers(tmp_path) == []


def test_non_utf8_names_do_not_stop_a_batch_under_a_utf8_locale(tmp_path: Path, tiny_checkpoint: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    bad_name = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8
    make_photo(src / bad_name)
    make_photo(src / "zz.png")
    (src / os.fsdecode(b"br\xf6ken.jpg")).write_text("not a photo")
    env = sidecar_env(LC_ALL="C.UTF-8", LANG="C.UTF-8", PYTHONIOENCODING="")
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sharp_sidecar",
            "predict",
            "-i",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "-c",
            str(tiny_checkpoint),
            "--device",
            "cpu",
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert time.perf_counter() - start < 300
    err = done.stderr.decode("utf-8")  # decodable: the names are printed escaped, not as raw bytes
    assert done.returncode == 1 and b"Traceback" not in done.stderr, err
    assert (tmp_path / "o" / os.fsdecode(b"caf\xe9 \xff.ply")).is_file() and (tmp_path / "o" / "zz.ply").is_file()
    assert "br\\xf6ken.jpg" in err and "not an image" in err
    assert "caf\\xe9 \\xff.png" in done.stdout.decode("utf-8")
