"""File names whatever their encoding: undecodable bytes (surrogate escapes), newlines, quotes, format characters,
long names. They travel through the protocol unchanged, the file written has exactly the name asked for, and they
print safely."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sharp_sidecar import guards

from sharp_blender.io import ply, protocol
from tests.faults.helpers import make_photo

NAMES = {
    "latin1-bytes": os.fsdecode(b"caf\xe9"),
    "invalid-utf8": os.fsdecode(b"\xff\xfe\xfd"),
    "newline": "two\nlines",
    "quotes-backslash": 'say "hi" \\ there',
    "percent-format": "100%s %d {0}",
    "emoji-combining": "e\u0301t\u00e9 \U0001f4f7",
    "leading-dash": "-rf",
    "spaces": "  spaced out  ",
    "long-200": "n" * 200,
    "rtl-override": "abc\u202egpj.exe",
}


@pytest.mark.parametrize("case", sorted(NAMES))
def test_names_round_trip_through_the_protocol(case: str) -> None:
    name = NAMES[case]
    line = protocol.encode(protocol.request("r1", protocol.PREDICT, image=f"/x/{name}.jpg"))
    assert line.isascii() and line.endswith("\n") and line.count("\n") == 1  # one line, whatever the name
    assert protocol.decode(line.encode("ascii"))["params"]["image"] == f"/x/{name}.jpg"


@pytest.mark.parametrize("case", sorted(NAMES))
def test_names_through_the_client_write_exactly_that_file(
    fake_client: Callable[..., Any], tmp_path: Path, case: str
) -> None:
    name = NAMES[case]
    photo = make_photo(tmp_path / "in" / f"{name}.png", (16, 12))
    output = tmp_path / "out" / f"{name}.ply"
    result = fake_client().predict(photo, output).wait(30)
    assert result["ply"] == str(output)
    assert os.fsencode(output).split(b"/")[-1] in os.listdir(os.fsencode(tmp_path / "out"))
    assert ply.read_gaussians(output).count == 48


@pytest.mark.parametrize("case", sorted(NAMES))
def test_safe_name_is_printable_and_keeps_the_bytes_visible(case: str) -> None:
    text = guards.safe_name(f"/x/{NAMES[case]}")
    text.encode("utf-8")  # never raises
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in text)
    if case in ("latin1-bytes", "invalid-utf8"):
        assert "\\x" in text


def test_sidecar_predicts_a_photo_with_an_undecodable_name(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from tests.faults.test_protocol import Loop

    loop = Loop()
    try:
        name = os.fsdecode(b"photo-\xe9\xff")
        photo = make_photo(tmp_path / f"{name}.png")
        output = tmp_path / "out" / f"{name}.ply"
        event = loop.send(
            "n", "predict", image=str(photo), output=str(output), checkpoint=str(tiny_checkpoint), device="cpu"
        )
        assert event["type"] == "result", event
        assert event["result"]["ply"] == str(output) and output.is_file()
        bad = loop.send(
            "m", "predict", image=str(tmp_path / f"{name}.jpg"), output=str(output), checkpoint=str(tiny_checkpoint)
        )
        assert bad["error"]["kind"] == "bad_image" and name in bad["error"]["message"]
        json.dumps(bad).encode("ascii")
    finally:
        loop.writer.close()
        loop.thread.join(30)
