"""The administrator's views and commands of ``aliak``: every key of an account, the
actor of each change in the audit trail, account-id validation, importing keys and RSA
public keys, the rotation report and master-key rotation (SQLite stores here; the
PostgreSQL and Redis stores are ``tests/test_cli_stores.py``).

Most commands run in-process (``aliak.cli.main``); the ones whose point is what a real
process shows or reads (stdin, files, the environment) run as ``python -m aliak``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aliak import AccessKey, Request, Signer, SQLiteRequestLog, Verifier, request_event
from aliak.cli import main
from aliak.cli._keys import DEFAULT_ACCOUNT_ID_PATTERN, DOCUMENTED_ACCOUNT_ID_PATTERN
from aliak.errors import SignatureDoesNotMatch
from aliak.keys import KeyManager
from aliak.model import RamUser
from aliak.sealing import MasterKeyring
from aliak.storage.sqlite import SQLiteStore

ACCOUNT = "1234567890123456"
OTHER_ACCOUNT = "6543210987654321"
ADMIN_ENVIRONMENT = ("ALIAK_",)


@pytest.fixture(autouse=True)
def _no_aliak_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read ALIAK_DB, ALIAK_ACTOR, ALIAK_MASTER_KEY, ...: none leaks in."""
    for name in list(os.environ):
        if name.startswith(ADMIN_ENVIRONMENT) and not name.startswith("ALIAK_TEST_"):
            monkeypatch.delenv(name)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


Aliak = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


@pytest.fixture
def aliak(db: Path, capsys: pytest.CaptureFixture[str]) -> Aliak:
    """``aliak --db DB ARGS`` in this process: its exit status, stdout and stderr."""

    def run(*args: str, stdin: str | None = None, use_db: bool = True) -> Result:
        capsys.readouterr()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = main([*(["--db", str(db)] if use_db else []), *args])
        except SystemExit as exit_:  # argparse: a usage error
            code = int(exit_.code or 0)
        finally:
            sys.stdin = saved
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    return run


def ok(aliak: Aliak, *args: str, **options: Any) -> Result:
    result = aliak(*args, **options)
    assert result.code == 0, result.err
    return result


