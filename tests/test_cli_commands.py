"""The ``aliak`` administration, signing and verification commands, run as a user runs
them: ``python -m aliak`` in a subprocess, over a store in a temporary directory.

Every invocation is checked for a traceback (there must never be one); failed commands
are checked to leave the store exactly as it was.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from aliak import AccessKey, Request, Signer

ACCOUNT = "1234567890123456"
SECRET_WARNING = "can never be shown again"


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALIAK_", "ALIBABA_CLOUD_"))
    }


def run_aliak(
    tmp_path: Path,
    *args: str,
    db: Path | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``aliak --db DB ARGS`` in ``tmp_path``; never a traceback, whatever the outcome."""
    global_options = [] if db is None else ["--db", str(db)]
    completed = subprocess.run(
        [sys.executable, "-m", "aliak", *global_options, *args],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        env={**_clean_environment(), **(env or {})},
        timeout=60,
        check=False,
    )
    result = subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8"),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_all(
    tmp_path: Path, commands: list[list[str]], *, db: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands, run side by side (each is its own process): their results
    in order. Startup dominates a command's time, so this keeps the suite fast."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda command: run_aliak(tmp_path, *command, db=db), commands))


class Store:
    """One temporary store and the ``aliak`` command bound to it."""

    def __init__(self, tmp_path: Path, name: str = "aliak.db") -> None:
        self.directory = tmp_path
        self.db = tmp_path / name

    def run(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return run_aliak(self.directory, *args, db=self.db, **options)

    def ok(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **options)
        assert result.returncode == 0, result.stderr
        return result

    def json(self, *args: str, **options: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **options).stdout)

    def create_key(self, user: str | None = "alice") -> dict[str, str]:
        owner = ["--account", ACCOUNT] + ([] if user is None else ["--user", user])
        created: dict[str, str] = self.json("keys", "create", *owner)
        return created

    def snapshot(self, user: str) -> tuple[str, str]:
        """What a failed command must not change, as the commands print it: a user's keys
        and the audit trail (every state change appends to it, in the same transaction)."""
        keys = self.ok("keys", "list", "--account", ACCOUNT, "--user", user, "--json").stdout
        return keys, self.ok("audit", "--json").stdout

    def files_holding(self, text: str) -> list[str]:
        """Every file under the store's directory whose bytes contain ``text``."""
        needle = text.encode()
        return sorted(
            path.name
            for path in self.directory.rglob("*")
            if path.is_file() and needle in path.read_bytes()
        )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _fields(text: str) -> dict[str, str]:
    """Aligned ``Name  value`` lines, as a dict."""
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip())


def _credentials_env(key: dict[str, str]) -> dict[str, str]:
    environment = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": key["AccessKeyId"],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": key["AccessKeySecret"],
    }
    if "SecurityToken" in key:
        environment["ALIBABA_CLOUD_SECURITY_TOKEN"] = key["SecurityToken"]
    return environment


# -- creation: the fixed form, and the secret shown once ---------------------------------


def test_create_json_prints_exactly_one_object_with_the_four_ram_fields(store: Store) -> None:
    result = store.ok("keys", "create", "--account", ACCOUNT, "--user", "alice", "--json")
    created = json.loads(result.stdout)  # the whole of stdout is one JSON value
    assert isinstance(created, dict)
    assert set(created) == {"AccessKeyId", "AccessKeySecret", "Status", "CreateDate"}
    assert created["AccessKeyId"].startswith("LTAI")
    assert created["Status"] == "Active"
    assert SECRET_WARNING in result.stderr
    assert "itself" not in result.stderr  # a RAM user's key is no root key
    assert store.db.exists()
    assert (Path(f"{store.db}.key").stat().st_mode & 0o777) == 0o600
    # The store keeps the secret sealed: its bytes are in no file, the database included.
    assert store.files_holding(created["AccessKeySecret"]) == []


def test_root_key_creation_prints_the_secret_and_the_root_key_warning(store: Store) -> None:
    result = store.ok("keys", "create", "--account", ACCOUNT)
    fields = _fields(result.stdout)
    assert fields["AccessKeyId"].startswith("LTAI")
    assert len(fields["AccessKeySecret"]) == 30
    assert fields["UserPrincipalName"] == ACCOUNT
    assert f"account {ACCOUNT} itself" in result.stderr
    assert SECRET_WARNING in result.stderr
    assert result.stderr.count("warning:") == 2


