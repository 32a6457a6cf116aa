"""Server-side request forgery guard for URL parts and webhooks.

Standard library only: the REST path runs ``check_url`` on a cold start to answer 400 early.

Two layers, one rule:
- ``check_url`` validates a URL up front (scheme, userinfo, port, every resolved address).
  It is an early, friendly refusal, not the enforcement: DNS may answer differently later.
- ``GuardedConnector`` is the enforcement. It resolves the host once, refuses the connection
  if any answer is forbidden, and then connects to exactly the checked addresses, so a DNS
  answer that changes between check and connect (rebinding) cannot reach a forbidden address.
  Every HTTP connection yt-dlp opens, redirects included, goes through it (see sources.py).
"""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import weakref
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from .config import Settings
from .errors import SourceRefused

Resolver = Callable[..., Sequence[tuple]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}

# Python's is_private/is_global do not cover these (3.11), so they are named explicitly.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address can deliver packets to (mapped, 6to4, Teredo, NAT64)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_refusal(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be contacted (e.g. ``"a private address"``), or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for inner in _embedded_ipv4(ip):
            reason = address_refusal(inner, allow_loopback=allow_loopback)
            if reason:
                return f"{reason} (embedded in IPv6 {ip})"
            if inner.is_loopback:
                # A mapped loopback (::ffff:127.0.0.1) is loopback for the policy too.
                return None
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        if str(ip) == "169.254.169.254":
            return "the link-local instance metadata address"
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT (shared) address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a special-purpose (non-global) address"
    return None


def _parse_ip(sockaddr_host: str) -> IPAddress:
    return ipaddress.ip_address(sockaddr_host.split("%", 1)[0])


def _resolve(host: str, port: int, resolver: Resolver | None) -> list[tuple]:
    # Looked up at call time (not bound as a default) so tests can swap socket.getaddrinfo.
    resolver = resolver or socket.getaddrinfo
    try:
        answers = list(resolver(host, port, 0, socket.SOCK_STREAM))
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise SourceRefused(f"cannot resolve host {host!r}: {exc}") from exc
    if not answers:
        raise SourceRefused(f"cannot resolve host {host!r}: no addresses")
    return answers


def check_addresses(host: str, port: int, answers: Sequence[tuple], settings: Settings,
                    *, default_port: int | None) -> None:
    """Refuse unless every resolved answer is allowed, and the port with it.

    ``answers`` are getaddrinfo tuples. Non-default ports need ``settings.allowed_url_ports``,
    except on loopback when loopback is allowed (tests and the local stack use ephemeral ports).
    """
    all_loopback = True
    for answer in answers:
        ip = _parse_ip(answer[4][0])
        reason = address_refusal(ip, allow_loopback=settings.allow_loopback_urls)
        if reason:
            if host.strip("[]") == str(ip):
                raise SourceRefused(f"{host} is {reason}")
            # The rule, not the address: what an internal name resolves to is not the caller's business.
            rule = reason.split(" (embedded in IPv6", 1)[0]
            raise SourceRefused(f"{host} resolves to {rule}; only public addresses may be fetched or called")
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        all_loopback = all_loopback and (ip.is_loopback or bool(mapped and mapped.is_loopback))
    if port == default_port or port in settings.allowed_url_ports:
        return
    if all_loopback and settings.allow_loopback_urls:
        return
    raise SourceRefused(f"port {port} is not allowed (only the scheme's default port)")


def check_url(url: str, settings: Settings, *, field: str,
              resolver: Resolver | None = None) -> None:
    """Refuse ``url`` with ``SourceRefused(field=field)`` unless it is safe to fetch.

    Rules: http/https only, no userinfo, the default port unless listed in
    ``settings.allowed_url_ports``, and every address the host resolves to must be public
    (loopback only with ``settings.allow_loopback_urls``). ``resolver`` has getaddrinfo's
    signature (default ``socket.getaddrinfo``); tests inject a fake one so no DNS lookup happens.
    """
    reason = url_refusal(url, settings, resolver=resolver)
    if reason:
        raise SourceRefused(f"{_short(url)}: {reason}", field=field)


def url_refusal(url: str, settings: Settings, *, resolver: Resolver | None = None) -> str | None:
    """Why ``url`` must not be fetched (``check_url``'s rules), or None; for callers that name
    the URL their own way."""
    try:
        _check_url(url, settings, resolver)
    except SourceRefused as exc:
        return exc.message
    return None


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "..."