def run_process(
    directory: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m aliak ARGS`` in ``directory``, with no ALIAK_ variable but ``env``."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("ALIAK_")
    }
    completed = subprocess.run(
        [sys.executable, "-m", "aliak", *args],
        cwd=directory,
        input=stdin,
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


def signed_capture(path: Path, key: AccessKey, **signer_options: Any) -> Path:
    """A request signed now with ``key``, as ``aliak verify`` reads it."""
    request = Request("POST", host="api.example.com", path="/v1/items", body=b'{"a":1}')
    signed = Signer(key, **signer_options).sign(request, action="Run", version="2024-01-01")
    path.write_bytes(raw_http(signed))
    return path


def files_holding(directory: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


# -- keys list: the whole account ------------------------------------------------------------


def test_keys_list_with_account_alone_lists_the_root_keys_and_every_users_keys(
    aliak: Aliak,
) -> None:
    root = ok(aliak, "keys", "create", "--account", ACCOUNT, "--json").json()
    bob = ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "bob", "--json").json()
    alice = [
        ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").json()
        for _ in range(2)
    ]
    elsewhere = ok(
        aliak, "keys", "create", "--account", OTHER_ACCOUNT, "--user", "alice", "--json"
    ).json()
    ok(aliak, "keys", "disable", alice[1]["AccessKeyId"])
    ok(aliak, "keys", "delete", alice[1]["AccessKeyId"])  # into the recycle bin: not listed

    listed = ok(aliak, "keys", "list", "--account", ACCOUNT, "--json").json()
    assert [(key["AccessKeyId"], key["UserPrincipalName"]) for key in listed] == [
        (root["AccessKeyId"], ACCOUNT),  # the account's own first, then by user name
        (alice[0]["AccessKeyId"], f"alice@{ACCOUNT}"),
        (bob["AccessKeyId"], f"bob@{ACCOUNT}"),
    ]
    assert [key["RootKey"] for key in listed] == [True, False, False]
    assert elsewhere["AccessKeyId"] not in json.dumps(listed)
    assert all("AccessKeySecret" not in key for key in listed)

    root_only = ok(aliak, "keys", "list", "--account", ACCOUNT, "--root-only", "--json").json()
    assert [key["AccessKeyId"] for key in root_only] == [root["AccessKeyId"]]
    one_user = ok(aliak, "keys", "list", "--account", ACCOUNT, "--user", "bob", "--json").json()
    assert [key["AccessKeyId"] for key in one_user] == [bob["AccessKeyId"]]

    text = ok(aliak, "keys", "list", "--account", ACCOUNT).out
    assert text.splitlines()[0].split()[:3] == ["AccessKeyId", "Status", "UserPrincipalName"]
    assert f"alice@{ACCOUNT}" in text
    assert f"bob@{ACCOUNT}" in text
    help_text = " ".join(ok(aliak, "keys", "list", "--help").out.split())
    assert "--root-only" in help_text
    assert "every RAM user's" in help_text


def test_keys_list_refuses_root_only_with_a_user_and_an_account_without_keys(
    aliak: Aliak, db: Path
) -> None:
    ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice")
    both = aliak("keys", "list", "--account", ACCOUNT, "--user", "alice", "--root-only")
    assert both.code == 2
    assert "--root-only" in both.err
    unknown = aliak("keys", "list", "--account", OTHER_ACCOUNT)
    assert unknown.code == 1
    assert unknown.err.startswith("error: EntityNotExist")
    assert OTHER_ACCOUNT in unknown.err
    unknown_root = aliak("keys", "list", "--account", OTHER_ACCOUNT, "--root-only")
    assert unknown_root.code == 1  # no key at all: an unknown account, as without --root-only
    assert unknown_root.err.startswith("error: EntityNotExist")


def test_keys_list_root_only_of_an_account_without_a_root_key_is_an_empty_listing(
    aliak: Aliak,
) -> None:
    alice = ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").json()
    # The shape of an owner with no keys: alice, once her only key is in the recycle bin.
    ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "bob")
    ok(aliak, "keys", "disable", alice["AccessKeyId"])
    ok(aliak, "keys", "delete", alice["AccessKeyId"])
    no_keys = ok(aliak, "keys", "list", "--account", ACCOUNT, "--user", "alice")
    assert no_keys.out == f"no keys outside the recycle bin for alice@{ACCOUNT}\n"
    assert ok(aliak, "keys", "list", "--account", ACCOUNT, "--user", "alice", "--json").json() == []

    no_root = ok(aliak, "keys", "list", "--account", ACCOUNT, "--root-only")
    assert no_root.out == f"no keys outside the recycle bin for {ACCOUNT}\n"
    assert no_root.err == ""
    assert ok(aliak, "keys", "list", "--account", ACCOUNT, "--root-only", "--json").json() == []
    # Nor has the account's recycle bin anything: a root key is purged at once.
    binned = ok(aliak, "keys", "recycle-bin", "--account", ACCOUNT)
    assert binned.out == f"the recycle bin of {ACCOUNT} is empty\n"
    assert ok(aliak, "keys", "recycle-bin", "--account", ACCOUNT, "--json").json() == []

    root = ok(aliak, "keys", "create", "--account", ACCOUNT, "--json").json()
    listed = ok(aliak, "keys", "list", "--account", ACCOUNT, "--root-only", "--json").json()
    assert [key["AccessKeyId"] for key in listed] == [root["AccessKeyId"]]
    ok(aliak, "keys", "disable", root["AccessKeyId"])
    ok(aliak, "keys", "delete", root["AccessKeyId"])  # purged at once: no root key again
    assert ok(aliak, "keys", "list", "--account", ACCOUNT, "--root-only", "--json").json() == []


# -- the actor of every change ---------------------------------------------------------------


def _actors(aliak: Aliak) -> dict[str, set[str]]:
    events = ok(aliak, "audit", "--json").json()
    actors: dict[str, set[str]] = {}
    for event in events:
        actors.setdefault(event["Action"], set()).add(event["Actor"])
    return actors


