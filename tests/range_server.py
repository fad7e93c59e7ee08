"""A real HTTP file server with byte ranges on 127.0.0.1 (as nginx and object stores serve), for tests and
benchmarks: ``with serve(folder, latency=0.02) as (url, stats): ...``; ``stats`` counts requests and the most that
were in flight at once."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server with ``Range: bytes=a-b`` answered 206, after ``latency`` seconds per request."""

    def __init__(self, *args, latency: float = 0.0, stats: Stats | None = None, **kwargs):
        self.latency, self.stats = latency, stats or Stats()
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.in_flight += 1
            self.stats.most_in_flight = max(self.stats.most_in_flight, self.stats.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            self._answer()
        finally:
            with self.stats.lock:
                self.stats.in_flight -= 1

    def _answer(self):
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if wanted is None or not path.is_file():
            return super().do_GET()
        start, end = int(wanted.group(1)), int(wanted.group(2))
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{path.stat().st_size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # many range requests at once


@contextmanager
def serve(folder: Path, latency: float = 0.0) -> Iterator[tuple[str, Stats]]:
    """Serve ``folder`` on a free port of 127.0.0.1 until the block ends; yields its URL and the request stats."""
    stats = Stats()
    handler = partial(RangeHandler, directory=str(folder), latency=latency, stats=stats)
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", stats
    finally:
        httpd.shutdown()
        httpd.server_close()