def test_secrets_appear_only_in_the_output_of_the_commands_that_create_them(
    store: Store,
) -> None:
    alice = store.create_key("alice")
    root = store.create_key(None)
    rotated = store.ok("keys", "rotate", alice["AccessKeyId"])
    assert SECRET_WARNING in rotated.stderr
    rotate_help = " ".join(store.ok("keys", "rotate", "--help").stdout.split())
    assert "prints the new secret this once" in rotate_help
    rotated_fields = _fields(rotated.stdout)
    assert rotated_fields["Replaces"] == alice["AccessKeyId"]
    new_id, new_secret = rotated_fields["AccessKeyId"], rotated_fields["AccessKeySecret"]
    assumed = store.json(
        "sts", "assume-role", "--account", ACCOUNT, "--role", "Deployer", "--session", "ci-1"
    )
    assert isinstance(assumed, dict)
    assert set(assumed) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
    assert assumed["AccessKeyId"].startswith("STS.")
    secrets = {
        "alice": alice["AccessKeySecret"],
        "root": root["AccessKeySecret"],
        "rotated": new_secret,
        "sts secret": assumed["AccessKeySecret"],
        "sts token": assumed["SecurityToken"],
    }

    store.ok("keys", "disable", alice["AccessKeyId"])
    store.ok("keys", "delete", alice["AccessKeyId"])  # into the recycle bin
    store.ok(
        "acl", "set", "--key", new_id, "--public", "10.0.0.0/8", "--vpc", "vpc-1=172.16.0.0/12"
    )
    listings = [
        [*command, *mode]
        for mode in ([], ["--json"])
        for command in (
            ["keys", "list", "--account", ACCOUNT, "--user", "alice"],
            ["keys", "list", "--account", ACCOUNT],
            ["keys", "recycle-bin", "--account", ACCOUNT, "--user", "alice"],
            ["keys", "show", new_id],
            ["keys", "show", root["AccessKeyId"]],
            ["keys", "last-used", new_id, "--ips"],
            ["keys", "find-owner", new_id],
            ["audit"],
            ["acl", "show", "--key", new_id],
        )
    ]
    outputs = []
    for command, result in zip(
        listings, run_all(store.directory, listings, db=store.db), strict=True
    ):
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout + result.stderr)
    everything = "\n".join(outputs)
    assert new_id in everything
    for name, secret in secrets.items():
        assert secret not in everything, f"the {name} leaked into a listing"
        assert store.files_holding(secret) == [], f"the {name} is in a file in clear"


# -- the key lifecycle ---------------------------------------------------------------------


def test_lifecycle_commands_report_each_change(store: Store) -> None:
    key_id = store.create_key("alice")["AccessKeyId"]

    assert store.json("keys", "disable", key_id)["Status"] == "Inactive"
    enabled = store.ok("keys", "enable", key_id)
    assert "enabled" in enabled.stderr
    assert _fields(enabled.stdout)["Status"] == "Active"
    store.ok("keys", "disable", key_id)

    deleted = store.json("keys", "delete", key_id)
    assert isinstance(deleted, dict)
    assert deleted["Purged"] is False
    assert deleted["DeleteDate"] > deleted["RecycleDate"]
    assert deleted["Evicted"] == []
    binned = store.json("keys", "recycle-bin", "--account", ACCOUNT, "--user", "alice")
    assert [row["AccessKeyId"] for row in binned] == [key_id]
    assert binned[0]["DeleteDate"] == deleted["DeleteDate"]

    restored = store.json("keys", "restore", key_id)
    assert restored["Status"] == "Inactive"
    text = store.ok("keys", "delete", key_id).stdout
    assert "moved to the recycle bin" in text
    assert deleted["DeleteDate"][:10] in text
    assert store.json("keys", "purge", key_id) == {"AccessKeyId": key_id, "Purged": True}
    assert store.run("keys", "show", key_id).returncode == 1
    assert store.json("keys", "purge-expired") == {"Purged": []}

    leaked_id = store.create_key("bob")["AccessKeyId"]
    leaked = store.ok("keys", "mark-leaked", leaked_id)
    assert _fields(leaked.stdout)["LeakRestricted"] == "yes"
    assert "rotate" in leaked.stderr

    root_id = store.create_key(None)["AccessKeyId"]
    store.ok("keys", "disable", root_id)
    purged = store.ok("keys", "delete", root_id)
    assert "purged at once" in purged.stdout


