"""SSRF guard: every address class, userinfo, ports, schemes; no DNS lookups (fake resolver)."""
from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

from chalicelib.config import Settings
from chalicelib.errors import SourceRefused
from chalicelib.urlguard import GuardedConnector, RefusedConnection, address_refusal, check_url

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def fake_resolver(table: dict[str, list[str]]):
    """A getaddrinfo stand-in: host -> addresses; literal IPs resolve to themselves."""
    calls = []

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        calls.append((host, port))
        try:
            addrs = [str(ipaddress.ip_address(host))]
        except ValueError:
            if host not in table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            addrs = table[host]
        out = []
        for a in addrs:
            if ":" in a:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    resolve.calls = calls
    return resolve


DEFAULT = Settings()
LOOPBACK_OK = Settings(allow_loopback_urls=True)


def refused(url, settings=DEFAULT, table=None, field="message_parts[0].url") -> SourceRefused:
    with pytest.raises(SourceRefused) as info:
        check_url(url, settings, field=field, resolver=fake_resolver(table or {}))
    assert info.value.field == field
    return info.value


def allowed(url, settings=DEFAULT, table=None) -> None:
    check_url(url, settings, field="f", resolver=fake_resolver(table or {}))


@pytest.mark.parametrize("addr, words", [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("fd00::1", "private"),
    ("169.254.169.254", "instance metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),  # limited broadcast lies in 240.0.0.0/4
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "instance metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:a9fe:a9fe::1", "instance metadata"),  # 6to4 wrapping 169.254.169.254
    ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
    ("fec0::1", "site-local"),
    ("192.0.2.10", "private"),  # TEST-NET-1, documentation only
    ("198.18.0.1", "private"),  # benchmarking range
])
def test_each_address_class_is_refused(addr, words):
    reason = address_refusal(ipaddress.ip_address(addr))
    assert reason and words in reason
    host = f"[{addr}]" if ":" in addr else addr
    err = refused(f"http://{host}/a.mp3")
    assert words in err.message
    assert err.code == "source_refused" and err.status == 400


@pytest.mark.parametrize("addr", [PUBLIC_V4, "8.8.8.8", PUBLIC_V6])
def test_public_addresses_pass(addr):
    assert address_refusal(ipaddress.ip_address(addr)) is None
    host = f"[{addr}]" if ":" in addr else addr
    allowed(f"https://{host}/a.mp3")


def test_hostname_is_checked_on_every_answer():
    table = {"mixed.example": [PUBLIC_V4, "10.1.2.3"], "good.example": [PUBLIC_V4, PUBLIC_V6]}
    err = refused("https://mixed.example/x.mp3", table=table)
    assert "mixed.example resolves to a private address" in err.message and "10.1.2.3" not in err.message
    allowed("https://good.example/x.mp3", table=table)


def test_metadata_hostname_refused_by_resolution():
    err = refused("http://metadata.internal/latest/", table={"metadata.internal": ["169.254.169.254"]})
    assert "instance metadata" in err.message


def test_unresolvable_host_is_refused():
    err = refused("https://no-such-host.invalid/a.mp3")
    assert "cannot resolve" in err.message and "no-such-host.invalid" in err.message


def test_loopback_only_with_setting_and_then_any_port():
    refused("http://127.0.0.1:8080/a.mp3")
    allowed("http://127.0.0.1:54321/a.mp3", LOOPBACK_OK)
    allowed("http://[::1]:54321/a.mp3", LOOPBACK_OK)
    allowed("http://localhost:54321/a.mp3", LOOPBACK_OK, {"localhost": ["127.0.0.1", "::1"]})
    # The setting opens loopback only, never the other private classes.
    assert "private" in refused("http://10.0.0.1/a.mp3", LOOPBACK_OK).message
    assert "instance metadata" in refused("http://169.254.169.254/", LOOPBACK_OK).message


def test_ports():
    table = {"cdn.example": [PUBLIC_V4]}
    allowed("http://cdn.example:80/a.mp3", table=table)
    allowed("https://cdn.example:443/a.mp3", table=table)
    err = refused("https://cdn.example:8443/a.mp3", table=table)
    assert "port 8443 is not allowed" in err.message
    refused("http://cdn.example:443/a.mp3", table=table)  # another scheme's default is not ours
    allowed("https://cdn.example:8443/a.mp3", Settings(allowed_url_ports=(8443,)), table)
    # A public host with a loopback-allowed setting still needs the port listed.
    refused("https://cdn.example:8443/a.mp3", LOOPBACK_OK, table)
    assert "malformed" in refused("https://cdn.example:99999/a.mp3", table=table).message


