"""The stores ``aliak`` opens: ``--db`` as a SQLite path or a PostgreSQL DSN, and Redis
for the replay guard (``$ALIAK_NONCES``), with the failures an operator meets -- an
unreachable server, a refused login, a schema never migrated, a missing master key --
each a one-line error that never holds a password.

The PostgreSQL and Redis tests need the servers ``.ci/services`` starts
(``ALIAK_TEST_POSTGRES_DSN``, ``ALIAK_TEST_REDIS_URL``) and are skipped only when those
are unset; the failure tests need no server (a closed port, a fake one on loopback).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import pytest

from aliak import AccessKey, Request, Signer
from aliak.cli import main
from aliak.cli._store import redact_url
from aliak.keys import KeyManager
from aliak.model import RamUser
from aliak.sealing import MasterKeyring

ACCOUNT = "1234567890123456"
POSTGRES_DSN = "ALIAK_TEST_POSTGRES_DSN"
REDIS_URL = "ALIAK_TEST_REDIS_URL"
PASSWORD = "s3cr3t@p/ss:w0rd"  # every character a URL parser may trip on
ENCODED_PASSWORD = quote(PASSWORD, safe="")


@pytest.fixture(autouse=True)
def _no_aliak_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ALIAK_") and not name.startswith("ALIAK_TEST_"):
            monkeypatch.delenv(name)


def _leaks(text: str) -> list[str]:
    """The forms of :data:`PASSWORD` (or any part that identifies it) found in ``text``."""
    return [form for form in (PASSWORD, ENCODED_PASSWORD, "s3cr3t", "w0rd") if form in text]


# -- redact_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:secret@h:5432/db?sslmode=require", "postgres://u:***@h:5432/db?sslmode=require"),
        (f"postgresql://aliak:{ENCODED_PASSWORD}@127.0.0.1:1/aliak", "postgresql://aliak:***@127.0.0.1:1/aliak"),
        # A password with unescaped '@', '/' and ':': everything before the last '@' is hidden.
        (f"postgresql://aliak:{PASSWORD}@db.internal/aliak", "postgresql://aliak:***@db.internal/aliak"),
        ("postgresql://h/db?user=u&password=secret&sslmode=verify-full", "postgresql://h/db?user=u&password=***&sslmode=verify-full"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:secret@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///run/redis.sock?password=secret&db=0", "unix:///run/redis.sock?password=***&db=0"),
        ("aliak.db", "aliak.db"),
        ("/var/lib/aliak/store.db", "/var/lib/aliak/store.db"),
    ],
)  # fmt: skip
def test_redact_url_hides_the_password_and_keeps_where(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "redis", "rediss"])
def test_redact_url_never_shows_a_password_whatever_it_holds(scheme: str) -> None:
    for password in [PASSWORD, "a@b@c", "p#frag", "p?q=1", "%2F%40", "::", secrets.token_hex(8)]:
        for form in (password, quote(password, safe="")):
            for url in (
                f"{scheme}://user:{form}@host:1/db",
                f"{scheme}://:{form}@host",
                f"{scheme}://host/db?sslmode=disable&password={form}",
            ):
                shown = redact_url(url)
                assert form not in shown.replace("user", "").replace("host", ""), (url, shown)
                assert "***" in shown


# -- in-process runs ---------------------------------------------------------------------------


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


Aliak = Callable[..., Result]


@pytest.fixture
def aliak(capsys: pytest.CaptureFixture[str]) -> Aliak:
    """``aliak ARGS`` in this process: exit status, stdout and stderr."""

    def run(*args: str, stdin: str | None = None) -> Result:
        capsys.readouterr()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            sys.stdin = saved
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    return run


def run_process(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m aliak ARGS``, with no ALIAK_ variable but ``env``."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("ALIAK_")
    }
    completed = subprocess.run(
        [sys.executable, "-m", "aliak", *args],
        cwd=directory,
        capture_output=True,
        env={**environment, **(env or {})},
        timeout=60,
        check=False,
    )
    result = subprocess.CompletedProcess(
        completed.args, completed.returncode, completed.stdout.decode(), completed.stderr.decode()
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def raw_http(signed: Request) -> bytes:
    query = urlencode(signed.query, quote_via=quote)
    lines = [f"{signed.method} {signed.path}{'?' + query if query else ''} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    assert isinstance(signed.body, bytes)
    lines.append(f"Content-Length: {len(signed.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + signed.body


def signed_capture(path: Path, key: dict[str, str]) -> Path:
    """A request signed now with a key ``keys create --json`` printed."""
    signer = Signer(AccessKey(key["AccessKeyId"], key["AccessKeySecret"]))
    request = Request("POST", host="api.example.com", path="/v1/items", body=b'{"a":1}')
    path.write_bytes(raw_http(signer.sign(request, action="Run", version="2024-01-01")))
    return path


# -- failures that need no server ----------------------------------------------------------


CLOSED_PORT = 1  # nothing listens on loopback port 1: connections are refused at once


def test_an_unreachable_postgres_is_one_line_exit_1_without_the_password(
    tmp_path: Path,
) -> None:
    dsn = f"postgresql://aliak:{ENCODED_PASSWORD}@127.0.0.1:{CLOSED_PORT}/aliak"
    keyring = MasterKeyring.generate().to_text()
    for command in (
        ["keys", "create", "--account", ACCOUNT, "--user", "alice"],
        ["keys", "list", "--account", ACCOUNT],
        ["audit"],
        ["master-key", "rotate", "--keyring-out", str(tmp_path / "new.keyring")],
    ):
        result = run_process(tmp_path, "--db", dsn, *command, env={"ALIAK_MASTER_KEY": keyring})
        assert result.returncode == 1, command
        assert result.stderr.startswith("error: cannot open the PostgreSQL store"), result.stderr
        assert "postgresql://aliak:***@127.0.0.1:1/aliak" in result.stderr
        assert "127.0.0.1" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert _leaks(result.stdout + result.stderr) == []
        assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no SQLite file, no keyring


def test_a_postgres_dsn_without_the_master_key_says_where_it_comes_from(
    aliak: Aliak, tmp_path: Path
) -> None:
    dsn = f"postgresql://aliak:{ENCODED_PASSWORD}@127.0.0.1:{CLOSED_PORT}/aliak"
    for command in (
        ["keys", "create", "--account", ACCOUNT],
        ["keys", "list", "--account", ACCOUNT],
    ):
        result = aliak("--db", dsn, *command)
        assert result.code == 1
        assert "needs its master key: set ALIAK_MASTER_KEY" in result.err
        assert "aliak master-key generate" in result.err
        assert _leaks(result.err) == []


class FakePostgres:
    """A PostgreSQL server on loopback that refuses every login as a wrong password, and,
    as a hostile or careless server might, quotes the password it received."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.passwords: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError, struct.error):
                self._session(connection)

    @staticmethod
    def _read(connection: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _session(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        while True:
            length, code = struct.unpack("!ii", self._read(connection, 8))
            self._read(connection, length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                connection.sendall(b"N")
                continue
            break  # the StartupMessage
        connection.sendall(b"R" + struct.pack("!ii", 8, 3))  # send the password in clear
        self._read(connection, 1)
        (length,) = struct.unpack("!i", self._read(connection, 4))
        password = self._read(connection, length - 4).rstrip(b"\0")
        self.passwords.append(password)
        message = b'password authentication failed for user "aliak" (got "' + password + b'")'
        fields = b"SFATAL\0VFATAL\0C28P01\0M" + message + b"\0\0"
        connection.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)


@pytest.fixture
def fake_postgres() -> Iterator[FakePostgres]:
    server = FakePostgres()
    yield server
    server.close()


def test_a_wrong_password_is_reported_without_the_password_even_when_the_server_echoes_it(
    aliak: Aliak, fake_postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_MASTER_KEY", MasterKeyring.generate().to_text())
    dsn = f"postgresql://aliak:{ENCODED_PASSWORD}@127.0.0.1:{fake_postgres.port}/aliak"
    for command in (
        ["keys", "create", "--account", ACCOUNT],
        ["keys", "list", "--account", ACCOUNT],
    ):
        result = aliak("--db", dsn, *command)
        assert result.code == 1
        assert "password authentication failed" in result.err, result.err
        assert f"postgresql://aliak:***@127.0.0.1:{fake_postgres.port}/aliak" in result.err
        assert len(result.err.splitlines()) == 1
        assert _leaks(result.out + result.err) == []
    assert PASSWORD.encode() in fake_postgres.passwords  # the server did get (and echo) it


def test_a_dsn_with_a_user_and_no_password_keeps_the_user_in_every_message(
    aliak: Aliak, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_MASTER_KEY", MasterKeyring.generate().to_text())
    dsn = f"postgresql://aliak@127.0.0.1:{CLOSED_PORT}/aliak"
    for command in (["keys", "list", "--account", ACCOUNT], ["audit"]):
        result = aliak("--db", dsn, *command)
        assert result.code == 1, command
        assert result.err.startswith(f"error: cannot open the PostgreSQL store {dsn}: "), result.err
        assert "(database aliak)" in result.err  # the driver's words, kept whole too
        assert "***" not in result.err  # a user name is not a password


# Passwords that are common words, or URL-encoded: each is hidden where it is the password
# (the DSN's password field, the server's echo of it), and every other word is kept.
@pytest.mark.parametrize("form", ["aliak", "postgres", "p%40ss", ENCODED_PASSWORD])
def test_a_password_is_redacted_where_it_is_the_password_however_common_or_encoded(
    aliak: Aliak,
    fake_postgres: FakePostgres,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    monkeypatch.setenv("ALIAK_MASTER_KEY", MasterKeyring.generate().to_text())
    password = unquote(form)
    result = aliak(
        "--db", f"postgresql://aliak:{form}@127.0.0.1:{fake_postgres.port}/aliak",
        "keys", "list", "--account", ACCOUNT,
    )  # fmt: skip
    assert result.code == 1
    assert result.err.startswith(
        f"error: cannot open the PostgreSQL store postgresql://aliak:***@127.0.0.1:"
        f"{fake_postgres.port}/aliak: "
    ), result.err
    assert '(got "***")' in result.err, result.err  # the server's echo, scrubbed
    assert password.encode() in fake_postgres.passwords  # the server did get (and echo) it
    if password not in ("aliak", "postgres"):  # a common word is also the user, the scheme
        assert password not in result.err
        assert form not in result.err


def test_a_password_from_pgpassword_is_never_shown_even_when_the_server_echoes_it(
    aliak: Aliak, fake_postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_MASTER_KEY", MasterKeyring.generate().to_text())
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq sends it when the DSN has none
    dsn = f"postgresql://aliak@127.0.0.1:{fake_postgres.port}/aliak"
    result = aliak("--db", dsn, "keys", "list", "--account", ACCOUNT)
    assert result.code == 1
    assert result.err.startswith(f"error: cannot open the PostgreSQL store {dsn}: "), result.err
    assert '(got "***")' in result.err, result.err
    assert _leaks(result.err) == []
    assert PASSWORD.encode() in fake_postgres.passwords


def test_nonces_in_an_unreachable_redis_fail_verification_closed_but_never_administration(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "aliak.db")
    dead_redis = {"ALIAK_NONCES": f"redis://:{ENCODED_PASSWORD}@127.0.0.1:{CLOSED_PORT}/0"}
    created = run_process(
        tmp_path, "--db", db, "keys", "create", "--account", ACCOUNT, "--user", "alice",
        "--json", env=dead_redis,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr  # a Redis outage never stops administration
    key = json.loads(created.stdout)
    assert (
        run_process(
            tmp_path, "--db", db, "keys", "disable", key["AccessKeyId"], env=dead_redis
        ).returncode
        == 0
    )
    assert (
        run_process(
            tmp_path, "--db", db, "keys", "enable", key["AccessKeyId"], env=dead_redis
        ).returncode
        == 0
    )
    capture = signed_capture(tmp_path / "r.http", key)
    refused = run_process(tmp_path, "--db", db, "verify", str(capture), env=dead_redis)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "error: cannot use the Redis nonce store redis://:***@127.0.0.1:1/0"
    )
    assert len(refused.stderr.splitlines()) == 1
    assert _leaks(refused.stdout + refused.stderr) == []
    not_redis = run_process(
        tmp_path, "--db", db, "verify", str(capture),
        env={"ALIAK_NONCES": f"http://u:{ENCODED_PASSWORD}@127.0.0.1/"},
    )  # fmt: skip
    assert not_redis.returncode == 1
    assert "ALIAK_NONCES must be a Redis URL" in not_redis.stderr
    assert _leaks(not_redis.stderr) == []
    # Nothing was claimed anywhere: the capture still verifies once, in SQLite.
    assert run_process(tmp_path, "--db", db, "verify", str(capture)).returncode == 0


def test_audit_claims_no_nonce_and_ignores_an_unreachable_redis_like_administration(
    tmp_path: Path,
) -> None:
    from aliak import SQLiteRequestLog

    db = tmp_path / "aliak.db"
    created = run_process(
        tmp_path, "--db", str(db), "keys", "create", "--account", ACCOUNT, "--user", "alice"
    )
    assert created.returncode == 0, created.stderr
    SQLiteRequestLog(db).close()  # an empty request log in the store's file
    dead_redis = {"ALIAK_NONCES": f"redis://:{ENCODED_PASSWORD}@127.0.0.1:{CLOSED_PORT}/0"}
    trail = run_process(
        tmp_path, "--db", str(db), "audit", "--limit", "1", "--json", env=dead_redis
    )
    assert trail.returncode == 0, trail.stderr
    assert [event["Action"] for event in json.loads(trail.stdout)] == ["CreateAccessKey"]
    requests = run_process(
        tmp_path, "--db", str(db), "audit", "--requests", "--limit", "1", "--json", env=dead_redis
    )
    assert requests.returncode == 0, requests.stderr
    assert json.loads(requests.stdout) == []


def test_a_refused_nonce_url_creates_no_store(
    aliak: Aliak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_NONCES", "memcached://127.0.0.1:11211")
    result = aliak("--db", str(tmp_path / "new.db"), "verify", str(tmp_path / "none.http"))
    assert result.code == 1
    assert list(tmp_path.iterdir()) == []


# -- Redis nonces over a SQLite store -------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_URL)
    if not url:
        pytest.skip(f"set {REDIS_URL} to test against a Redis server")
    return url


def test_verify_claims_its_nonces_in_redis_when_aliak_nonces_is_set(
    tmp_path: Path, redis_url: str
) -> None:
    db = str(tmp_path / "aliak.db")
    nonces = {"ALIAK_NONCES": redis_url}
    created = run_process(
        tmp_path, "--db", db, "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json"
    )
    key = json.loads(created.stdout)
    capture = signed_capture(tmp_path / "r.http", key)
    first = run_process(tmp_path, "--db", db, "verify", str(capture), "--json", env=nonces)
    assert first.returncode == 0, first.stdout + first.stderr
    replay = run_process(tmp_path, "--db", db, "verify", str(capture), "--json", env=nonces)
    assert replay.returncode == 1
    assert json.loads(replay.stdout)["Code"] == "SignatureNonceUsed"
    # The claims were Redis's: the SQLite store alone has never seen this nonce.
    alone = run_process(tmp_path, "--db", db, "verify", str(capture), "--json")
    assert alone.returncode == 0, alone.stdout + alone.stderr


# -- PostgreSQL ------------------------------------------------------------------------------


def _with_password(dsn: str, password: str) -> str:
    """The DSN with ``password`` (URL-encoded) added to its user; the test server trusts
    every login, so the password is only there to be kept out of messages."""
    parts = urlsplit(dsn)
    user = parts.username or "aliak"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


class Postgres:
    """A throwaway schema on the test server, the DSN (with a password) and the keyring."""

    def __init__(self, dsn: str) -> None:
        self.plain_dsn = dsn
        self.dsn = _with_password(dsn, PASSWORD)
        self.schema = f"aliak_cli_{secrets.token_hex(6)}"
        self.keyring = MasterKeyring.generate().to_text()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ALIAK_DB": self.dsn,
            "ALIAK_POSTGRES_SCHEMA": self.schema,
            "ALIAK_MASTER_KEY": self.keyring,
            **extra,
        }

    def drop(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.plain_dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    dsn = os.environ.get(POSTGRES_DSN)
    if not dsn:
        pytest.skip(f"set {POSTGRES_DSN} to test against a PostgreSQL server")
    server = Postgres(dsn)
    yield server
    server.drop()


def test_a_postgres_store_is_created_by_creating_commands_and_refused_unmigrated_to_readers(
    tmp_path: Path, postgres: Postgres
) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_process(tmp_path, *args, env=postgres.env(**env))

    for reader in (["keys", "list", "--account", ACCOUNT], ["audit"], ["keys", "show", "LTAIx"]):
        missing = run(*reader)
        assert missing.returncode == 1, reader
        assert missing.stderr.startswith("error: missing schema:"), missing.stderr
        assert repr(postgres.schema) in missing.stderr
        assert "aliak keys create" in missing.stderr
        assert ":***@127.0.0.1" in missing.stderr
        assert _leaks(missing.stderr) == []
        assert len(missing.stderr.splitlines()) == 1

    created = run(
        "--actor", "ops:pg", "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    run("keys", "create", "--account", ACCOUNT, "--json")  # a root key
    for command in (
        ["--actor", "ops:pg", "acl", "set", "--account", ACCOUNT, "--public", "192.0.2.0/24"],
        ["--actor", "ops:pg", "roles", "create", "--account", ACCOUNT, "--name", "Deployer",
         "--trust", f"acs:ram::{ACCOUNT}:user/alice"],
    ):  # fmt: skip
        result = run(*command)
        assert result.returncode == 0, result.stderr
    listed = json.loads(run("keys", "list", "--account", ACCOUNT, "--json").stdout)
    assert [entry["UserPrincipalName"] for entry in listed] == [ACCOUNT, f"alice@{ACCOUNT}"]
    events = json.loads(run("audit", "--json").stdout)
    by_ops = [event["Action"] for event in events if event["Actor"] == "ops:pg"]
    assert by_ops == ["CreateRole", "SetNetworkPolicy", "CreateAccessKey"], by_ops  # newest first
    oldest = json.loads(run("audit", "--json", "--order", "oldest").stdout)
    assert oldest == events[::-1]
    newest_two = json.loads(run("audit", "--json", "--limit", "2", "--order", "oldest").stdout)
    assert newest_two == events[1::-1]

    found = run("keys", "find-owner", key["AccessKeyId"], "--json")
    assert json.loads(found.stdout)["Store"] == redact_url(postgres.dsn)
    assert _leaks(found.stdout + found.stderr) == []

    capture = signed_capture(tmp_path / "r.http", key)
    verified = run("verify", str(capture), "--json", "--source-ip", "192.0.2.9")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["AccessKeyId"] == key["AccessKeyId"]
    replay = run("verify", str(capture), "--json", "--source-ip", "192.0.2.9")
    assert json.loads(replay.stdout)["Code"] == "SignatureNonceUsed"

    # Another master key than the fleet's: refused, with no key material and no password.
    other = MasterKeyring.generate().to_text()
    wrong = run("keys", "list", "--account", ACCOUNT, ALIAK_MASTER_KEY=other)
    assert wrong.returncode == 1
    assert "MasterKey" in wrong.stderr
    assert _leaks(wrong.stderr) == []
    for text in (other, postgres.keyring):
        for line in text.split():
            assert line.split(":", 1)[1] not in wrong.stderr
    assert key["AccessKeySecret"] not in "".join(
        result.stdout + result.stderr for result in (verified, replay, wrong)
    )


def test_a_missing_schema_is_reported_with_the_schema_and_the_dsn_as_they_are(
    tmp_path: Path, postgres: Postgres
) -> None:
    expected = (
        "error: missing schema: no current aliak tables in schema {schema!r} of {dsn} "
        "(ALIAK_POSTGRES_SCHEMA names another); run `aliak keys create` (or any command "
        "that creates) once to make or upgrade them\n"
    )
    user_only = postgres.plain_dsn  # postgresql://aliak@127.0.0.1:PORT/aliak
    # The test server trusts every login: a password that is a common word is accepted.
    common_word = _with_password(user_only, "aliak")
    for dsn, shown in ((user_only, user_only), (common_word, redact_url(common_word))):
        missing = run_process(
            tmp_path, "keys", "list", "--account", ACCOUNT, env=postgres.env(ALIAK_DB=dsn)
        )
        assert missing.returncode == 1
        assert missing.stderr == expected.format(schema=postgres.schema, dsn=shown)
    assert ":***@127.0.0.1" in redact_url(common_word)


def test_master_key_rotate_on_postgres_writes_the_fleet_keyring_to_keyring_out(
    tmp_path: Path, postgres: Postgres
) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_process(tmp_path, *args, env=postgres.env(**env))

    key = json.loads(
        run("keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").stdout
    )
    refused = run("master-key", "rotate")
    assert refused.returncode == 1
    assert "--keyring-out" in refused.stderr
    out = tmp_path / "fleet.keyring"
    rotated = run(
        "--actor", "ops:rotate", "master-key", "rotate", "--keyring-out", str(out), "--json"
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {
        "Resealed": 1,
        "CurrentVersion": 2,
        "KeyringFile": str(out),
        "KeyringSource": "ALIAK_MASTER_KEY",
    }
    assert out.stat().st_mode & 0o777 == 0o600
    new_keyring = out.read_text()
    for line in new_keyring.split():
        assert line.split(":", 1)[1] not in rotated.stdout + rotated.stderr
    stale = run("keys", "list", "--account", ACCOUNT)
    assert stale.returncode == 1
    assert "lacks version 2" in stale.stderr
    capture = signed_capture(tmp_path / "r.http", key)
    verified = run("verify", str(capture), ALIAK_MASTER_KEY=new_keyring)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = json.loads(run("audit", "--json", ALIAK_MASTER_KEY=new_keyring).stdout)
    rotation = [event for event in events if event["Action"] == "RotateMasterKey"]
    assert [(event["Actor"], event["Detail"]) for event in rotation] == [
        ("ops:rotate", "version 2; 1 secrets re-sealed")
    ]


def test_audit_on_postgres_is_newest_first_with_the_newest_limit_and_inclusive_bounds(
    tmp_path: Path, postgres: Postgres
) -> None:
    def audited(*args: str) -> list[str]:
        result = run_process(tmp_path, "audit", "--json", *args, env=postgres.env())
        assert result.returncode == 0, result.stderr
        return [event["AccessKeyId"] for event in json.loads(result.stdout)]

    from aliak.storage.postgres import PostgresStore  # psycopg: only with a server

    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    times = [start + timedelta(minutes=minutes) for minutes in (0, 1, 2, 3, 3)]
    store = PostgresStore(postgres.plain_dsn, schema=postgres.schema, master_key=postgres.keyring)
    try:
        ids = [
            KeyManager(store, clock=at.timestamp)
            .create_access_key(RamUser(ACCOUNT, f"u{index}"))
            .access_key_id
            for index, at in enumerate(times)
        ]
    finally:
        store.close()
    assert audited() == ids[::-1]
    assert audited("--order", "oldest") == ids
    assert audited("--limit", "2") == [ids[4], ids[3]]
    assert audited("--limit", "2", "--order", "oldest") == [ids[3], ids[4]]
    assert audited("--since", "2024-05-01T12:01:00Z", "--until", "2024-05-01T12:02:00Z") == [
        ids[2],
        ids[1],
    ]
    assert audited("--since", "2024-05-01T12:01:00.5Z") == ids[:1:-1]
    assert audited("--until", "2024-05-01T12:00:59.5Z") == [ids[0]]


def test_postgres_keys_with_redis_nonces_compose(
    tmp_path: Path, postgres: Postgres, redis_url: str
) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_process(tmp_path, *args, env=postgres.env(**env))

    key = json.loads(
        run("keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").stdout
    )
    capture = signed_capture(tmp_path / "r.http", key)
    first = run("verify", str(capture), "--json", ALIAK_NONCES=redis_url)
    assert first.returncode == 0, first.stdout + first.stderr
    replay = run("verify", str(capture), "--json", ALIAK_NONCES=redis_url)
    assert json.loads(replay.stdout)["Code"] == "SignatureNonceUsed"
    alone = run("verify", str(capture), "--json")  # PostgreSQL has never seen the nonce
    assert alone.returncode == 0, alone.stdout + alone.stderr


def test_a_schema_name_aliak_cannot_use_is_refused_naming_the_variable(
    aliak: Aliak, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_MASTER_KEY", MasterKeyring.generate().to_text())
    monkeypatch.setenv("ALIAK_POSTGRES_SCHEMA", "no-dashes; DROP SCHEMA public")
    dsn = f"postgresql://aliak:{ENCODED_PASSWORD}@127.0.0.1:{CLOSED_PORT}/aliak"
    result = aliak("--db", dsn, "keys", "create", "--account", ACCOUNT, "--user", "alice")
    assert result.code == 1
    assert result.err.startswith("error: ALIAK_POSTGRES_SCHEMA='no-dashes; DROP SCHEMA public'")
    assert _leaks(result.err) == []