def test_a_fourth_deletion_reports_the_key_evicted_from_the_full_recycle_bin(store: Store) -> None:
    deleted = []
    last_deleted_at = 0.0
    for round_ in range(4):
        key_id = store.create_key("carol")["AccessKeyId"]
        store.ok("keys", "disable", key_id)
        if round_ == 3:
            # The store keeps whole seconds and breaks ties by id: within the third
            # deletion's second the new key could be the "oldest" and evict itself.
            time.sleep(max(0.0, math.floor(last_deleted_at) + 1 - time.time()))
        deleted.append(store.ok("keys", "delete", key_id))
        last_deleted_at = time.time()
    assert "purged to make room" in deleted[3].stdout
    evicted = deleted[3].stdout.splitlines()[-1].rpartition(": ")[2]
    # The oldest in the bin (deletions within one second tie, broken by id).
    assert evicted in {result.stdout.split()[0] for result in deleted[:3]}
    assert store.run("keys", "show", evicted).returncode == 1


def test_last_used_and_find_owner_read_the_store_and_the_other_stores(
    store: Store, tmp_path: Path
) -> None:
    key_id = store.create_key("alice")["AccessKeyId"]
    never = store.json("keys", "last-used", key_id)
    assert never == {"AccessKeyId": key_id, "LastUsedDate": None, "ServiceName": None}
    assert store.json("keys", "last-used", key_id, "--ips")["SourceIps"] == []

    other = Store(tmp_path, "other.db")
    other_id = other.create_key("dave")["AccessKeyId"]
    found = store.json("keys", "find-owner", other_id, "--db-also", str(other.db))
    assert found == {
        "AccessKeyId": other_id,
        "AccountId": ACCOUNT,
        "UserName": "dave",
        "UserPrincipalName": f"dave@{ACCOUNT}",
        "RootKey": False,
        "Status": "Active",
        "InRecycleBin": False,
        "Store": str(other.db),
    }
    assert store.json("keys", "find-owner", key_id)["Store"] == str(store.db)
    missing = store.run("keys", "find-owner", "LTAInobody", "--db-also", str(other.db))
    assert missing.returncode == 1
    assert "EntityNotExist.User.AccessKey" in missing.stderr


# -- network policies, STS, audit -----------------------------------------------------------


def test_acl_set_show_and_clear(store: Store) -> None:
    set_result = store.json(
        "acl", "set", "--account", ACCOUNT, "--public", "10.0.0.0/8, 192.0.2.1",
        "--vpc", "vpc-a=172.16.0.0/12", "--vpc", "AllowAllVPC=10.1.0.0/16", "--disabled",
    )  # fmt: skip
    expected = {
        "Level": "account",
        "Id": ACCOUNT,
        "Policy": {
            "public": ["10.0.0.0/8", "192.0.2.1/32"],
            "vpcs": {"AllowAllVPC": ["10.1.0.0/16"], "vpc-a": ["172.16.0.0/12"]},
            "enabled": False,
        },
    }
    assert set_result == expected
    assert store.json("acl", "show", "--account", ACCOUNT) == expected
    shown = store.ok("acl", "show", "--account", ACCOUNT).stdout
    assert "VPC vpc-a" in shown
    assert "172.16.0.0/12" in shown
    store.ok("acl", "set", "--account", ACCOUNT, "--clear")
    assert store.json("acl", "show", "--account", ACCOUNT)["Policy"] is None
    actions = [event["Action"] for event in store.json("audit")]
    assert actions == ["SetNetworkPolicy", "SetNetworkPolicy"]


def test_assume_role_prints_the_credential_once_with_the_warning(store: Store) -> None:
    result = store.ok(
        "sts", "assume-role", "--account", ACCOUNT, "--role", "Reader", "--session", "s-1",
        "--duration", "7200", "--max-session-duration", "7200",
    )  # fmt: skip
    fields = _fields(result.stdout)
    assert fields["AccessKeyId"].startswith("STS.")
    assert fields["SecurityToken"]
    assert fields["Arn"] == f"acs:sts::{ACCOUNT}:assumed-role/Reader/s-1"
    assert SECRET_WARNING in result.stderr
    too_long = store.run(
        "sts", "assume-role", "--account", ACCOUNT, "--role", "Reader", "--session", "s-2",
        "--duration", "7200",
    )  # fmt: skip
    assert too_long.returncode == 1
    assert "error: InvalidParameter" in too_long.stderr
    assert "DurationSeconds" in too_long.stderr