@pytest.mark.parametrize("url, words", [
    ("ftp://93.184.215.14/a.mp3", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://93.184.215.14/", "scheme 'gopher'"),
    ("data:audio/mp3;base64,AAAA", "scheme 'data'"),
    ("//93.184.215.14/a.mp3", "scheme '(none)'"),
    ("youtube.com/watch?v=x", "scheme '(none)'"),
    ("https://user:pw@93.184.215.14/a.mp3", "credentials"),
    ("https://user@93.184.215.14/a.mp3", "credentials"),
    ("http://127.0.0.1\\@93.184.215.14/", "credentials"),
    ("https:///a.mp3", "no host"),
    ("https://93.184.215.14/a b.mp3", "whitespace"),
    ("https://93.184.215.14/a\n.mp3", "control"),
    ("", "non-empty"),
])
def test_malformed_and_forbidden_urls(url, words):
    assert words in refused(url).message


def test_obfuscated_loopback_forms_are_caught_after_resolution():
    # Real getaddrinfo turns these into 127.0.0.1 without any DNS query (inet_aton forms).
    for host in ("2130706433", "0x7f.1", "127.1"):
        err = refused(f"http://{host}/", table={host: ["127.0.0.1"]})
        assert "loopback" in err.message


def test_message_names_url_and_field():
    err = refused("http://10.0.0.1/secret", field="webhook_url")
    assert err.field == "webhook_url"
    assert err.message.startswith("http://10.0.0.1/secret: ")


# -- the connection-level guard -------------------------------------------------------------


def test_connector_refuses_before_any_packet():
    """The refusal happens between resolution and connect(): nothing is sent anywhere."""
    connector = GuardedConnector(DEFAULT, resolver=fake_resolver({"rebind.example": ["10.0.0.1"]}))
    with pytest.raises(RefusedConnection):
        connector(("rebind.example", 80), 1)
    assert connector.connections == 0
    assert isinstance(connector.refusal, SourceRefused)
    assert "rebind.example resolves to a private address" in connector.refusal.message
    with pytest.raises(OSError):  # a RefusedConnection is an OSError for the HTTP stack
        connector(("169.254.169.254", 80), 1)
    # The first refusal is the one reported, by its rule: never the address an internal name resolves to.
    assert "rebind.example" in connector.refusal.message and "10.0.0.1" not in connector.refusal.message


def test_connector_connects_to_the_checked_address_only():
    """DNS rebinding: the connector never resolves twice, it dials the address it checked."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    resolver = fake_resolver({"app.local": ["127.0.0.1"]})
    connector = GuardedConnector(LOOPBACK_OK, resolver=resolver)
    sock = connector(("app.local", port), 5)
    try:
        assert sock.getpeername() == ("127.0.0.1", port)
        assert resolver.calls == [("app.local", port)]
        assert connector.connections == 1 and connector.refusal is None
    finally:
        sock.close()
        thread.join(5)
        for conn, _ in accepted:
            conn.close()
        server.close()


def test_connector_port_rule():
    table = {"cdn.example": [PUBLIC_V4]}
    connector = GuardedConnector(DEFAULT, resolver=fake_resolver(table))
    with pytest.raises(RefusedConnection):
        connector(("cdn.example", 6379), 1)
    assert "port 6379" in connector.refusal.message


# -- the opener for our own outgoing calls (webhooks) ---------------------------------------


def test_guarded_opener_posts_to_an_allowed_host_and_refuses_others():
    import urllib.error
    import urllib.request

    from chalicelib.urlguard import guarded_opener
    from tests.httpserver import LocalServer

    with LocalServer() as srv:
        srv.add_redirect("/moved", "http://127.0.0.1:1/elsewhere")
        opener = guarded_opener(LOOPBACK_OK)
        req = urllib.request.Request(srv.url("/hook"), data=b'{"ok": 1}', method="POST")
        with opener.open(req, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok"
        assert srv.bodies[-1] == b'{"ok": 1}' and opener.connector.connections == 1
        with pytest.raises(urllib.error.HTTPError) as info:  # redirects are not followed
            opener.open(srv.url("/moved"), timeout=5)
        assert info.value.code == 302
        assert srv.hits("/elsewhere") == 0

    strict = guarded_opener(DEFAULT, resolver=fake_resolver({"hooks.example": ["10.9.8.7"]}))
    with pytest.raises(urllib.error.URLError) as info:
        strict.open("http://hooks.example/x", data=b"{}", timeout=5)
    assert isinstance(info.value.reason, RefusedConnection)
    assert strict.connector.connections == 0
    assert "hooks.example resolves to a private address" in strict.connector.refusal.message


def test_connector_abort_cuts_open_connections_and_refuses_new_ones():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connector = GuardedConnector(LOOPBACK_OK)
    sock = connector(("127.0.0.1", port), 5)
    peer, _ = server.accept()
    try:
        connector.abort("deadline of 1 s reached")
        assert sock.recv(10) == b""  # shut down: the blocked reader sees end of stream
        with pytest.raises(ConnectionAbortedError, match="deadline"):
            connector(("127.0.0.1", port), 5)
        assert connector.connections == 1
    finally:
        sock.close()
        peer.close()
        server.close()


def test_connector_abort_during_connect_tries_no_further_address():
    """A deadline that fires while connecting ends the call: the host's other addresses (each
    worth a connect timeout) are not tried."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connector = GuardedConnector(LOOPBACK_OK, resolver=fake_resolver({"multi.example": ["127.0.0.1"] * 3}))

    class AbortWhenConnected:  # the lock taken right after connect(): abort() "ran meanwhile"
        def __enter__(self):
            connector.aborted = "deadline of 1 s reached"

        def __exit__(self, *exc):
            return False

    connector._lock = AbortWhenConnected()
    try:
        with pytest.raises(ConnectionAbortedError, match="deadline"):
            connector(("multi.example", port), 5)
        assert connector.connections == 1
    finally:
        server.close()


def test_connector_passes_a_temporary_dns_failure_through_unrecorded():
    def flaky(host, port, *args):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    connector = GuardedConnector(DEFAULT, resolver=flaky)
    with pytest.raises(socket.gaierror):
        connector(("cdn.example", 443), 1)
    assert connector.refusal is None  # not a refusal: the fetch may be retried
    missing = GuardedConnector(DEFAULT, resolver=fake_resolver({}))
    with pytest.raises(RefusedConnection):
        missing(("no-such.example", 443), 1)
    assert "cannot resolve" in missing.refusal.message