def test_every_change_is_recorded_under_the_actor_of_the_command(
    aliak: Aliak, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public_key = tmp_path / "rsa.pub"
    public_key.write_bytes(_rsa_key_pair()[1])
    as_ann = ["--actor", "ops:ann"]
    created = ok(
        aliak, *as_ann, "keys", "create", "--account", ACCOUNT, "--user", "ci", "--json"
    ).json()
    key_id = created["AccessKeyId"]
    monkeypatch.setenv("ALIAK_IMPORT_SECRET", "imported-secret-0123456789")
    changes = [
        ["keys", "disable", key_id],
        ["keys", "enable", key_id],
        ["keys", "mark-leaked", key_id],
        ["keys", "import", "--account", ACCOUNT, "--user", "old", "--access-key-id",
         "LTAIimportedkey00001"],
        ["keys", "register-rsa", "--account", ACCOUNT, "--user", "rsa", "--public-key",
         str(public_key)],
        ["acl", "set", "--account", ACCOUNT, "--public", "10.0.0.0/8"],
        ["roles", "create", "--account", ACCOUNT, "--name", "Deployer", "--trust",
         f"acs:ram::{ACCOUNT}:user/ci"],
        ["roles", "update", "--account", ACCOUNT, "--name", "Deployer", "--description", "x"],
        ["sts", "assume-role", "--account", ACCOUNT, "--role", "Reader", "--session", "s-1"],
        ["master-key", "rotate"],
        ["roles", "delete", "--account", ACCOUNT, "--name", "Deployer"],
    ]  # fmt: skip
    for command in changes:
        ok(aliak, *as_ann, *command)
    actors = _actors(aliak)
    assert set(actors) >= {
        "CreateAccessKey", "UpdateAccessKey", "CreateRole", "UpdateRole", "DeleteRole",
        "AssumeRole", "RotateMasterKey",
    }  # fmt: skip
    assert all(who == {"ops:ann"} for who in actors.values()), actors

    # $ALIAK_ACTOR, when there is no --actor; else the OS user, as cli:<name>.
    monkeypatch.setenv("ALIAK_ACTOR", "deploy-bot")
    ok(aliak, "keys", "disable", key_id)
    monkeypatch.delenv("ALIAK_ACTOR")
    ok(aliak, "keys", "enable", key_id)
    events = ok(aliak, "audit", "--key", key_id, "--json").json()  # newest first
    assert events[1]["Actor"] == "deploy-bot"
    assert events[0]["Actor"].startswith("cli:") or events[0]["Actor"] == "aliak"


# -- audit: newest first, --order, --limit, --since/--until -----------------------------------

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
# Five events: a minute apart, but the last two in one second (append order decides there).
TIMELINE = (T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)) + (
    T0 + timedelta(minutes=3),
) * 2


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def trail(db: Path) -> list[str]:
    """One CreateAccessKey at each time of :data:`TIMELINE`: the key ids, oldest first."""
    store = SQLiteStore(db)
    try:
        return [
            KeyManager(store, clock=at.timestamp)
            .create_access_key(RamUser(ACCOUNT, f"u{index}"))
            .access_key_id
            for index, at in enumerate(TIMELINE)
        ]
    finally:
        store.close()


def _audited(aliak: Aliak, *args: str) -> list[str]:
    return [event["AccessKeyId"] for event in ok(aliak, "audit", *args, "--json").json()]


def test_audit_is_newest_first_and_order_oldest_is_its_exact_reverse(
    aliak: Aliak, trail: list[str]
) -> None:
    events = ok(aliak, "audit", "--json").json()
    assert [event["AccessKeyId"] for event in events] == trail[::-1]
    assert [event["At"] for event in events] == [_iso(at) for at in TIMELINE[::-1]]
    assert ok(aliak, "audit", "--order", "oldest", "--json").json() == events[::-1]
    assert ok(aliak, "audit", "--order", "newest", "--json").json() == events
    rows = ok(aliak, "audit").out.splitlines()[1:]  # the table, under its header
    assert [next(cell for cell in trail if cell in row) for row in rows] == trail[::-1]
    rows = ok(aliak, "audit", "--order", "oldest").out.splitlines()[1:]
    assert [next(cell for cell in trail if cell in row) for row in rows] == trail


@pytest.mark.parametrize("limit", [0, 1, 2, 4, 5, 9])
def test_audit_limit_keeps_the_newest_events_whichever_the_order(
    aliak: Aliak, trail: list[str], limit: int
) -> None:
    newest = trail[::-1][:limit]
    assert _audited(aliak, "--limit", str(limit)) == newest
    assert _audited(aliak, "--limit", str(limit), "--order", "oldest") == newest[::-1]


def test_audit_since_and_until_are_both_inclusive(aliak: Aliak, trail: list[str]) -> None:
    t0, t1, t2, t3, _ = TIMELINE
    half = timedelta(milliseconds=500)
    assert _audited(aliak, "--since", _iso(t1)) == trail[:0:-1]  # the event at t1 is in
    assert _audited(aliak, "--until", _iso(t1)) == trail[1::-1]  # here too
    assert _audited(aliak, "--since", _iso(t1), "--until", _iso(t2)) == [trail[2], trail[1]]
    assert _audited(aliak, "--since", _iso(t2), "--until", _iso(t2)) == [trail[2]]
    # A fraction: --since rounds up to the next whole second, --until down.
    assert _audited(aliak, "--since", _iso(t1 + half)) == trail[:1:-1]
    assert _audited(aliak, "--until", _iso(t1 - half)) == [trail[0]]
    # One second, two events: newest first, and --order oldest in append order.
    assert _audited(aliak, "--since", _iso(t3)) == [trail[4], trail[3]]
    assert _audited(aliak, "--since", _iso(t3), "--order", "oldest") == [trail[3], trail[4]]
    # --limit takes the newest of the window, not of the whole trail.
    window = ["--since", _iso(t0), "--until", _iso(t2)]
    assert _audited(aliak, *window, "--limit", "2") == [trail[2], trail[1]]
    assert _audited(aliak, *window, "--limit", "2", "--order", "oldest") == [trail[1], trail[2]]
    # An offset is a time like any other: 20:01 at +08:00 is t1.
    assert _audited(aliak, "--since", "2024-05-01T20:01:00+08:00") == trail[:0:-1]
    assert _audited(aliak, "--since", _iso(t2), "--until", _iso(t1)) == []