def test_audit_lists_every_change_and_filters_by_key_owner_time_and_count(store: Store) -> None:
    alice = store.create_key("alice")["AccessKeyId"]
    bob = store.create_key("bob")["AccessKeyId"]
    store.ok("keys", "disable", alice)
    events = store.json("audit")
    assert isinstance(events, list)
    assert [(event["Action"], event["AccessKeyId"]) for event in events] == [
        ("UpdateAccessKey", alice),
        ("CreateAccessKey", bob),
        ("CreateAccessKey", alice),
    ]  # newest first
    assert store.json("audit", "--order", "oldest") == events[::-1]
    assert set(events[0]) == {
        "At", "Action", "AccessKeyId", "AccountId", "UserName", "Actor", "Detail"
    }  # fmt: skip
    assert len(store.json("audit", "--key", alice)) == 2
    by_bob = store.json("audit", "--account", ACCOUNT, "--user", "bob")
    assert [event["AccessKeyId"] for event in by_bob] == [bob]
    assert [event["Action"] for event in store.json("audit", "--limit", "1")] == ["UpdateAccessKey"]
    assert store.json("audit", "--since", "2999-01-01T00:00:00Z") == []
    table = store.ok("audit").stdout.splitlines()
    assert table[0].split() == [
        "At",
        "Action",
        "AccessKeyId",
        "AccountId",
        "UserName",
        "Actor",
        "Detail",
    ]
    assert len(table) == 4
    assert "UpdateAccessKey" in table[1]  # the table is newest first too
    assert store.run("audit", "--user", "bob").returncode == 2  # --user needs --account


