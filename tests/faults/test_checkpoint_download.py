"""Checkpoint download (a local HTTP server on 127.0.0.1): only a complete torch zip archive (with the right SHA-256
when one is known) is ever renamed into the cache; a captive portal's page, an error page or a cut transfer never
is, and the next attempt still works."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sharp_sidecar import checkpoint
from sharp_sidecar.checkpoint import resolve_checkpoint
from sharp_sidecar.errors import CheckpointError

from tests.faults.helpers import digest


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    length: int | None = None  # Content-Length to announce (default: the body's)
    content_type: str = "application/octet-stream"
    cut_after: int | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        reply: Reply = self.server.reply  # type: ignore[attr-defined]
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body) if reply.length is None else reply.length))
        self.end_headers()
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def served() -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.reply = Reply()  # type: ignore[attr-defined]
    httpd.hits = 0  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/sharp.pt", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    monkeypatch.delenv(checkpoint.SHA256_ENV_VAR, raising=False)
    monkeypatch.delenv(checkpoint.URL_ENV_VAR, raising=False)
    return checkpoint.hub_checkpoint_path()


def _zip_without_pickle() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "a zip, not a checkpoint")
    return buffer.getvalue()


PORTAL = b"<!DOCTYPE html><html><body>Please sign in to the hotel Wi-Fi</body></html>" * 50
NOT_CHECKPOINTS: dict[str, tuple[Reply, str]] = {
    "captive-portal": (Reply(body=PORTAL, content_type="text/html"), "an HTML page"),
    "html-lowercase": (Reply(body=b"  <html><head></head></html>"), "an HTML page"),
    "json-error": (Reply(body=b'{"error": "quota exceeded"}'), "a JSON document"),
    "zip-not-torch": (Reply(body=_zip_without_pickle()), "no data.pkl"),
    "random-bytes": (Reply(body=bytes(range(256)) * 20), "a file starting with"),
    "empty-200": (Reply(body=b""), "a file starting with b''"),
}


@pytest.mark.parametrize("case", sorted(NOT_CHECKPOINTS))
def test_a_complete_download_that_is_not_a_checkpoint_is_never_cached(
    served: tuple[str, http.server.ThreadingHTTPServer], cache: Path, tiny_checkpoint: Path, case: str
) -> None:
    url, httpd = served
    httpd.reply, problem = NOT_CHECKPOINTS[case]  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match=problem) as info:
        resolve_checkpoint(url=url)
    assert url in str(info.value) and "Nothing was saved" in str(info.value)
    assert not cache.exists() and not cache.with_name(cache.name + ".partial").exists()
    httpd.reply = Reply(body=tiny_checkpoint.read_bytes())  # type: ignore[attr-defined]
    assert digest(resolve_checkpoint(url=url)) == digest(tiny_checkpoint)  # the next attempt works


@pytest.mark.parametrize("status", [404, 500, 503, 407])
def test_http_errors_name_the_url_and_cache_nothing(
    served: tuple[str, http.server.ThreadingHTTPServer], cache: Path, status: int
) -> None:
    url, httpd = served
    httpd.reply = Reply(status=status, body=b"<html>error</html>")  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match=f"HTTP {status}") as info:
        resolve_checkpoint(url=url)
    assert url in str(info.value) and not cache.exists()


def test_a_cut_transfer_is_kept_as_partial_and_resumes(
    served: tuple[str, http.server.ThreadingHTTPServer], cache: Path, tiny_checkpoint: Path
) -> None:
    url, httpd = served
    data = tiny_checkpoint.read_bytes()
    httpd.reply = Reply(body=data, cut_after=len(data) // 3)  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="stopped after"):
        resolve_checkpoint(url=url)
    partial = cache.with_name(cache.name + ".partial")
    assert not cache.exists() and partial.stat().st_size == len(data) // 3
    httpd.reply = Reply(body=data)  # no Range support: starts over, still exact  # type: ignore[attr-defined]
    assert digest(resolve_checkpoint(url=url)) == digest(tiny_checkpoint) and not partial.exists()


def test_size_other_than_content_length_is_refused(
    served: tuple[str, http.server.ThreadingHTTPServer], cache: Path, tiny_checkpoint: Path
) -> None:
    url, httpd = served
    data = tiny_checkpoint.read_bytes()
    httpd.reply = Reply(body=data[:-10], length=len(data))  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match=f"of {len(data):,} bytes"):
        resolve_checkpoint(url=url)
    assert not cache.exists()


def test_sha256_mismatch_is_refused_and_a_match_accepted(
    served: tuple[str, http.server.ThreadingHTTPServer],
    cache: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, httpd = served
    httpd.reply = Reply(body=tiny_checkpoint.read_bytes())  # type: ignore[attr-defined]
    monkeypatch.setenv(checkpoint.SHA256_ENV_VAR, "0" * 64)
    with pytest.raises(CheckpointError, match="not the expected 0000") as info:
        resolve_checkpoint(url=url)
    assert hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest() in str(info.value)
    assert not cache.exists() and not cache.with_name(cache.name + ".partial").exists()
    monkeypatch.setenv(checkpoint.SHA256_ENV_VAR, hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest().upper())
    assert digest(resolve_checkpoint(url=url)) == digest(tiny_checkpoint)


def test_the_code_carries_a_place_for_the_official_digest(
    served: tuple[str, http.server.ThreadingHTTPServer],
    cache: Path,
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, httpd = served
    httpd.reply = Reply(body=tiny_checkpoint.read_bytes())  # type: ignore[attr-defined]
    monkeypatch.setattr(checkpoint, "CHECKPOINT_SHA256", "f" * 64)
    with pytest.raises(CheckpointError, match="SHA-256"):
        resolve_checkpoint(url=url)


def test_a_stalled_server_ends_in_an_error_not_a_hang(
    stalling_url: tuple[str, threading.Event], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _release = stalling_url
    monkeypatch.setattr(checkpoint, "_TIMEOUT_S", 0.5)
    with pytest.raises(CheckpointError, match="timed out") as info:
        resolve_checkpoint(url=url)
    assert url in str(info.value) and "resume" in str(info.value) and not cache.exists()


@pytest.mark.parametrize("case", ["truncated-zip", "html", "malicious", "empty", "nan-is-still-a-state-dict"])
def test_a_bad_file_already_in_the_cache_says_to_delete_it(
    cache: Path, tiny_checkpoint: Path, malicious_checkpoint: Path, nan_checkpoint: Path, case: str
) -> None:
    cache.parent.mkdir(parents=True)
    data = {
        "truncated-zip": tiny_checkpoint.read_bytes()[:5000],
        "html": PORTAL,
        "malicious": malicious_checkpoint.read_bytes(),
        "empty": b"",
        "nan-is-still-a-state-dict": nan_checkpoint.read_bytes(),
    }[case]
    cache.write_bytes(data)
    if case == "nan-is-still-a-state-dict":  # loads: the model's outputs are checked instead (test_protocol)
        assert checkpoint.load_state_dict_file(resolve_checkpoint())
        return
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_state_dict_file(resolve_checkpoint())
    text = str(info.value)
    assert str(cache) in text and "weights_only" not in text
    assert ("must not be trusted" in text or "do not trust" in text) if case == "malicious" else "Delete it" in text
    assert cache.read_bytes() == data  # reported, never silently deleted or changed
