"""The sidecar's request loop (sharp_sidecar.serve.server, in-process, real predict op on the tiny checkpoint): every junk
line and every unusable request gets exactly one typed error naming the problem, nothing is written, existing files
stay byte-identical, and the next request still works."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sharp_sidecar.io import ply, protocol
from sharp_sidecar.serve import server

from tests.faults.helpers import digest, leftovers, make_photo

WAIT = 60.0


class Lines:
    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.events.put(json.loads(line))  # every line the server writes must be protocol JSON
        return len(text)

    def flush(self) -> None:
        pass


class Loop:
    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.lines = Lines()
        self.server = server.Server(os.fdopen(read_fd, "rb"), self.lines)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.writer = os.fdopen(write_fd, "wb", buffering=0)
        assert self.lines.events.get(timeout=WAIT)["type"] == protocol.READY

    def raw(self, line: bytes) -> None:
        self.writer.write(line)

    def send(self, request_id: str, op: str, **params: Any) -> dict[str, Any]:
        self.raw(protocol.encode(protocol.request(request_id, op, **params)).encode())
        return self.final(request_id)

    def final(self, request_id: str | None) -> dict[str, Any]:
        while True:
            event = self.lines.events.get(timeout=WAIT)
            if event["id"] == request_id and event["type"] in (protocol.RESULT, protocol.ERROR):
                return event

    def healthy(self) -> None:
        status = self.send("status-check", protocol.STATUS)
        assert status["type"] == protocol.RESULT and status["result"]["busy"] is False


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    instance = Loop()
    yield instance
    instance.writer.close()
    instance.thread.join(30)


JUNK: dict[str, tuple[bytes, str]] = {
    "not-json": (b"hello\n", "not JSON"),
    "truncated-json": (b'{"id": "a", "op": \n', "not JSON"),
    "array": (b"[1, 2, 3]\n", "expected a JSON object"),
    "string": (b'"predict"\n', "expected a JSON object"),
    "nested-5000": (b'{"id":"n","op":"status","params":' + b"[" * 5000 + b"]" * 5000 + b"}\n", "nested too deeply"),
    "nested-objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n", "nested too deeply"),
    "invalid-utf8": (b'{"id":"\xff\xfe","op":"status"}\n', "not JSON"),
    "nan-literal": (b'{"id":"x","op":"status","params":{"a":NaN}}\n', ""),  # Python's json reads NaN: harmless
    "id-int": (b'{"id": 7, "op": "status"}\n', "non-empty string 'id'"),
    "id-empty": (b'{"id": "", "op": "status"}\n', "non-empty string 'id'"),
    "op-unknown": (b'{"id": "u", "op": "format_disk"}\n', "unknown op"),
    "op-missing": (b'{"id": "m"}\n', "unknown op"),
    "params-list": (b'{"id": "p", "op": "predict", "params": [1]}\n', "'params' must be a JSON object"),
    "long-line": (b'{"id":"l","op":"status","junk":"' + b"x" * 2_000_000 + b'"}\n', ""),
}


@pytest.mark.parametrize("case", sorted(JUNK))
def test_junk_line_gets_one_bad_request_error_and_the_loop_goes_on(loop: Loop, case: str) -> None:
    line, problem = JUNK[case]
    loop.raw(line)
    event = loop.lines.events.get(timeout=WAIT)
    if problem:
        assert event["type"] == protocol.ERROR and event["error"]["kind"] == protocol.BAD_REQUEST
        assert problem in event["error"]["message"]
    else:
        assert event["type"] == protocol.RESULT  # readable after all: answered, not refused
    loop.healthy()


def _predict(loop: Loop, request_id: str, checkpoint: Path, **params: Any) -> dict[str, Any]:
    params.setdefault("device", "cpu")
    return loop.send(request_id, protocol.PREDICT, checkpoint=str(checkpoint), **params)


BAD_PARAMS: dict[str, tuple[dict[str, Any], str, str]] = {
    "no-image": ({"image": None}, protocol.BAD_REQUEST, "'image' is required"),
    "image-int": ({"image": 5}, protocol.BAD_REQUEST, "'image' must be a string"),
    "image-nul": ({"image": "a\x00b.jpg"}, protocol.BAD_REQUEST, "NUL"),
    "output-nul": ({"output": "out\x00.ply"}, protocol.BAD_REQUEST, "NUL"),
    "device-bad": ({"device": "tpu"}, protocol.BAD_REQUEST, "'device' must be"),
    "device-nul": ({"device": "cpu\x00"}, protocol.BAD_REQUEST, "NUL"),
    "focal-negative": ({"focal_mm": -3}, protocol.BAD_REQUEST, "focal_mm"),
    "focal-bool": ({"focal_mm": True}, protocol.BAD_REQUEST, "focal_mm"),
    "focal-string": ({"focal_px": "50"}, protocol.BAD_REQUEST, "focal_px"),
    "both-focals": ({"focal_mm": 30, "focal_px": 500}, protocol.BAD_REQUEST, "not both"),
    "image-missing": ({"image": "MISSING"}, protocol.BAD_IMAGE, "no such file"),
    "image-folder": ({"image": "FOLDER"}, protocol.BAD_IMAGE, "no such file"),
    "image-text": ({"image": "TEXT"}, protocol.BAD_IMAGE, "not an image"),
    "output-is-image": ({"output": "PHOTO"}, protocol.OUTPUT, "is the input photo itself"),
    "output-is-folder": ({"output": "FOLDER"}, protocol.OUTPUT, "is a folder"),
    "output-under-a-file": ({"output": "UNDER_FILE"}, protocol.OUTPUT, "a file is in the way"),
    "output-name-too-long": ({"output": "LONG"}, protocol.OUTPUT, "too long"),
    "checkpoint-missing": ({"checkpoint": "MISSING"}, protocol.CHECKPOINT, "does not exist"),
    "checkpoint-html": ({"checkpoint": "HTML"}, protocol.CHECKPOINT, "not a readable PyTorch checkpoint"),
    "checkpoint-malicious": ({"checkpoint": "EVIL"}, protocol.CHECKPOINT, "not a SHARP checkpoint"),
    "checkpoint-nan": ({"checkpoint": "NAN"}, protocol.NON_FINITE, "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_unusable_predict_is_a_typed_error_and_nothing_is_written(
    loop: Loop, tmp_path: Path, tiny_checkpoint: Path, nan_checkpoint: Path, malicious_checkpoint: Path, case: str
) -> None:
    params, kind, problem = BAD_PARAMS[case]
    photo = make_photo(tmp_path / "in" / "photo.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "text.jpg").write_text("not a photo")
    (tmp_path / "html.pt").write_text("<!DOCTYPE html><html>Sign in to the Wi-Fi</html>")
    (tmp_path / "afile").write_text("x")
    existing = tmp_path / "out" / "existing.ply"
    existing.parent.mkdir()
    existing.write_bytes(b"an earlier result")
    before = {p: digest(p) for p in (photo, existing, tiny_checkpoint)}
    names = {
        "PHOTO": str(photo),
        "MISSING": str(tmp_path / "missing.jpg"),
        "FOLDER": str(tmp_path / "folder.jpg"),
        "TEXT": str(tmp_path / "text.jpg"),
        "HTML": str(tmp_path / "html.pt"),
        "EVIL": str(malicious_checkpoint),
        "NAN": str(nan_checkpoint),
        "UNDER_FILE": str(tmp_path / "afile" / "x.ply"),
        "LONG": str(tmp_path / ("n" * 300 + ".ply")),
    }
    request = {"image": str(photo), "output": str(tmp_path / "out" / "new.ply")}
    request.update({k: names.get(v, v) if isinstance(v, str) else v for k, v in params.items()})
    checkpoint = Path(request.pop("checkpoint", str(tiny_checkpoint)))
    event = _predict(loop, case, checkpoint, **request)
    assert event["type"] == protocol.ERROR, event
    assert event["error"]["kind"] == kind and problem in event["error"]["message"], event["error"]
    named = {"image": request.get("image"), "output": request.get("output"), "checkpoint": str(checkpoint)}
    if kind in (protocol.BAD_IMAGE, protocol.OUTPUT):
        assert any(str(v) in event["error"]["message"] for v in named.values() if isinstance(v, str)), event
    if kind == protocol.CHECKPOINT:
        assert "weights_only" not in event["error"]["message"]
    assert not (tmp_path / "out" / "new.ply").exists()
    assert {p: digest(p) for p in before} == before  # the photo, an earlier PLY and the checkpoint are untouched
    assert leftovers(tmp_path) == []
    good = _predict(loop, f"{case}-next", tiny_checkpoint, image=str(photo), output=str(tmp_path / "out" / "ok.ply"))
    assert good["type"] == protocol.RESULT, good
    assert ply.read_gaussians(good["result"]["ply"]).count == good["result"]["num_gaussians"]


def test_duplicate_id_while_running_is_refused(loop: Loop, tmp_path: Path, tiny_checkpoint: Path) -> None:
    photo = make_photo(tmp_path / "photo.png")
    first = protocol.request("dup", protocol.PREDICT, image=str(photo), output=str(tmp_path / "a.ply"))
    first["params"].update(checkpoint=str(tiny_checkpoint), device="cpu")
    loop.raw((protocol.encode(first) * 2).encode())
    events = [loop.final("dup"), loop.final("dup")]
    kinds = sorted(e["type"] for e in events)
    assert kinds == [protocol.ERROR, protocol.RESULT]
    assert "still in use" in next(e for e in events if e["type"] == protocol.ERROR)["error"]["message"]
    loop.healthy()


def test_stale_temporaries_of_ours_are_swept_when_writing_to_a_folder(
    loop: Loop, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.ply.k3j2h1g0.partial.ply"  # what a SIGKILL during a PLY write leaves
    young = out / ".b.ply.abcdefgh.partial.ply"  # a writer at work right now
    foreign = out / ".notes.partial.txt.bak"  # not our pattern
    for path in (stale, young, foreign):
        path.write_bytes(b"half a file")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    os.utime(foreign, (old, old))
    event = _predict(
        loop, "sweep", tiny_checkpoint, image=str(make_photo(tmp_path / "p.png")), output=str(out / "p.ply")
    )
    assert event["type"] == protocol.RESULT
    assert not stale.exists() and young.exists() and foreign.exists()
