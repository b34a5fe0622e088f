"""The JSON-lines protocol module, without torch or bpy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sharp_blender.io import protocol


def test_encode_is_one_compact_line() -> None:
    message = protocol.request("7", protocol.PREDICT, image="a b\nc.jpg", output="ü.ply", focal_mm=26.0)
    line = protocol.encode(message)
    assert line.endswith("\n") and line.count("\n") == 1  # newlines inside strings are escaped
    assert protocol.decode(line) == message
    assert protocol.decode(line.encode("utf-8")) == message
    assert " " not in line.replace("a b", "")  # compact separators


def test_encode_rejects_nan() -> None:
    with pytest.raises(ValueError):
        protocol.encode(protocol.progress("1", "x", float("nan")))


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '"text"', "{"])
def test_decode_rejects_non_objects(line: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(line)


def test_parse_request() -> None:
    assert protocol.parse_request({"id": "a", "op": "status"}) == ("a", "status", {})
    assert protocol.parse_request(protocol.request("b", protocol.CANCEL, target="a")) == (
        "b",
        "cancel",
        {"target": "a"},
    )
    for bad, why in (
        ({"op": "status"}, "id"),
        ({"id": "", "op": "status"}, "id"),
        ({"id": 3, "op": "status"}, "id"),
        ({"id": "a", "op": "fly"}, "unknown op"),
        ({"id": "a", "op": "status", "params": [1]}, "params"),
    ):
        with pytest.raises(protocol.ProtocolError, match=why):
            protocol.parse_request(bad)


def test_event_shapes() -> None:
    assert protocol.ready({"busy": False}) == {"type": "ready", "id": None, "result": {"busy": False}}
    assert protocol.progress("1", "encoder", 0.5, "m") == {
        "type": "progress",
        "id": "1",
        "stage": "encoder",
        "fraction": 0.5,
        "message": "m",
    }
    assert protocol.result("1", {"ply": "x"}) == {"type": "result", "id": "1", "result": {"ply": "x"}}
    error = protocol.error("1", protocol.BAD_IMAGE, "broken", None)
    assert error == {"type": "error", "id": "1", "error": {"kind": "bad_image", "message": "broken", "traceback": None}}
    for event in (protocol.ready({}), protocol.progress("1", "s"), protocol.result("1", {}), error):
        assert event["type"] in protocol.EVENT_TYPES
        assert json.loads(protocol.encode(event)) == event


def test_names_are_consistent() -> None:
    assert set(protocol.JOB_OPS) <= set(protocol.OPS)
    assert len(set(protocol.OPS)) == len(protocol.OPS)
    kinds = [
        protocol.BAD_REQUEST,
        protocol.BAD_IMAGE,
        protocol.BAD_PLY,
        protocol.CHECKPOINT,
        protocol.OUT_OF_MEMORY,
        protocol.DEVICE,
        protocol.CANCELLED,
        protocol.INTERNAL,
        protocol.SIDECAR_DIED,
    ]
    assert len(set(kinds)) == len(kinds) and all(k == k.lower() for k in kinds)


def test_stdlib_only() -> None:
    code = "import sys\nimport sharp_blender.io.protocol\nbad = {'numpy', 'torch', 'bpy'} & set(sys.modules)\nassert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_documents_every_op_and_kind() -> None:
    doc = protocol.__doc__ or ""
    for op in protocol.OPS:
        assert f"``{op}``" in doc
    for kind in (protocol.CANCELLED, protocol.BAD_REQUEST):
        assert kind in doc


def test_decode_rejects_invalid_utf8() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b'{"id": "\xff"}')