def test_audit_follow_refuses_an_order_it_cannot_keep(aliak: Aliak, trail: list[str]) -> None:
    refused = aliak("audit", "--follow", "--order", "newest")
    assert refused.code == 2
    assert "arrive" in refused.err
    assert aliak("audit", "--requests", "--follow", "--order", "newest").code == 2
    assert "--order" in ok(aliak, "audit", "--help").out


# -- audit --requests: the same order and bounds over the request log -------------------------


@pytest.fixture
def request_log(tmp_path: Path) -> tuple[Path, list[str]]:
    """A request log file with one event at each time of :data:`TIMELINE`, the second
    refused; and the request ids, oldest first."""
    path = tmp_path / "requests.db"
    log = SQLiteRequestLog(path)
    ids = [f"REQ-{index}" for index in range(len(TIMELINE))]
    try:
        for index, at in enumerate(TIMELINE):
            log.emit(
                request_event(
                    event_time=at.timestamp(),
                    access_key_id="LTAI" + str(index) * 20,
                    action="DescribeRegions",
                    source_ip="192.0.2.1",
                    request_id=ids[index],
                    error=SignatureDoesNotMatch() if index == 1 else None,
                )
            )
        log.flush()
    finally:
        log.close()
    return path, ids


def _requested(aliak: Aliak, log: Path, *args: str) -> list[str]:
    events = ok(aliak, "audit", "--requests", "--request-log", str(log), *args, "--json").json()
    return [event["requestId"] for event in events]


def test_audit_requests_is_newest_first_and_order_oldest_is_its_exact_reverse(
    aliak: Aliak, request_log: tuple[Path, list[str]]
) -> None:
    log, ids = request_log
    read = ["audit", "--requests", "--request-log", str(log)]
    events = ok(aliak, *read, "--json").json()
    assert [event["requestId"] for event in events] == ids[::-1]
    assert [event["eventTime"] for event in events] == [_iso(at) for at in TIMELINE[::-1]]
    assert ok(aliak, *read, "--order", "oldest", "--json").json() == events[::-1]
    rows = ok(aliak, *read).out.splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ids[::-1]
    assert ok(aliak, *read, "--result", "refused", "--json").json() == [events[3]]


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 9])
def test_audit_requests_limit_keeps_the_newest_events_whichever_the_order(
    aliak: Aliak, request_log: tuple[Path, list[str]], limit: int
) -> None:
    log, ids = request_log
    newest = ids[::-1][:limit]
    assert _requested(aliak, log, "--limit", str(limit)) == newest
    assert _requested(aliak, log, "--limit", str(limit), "--order", "oldest") == newest[::-1]


def test_audit_requests_since_and_until_are_both_inclusive(
    aliak: Aliak, request_log: tuple[Path, list[str]]
) -> None:
    log, ids = request_log
    t0, t1, t2, t3, _ = TIMELINE
    half = timedelta(milliseconds=500)
    assert _requested(aliak, log, "--since", _iso(t1)) == ids[:0:-1]
    assert _requested(aliak, log, "--until", _iso(t1)) == ids[1::-1]
    assert _requested(aliak, log, "--since", _iso(t2), "--until", _iso(t2)) == [ids[2]]
    assert _requested(aliak, log, "--since", _iso(t1 + half)) == ids[:1:-1]
    assert _requested(aliak, log, "--until", _iso(t1 - half)) == [ids[0]]
    assert _requested(aliak, log, "--since", _iso(t3), "--order", "oldest") == ids[3:]
    window = ["--since", _iso(t0), "--until", _iso(t2), "--limit", "2"]
    assert _requested(aliak, log, *window) == [ids[2], ids[1]]
    assert _requested(aliak, log, *window, "--order", "oldest") == [ids[1], ids[2]]
    assert _requested(aliak, log, "--since", _iso(t2), "--until", _iso(t1)) == []


# -- account ids -----------------------------------------------------------------------------


def _creations(account: str, public_key: Path) -> list[list[str]]:
    return [
        ["keys", "create", "--account", account, "--user", "alice"],
        ["keys", "create", "--account", account],
        ["keys", "import", "--account", account, "--user", "bob", "--access-key-id",
         "LTAIimportedkey00002"],
        ["keys", "register-rsa", "--account", account, "--public-key", str(public_key)],
        ["roles", "create", "--account", account, "--name", "R", "--trust",
         f"acs:ram::{ACCOUNT}:root"],
        ["acl", "set", "--account", account, "--public", "10.0.0.0/8"],
        ["sts", "assume-role", "--account", account, "--role", "R", "--session", "s-1"],
    ]  # fmt: skip