# -- sign, serve, curl ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``aliak serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, store: Store, port: int, *extra: str, host: str = "127.0.0.1") -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aliak", "--db", str(store.db), "serve",
             "--host", host, "--port", str(port), *extra],
            cwd=store.directory,
            env=_clean_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_until_listening(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.stderr)
                continue
            if "listening on" in line:
                self.port = int(line.strip().rpartition(":")[2])  # for --port 0
                return line.strip()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=15)
        self._collector.join(timeout=15)
        return status

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _curl(command: str, *extra: str) -> tuple[int, dict[str, object]]:
    """Run a printed curl command as is (plus output options); (status, JSON body)."""
    words = shlex.split(command)
    assert words[0] == "curl"
    result = subprocess.run(
        [*words, "--silent", "--show-error", "--write-out", "\n%{http_code}", *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def _sign_curl(store: Store, key: dict[str, str], *args: str) -> str:
    result = store.ok(
        "sign", *args, "--action", "DescribeThings", "--version", "2024-01-01", "--curl",
        env=_credentials_env(key),
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # one ready-to-run command
    return lines[0]


@pytest.fixture
def served_key(store: Store) -> Iterator[tuple[Server, dict[str, str]]]:
    """A key of alice's, and ``aliak serve`` running over its store."""
    key = store.create_key("alice")
    with Server(store, _free_port()) as server:
        listening = server.wait_until_listening()
        assert listening == f"aliak serve: listening on http://127.0.0.1:{server.port}"
        yield server, key


def test_signed_curl_commands_are_accepted_by_serve_and_tampering_is_refused(
    store: Store, served_key: tuple[Server, dict[str, str]], tmp_path: Path
) -> None:
    serving, key = served_key
    base = f"http://127.0.0.1:{serving.port}"

    command = _sign_curl(store, key, "GET", f"{base}/things?RegionId=cn-hangzhou&Tag.1=a b")
    assert " -X GET " in command
    assert "?RegionId=cn-hangzhou&Tag.1=a%20b" in command  # the canonical query, as signed
    status, answer = _curl(command)
    assert status == 200, answer
    assert answer["AccessKeyId"] == key["AccessKeyId"]
    assert answer["Principal"] == {"AccountId": ACCOUNT, "UserName": "alice"}
    assert answer["Action"] == "DescribeThings"
    assert answer["BodyLength"] == 0
    status, answer = _curl(command)
    assert (status, answer["Code"]) == (400, "SignatureNonceUsed")  # a replay

    tampered = _sign_curl(store, key, "GET", f"{base}/things?RegionId=cn-hangzhou")
    status, answer = _curl(tampered.replace("RegionId=cn-hangzhou", "RegionId=us-west-1"))
    assert (status, answer["Code"]) == (400, "SignatureDoesNotMatch")

    body_file = tmp_path / "body.json"
    body_file.write_bytes(b'{"name": "caf\xc3\xa9"}\n')
    command = _sign_curl(store, key, "POST", f"{base}/things", "--data-file", str(body_file))
    assert f"--data-binary @{body_file}" in command
    status, answer = _curl(command)
    assert (status, answer.get("BodyLength")) == (200, len(body_file.read_bytes())), answer
    command = _sign_curl(store, key, "PUT", f"{base}/things/1", "--data", "@not-a-file")
    status, answer = _curl(command)
    assert (status, answer["BodyLength"]) == (200, len("@not-a-file"))

    assumed = store.json(
        "sts", "assume-role", "--account", ACCOUNT, "--role", "Deployer", "--session", "ci"
    )
    assert isinstance(assumed, dict)
    status, answer = _curl(_sign_curl(store, assumed, "GET", f"{base}/sts"))
    assert (status, answer["KeyType"]) == (200, "sts")

    assert serving.stop() == 0
    assert "aliak serve: stopped" in "".join(serving.stderr)
    # Stopping flushed the verifier: the key's use is on record.
    last = store.json("keys", "last-used", key["AccessKeyId"], "--ips")
    assert isinstance(last, dict)
    assert last["LastUsedDate"] is not None
    assert [use["SourceIp"] for use in last["SourceIps"]] == ["127.0.0.1"]


def test_sign_prints_the_wire_url_and_every_signed_header(store: Store) -> None:
    key = {"AccessKeyId": "LTAIexample0000000001", "AccessKeySecret": "s" * 30}
    url = "https://ecs.example.com/a%20b?b=2&a=x y"
    text = store.ok(
        "sign", "POST", url, "--data", "{}", "-H", "x-acs-region: cn", "--action", "Run",
        "--version", "2014-05-26", "--algorithm", "ACS3-HMAC-SM3", env=_credentials_env(key),
    ).stdout.splitlines()  # fmt: skip
    assert text[0] == "POST https://ecs.example.com/a%20b?a=x%20y&b=2"
    headers = dict(line.split(": ", 1) for line in text[1:])
    assert headers["host"] == "ecs.example.com"
    assert headers["x-acs-region"] == "cn"
    assert headers["Authorization"].startswith(
        "ACS3-HMAC-SM3 Credential=LTAIexample0000000001,SignedHeaders="
    )
    assert key["AccessKeySecret"] not in "\n".join(text)
    as_json = store.json("sign", "GET", url, env=_credentials_env(key))
    assert isinstance(as_json, dict)
    assert as_json["Url"] == "https://ecs.example.com/a%20b?a=x%20y&b=2"
    assert ["host", "ecs.example.com"] in as_json["Headers"]

    sts = {**key, "SecurityToken": "v1.token-value"}
    result = store.ok("sign", "GET", url, env=_credentials_env(sts))
    assert "x-acs-security-token: v1.token-value" in result.stdout
    assert "credential" in result.stderr

    no_credentials = store.run("sign", "GET", url)
    assert no_credentials.returncode == 1
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in no_credentials.stderr
    assert store.run("sign", "GET", url, "--secret", "x").returncode == 2
    assert not store.db.exists()  # signing needs no store


def test_serve_refuses_a_non_loopback_host_unless_allowed(store: Store) -> None:
    store.create_key("alice")
    refused = store.run("serve", "--host", "0.0.0.0", "--port", str(_free_port()))
    assert refused.returncode == 2
    assert "--allow-remote" in refused.stderr


# -- serve: a dual-stack host behind an IPv4 proxy; cheap refusals first ---------------------


def _dual_stack_missing() -> str | None:
    """Why this machine cannot run a dual-stack server (``None``: it can)."""
    if not socket.has_ipv6:
        return "Python has no IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", 0))
            listener.listen()
            with socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5):
                listener.accept()[0].close()
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        return f"no IPv6 loopback / dual-stack socket on this machine: {error}"
    return None


def _signed_for(key: dict[str, str], port: int, **options: Any) -> Request:
    signer = Signer(AccessKey(key["AccessKeyId"], key["AccessKeySecret"]), **options)
    return signer.sign(
        Request("POST", host=f"127.0.0.1:{port}", path="/things", body=b"{}"),
        action="DescribeThings",
        version="2024-01-01",
    )


