"""``mmdrfuse models fetch`` against HTTP servers on loopback: the real model file, garbage, a
refused port and a server that never answers. Never touches the network or the user's cache."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from mmdrfuse_ros.cli import main
from mmdrfuse_ros.detection.models import FetchError, fetch_model, find_model

REPO = Path(__file__).resolve().parent.parent
SHARED_MODEL = REPO.parent / "shared" / "models" / "yolox_nano" / "yolox_nano.onnx"
#: the sha256 ../shared/models/yolox_nano/README.md gives for its copy.
SHARED_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"


class _Files(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(3)
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "no such file")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A loopback HTTP server; ``_Files.files`` maps paths to bodies. Yields its base URL."""
    _Files.files = {"/garbage.onnx": b"<html>rate limited</html>" * 40}
    if SHARED_MODEL.is_file():
        _Files.files["/yolox_nano.onnx"] = SHARED_MODEL.read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MMDRFUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MMDRFUSE_MODEL_DIR", raising=False)
    return tmp_path / "cache" / "models"


def _refused_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/yolox_nano.onnx"


def test_fetch_downloads_checks_and_installs_the_model_in_the_cache(server, cache, capsys):
    if not SHARED_MODEL.is_file():
        pytest.skip(f"the YOLOX model is not at {SHARED_MODEL} (only in the project's dev setup)")
    assert find_model() is None
    assert main(["models", "fetch", "--url", f"{server}/yolox_nano.onnx", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {SHARED_SHA256}" in out and str(cache / "yolox_nano.onnx") in out
    assert find_model() == cache / "yolox_nano.onnx"
    assert sorted(p.name for p in cache.iterdir()) == ["yolox_nano.onnx"]  # no .part left
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "yolox_nano.onnx")
    assert main(["models", "info"]) == 0
    assert "layout yolox" in capsys.readouterr().out
    info = fetch_model(f"{server}/yolox_nano.onnx", cache.parent / "other", 5.0,
                       sha256=SHARED_SHA256)
    assert info.output_shape == [1, 3549, 85]
    with pytest.raises(FetchError, match="expected 0000"):
        fetch_model(f"{server}/yolox_nano.onnx", cache.parent / "bad", 5.0, sha256="0000")
    assert not list((cache.parent / "bad").iterdir())


def test_fetch_of_garbage_or_a_missing_file_installs_nothing(server, cache, capsys):
    assert main(["models", "fetch", "--url", f"{server}/garbage.onnx", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "did not give YOLOX-Nano" in err and "not a loadable ONNX model" in err
    assert main(["models", "fetch", "--url", f"{server}/none.onnx", "--quiet"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert not cache.exists() or not list(cache.iterdir())
    assert find_model() is None


def test_fetch_offline_fails_fast_with_a_clear_message(server, cache, capsys):
    start = time.monotonic()
    assert main(["models", "fetch", "--url", _refused_url(), "--quiet"]) == 1
    assert main(["models", "fetch", "--url", f"{server}/hang", "--timeout", "0.5",
                 "--quiet"]) == 1
    assert time.monotonic() - start < 3.0
    err = capsys.readouterr().err
    assert err.count("cannot download") == 2 and "Offline?" in err and "refused" in err
    assert "timed out" in err
    assert not cache.exists() or not list(cache.iterdir())
    assert main(["models", "path"]) == 1
    assert "mmdrfuse models fetch" in capsys.readouterr().err


def test_fetch_into_a_folder_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["models", "fetch", "--url", _refused_url(), "--dest", str(blocker / "x"),
                 "--quiet"]) == 1
    assert "cannot write into" in capsys.readouterr().err