@pytest.mark.parametrize("account", ["123456789012345", "12345678901234567", "1234567890abcdef"])
def test_a_pattern_refuses_account_ids_of_any_other_form_before_a_store_exists(
    aliak: Aliak, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, account: str
) -> None:
    public_key = tmp_path / "rsa.pub"
    public_key.write_bytes(_rsa_key_pair()[1])
    monkeypatch.setenv("ALIAK_IMPORT_SECRET", "imported-secret-0123456789")
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", DOCUMENTED_ACCOUNT_ID_PATTERN)
    for command in _creations(account, public_key):
        result = aliak(*command)
        assert result.code == 1, command
        assert result.err.startswith('error: InvalidParameter: The specified parameter "AccountId"')
        assert "'[0-9]{16}'" in result.err
        assert "ALIAK_ACCOUNT_ID_PATTERN" in result.err
        assert len(result.err.splitlines()) == 1
        assert result.out == ""
    assert not db.exists()  # refused before any store was opened
    for command in _creations(ACCOUNT, public_key):
        ok(aliak, *command)


def test_the_pattern_is_matched_in_full_configurable_and_only_for_what_is_created(
    aliak: Aliak, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", "[0-9]{10}")  # ids of an older deployment
    ok(aliak, "keys", "create", "--account", "1234567890", "--user", "legacy")
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", "[0-9]{4}")  # search() would find 4 digits
    refused = aliak("keys", "create", "--account", ACCOUNT, "--user", "alice")
    assert refused.code == 1
    assert "'[0-9]{4}'" in refused.err
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", r"acct-[a-z]+|[0-9]{10}")
    ok(aliak, "keys", "create", "--account", "acct-prod", "--user", "alice")
    ok(aliak, "keys", "create", "--account", "1234567890", "--user", "other")
    assert aliak("keys", "create", "--account", "acct-Prod", "--user", "x").code == 1
    # Reading and changing what exists is never refused by the pattern.
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", DOCUMENTED_ACCOUNT_ID_PATTERN)
    listed = ok(aliak, "keys", "list", "--account", "1234567890", "--json").json()
    assert len(listed) == 2
    ok(aliak, "keys", "disable", listed[0]["AccessKeyId"])
    # An id the library refuses stays refused, whatever the pattern allows.
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", ".*")
    assert aliak("keys", "create", "--account", "no spaces", "--user", "x").code == 1


@pytest.mark.parametrize("pattern", ["[0-9", "(?P<x>", "*16", "[0-9]{16}(?"])
def test_a_pattern_that_is_not_a_regular_expression_is_a_clear_error(
    aliak: Aliak, db: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    monkeypatch.setenv("ALIAK_ACCOUNT_ID_PATTERN", pattern)
    for command in (
        ["keys", "create", "--account", ACCOUNT, "--user", "alice"],
        ["roles", "create", "--account", ACCOUNT, "--name", "R", "--trust",
         f"acs:ram::{ACCOUNT}:root"],
        ["acl", "set", "--account", ACCOUNT, "--public", "10.0.0.0/8"],
    ):  # fmt: skip
        result = aliak(*command)
        assert result.code == 1
        assert result.err.startswith(
            "error: ALIAK_ACCOUNT_ID_PATTERN is not a valid regular expression"
        ), result.err
        assert len(result.err.splitlines()) == 1
    assert not db.exists()


def test_without_a_pattern_the_default_applies(aliak: Aliak) -> None:
    fifteen = aliak("keys", "create", "--account", "123456789012345", "--user", "alice")
    if DEFAULT_ACCOUNT_ID_PATTERN is None:  # the library's own form: any [A-Za-z0-9._-]{1,64}
        assert fifteen.code == 0, fifteen.err
    else:
        assert fifteen.code == 1
        assert DEFAULT_ACCOUNT_ID_PATTERN in fifteen.err
    ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice")


# -- keys import -----------------------------------------------------------------------------


def test_keys_import_reads_the_secret_from_the_environment_or_stdin_and_shows_it_nowhere(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "aliak.db")
    from_env = "EnvSecret0123456789abcdefghijk"
    from_stdin = "StdinSecret0123456789abcdefghi"
    by_env = run_process(
        tmp_path, "--db", db, "keys", "import", "--account", ACCOUNT, "--user", "legacy",
        "--access-key-id", "LTAIimportedfromenv1", "--json",
        env={"ALIAK_IMPORT_SECRET": from_env},
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["AccessKeyId"] == "LTAIimportedfromenv1"
    by_stdin = run_process(
        tmp_path, "--db", db, "keys", "import", "--account", ACCOUNT, "--user", "legacy",
        "--access-key-id", "LTAIimportedfromstd1", "--inactive",
        stdin=f"{from_stdin}\n".encode(),
    )  # fmt: skip
    assert by_stdin.returncode == 0, by_stdin.stderr
    assert "Inactive" in by_stdin.stdout
    outputs = by_env.stdout + by_env.stderr + by_stdin.stdout + by_stdin.stderr
    listing = run_process(tmp_path, "--db", db, "keys", "list", "--account", ACCOUNT, "--json")
    audit = run_process(tmp_path, "--db", db, "audit", "--json")
    outputs += listing.stdout + audit.stdout
    for secret in (from_env, from_stdin):
        assert secret not in outputs
        assert files_holding(tmp_path, secret) == []  # sealed at rest
    assert {key["Status"] for key in json.loads(listing.stdout)} == {"Active", "Inactive"}

    # The imported secret is the one that verifies.
    capture = signed_capture(tmp_path / "request.http", AccessKey("LTAIimportedfromenv1", from_env))
    verified = run_process(tmp_path, "--db", db, "verify", str(capture), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["AccessKeyId"] == "LTAIimportedfromenv1"


def test_keys_import_refuses_a_missing_secret_a_bad_id_and_a_secret_argument(
    aliak: Aliak, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["keys", "import", "--account", ACCOUNT, "--user", "legacy"]
    no_secret = aliak(*base, "--access-key-id", "LTAIimportedkey00001", stdin="\n")
    assert no_secret.code == 1
    assert "ALIAK_IMPORT_SECRET" in no_secret.err
    assert "stdin" in no_secret.err
    assert aliak(*base, "--access-key-id", "LTAIx", "--secret", "s3cr3t").code == 2
    monkeypatch.setenv("ALIAK_IMPORT_SECRET", "imported-secret-0123456789")
    for bad_id in ("STS.NUabcdefghijklmn", "not an id", ""):
        result = aliak(*base, "--access-key-id", bad_id)
        assert result.code == 1, bad_id
        assert result.err.startswith("error: InvalidParameter"), result.err
    assert not db.exists()  # nothing was created for a refused import
    ok(aliak, *base, "--access-key-id", "LTAIimportedkey00001")
    again = aliak(*base, "--access-key-id", "LTAIimportedkey00001")
    assert again.code == 1
    assert "imported-secret-0123456789" not in again.err + again.out


# -- keys register-rsa -----------------------------------------------------------------------


def _rsa_key_pair() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def test_keys_register_rsa_prints_the_new_key_id_and_requests_signed_with_it_verify(
    tmp_path: Path,
) -> None:
    private_pem, public_pem = _rsa_key_pair()
    public_file = tmp_path / "client.pub"
    public_file.write_bytes(public_pem)
    db = str(tmp_path / "aliak.db")
    registered = run_process(
        tmp_path, "--db", db, "keys", "register-rsa", "--account", ACCOUNT, "--user", "signer",
        "--public-key", str(public_file),
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    key_id = registered.stdout.strip()
    assert key_id.startswith("LTAI")
    assert len(registered.stdout.splitlines()) == 1
    as_json = run_process(
        tmp_path, "--db", db, "keys", "register-rsa", "--account", ACCOUNT, "--user", "signer",
        "--public-key", "-", "--access-key-id", "LTAIchosenrsakey0001", "--json",
        stdin=public_pem,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["AccessKeyId"] == "LTAIchosenrsakey0001"

    # A server that accepts RSA keys verifies what the private key signs.
    request = Request("POST", host="api.example.com", path="/v1/items", body=b'{"a":1}')
    signed = Signer(AccessKey(key_id, private_pem.decode()), algorithm="ACS3-RSA-SHA256").sign(
        request, action="Run", version="2024-01-01"
    )
    store = SQLiteStore(db)
    try:
        with Verifier(store, allowed_algorithms=frozenset({"ACS3-RSA-SHA256"})) as verifier:
            assert verifier.verify(signed).access_key_id == key_id
    finally:
        store.close()


def test_keys_register_rsa_refuses_what_is_not_a_public_key_before_a_store_exists(
    aliak: Aliak, db: Path, tmp_path: Path
) -> None:
    private_pem, _ = _rsa_key_pair()
    not_keys = {
        "garbage.pem": b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        "binary.pem": os.urandom(64) + b"\xff",
        "empty.pem": b"",
    }
    for name, content in not_keys.items():
        (tmp_path / name).write_bytes(content)
    base = ["keys", "register-rsa", "--account", ACCOUNT, "--user", "u", "--public-key"]
    for name in [*not_keys, "missing.pem"]:
        result = aliak(*base, str(tmp_path / name))
        assert result.code == 1, name
        assert result.err.startswith("error: "), result.err
        assert len(result.err.splitlines()) == 1
    private_file = tmp_path / "private.pem"  # a private key in the wrong place: not echoed
    private_file.write_bytes(private_pem)
    leaked = aliak(*base, str(private_file))
    assert leaked.code == 1
    assert "PRIVATE" not in leaked.err
    assert private_pem.decode().splitlines()[1] not in leaked.err
    assert not db.exists()


# -- keys rotation-report --------------------------------------------------------------------


def test_rotation_report_lists_old_keys_and_owners_with_several_active_keys(
    aliak: Aliak, db: Path
) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(days=120)
    store = SQLiteStore(db)
    try:
        old = KeyManager(store, clock=long_ago.timestamp).create_access_key(
            RamUser(ACCOUNT, "alice")
        )
        other = KeyManager(store, clock=long_ago.timestamp).create_access_key(
            RamUser(OTHER_ACCOUNT, "carol")
        )
    finally:
        store.close()
    new = ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").json()

    report = ok(aliak, "keys", "rotation-report", "--json").json()
    old_ids = {key["AccessKeyId"] for key in report["OldKeys"]}
    assert old_ids == {old.access_key_id, other.access_key_id}
    assert all(key["AgeDays"] >= 119 for key in report["OldKeys"])
    assert report["OwnersWithSeveralActiveKeys"] == [f"alice@{ACCOUNT}"]
    assert report["MaxAgeDays"] == 90
    assert new["AccessKeyId"] not in json.dumps(report["OldKeys"])

    mine = ok(aliak, "keys", "rotation-report", "--account", OTHER_ACCOUNT, "--json").json()
    assert [key["AccessKeyId"] for key in mine["OldKeys"]] == [other.access_key_id]
    assert mine["OwnersWithSeveralActiveKeys"] == []
    longer = ok(aliak, "keys", "rotation-report", "--max-age-days", "200", "--json").json()
    assert longer["OldKeys"] == []

    text = ok(aliak, "keys", "rotation-report").out
    assert old.access_key_id in text
    assert f"alice@{ACCOUNT}" in text
    assert "older than 90 days" in text
    for bad in ("0", "-3", "soon"):
        assert aliak("keys", "rotation-report", "--max-age-days", bad).code == 2


def test_rotation_report_counts_one_day_in_the_singular(aliak: Aliak, db: Path) -> None:
    store = SQLiteStore(db)
    try:
        two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
        KeyManager(store, clock=two_days_ago.timestamp).create_access_key(RamUser(ACCOUNT, "a"))
    finally:
        store.close()
    old = ok(aliak, "keys", "rotation-report", "--max-age-days", "1").out
    assert "keys older than 1 day (rotate them: `aliak keys rotate ID`):" in old.splitlines()
    assert ok(aliak, "keys", "rotation-report", "--max-age-days", "3").out.splitlines()[0] == (
        "no key is older than 3 days"
    )


# -- master-key rotate -----------------------------------------------------------------------


def _key_material(keyring_text: str) -> list[str]:
    return [line.split(":", 1)[1] for line in keyring_text.split() if ":" in line]


@pytest.fixture
def two_keys(aliak: Aliak) -> list[dict[str, str]]:
    return [
        ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", user, "--json").json()
        for user in ("alice", "bob")
    ]


def test_master_key_rotate_rewrites_the_key_file_and_prints_no_key_material(
    aliak: Aliak, db: Path, tmp_path: Path, two_keys: list[dict[str, str]]
) -> None:
    key_file = Path(f"{db}.key")
    before = key_file.read_text()
    rotated = ok(aliak, "master-key", "rotate")
    assert rotated.out.strip() == "re-sealed 2 secrets under master key version 2"
    assert str(key_file) in rotated.err
    as_json = ok(aliak, "master-key", "rotate", "--json").json()
    assert as_json == {
        "Resealed": 2,
        "CurrentVersion": 3,
        "KeyringFile": str(key_file),
        "KeyringSource": "key file",
    }
    after = key_file.read_text()
    assert MasterKeyring.from_text(after).versions == (1, 2, 3)
    assert key_file.stat().st_mode & 0o777 == 0o600
    for material in _key_material(before) + _key_material(after):
        assert material not in rotated.out + rotated.err + json.dumps(as_json)
    audit = ok(aliak, "audit", "--json").json()
    assert [event["Detail"] for event in audit if event["Action"] == "RotateMasterKey"] == [
        "version 3; 2 secrets re-sealed",
        "version 2; 2 secrets re-sealed",
    ]  # newest first
    # Every key still verifies, in another process reading the key file.
    capture = signed_capture(
        tmp_path / "r.http", AccessKey(two_keys[0]["AccessKeyId"], two_keys[0]["AccessKeySecret"])
    )
    verified = run_process(tmp_path, "--db", str(db), "verify", str(capture))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_master_key_rotate_of_a_keyring_from_the_environment_writes_keyring_out(
    aliak: Aliak,
    db: Path,
    tmp_path: Path,
    two_keys: list[dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = Path(f"{db}.key")
    original = key_file.read_text()
    monkeypatch.setenv("ALIAK_MASTER_KEY", original)
    refused = aliak("master-key", "rotate")
    assert refused.code == 1
    assert "--keyring-out" in refused.err
    assert "ALIAK_MASTER_KEY" in refused.err
    existing = tmp_path / "exists.key"
    existing.write_text("keep me")
    clash = aliak("master-key", "rotate", "--keyring-out", str(existing))
    assert clash.code == 1
    assert existing.read_text() == "keep me"
    assert aliak("master-key", "rotate", "--keyring-out", str(tmp_path / "no/dir/k")).code == 1
    audit_before = ok(aliak, "audit", "--json").out

    out = tmp_path / "new.keyring"
    rotated = ok(aliak, "master-key", "rotate", "--keyring-out", str(out), "--json").json()
    assert rotated["Resealed"] == 2
    assert rotated["KeyringSource"] == "ALIAK_MASTER_KEY"
    assert out.stat().st_mode & 0o777 == 0o600
    new_keyring = out.read_text()
    assert MasterKeyring.from_text(new_keyring).versions == (1, 2)
    assert key_file.read_text() == original  # the key file is not where this keyring lives
    stale = aliak("audit")  # the old keyring lacks the version the store now seals under
    assert stale.code == 1
    assert "lacks version 2" in stale.err
    monkeypatch.setenv("ALIAK_MASTER_KEY", new_keyring)
    assert audit_before != ok(aliak, "audit", "--json").out

    # Under the new keyring every secret opens; under the old one alone it does not.
    capture = signed_capture(
        tmp_path / "r.http", AccessKey(two_keys[1]["AccessKeyId"], two_keys[1]["AccessKeySecret"])
    )
    verified = run_process(
        tmp_path, "--db", str(db), "verify", str(capture),
        env={"ALIAK_MASTER_KEY": new_keyring},
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for material in _key_material(new_keyring):
        assert material not in json.dumps(rotated) + verified.stdout + verified.stderr

    monkeypatch.delenv("ALIAK_MASTER_KEY")
    wrong = aliak("master-key", "rotate", "--keyring-out", str(tmp_path / "other.keyring"))
    assert wrong.code == 1  # a key-file store's keyring goes to its key file
    assert "key file" in wrong.err


def test_master_key_rotate_counts_one_secret_in_the_singular(aliak: Aliak) -> None:
    none = ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice", "--json").json()
    ok(aliak, "keys", "disable", none["AccessKeyId"])
    ok(aliak, "keys", "delete", none["AccessKeyId"])
    ok(aliak, "keys", "purge", none["AccessKeyId"])  # a store with no secret left
    assert ok(aliak, "master-key", "rotate").out == (
        "re-sealed 0 secrets under master key version 2\n"
    )
    ok(aliak, "keys", "create", "--account", ACCOUNT, "--user", "alice")
    assert ok(aliak, "master-key", "rotate").out == (
        "re-sealed 1 secret under master key version 3\n"
    )


def test_master_key_generate_writes_a_private_file_and_never_replaces_one(
    aliak: Aliak, tmp_path: Path
) -> None:
    out = tmp_path / "fleet.keyring"
    generated = ok(aliak, "master-key", "generate", "--out", str(out), use_db=False)
    assert generated.out.strip() == str(out)
    assert out.stat().st_mode & 0o777 == 0o600
    keyring_text = out.read_text()
    assert MasterKeyring.from_text(keyring_text).versions == (1,)
    for material in _key_material(keyring_text):
        assert material not in generated.out + generated.err
    again = aliak("master-key", "generate", "--out", str(out), use_db=False)
    assert again.code == 1
    assert out.read_text() == keyring_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:01:00.5Z", "2024-05-01T12:01:00.500000+00:00"),
        ("2024-05-01T12:01:00.25+08:00", "2024-05-01T04:01:00.250000+00:00"),
        ("2024-05-01T12:01:00.1234567Z", "2024-05-01T12:01:00.123456+00:00"),
        ("2024-05-01T12:01:00", "2024-05-01T12:01:00+00:00"),
    ],
)
def test_audit_times_read_any_fraction_of_a_second_on_every_python(
    text: str, expected: str
) -> None:
    # Python 3.10's fromisoformat reads only 3 or 6 fraction digits, and no "Z".
    from aliak.cli._audit import parse_utc

    assert parse_utc(text).isoformat() == expected
