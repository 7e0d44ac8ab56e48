"""A loopback HTTP proxy in front of the S3 test server that answers every Nth request of the chosen methods
with S3's '503 SlowDown', as a throttled bucket does, and forwards the rest unchanged."""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
HOP_HEADERS = ("connection", "transfer-encoding", "content-length")


class FlakyS3Proxy:
    def __init__(self, upstream: str, fail_every: int = 3, methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
        target = urlparse(upstream)
        self.upstream = (target.hostname, target.port)
        self.fail_every, self.methods = fail_every, methods
        self.requests = self.injected = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes | None:
                """The request body with HTTP chunking removed (the SDK streams part uploads chunked)."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():   # trailers, up to the blank line
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes, length: str) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                with proxy.lock:
                    proxy.requests += 1
                    fail = self.command in proxy.methods and proxy.requests % proxy.fail_every == 0
                    proxy.injected += fail
                if fail:
                    self._reply(503, [("Content-Type", "application/xml")], SLOW_DOWN, str(len(SLOW_DOWN)))
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in (*HOP_HEADERS, "date", "server")]
                # a HEAD answer's Content-Length is the object's size, not the (empty) body's
                length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self._reply(resp.status, kept, data, length)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
