from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from sharp_sidecar import checkpoint
from sharp_sidecar.checkpoint import download_file, load_state_dict_file, resolve_checkpoint
from sharp_sidecar.errors import Cancelled, CheckpointError


def _checkpoint_bytes() -> bytes:
    """A real (small) torch zip archive of about 1 MB: resolve_checkpoint only accepts a download that is one."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(256_000, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


PAYLOAD = _checkpoint_bytes()  # ~1,024,000 bytes


class Thing:
    """Any object that is not a tensor, for the weights_only check."""


@dataclass
class Served:
    """What the test server sends, and what it saw."""

    data: bytes = PAYLOAD
    ranges: bool = True
    cut_after: int | None = None  # close the connection after this many body bytes
    range_headers: list[str | None] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        served = self.server.served  # type: ignore[attr-defined]
        served.range_headers.append(self.headers.get("Range"))
        if self.path != "/sharp.pt":
            self.send_error(404, "Not Found")
            return
        data, start = served.data, 0
        header = self.headers.get("Range")
        if served.ranges and header and header.startswith("bytes="):
            start = int(header[len("bytes=") :].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if served.cut_after is not None:
            body = body[: served.cut_after]
        self.wfile.write(body)
        self.wfile.flush()
        if served.cut_after is not None:
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_full_download_with_progress(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    calls: list[tuple[int, int | None]] = []
    target = tmp_path / "cache" / "sharp.pt"
    assert download_file(f"{base}/sharp.pt", target, progress=lambda d, t: calls.append((d, t))) == target
    assert target.read_bytes() == PAYLOAD
    assert not target.with_name("sharp.pt.partial").exists()
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert served.range_headers == [None]


def test_resume_from_partial(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    target = tmp_path / "sharp.pt"
    target.with_name("sharp.pt.partial").write_bytes(PAYLOAD[:300_000])
    calls: list[tuple[int, int | None]] = []
    download_file(f"{base}/sharp.pt", target, progress=lambda d, t: calls.append((d, t)))
    assert target.read_bytes() == PAYLOAD
    assert served.range_headers == ["bytes=300000-"]
    assert calls[0] == (300_000, len(PAYLOAD))


def test_restart_when_range_unsupported(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    served.ranges = False
    target = tmp_path / "sharp.pt"
    target.with_name("sharp.pt.partial").write_bytes(b"garbage that must not be kept" * 100)
    download_file(f"{base}/sharp.pt", target)
    assert target.read_bytes() == PAYLOAD  # not garbage + payload
    assert served.range_headers == ["bytes=2900-"]


def test_restart_when_partial_is_too_long(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    target = tmp_path / "sharp.pt"
    target.with_name("sharp.pt.partial").write_bytes(PAYLOAD + b"extra")
    download_file(f"{base}/sharp.pt", target)
    assert target.read_bytes() == PAYLOAD
    assert served.range_headers == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_truncated_transfer_then_resume(server: tuple[str, Served], tmp_path: Path) -> None:
    base, served = server
    served.cut_after = 400_000
    target = tmp_path / "sharp.pt"
    with pytest.raises(CheckpointError, match="resume") as info:
        download_file(f"{base}/sharp.pt", target)
    assert "failed" in str(info.value)
    assert not target.exists()
    partial = target.with_name("sharp.pt.partial")
    kept = partial.stat().st_size
    assert 0 < kept <= 400_000 and partial.read_bytes() == PAYLOAD[:kept]
    served.cut_after = None
    download_file(f"{base}/sharp.pt", target)
    assert target.read_bytes() == PAYLOAD
    assert served.range_headers[-1] == f"bytes={kept}-"
    assert not partial.exists()


def test_http_error(server: tuple[str, Served], tmp_path: Path) -> None:
    base, _ = server
    target = tmp_path / "sharp.pt"
    with pytest.raises(CheckpointError, match="HTTP 404") as info:
        download_file(f"{base}/missing.pt", target)
    assert "-c PATH" in str(info.value) and "SHARP_CHECKPOINT" in str(info.value)
    assert not target.exists()


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="failed"):
        download_file("http://127.0.0.1:9/none.pt", tmp_path / "x.pt")


def test_cancel_from_progress_keeps_partial(server: tuple[str, Served], tmp_path: Path) -> None:
    base, _ = server
    target = tmp_path / "sharp.pt"

    def stop(done: int, total: int | None) -> None:
        if done > 0:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        download_file(f"{base}/sharp.pt", target, progress=stop)
    assert not target.exists() and target.with_name("sharp.pt.partial").stat().st_size > 0


def test_resolve_order(server: tuple[str, Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = server
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"x")
    from_env = tmp_path / "env.pt"
    from_env.write_bytes(b"y")
    cache = tmp_path / "hub" / "checkpoints" / "sharp_2572gikvuh.pt"
    assert checkpoint.hub_checkpoint_path() == cache

    with pytest.raises(CheckpointError, match="downloading is off") as info:
        resolve_checkpoint(download=False)
    assert str(cache) in str(info.value)
    assert resolve_checkpoint(download=True, url=f"{base}/sharp.pt") == cache
    assert cache.read_bytes() == PAYLOAD
    assert resolve_checkpoint(url=f"{base}/nothing-here") == cache  # cached: no second request
    assert len(served.range_headers) == 1

    monkeypatch.setenv(checkpoint.ENV_VAR, str(from_env))
    assert resolve_checkpoint() == from_env
    assert resolve_checkpoint(explicit) == explicit
    monkeypatch.setenv(checkpoint.ENV_VAR, str(tmp_path / "gone.pt"))
    with pytest.raises(CheckpointError, match="SHARP_CHECKPOINT"):
        resolve_checkpoint()
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.pt")


def test_load_state_dict_file(tmp_path: Path) -> None:
    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.ones(4)}
    good = tmp_path / "good.pt"
    torch.save(state, good)
    loaded = load_state_dict_file(good)
    assert set(loaded) == set(state) and torch.equal(loaded["a.weight"], state["a.weight"])
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state}, wrapped)
    assert set(load_state_dict_file(wrapped)) == set(state)
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict_file(legacy)["b.bias"], state["b.bias"])


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_state_dict_file(truncated)
    assert "sharp_2572gikvuh.pt" in str(info.value)

    html = tmp_path / "page.pt"
    html.write_text("<html>Access denied</html>")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict_file(html)

    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_state_dict_file(not_dict)

    mixed = tmp_path / "mixed.pt"
    torch.save({"w": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="epoch"):
        load_state_dict_file(mixed)

    pickled = tmp_path / "object.pt"
    torch.save({"w": Thing()}, pickled)
    with pytest.raises(CheckpointError, match=r"not a SHARP checkpoint.*not trust") as refused:
        load_state_dict_file(pickled)  # weights_only refuses arbitrary objects
    assert "weights_only" not in str(refused.value)  # never torch's hint to switch the safety off


def test_second_downloader_waits_and_reuses_the_file(
    server: tuple[str, Served], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    base, served = server
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    cache = checkpoint.hub_checkpoint_path()
    cache.parent.mkdir(parents=True)
    results: list[Path] = []
    with open(cache.with_name(cache.name + ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "another process" is downloading
        waiter = threading.Thread(target=lambda: results.append(resolve_checkpoint(url=f"{base}/sharp.pt")))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not results  # it waits instead of downloading alongside
        cache.write_bytes(b"finished by the other process")
    waiter.join(30)
    assert results == [cache] and cache.read_bytes() == b"finished by the other process"
    assert served.range_headers == []  # no second download