def _post(port: int, signed: Request, *headers: tuple[str, str]) -> tuple[int, Any]:
    """Send a signed request as is over IPv4 (as an IPv4 proxy would), plus ``headers``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(signed.method, signed.path, skip_host=True)
        for name, value in (*signed.headers.items(), *headers):
            connection.putheader(name, value)
        assert isinstance(signed.body, bytes)
        connection.putheader("Content-Length", str(len(signed.body)))
        connection.endheaders(signed.body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_serve_on_a_dual_stack_host_trusts_an_ipv4_proxy_and_checks_its_client(
    store: Store,
) -> None:
    missing = _dual_stack_missing()
    if missing is not None:
        pytest.skip(missing)
    key = store.create_key("alice")
    store.ok("acl", "set", "--account", ACCOUNT, "--public", "203.0.113.7")
    with Server(store, 0, "--allow-remote", "--trusted-proxy", "127.0.0.1", host="::") as serving:
        assert serving.wait_until_listening().startswith("aliak serve: listening on http://[::]:")
        port = serving.port
        # Through the proxy 127.0.0.1 (seen by the socket as ::ffff:127.0.0.1).
        status, answer = _post(port, _signed_for(key, port), ("X-Forwarded-For", "203.0.113.7"))
        assert status == 200, answer
        assert answer["SourceIp"] == "203.0.113.7"
        # A client written in mapped form by a dual-stack proxy is the same client.
        forwarded = ("X-Forwarded-For", "198.51.100.1, ::ffff:203.0.113.7")
        status, answer = _post(port, _signed_for(key, port), forwarded)
        assert (status, answer["SourceIp"]) == (200, "203.0.113.7")
        # Without a forwarded client, the proxy's own address does not stand in for one.
        status, answer = _post(port, _signed_for(key, port))
        assert (status, answer["Code"]) == (400, "InvalidAccessKeyId.AccessPolicyDenied")
        status, answer = _post(port, _signed_for(key, port), ("X-Forwarded-For", "198.51.100.9"))
        assert (status, answer["Code"]) == (400, "InvalidAccessKeyId.AccessPolicyDenied")
        assert serving.stop() == 0


def _trickle(port: int, head: bytes, body_size: int) -> tuple[int, dict[str, Any], int]:
    """Send ``head``, then ``body_size`` bytes slowly from another thread; the answer's
    status and JSON, and how much body had gone out when it came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    stop = threading.Event()

    def send_body() -> None:
        nonlocal sent
        piece = b"u" * (64 * 1024)
        try:
            while sent < body_size and not stop.is_set():
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.01)
        except OSError:
            pass  # answered and closed

    sender = threading.Thread(target=send_body, daemon=True)
    try:
        sock.sendall(head)
        sender.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        at_answer = sent
        return response.status, json.loads(response.read()), at_answer
    finally:
        stop.set()
        sender.join(timeout=10)
        sock.close()


