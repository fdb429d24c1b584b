"""API key sources, the loopback rule, Bearer matching, and the body-size bound."""

import asyncio

import pytest

from metarag.serve.security import (
    BodyLimit,
    SecurityError,
    check_bind,
    is_loopback,
    key_matches,
    read_api_key,
    trusted_hosts,
)

KEY = "k" * 20


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.5.0.1", True),
                                           ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False),
                                           ("::", False), ("192.168.1.4", False),
                                           ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_key_is_required_off_loopback_and_with_require_key():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", KEY)
    with pytest.raises(SecurityError, match="0.0.0.0 accepts connections from other machines"):
        check_bind("0.0.0.0", None)
    with pytest.raises(SecurityError, match="--require-key"):
        check_bind("127.0.0.1", None, require_key=True)


def test_the_key_comes_from_an_env_var_or_a_file(tmp_path, monkeypatch):
    assert read_api_key() is None
    monkeypatch.setenv("SERVE_TEST_KEY", f"  {KEY}\n")
    assert read_api_key(env="SERVE_TEST_KEY") == KEY
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    assert read_api_key(file=path) == KEY
    with pytest.raises(SecurityError, match="not both"):
        read_api_key(env="SERVE_TEST_KEY", file=path)
    with pytest.raises(SecurityError, match="not set"):
        read_api_key(env="SERVE_TEST_NO_SUCH_KEY")
    with pytest.raises(SecurityError, match="cannot read"):
        read_api_key(file=tmp_path / "missing")
    path.write_text("short")
    with pytest.raises(SecurityError, match="at least 16"):
        read_api_key(file=path)


def test_key_matches_only_the_exact_bearer_token():
    assert key_matches(f"Bearer {KEY}", KEY) and key_matches(f"bearer {KEY}", KEY)
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "):
        assert not key_matches(header, KEY)


def _call(limit, headers, chunks):
    """Run BodyLimit over an app that echoes the body length; returns (status, body)."""
    sent, seen = [], {}

    async def app(scope, receive, send):
        message = await receive()
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    asyncio.run(BodyLimit(app, limit)(scope, receive, send))
    return sent[0]["status"], seen.get("body")


def test_bodies_over_the_limit_get_413_declared_or_chunked():
    assert _call(10, [(b"content-length", b"5")], [b"12345"]) == (200, b"12345")
    assert _call(10, [(b"content-length", b"11")], [b"x" * 11]) == (413, None)
    assert _call(10, [(b"content-length", b"-1")], [b""]) == (413, None)
    assert _call(10, [], [b"x" * 6, b"y" * 4]) == (200, b"x" * 6 + b"y" * 4)
    assert _call(10, [], [b"x" * 6, b"y" * 5]) == (413, None)


def test_trusted_hosts_name_loopback_as_clients_send_it():
    hosts = trusted_hosts("::1")
    assert "[::1]" in hosts and "localhost" in hosts and "127.0.0.1" in hosts
    assert "127.0.0.2" in trusted_hosts("127.0.0.2")
    assert trusted_hosts("0.0.0.0") is None and trusted_hosts("example.org") is None
