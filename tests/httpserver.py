"""A small threaded HTTP server on 127.0.0.1 (ephemeral port) for URL-part and webhook tests.

    with LocalServer() as srv:
        srv.add_file("/a.mp3", make_tone(tmp / "a.mp3").read_bytes())
        srv.add_html("/page.html")
        srv.add_cut_off("/cut.mp3", data, send=1000)     # Content-Length says more, then closes
        srv.add_stall("/slow.mp3", data)                  # headers, then silence until closed
        srv.add_drip("/drip.mp3", data, interval=0.1)     # one byte at a time
        srv.add_redirect("/r", "http://169.254.169.254/latest/meta-data/")
        srv.add_status("/busy", 503)
        url = srv.url("/a.mp3")
        ...
        srv.hits("/a.mp3")                                 # how many requests reached it

Unknown paths answer 404. Every request is recorded in ``srv.requests`` as (method, path, headers).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CONTENT_TYPES = {
    "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "m4a": "audio/mp4",
    "ogg": "audio/ogg", "opus": "audio/ogg",
}


@dataclass
class Route:
    kind: str  # file | html | cut_off | stall | drip | redirect | status | chunked
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    location: str = ""
    send: int = 0  # cut_off: bytes actually sent before closing
    interval: float = 0.0  # drip: seconds between bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner._record(self, body)
        route = self.server.owner.routes.get(urlsplit(self.path).path)
        status = route.status if route and route.kind == "status" else 200
        self._reply(status, b"ok", "text/plain", head=False)

    def _serve(self, *, head: bool):
        owner = self.server.owner
        owner._record(self, b"")
        route = owner.routes.get(urlsplit(self.path).path)
        if route is None:
            self._reply(404, b"<html><body>404 not found</body></html>", "text/html", head=head)
        elif route.kind in ("file", "html"):
            self._reply(200, route.body, route.content_type, head=head)
        elif route.kind == "status":
            self._reply(route.status, b"status page", "text/plain", head=head)
        elif route.kind == "redirect":
            self.send_response(route.status)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route.kind == "cut_off":
            self._announce(route)
            if not head:
                self.wfile.write(route.body[: route.send])
                self.wfile.flush()
            self.close_connection = True
        elif route.kind == "stall":
            self._announce(route)
            self.wfile.flush()
            if not head:
                # Send nothing until the test closes the server: the client's read timeout fires.
                owner._closing.wait()
            self.close_connection = True
        elif route.kind == "drip":
            self._announce(route)
            if not head:
                # One byte per interval: each read succeeds, so no socket timeout ever fires.
                try:
                    for i in range(len(route.body)):
                        if owner._closing.wait(route.interval):
                            break
                        self.wfile.write(route.body[i:i + 1])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            self.close_connection = True
        elif route.kind == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not head:
                step = 16 * 1024
                try:
                    for start in range(0, len(route.body), step):
                        chunk = route.body[start:start + step]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
            self.close_connection = True

    def _announce(self, route: Route) -> None:
        """200 headers promising the whole body; what follows depends on the route's misbehaviour."""
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()

    def _reply(self, status: int, body: bytes, content_type: str, *, head: bool):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client may stop reading early (e.g. a size cap): not a server error


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LocalServer


class LocalServer:
    """Threaded HTTP server bound to 127.0.0.1 on an ephemeral port; use as a context manager."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- routes ----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add_file(self, path: str, data: bytes, content_type: str | None = None) -> str:
        """Serve ``data`` with a Content-Length; the type defaults from the path's extension."""
        ext = path.rsplit(".", 1)[-1].lower()
        self.routes[path] = Route("file", data, content_type or CONTENT_TYPES.get(ext, "application/octet-stream"))
        return self.url(path)

    def add_html(self, path: str, html: str = "<!DOCTYPE html><html><head><title>Just a page</title>"
                 "</head><body><p>No media here.</p></body></html>") -> str:
        self.routes[path] = Route("html", html.encode(), "text/html; charset=utf-8")
        return self.url(path)

    def add_cut_off(self, path: str, data: bytes, *, send: int, content_type: str = "audio/mpeg") -> str:
        """Announce ``len(data)`` bytes, send only the first ``send``, then close the connection."""
        self.routes[path] = Route("cut_off", data, content_type, send=send)
        return self.url(path)

    def add_stall(self, path: str, data: bytes, content_type: str = "audio/mpeg") -> str:
        """Send headers, then nothing until the server closes (a read timeout on the client)."""
        self.routes[path] = Route("stall", data, content_type)
        return self.url(path)

    def add_drip(self, path: str, data: bytes, *, interval: float = 0.1, content_type: str = "audio/mpeg") -> str:
        """Announce ``len(data)`` bytes, then send one byte per ``interval`` (a slow-loris source)."""
        self.routes[path] = Route("drip", data, content_type, interval=interval)
        return self.url(path)

    def add_chunked(self, path: str, data: bytes, content_type: str = "audio/mpeg") -> str:
        """Serve ``data`` chunked, with no Content-Length (size unknown until the end)."""
        self.routes[path] = Route("chunked", data, content_type)
        return self.url(path)

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route("redirect", status=status, location=location)
        return self.url(path)

    def add_status(self, path: str, status: int) -> str:
        self.routes[path] = Route("status", status=status)
        return self.url(path)

    # -- observation -----------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests.append((handler.command, urlsplit(handler.path).path, dict(handler.headers)))
            self.bodies.append(body)

    def hits(self, path: str, method: str | None = None) -> int:
        """Requests that reached ``path`` (optionally only one method)."""
        with self._lock:
            return sum(1 for m, p, _ in self.requests if p == path and (method is None or m == method))