def _check_url(url: str, settings: Settings, resolver: Resolver | None) -> None:
    if not isinstance(url, str) or not url:
        raise SourceRefused("URL must be a non-empty string")
    # Parsers disagree about control characters and whitespace; refusing them removes the
    # chance that we check one host while the fetcher connects to another.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise SourceRefused("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceRefused(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise SourceRefused(f"scheme {scheme or '(none)'!r} is not allowed (only http and https)")
    if "@" in parts.netloc or parts.username is not None:
        raise SourceRefused("credentials (user@host) in URLs are not allowed")
    if "\\" in parts.netloc:
        raise SourceRefused("backslash in the host part is not allowed")
    host = parts.hostname
    if not host:
        raise SourceRefused("URL has no host")
    default_port = DEFAULT_PORTS[scheme]
    port = default_port if port is None else port
    answers = _resolve(host, port, resolver)
    check_addresses(host, port, answers, settings, default_port=default_port)


class GuardedConnector:
    """A ``socket.create_connection`` replacement that enforces the address rule per connection.

    ``http.client.HTTPConnection._create_connection`` is swapped for an instance of this, so the
    check happens after resolution and before any packet is sent, on every hop. The first
    refusal is kept in ``refusal`` because callers above (urllib, yt-dlp) wrap the exception.
    ``abort`` cuts every open connection (a wall-clock deadline: a server dripping one byte at a
    time never trips a per-read socket timeout).
    """

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None):
        self.settings = settings
        self.resolver = resolver
        self.refusal: SourceRefused | None = None
        self.connections = 0
        self.aborted: str | None = None
        self._open: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def abort(self, reason: str) -> None:
        """Refuse new connections and shut down the open ones (safe from another thread)."""
        with self._lock:
            self.aborted = reason
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def refuse(self, exc: SourceRefused) -> None:
        """Remember the first refusal (the one the caller reports)."""
        if self.refusal is None:
            self.refusal = exc

    def __call__(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        host, port = address[0], int(address[1])
        if self.aborted:
            raise ConnectionAbortedError(self.aborted)
        try:
            answers = _resolve(host, port, self.resolver)
            # The port rule lives in check_url and the redirect check, which know the scheme;
            # here both default ports are accepted.
            default = port if port in DEFAULT_PORTS.values() else None
            check_addresses(host, port, answers, self.settings, default_port=default)
        except SourceRefused as exc:
            cause = exc.__cause__
            if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_AGAIN:
                raise cause from None  # a DNS hiccup, not a verdict on the host: the caller may retry
            self.refuse(exc)
            raise RefusedConnection(exc.message) from None
        last_error: OSError | None = None
        for family, socktype, proto, _canon, sockaddr in answers:
            if self.aborted:  # no further address once the deadline has fired
                raise ConnectionAbortedError(self.aborted)
            sock = socket.socket(family, socktype, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the checked address, never a second lookup
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            with self._lock:
                self.connections += 1
                self._open.add(sock)
                aborted = self.aborted
            if aborted:  # abort() ran while we were connecting
                sock.close()
                raise ConnectionAbortedError(aborted)
            return sock
        raise last_error or OSError(f"cannot connect to {host}:{port}")


class RefusedConnection(ConnectionRefusedError):
    """Raised inside the HTTP stack when the guard refuses a connection (an OSError on purpose:
    every HTTP library treats it as a failed connect and unwinds cleanly)."""


def guarded_opener(settings: Settings, *, resolver: Resolver | None = None):
    """A urllib opener for outgoing calls we make ourselves (webhooks): every connection goes
    through a ``GuardedConnector``, no proxy, and redirects are not followed (a 3xx is an
    ``HTTPError``). The connector is ``opener.connector``; its ``refusal`` says why a call failed.
    """
    # Imported here: urllib.request pulls in ssl/email/http.client, which the REST path's
    # up-front check never needs.
    import functools
    import http.client
    import urllib.request

    connector = GuardedConnector(settings, resolver=resolver)

    def make(conn_class, *args, **kwargs):
        conn = conn_class(*args, **kwargs)
        conn._create_connection = connector  # http.client's hook for opening the socket
        return conn

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(functools.partial(make, http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(functools.partial(make, http.client.HTTPSConnection), req,
                                context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (Http(), Https(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    opener.connector = connector
    return opener
