"""A YoutubeDL that can only connect through the SSRF guard, and the limits every run has.

All of yt-dlp's HTTP traffic, redirects included, goes through one request handler whose sockets
are opened by ``urlguard.GuardedConnector``: every hop is checked after DNS resolution and before
connecting, and the connection goes to the checked address (no DNS-rebinding window). yt-dlp is
imported inside functions only.
"""
from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path

from ..config import Settings
from ..errors import SourceRefused, SourceUnavailable
from ..urlguard import GuardedConnector, RefusedConnection, check_url
from .rules import select_audio_format

# Network knobs: module constants (tests shorten them) rather than per-stage settings, because
# they bound a single download attempt and the worker's own timeout bounds the job.
SOCKET_TIMEOUT_SECONDS = 20.0
RETRIES = 2


class Collector:
    """yt-dlp logger: keeps errors and warnings for the failure message, debug goes nowhere."""

    def __init__(self):
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        if "max-filesize" in msg:
            self.errors.append(msg.strip())

    info = debug

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)


@functools.lru_cache(maxsize=1)
def _guarded_ydl_class():
    """Build (once) a YoutubeDL subclass whose only request handler goes through the guard."""
    import http.client
    import urllib.request

    from yt_dlp import YoutubeDL

    # yt-dlp's urllib handler is the one stack it ships without optional dependencies; we reuse
    # its response adapting and error mapping and replace how sockets are opened.
    from yt_dlp.networking._urllib import HTTPHandler, RedirectHandler, UrllibRH

    def make_connection(conn_class, source_address, connector, *args, **kwargs):
        conn = conn_class(*args, **kwargs)
        conn._create_connection = connector  # http.client's hook for opening the socket
        if source_address is not None:
            conn.source_address = (source_address, 0)
        return conn

    class GuardedHTTPHandler(HTTPHandler):
        def __init__(self, connector, **kwargs):
            super().__init__(**kwargs)
            self._connector = connector

        def http_open(self, req):
            req.headers.pop("Ytdl-socks-proxy", None)
            return self.do_open(functools.partial(
                make_connection, http.client.HTTPConnection, self._source_address, self._connector), req)

        def https_open(self, req):
            req.headers.pop("Ytdl-socks-proxy", None)
            return self.do_open(functools.partial(
                make_connection, http.client.HTTPSConnection, self._source_address, self._connector),
                req, context=self._context)

    class GuardedRedirectHandler(RedirectHandler):
        def __init__(self, connector: GuardedConnector):
            super().__init__()
            self._connector = connector

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            # Scheme, userinfo and port rules need the URL; the connector re-checks the address.
            try:
                check_url(newurl, self._connector.settings, field="url", resolver=self._connector.resolver)
            except SourceRefused as exc:
                refusal = SourceRefused(f"redirected to {exc.message}")
                self._connector.refuse(refusal)
                fp.close()
                raise RefusedConnection(refusal.message) from None
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    class GuardedUrllibRH(UrllibRH):
        _SUPPORTED_URL_SCHEMES = ("http", "https")
        _SUPPORTED_PROXY_SCHEMES = ()
        RH_NAME = "urllib (SSRF-guarded)"

        def __init__(self, *, connector: GuardedConnector, **kwargs):
            kwargs["enable_file_urls"] = False
            super().__init__(**kwargs)
            self.connector = connector

        def _get_proxies(self, request):
            return {}  # a proxy would make the connection on our behalf, past the guard

        def _check_proxies(self, proxies):
            return None

        def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
            opener = urllib.request.OpenerDirector()
            for handler in (
                GuardedHTTPHandler(
                    self.connector, debuglevel=0,
                    context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                    source_address=self.source_address),
                urllib.request.HTTPCookieProcessor(cookiejar),
                urllib.request.UnknownHandler(),
                urllib.request.HTTPDefaultErrorHandler(),
                urllib.request.HTTPErrorProcessor(),
                GuardedRedirectHandler(self.connector),
            ):
                opener.add_handler(handler)
            opener.addheaders = []
            return opener

    class GuardedYoutubeDL(YoutubeDL):
        def __init__(self, params, *, connector: GuardedConnector):
            self.connector = connector
            super().__init__(params)

        def build_request_director(self, handlers, preferences=None):
            # Whatever handlers are installed (requests, curl_cffi, websockets), use only ours.
            return super().build_request_director(
                [functools.partial(GuardedUrllibRH, connector=self.connector)], preferences)

    GuardedUrllibRH.RH_KEY = "Urllib"
    return GuardedYoutubeDL


def _writable_home(work_dir: str) -> None:
    # yt-dlp expands "~" for its defaults; on Lambda HOME is unset or read-only.
    home = os.environ.get("HOME")
    if not home or not os.access(home, os.W_OK):
        os.environ["HOME"] = work_dir


def _ydl_params(settings: Settings, collector: Collector, download_dir: Path | None,
                hooks: list) -> dict:
    from ..ffmpeg import ffmpeg_binary

    def format_selector(ctx):
        chosen = select_audio_format(list(ctx.get("formats") or []))
        if chosen is not None:
            yield chosen

    params = {
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "no_color": True,
        "logger": collector,
        "format": format_selector,
        "noplaylist": True,
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "extractor_retries": RETRIES,
        "file_access_retries": 1,
        "retry_sleep_functions": {},
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "max_filesize": settings.max_source_bytes,
        "allowed_extractors": [re.escape(e.lower()) for e in settings.allowed_extractors],
        "hls_prefer_native": True,
        "fixup": "never",
        "postprocessors": [],
        "writethumbnail": False,
        "writesubtitles": False,
        "writeinfojson": False,
        "check_formats": False,
        "continuedl": False,
        "overwrites": True,
        "restrictfilenames": True,
        "cachedir": str(Path(settings.work_dir) / "yt-dlp-cache"),
        "ffmpeg_location": ffmpeg_binary(),
        "progress_hooks": hooks,
        "proxy": "",
    }
    if download_dir is not None:
        params["paths"] = {"home": str(download_dir), "temp": str(download_dir)}
        params["outtmpl"] = {"default": "media.%(ext)s"}
    return params


def new_ydl(settings: Settings, collector: Collector, download_dir: Path | None = None,
             hooks: list | None = None):
    _writable_home(settings.work_dir)
    connector = GuardedConnector(settings)
    ydl = _guarded_ydl_class()(_ydl_params(settings, collector, download_dir, hooks or []),
                               connector=connector)
    return ydl, connector


class Deadline:
    """Wall-clock limit on everything one YoutubeDL does: a timer aborts its connections."""

    def __init__(self, connector: GuardedConnector, seconds: float, label: str, what: str):
        self.seconds, self.label, self.what = seconds, label, what
        self.fired = False
        self._connector = connector
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        self._connector.abort(f"deadline of {self.seconds:g} s reached")

    def error(self) -> SourceUnavailable:
        return SourceUnavailable(f"{self.label}: {self.what} did not finish within {self.seconds:g} s "
                                 "(the server is too slow)")

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._timer.cancel()
        # Whatever yt-dlp made of the cut connections, the reason is the deadline.
        if self.fired and exc is not None and not isinstance(exc, SourceRefused):
            raise self.error() from None
