"""``aliak serve --tls-cert --tls-key``: HTTPS over real sockets, with a self-signed
certificate for 127.0.0.1 made here (no network). The handshake runs in the connection's
thread: a client that connects and says nothing, or speaks plain HTTP to the TLS port,
costs only its own connection.

Every socket has a timeout and every wait a deadline (``integrations._serving``), so a
server that hangs fails a test instead of stalling the suite.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aliak import AccessKey, RamUser
from aliak.cli._serve import _EchoServer, _RequestHandler, _tls_context
from aliak.integrations.requests import AliakAuth
from integrations._serving import SOCKET_TIMEOUT, ServerProcess, sqlite_store_with_key

OWNER = RamUser("1234567890123456", "tls")
LISTENING = r"aliak serve: listening on https://127\.0\.0\.1:(\d+)"


@dataclass
class Tls:
    cert: Path
    key: Path
    key_pem: bytes = field(repr=False)


def _self_signed(directory: Path, name: str = "server") -> Tls:
    """A self-signed P-256 certificate for IP 127.0.0.1, and its unencrypted key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aliak serve test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key_pem)
    return Tls(cert_path, key_path, key_pem)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return _self_signed(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


@pytest.fixture
def key(db: Path) -> tuple[str, str]:
    return sqlite_store_with_key(db, OWNER)


@pytest.fixture
def server(db: Path, key: tuple[str, str], tls: Tls) -> Iterator[ServerProcess]:
    """``aliak serve`` over HTTPS on 127.0.0.1; required to stop cleanly, no traceback."""
    process = ServerProcess(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0",
         "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
        LISTENING,
        cwd=db.parent,
    )  # fmt: skip
    try:
        yield process
        assert process.stop() == 0, process.output
        assert "Traceback" not in process.output, process.output
    finally:
        process.kill()
        assert process.process.stderr is not None
        process.process.stderr.close()


def _get(server: ServerProcess, tls: Tls, **options: Any) -> requests.Response:
    options.setdefault("timeout", SOCKET_TIMEOUT)
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment for 127.0.0.1
        return session.get(
            f"https://127.0.0.1:{server.port}/things",
            params={"RegionId": "cn-hangzhou"},
            verify=str(tls.cert),
            allow_redirects=False,
            **options,
        )


def _assert_refused_unsigned(response: requests.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    answer = response.json()
    assert {"Code", "Message", "RequestId"} <= answer.keys(), answer


def test_unsigned_https_get_is_answered_with_the_alibaba_refusal(
    server: ServerProcess, tls: Tls
) -> None:
    _assert_refused_unsigned(_get(server, tls))


def test_signed_https_get_is_verified(
    server: ServerProcess, tls: Tls, key: tuple[str, str]
) -> None:
    access_key_id, secret = key
    auth = AliakAuth(
        AccessKey(access_key_id, secret), action="DescribeThings", version="2024-01-01"
    )
    response = _get(server, tls, auth=auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["AccessKeyId"] == access_key_id
    assert answer["Principal"] == {"AccountId": OWNER.account_id, "UserName": OWNER.name}
    assert (answer["Action"], answer["BodyLength"]) == ("DescribeThings", 0)


def test_plain_http_to_the_tls_port_is_closed_and_the_server_keeps_serving(
    server: ServerProcess, tls: Tls
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as plain:
        plain.sendall(b"GET /things HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = b""
        try:
            while chunk := plain.recv(4096):  # until the server closes (a timeout fails)
                received += chunk
        except ConnectionResetError:
            pass  # closed with the request unread: a reset, as good as a close here
    assert not received.startswith(b"HTTP/"), received  # no HTTP answer, only TLS at most
    _assert_refused_unsigned(_get(server, tls))


def test_a_silent_client_does_not_stall_another(server: ServerProcess, tls: Tls) -> None:
    # Accepted first (the backlog is FIFO), it never sends a ClientHello: a handshake in
    # the accepting thread would hold every later connection for the 30 s socket timeout.
    with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT):
        response = _get(server, tls, timeout=SOCKET_TIMEOUT / 2)
        _assert_refused_unsigned(response)
        # Answered while the silent connection was still open.


def test_a_failed_handshake_is_logged_without_a_traceback(
    server: ServerProcess, tls: Tls, tmp_path: Path
) -> None:
    # A client that does not trust the certificate aborts the handshake.
    other = _self_signed(tmp_path, "other")
    with pytest.raises(requests.exceptions.SSLError):
        _get(server, other)
    _assert_refused_unsigned(_get(server, tls))
    assert "TLS handshake with 127.0.0.1 failed" in server.output, server.output


def _run_serve(db: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0", *options],
        cwd=db.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("given", ["--tls-cert", "--tls-key"])
def test_one_tls_option_without_the_other_is_a_usage_error(
    db: Path, key: tuple[str, str], tls: Tls, given: str
) -> None:
    result = _run_serve(db, given, str(tls.cert if given == "--tls-cert" else tls.key))
    assert result.returncode == 2, result
    assert "usage: aliak" in result.stderr
    assert "--tls-cert and --tls-key go together" in result.stderr


def test_a_missing_certificate_file_is_named(db: Path, key: tuple[str, str], tls: Tls) -> None:
    missing = db.parent / "missing.crt"
    result = _run_serve(db, "--tls-cert", str(missing), "--tls-key", str(tls.key))
    assert result.returncode == 1, result
    assert f"error: cannot read the TLS certificate {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_key_is_named_and_never_shown(
    db: Path, key: tuple[str, str], tls: Tls, tmp_path: Path
) -> None:
    not_pem = tmp_path / "not.key"
    not_pem.write_bytes(b"secret-material-not-a-pem-key\n")
    result = _run_serve(db, "--tls-cert", str(tls.cert), "--tls-key", str(not_pem))
    assert result.returncode == 1, result
    assert f"error: the TLS key {not_pem} is not PEM" in result.stderr
    assert "secret-material" not in result.stderr

    other = _self_signed(tmp_path, "other")
    result = _run_serve(db, "--tls-cert", str(tls.cert), "--tls-key", str(other.key))
    assert result.returncode == 1, result
    assert f"{tls.cert}" in result.stderr
    assert f"{other.key}" in result.stderr
    assert "the key does not match the certificate" in result.stderr
    assert "PRIVATE KEY" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_encrypted_key_is_refused_without_a_prompt(
    db: Path, key: tuple[str, str], tls: Tls, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.key"
    private = serialization.load_pem_private_key(tls.key_pem, password=None)
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    result = _run_serve(db, "--tls-cert", str(tls.cert), "--tls-key", str(encrypted))
    assert result.returncode == 1, result
    assert f"error: the TLS key {encrypted} is encrypted" in result.stderr


def test_wsgi_apps_behind_tls_see_the_https_scheme(tls: Tls) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with _EchoServer(("127.0.0.1", 0), _RequestHandler) as echo:
        echo.set_app(app)
        echo.ssl_context = _tls_context(str(tls.cert), str(tls.key))
        worker = threading.Thread(target=echo.serve_forever, args=(0.05,), daemon=True)
        worker.start()
        try:
            with requests.Session() as session:
                session.trust_env = False
                response = session.get(
                    f"https://127.0.0.1:{echo.server_port}/",
                    verify=str(tls.cert),
                    timeout=SOCKET_TIMEOUT,
                )
        finally:
            echo.shutdown()
            worker.join(timeout=SOCKET_TIMEOUT)
    assert (response.status_code, response.content) == (200, b"ok")
    assert seen["wsgi.url_scheme"] == "https"
    assert seen["HTTPS"] == "on"