def test_serve_refuses_a_forged_or_oversized_upload_before_reading_its_body(
    store: Store,
) -> None:
    key = store.create_key("alice")
    size = 8 * 1024 * 1024
    with Server(store, _free_port(), "--max-body-size", str(9 * 1024 * 1024)) as serving:
        serving.wait_until_listening()
        port = serving.port
        forged = (
            f"POST /things HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        status, answer, sent = _trickle(port, forged, size)
        assert (status, answer["Code"]) == (400, "IncompleteSignature")
        assert sent < size // 2  # answered while the upload was still going out

        stale = _signed_for(key, port, clock=lambda: time.time() - 3600)
        lines = ["POST /things HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in stale.headers.items()]
        head = ("\r\n".join([*lines, f"Content-Length: {size}", "", ""])).encode()
        status, answer, sent = _trickle(port, head, size)
        assert (status, answer["Code"]) == (400, "InvalidTimeStamp.Expired")
        assert sent < size // 2

        fresh = _signed_for(key, port)
        lines = ["POST /things HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fresh.headers.items()]
        head = ("\r\n".join([*lines, f"Content-Length: {10 * 1024 * 1024}", "", ""])).encode()
        status, answer, sent = _trickle(port, head, size)
        assert (status, answer["Code"]) == (413, "PayloadTooLarge")
        assert sent < size // 2

        # A valid request still goes through, body and all.
        status, answer = _post(port, _signed_for(key, port))
        assert (status, answer["BodyLength"]) == (200, 2)
        assert serving.stop() == 0


def test_serve_refuses_a_negative_body_limit_and_a_bad_trusted_proxy_cleanly(
    store: Store,
) -> None:
    store.create_key("alice")
    negative = store.run("serve", "--max-body-size", "-5", "--port", "0")
    assert negative.returncode == 2
    assert "--max-body-size" in negative.stderr
    bogus = store.run("serve", "--trusted-proxy", "[::1]:80", "--port", "0")
    assert bogus.returncode == 2
    assert "--trusted-proxy" in bogus.stderr


# -- verify -----------------------------------------------------------------------------------


def _raw_http(signed: Request) -> bytes:
    """The request as it goes on the wire (an encoding of the query other than the
    signer's: the server decodes it before canonicalising)."""
    query = urlencode(signed.query, quote_via=quote)
    lines = [f"{signed.method} {signed.path}{'?' + query if query else ''} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    assert isinstance(signed.body, bytes)
    lines.append(f"Content-Length: {len(signed.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + signed.body


def test_verify_accepts_a_captured_request_once_then_reports_its_nonce_used(
    store: Store, tmp_path: Path
) -> None:
    key = store.create_key("alice")
    signed_at = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    signer = Signer(
        AccessKey(key["AccessKeyId"], key["AccessKeySecret"]), clock=signed_at.timestamp
    )
    request = Request(
        "POST",
        host="ecs.cn-hangzhou.aliyuncs.com",
        path="/v1/things",
        query={"RegionId": "cn-hangzhou", "Name": "a b/c"},
        body=b'{"x": 1}',
    )
    capture = tmp_path / "request.http"
    capture.write_bytes(_raw_http(signer.sign(request, action="Run", version="2014-05-26")))
    before = store.snapshot("alice")

    late = store.run("verify", str(capture), "--json")  # the clock is long past its window
    assert late.returncode == 1
    assert json.loads(late.stdout)["Code"] == "InvalidTimeStamp.Expired"
    assert store.snapshot("alice") == before  # a refusal writes nothing, not even the nonce

    now = ["--now", "2024-03-01T12:05:00Z", "--source-ip", "192.0.2.7"]
    accepted = store.run("verify", str(capture), *now)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    verified = json.loads(accepted.stdout)
    assert verified["AccessKeyId"] == key["AccessKeyId"]
    assert verified["Principal"] == {"AccountId": ACCOUNT, "UserName": "alice"}
    assert (verified["Action"], verified["SourceIp"]) == ("Run", "192.0.2.7")
    assert "verified" in accepted.stderr

    replayed = store.run("verify", *now, "--json", stdin=capture.read_bytes())  # from stdin
    assert replayed.returncode == 1
    refusal = json.loads(replayed.stdout)
    assert refusal["Code"] == "SignatureNonceUsed"
    assert refusal["HostId"] == "ecs.cn-hangzhou.aliyuncs.com"

    garbage = tmp_path / "garbage.http"
    garbage.write_bytes(b"this is not HTTP\r\n\r\n")
    malformed = store.run("verify", str(garbage))
    assert malformed.returncode == 1
    assert "error: not an HTTP/1.1 request" in malformed.stderr


# -- misuse: clear errors, right exit codes, nothing written --------------------------------


def test_failed_commands_exit_1_with_a_clear_error_and_leave_the_store_unchanged(
    store: Store,
) -> None:
    alice = store.create_key("alice")["AccessKeyId"]
    store.create_key("alice")
    before = store.snapshot("alice")
    unknown = "LTAIdoesnotexist0000"
    failures = [
        *(["keys", command, unknown] for command in (
            "show", "disable", "enable", "delete", "restore", "purge", "last-used",
            "find-owner", "rotate", "mark-leaked",
        )),
        ["keys", "delete", alice],  # still Active
        ["keys", "restore", alice],  # not in the recycle bin
        ["keys", "create", "--account", ACCOUNT, "--user", "alice"],  # 2 keys at most
        ["keys", "rotate", alice],  # the owner is at its limit
        ["keys", "create", "--account", ACCOUNT, "--user", "not a name"],
        ["keys", "list", "--account", ACCOUNT, "--user", "nobody"],
        ["acl", "set", "--key", unknown, "--public", "10.0.0.0/8"],
        ["acl", "set", "--account", ACCOUNT, "--public", "10.0.0.300"],
        ["sts", "assume-role", "--account", ACCOUNT, "--role", "R", "--session", "x"],
    ]  # fmt: skip
    for command, result in zip(
        failures, run_all(store.directory, failures, db=store.db), strict=True
    ):
        assert result.returncode == 1, command
        assert result.stderr.startswith("error: "), command
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stdout == "", command
    not_found = store.run("keys", "show", unknown)
    assert not_found.stderr == (
        "error: EntityNotExist.User.AccessKey: The specified access key does not exist. "
        f"({unknown})\n"
    )
    assert store.snapshot("alice") == before


def test_usage_errors_exit_2_before_anything_is_opened(tmp_path: Path) -> None:
    misuses = [
        ["keys"],
        ["keys", "show"],
        ["keys", "create", "--user", "alice"],
        ["acl", "set", "--public", "10.0.0.0/8"],
        ["acl", "set", "--account", ACCOUNT],
        ["acl", "set", "--account", ACCOUNT, "--clear", "--public", "10.0.0.0/8"],
        ["acl", "set", "--account", ACCOUNT, "--vpc", "no-equals-sign"],
        ["sts", "assume-role", "--account", ACCOUNT, "--session", "s-1"],
        ["sign", "GET", "http://h/", "-H", "no colon"],
        ["audit", "--since", "yesterday"],
        ["verify", "--now", "noon"],
    ]
    for command, result in zip(
        misuses, run_all(tmp_path, misuses, db=tmp_path / "aliak.db"), strict=True
    ):
        assert result.returncode == 2, command
        assert "usage: aliak" in result.stderr, command
    assert list(tmp_path.iterdir()) == []  # nothing created, so nothing written


def test_a_store_that_cannot_be_used_is_refused_in_one_line_and_never_created(
    tmp_path: Path,
) -> None:
    missing_directory = tmp_path / "no" / "such" / "dir" / "aliak.db"
    commands = [
        ["keys", "create", "--account", ACCOUNT, "--user", "alice"],
        ["sts", "assume-role", "--account", ACCOUNT, "--role", "R", "--session", "s-1"],
        ["keys", "list", "--account", ACCOUNT],
        ["audit"],
    ]
    for result in run_all(tmp_path, commands, db=missing_directory):
        assert result.returncode == 1
        assert result.stderr.startswith("error: ")
        assert "does not exist" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "no").exists()

    absent = tmp_path / "absent.db"
    for result in run_all(tmp_path, [*commands[2:], ["keys", "show", "x"]], db=absent):
        assert result.returncode == 1
        assert "no aliak store" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # read nothing, wrote nothing

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    result = run_aliak(tmp_path, "keys", "list", "--account", ACCOUNT, db=garbage)
    assert result.returncode == 1
    assert "not an aliak store" in result.stderr

    damaged = Store(tmp_path, "damaged.db")
    damaged.create_key("alice")
    with damaged.db.open("r+b") as file:  # keep the SQLite header, scramble the pages
        file.seek(100)
        file.write(os.urandom(16384))
    for command in (["keys", "list", "--account", ACCOUNT, "--user", "alice"], ["audit"]):
        result = damaged.run(*command)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ")
        assert len(result.stderr.splitlines()) == 1

    keyless = Store(tmp_path, "keyless.db")
    keyless.create_key("alice")
    Path(f"{keyless.db}.key").unlink()
    result = keyless.run("keys", "list", "--account", ACCOUNT, "--user", "alice")
    assert result.returncode == 1
    assert "master key" in result.stderr
    assert not Path(f"{keyless.db}.key").exists()  # no new key would open the old secrets


def test_a_master_key_that_is_not_the_stores_is_refused_with_a_clear_error(
    store: Store, tmp_path: Path
) -> None:
    from aliak.sealing import MasterKeyring

    store.create_key("alice")
    before = store.snapshot("alice")
    on_disk = Path(f"{store.db}.key").read_text()
    other = MasterKeyring.generate().to_text()
    for command in (
        ["keys", "list", "--account", ACCOUNT, "--user", "alice"],
        ["keys", "create", "--account", ACCOUNT, "--user", "bob"],
    ):
        result = store.run(*command, env={"ALIAK_MASTER_KEY": other})
        assert result.returncode == 1
        assert result.stderr.startswith("error: InvalidParameter: "), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "ALIAK_MASTER_KEY" in result.stderr
        assert f"{store.db}.key" in result.stderr
        for text in (other, on_disk):
            for line in text.splitlines():
                assert line.split(":", 1)[1] not in result.stderr + result.stdout
    assert store.snapshot("alice") == before

    # The key file replaced by another key: refused, naming the key file.
    Path(f"{store.db}.key").write_text(other)
    result = store.run("keys", "list", "--account", ACCOUNT, "--user", "alice")
    assert result.returncode == 1
    assert f"the key file {store.db}.key" in result.stderr
    Path(f"{store.db}.key").write_text(on_disk)
    assert store.snapshot("alice") == before


def test_db_defaults_to_the_environment_then_the_working_directory(tmp_path: Path) -> None:
    by_env = tmp_path / "from-env.db"
    result = run_aliak(
        tmp_path, "keys", "create", "--account", ACCOUNT, "--user", "u", "--json",
        env={"ALIAK_DB": str(by_env)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert by_env.exists()
    result = run_aliak(tmp_path, "keys", "create", "--account", ACCOUNT, "--user", "u", "--json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "aliak.db").exists()
