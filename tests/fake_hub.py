"""A Hugging Face hub stand-in on 127.0.0.1 for download tests: `resolve` URLs with the
headers huggingface-hub needs, Range requests, and an optional mid-transfer disconnect."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "a" * 40


class FakeHub:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "org/repo/file.gguf" -> content
        self.cut_first_transfer_at: int | None = None  # disconnect after this many bytes, once
        self.ranges: list[str] = []  # Range headers of the GETs received
        self.etag: str | None = None  # publish this sha256 instead of the content's own
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _file(self) -> bytes | None:
                # /{org}/{repo}/resolve/{revision}/{filename}
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                return hub.files.get("/".join(parts[:2] + parts[4:]))

            def _headers(self, content: bytes, status: int, start: int = 0) -> None:
                etag = hub.etag or hashlib.sha256(content).hexdigest()
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(content) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                self.end_headers()

            def do_HEAD(self) -> None:
                content = self._file()
                if content is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._headers(content, 200)

            def do_GET(self) -> None:
                content = self._file()
                if content is None:
                    self.do_HEAD()
                    return
                header = self.headers.get("Range")
                hub.ranges.append(header or "")
                start = int(header.split("=")[1].split("-")[0]) if header else 0
                self._headers(content, 206 if header else 200, start)
                body = content[start:]
                if hub.cut_first_transfer_at is not None:
                    cut, hub.cut_first_transfer_at = hub.cut_first_transfer_at, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True  # the body ends early: the connection drops
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
