"""Full and read-only disks (a 1 MiB tmpfs mounted in the test; CI runs as root): the output location is checked
before the network runs, a write that fails midway leaves no partial file and existing files byte-identical."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from sharp_sidecar import guards
from sharp_sidecar.errors import OutputError
from sharp_sidecar.io import ply

from tests.faults.helpers import digest, leftovers, make_photo, remount_read_only


def _vertex(n: int) -> np.ndarray:
    return ply.structured({name: np.zeros(n, np.float32) for name in ply.SHARP_VERTEX_PROPERTIES})


def test_full_disk_is_found_before_the_network_runs(
    tmpfs: Path, tiny_model: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sharp_sidecar.inference import predict

    photo = make_photo(tmpfs.parent / "photo.png")
    monkeypatch.setattr(predict.imageio, "load_rgb", lambda *a, **k: pytest.fail("nothing may run before the check"))
    with pytest.raises(OutputError, match="MiB free and the file needs") as info:
        predict.predict_file(tiny_model, photo, tmpfs / "out.ply")  # type: ignore[arg-type]
    assert str(tmpfs / "out.ply") in str(info.value)
    assert list(tmpfs.iterdir()) == []


def test_a_write_that_fills_the_disk_leaves_no_partial_and_keeps_the_old_file(tmpfs: Path) -> None:
    target = tmpfs / "scene.ply"
    target.write_bytes(b"the previous, good result")
    before = digest(target)
    with pytest.raises(OSError) as info:
        ply.write_ply(target, _vertex(40_000))  # 2.2 MB on a 1 MiB disk
    assert info.value.errno == errno.ENOSPC
    assert digest(target) == before and leftovers(tmpfs) == []
    with pytest.raises(OutputError, match="the disk is full"), guards.writing(target):
        ply.write_ply(target, _vertex(40_000))
    ply.write_ply(tmpfs / "small.ply", _vertex(100))  # the next (small) write still works
    assert ply.read_ply(tmpfs / "small.ply").vertex.shape == (100,)


def test_read_only_folder_is_refused_before_anything_runs(tmpfs: Path, tiny_model: object) -> None:
    from sharp_sidecar.inference import predict

    existing = tmpfs / "old.ply"
    existing.write_bytes(b"keep me")
    remount_read_only(tmpfs)
    photo = make_photo(tmpfs.parent / "photo.png")
    with pytest.raises(OutputError, match="read-only") as info:
        predict.predict_file(tiny_model, photo, tmpfs / "new.ply")  # type: ignore[arg-type]
    assert str(tmpfs / "new.ply") in str(info.value)
    assert existing.read_bytes() == b"keep me" and sorted(p.name for p in tmpfs.iterdir()) == ["old.ply"]
    with pytest.raises(OutputError, match="read-only"):
        predict.predict_file(tiny_model, photo, tmpfs / "sub" / "new.ply")  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["tmpfs-full", "read-only"])
def test_sidecar_request_on_a_bad_disk_is_an_output_error_and_the_next_works(
    tmpfs: Path, tmp_path: Path, tiny_checkpoint: Path, where: str
) -> None:
    from tests.faults.test_protocol import Loop

    loop = Loop()
    try:
        if where == "read-only":
            remount_read_only(tmpfs)
        photo = make_photo(tmp_path / "p.png")
        event = loop.send(
            "bad",
            "predict",
            image=str(photo),
            output=str(tmpfs / "p.ply"),
            checkpoint=str(tiny_checkpoint),
            device="cpu",
        )
        assert event["type"] == "error" and event["error"]["kind"] == "output", event
        assert str(tmpfs / "p.ply") in event["error"]["message"]
        good = loop.send(
            "good",
            "predict",
            image=str(photo),
            output=str(tmp_path / "o" / "p.ply"),
            checkpoint=str(tiny_checkpoint),
            device="cpu",
        )
        assert good["type"] == "result" and Path(good["result"]["ply"]).is_file()
    finally:
        loop.writer.close()
        loop.thread.join(30)


def test_cli_on_a_read_only_output_fails_fast_with_one_line(
    tmpfs: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sharp_sidecar.cli import main as cli

    remount_read_only(tmpfs)
    code = cli.main(
        [
            "predict",
            "-i",
            str(make_photo(tmpfs.parent / "a.png")),
            "-o",
            str(tmpfs / "out"),
            "-c",
            str(tiny_checkpoint),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot write") and "read-only" in err and "Traceback" not in err


def test_checkpoint_download_onto_a_full_disk_keeps_nothing_broken(
    tmpfs: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.server
    import threading

    import torch
    from sharp_sidecar import checkpoint
    from sharp_sidecar.errors import CheckpointError

    data = tiny_checkpoint.read_bytes()
    assert len(data) > 1 << 20  # bigger than the disk

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmpfs / "hub"))
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    try:
        with pytest.raises(CheckpointError, match="No space left") as info:
            checkpoint.resolve_checkpoint(url=f"http://127.0.0.1:{httpd.server_address[1]}/x.pt")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "resume" in str(info.value) and not checkpoint.hub_checkpoint_path().exists()
