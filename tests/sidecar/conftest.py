"""Fixtures shared by the sidecar tests: a tiny-preset checkpoint and a checkpoint server that stalls mid-file."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sharp_sidecar.model import create_predictor

STALL_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of the `tiny` preset: the real code path at well under a second per photo."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    torch.save(create_predictor("tiny").state_dict(), path)
    return path


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends the headers and the first bytes of the file, then waits until the test releases it."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data: bytes = self.server.data  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:1000])
        self.wfile.flush()
        self.server.release.wait(STALL_TIMEOUT)  # type: ignore[attr-defined]
        try:
            self.wfile.write(data[1000:])
        except OSError:
            pass


@pytest.fixture
def stalling_url(tiny_checkpoint: Path) -> Iterator[tuple[str, threading.Event]]:
    """(URL of the tiny checkpoint on 127.0.0.1, event that lets the stalled download finish)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    httpd.data = tiny_checkpoint.read_bytes()  # type: ignore[attr-defined]
    release = threading.Event()
    httpd.release = release  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/tiny.pt", release
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
