"""The signing-debug loop of the ``aliak`` command, run as a user runs it (``python -m
aliak`` in a subprocess, over a store in a temporary directory):

- ``aliak sign --http FILE`` writes the signed request as a raw HTTP/1.1 request that
  ``aliak verify FILE`` reads back byte for byte, for ACS3, RPC and ROA, text and
  binary bodies; a tampered header or body is refused with the right code;
- ``sign --json`` carries the body; ``verify`` without ``--source-ip`` says what it did;
- ``verify --explain`` shows the canonical request and string to sign the verifier
  rebuilt and the check that refused, never the secret, a security token, or the
  signature the server expected (that would be a signing oracle);
- ``--json`` errors are one JSON object on stderr;
- ``aliak completion bash|zsh`` prints a script generated from the parser.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aliak import AccessKey, Request, Signer
from aliak.cli import _parser
from aliak.cli._raw_http import format_http_request, parse_http_request

ACCOUNT = "1234567890123456"
FORM = "application/x-www-form-urlencoded"
BINARY = bytes(range(256)) + b"\r\n\r\n\x00\xff"  # not UTF-8, holds a blank line
SIGNED_AT = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
NOW = ["--now", "2024-03-01T12:05:00Z"]


def _clean_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALIAK_", "ALIBABA_CLOUD_"))
    }


class Run:
    """One finished ``aliak`` process: stdout as bytes and as text, stderr as text."""

    def __init__(self, completed: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = completed.returncode
        self.raw = completed.stdout
        self.stdout = completed.stdout.decode("utf-8", "replace")
        self.stderr = completed.stderr.decode("utf-8", "replace")
        assert "Traceback" not in self.stderr, self.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Store:
    """A temporary store, the ``aliak`` command bound to it, and one key of alice's."""

    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.db = tmp_path / "aliak.db"

    def run(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Run:
        completed = subprocess.run(
            [sys.executable, "-m", "aliak", "--db", str(self.db), *args],
            cwd=self.directory,
            input=stdin,
            capture_output=True,
            env={**_clean_environment(), **(env or {})},
            timeout=60,
            check=False,
        )
        return Run(completed)

    def ok(self, *args: str, **options: Any) -> Run:
        result = self.run(*args, **options)
        assert result.returncode == 0, result.output
        return result

    def json(self, *args: str, **options: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **options).stdout)

    def create_key(self, user: str = "alice") -> dict[str, str]:
        created: dict[str, str] = self.json("keys", "create", "--account", ACCOUNT, "--user", user)
        return created


def _credentials(key: dict[str, str]) -> dict[str, str]:
    environment = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": key["AccessKeyId"],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": key["AccessKeySecret"],
    }
    if "SecurityToken" in key:
        environment["ALIBABA_CLOUD_SECURITY_TOKEN"] = key["SecurityToken"]
    return environment


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


@pytest.fixture
def key(store: Store) -> dict[str, str]:
    return store.create_key()


def _tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (old, data)
    return data.replace(old, new)


def _tampered_body(data: bytes) -> bytes:
    """The same request with one byte of its body changed (its length kept)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    assert body
    return head + separator + bytes([body[0] ^ 0x01]) + body[1:]


# -- sign --http: the file verify reads, byte for byte -------------------------------------

# (scheme, URL, extra sign arguments, body, whether the scheme's signature covers it)
ROUND_TRIPS = {
    "acs3-text": ("ACS3", "http://ecs.example.com/v1/things?Name=a%20b&RegionId=cn", [], "text", True),
    "acs3-binary": ("ACS3", "http://ecs.example.com/v1/blob", [], "binary", True),
    "rpc-form": ("RPC", "http://ecs.example.com/?RegionId=cn", ["-H", f"Content-Type: {FORM}"], "form", True),
    "rpc-binary": ("RPC", "http://ecs.example.com/", [], "binary", False),
    "roa-text": ("ROA", "http://cs.example.com/clusters/c-1?Page=1", ["-H", "Content-Type: application/json"], "text", True),
    "roa-binary": ("ROA", "http://oss.example.com/bucket/obj?acl=", [], "binary", True),
}  # fmt: skip
TEXT_BODY = '{"name": "déjà vu", "n": 1}'
FORM_BODY = "InstanceId=i-1&Note=a+b%21"


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_sign_http_writes_what_verify_reads_back_and_a_tampered_copy_is_refused(
    store: Store, key: dict[str, str], case: str
) -> None:
    scheme, url, extra, kind, body_covered = ROUND_TRIPS[case]
    capture = store.directory / "request.http"
    if kind == "binary":
        (store.directory / "body.bin").write_bytes(BINARY)
        body, data = BINARY, ["--data-file", "body.bin"]
    else:
        text = FORM_BODY if kind == "form" else TEXT_BODY
        body, data = text.encode(), ["--data", text]
    signed = store.json(
        "sign", "POST", url, "--scheme", scheme, "--action", "RunThing", "--version", "2024-01-01",
        *extra, *data, "--http", str(capture), env=_credentials(key),
    )  # fmt: skip
    written = capture.read_bytes()
    assert stat.S_IMODE(capture.stat().st_mode) == 0o600  # a signed request is a credential

    # sign --json carries the body: as text when it is UTF-8, else Base64, and says which.
    if kind == "binary":
        assert signed["BodyEncoding"] == "base64"
        assert base64.b64decode(signed["Body"]) == BINARY
    else:
        assert (signed["BodyEncoding"], signed["Body"].encode()) == ("utf-8", body)

    # The file is that request: its request line, its headers in order, its body.
    parts = urlsplit(signed["Url"])
    head = [f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in signed["Headers"]]
    head.append(f"Content-Length: {len(body)}")
    assert written == ("\r\n".join(head) + "\r\n\r\n").encode() + body
    raw = parse_http_request(written)
    assert raw.body == body
    assert list(raw.headers) == [*map(tuple, signed["Headers"]), ("Content-Length", str(len(body)))]

    # Refused first (a refusal writes nothing, not even the nonce) ...
    if scheme == "RPC":  # RPC signs parameters only: tamper with one in the request line
        forged = _tamper(written, b"Action=RunThing", b"Action=DropThing")
    else:
        forged = _tamper(written, b"x-acs-action: RunThing", b"x-acs-action: DropThing")
    refused = store.run("verify", "--json", "--source-ip", "192.0.2.7", stdin=forged)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["Code"] == "SignatureDoesNotMatch"
    tampered = store.run(
        "verify", "-", "--json", "--source-ip", "192.0.2.7", stdin=_tampered_body(written)
    )
    if body_covered:
        expected = "ContentMD5NotMatched" if scheme == "ROA" else "SignatureDoesNotMatch"
        assert tampered.returncode == 1
        assert json.loads(tampered.stdout)["Code"] == expected
        capture_verified = store.run("verify", str(capture), "--json", "--source-ip", "192.0.2.7")
    else:
        # RPC V2 does not sign a body that is not a form: the change goes through, and the
        # result says so -- which is why --scheme ACS3 (or ROA) is the one to use for bodies.
        assert tampered.returncode == 0, tampered.output
        assert json.loads(tampered.stdout)["BodySigned"] is False
        capture_verified = store.run("verify", str(capture), "--json", "--source-ip", "192.0.2.7")
        assert json.loads(capture_verified.stdout)["Code"] == "SignatureNonceUsed"
        return
    # ... then the request as signed is accepted, once.
    assert capture_verified.returncode == 0, capture_verified.output
    verified = json.loads(capture_verified.stdout)
    assert (verified["Scheme"], verified["Action"]) == (scheme, "RunThing")
    assert (verified["AccessKeyId"], verified["BodySigned"]) == (key["AccessKeyId"], True)
    again = store.run("verify", str(capture), "--json", "--source-ip", "192.0.2.7")
    assert json.loads(again.stdout)["Code"] == "SignatureNonceUsed"


def test_sign_http_dash_writes_the_request_to_stdout_for_verify_to_read_from_stdin(
    store: Store, key: dict[str, str]
) -> None:
    (store.directory / "body.bin").write_bytes(BINARY)
    url = "http://ecs.example.com/v1/blob"
    signed = store.ok(
        "sign", "PUT", url, "--action", "Put", "--version", "2024-01-01", "--data-file",
        "body.bin", "--http", "-", env=_credentials(key),
    )  # fmt: skip
    assert signed.raw.startswith(b"PUT /v1/blob HTTP/1.1\r\n")
    assert signed.raw.endswith(b"\r\n\r\n" + BINARY)  # stdout is the request, nothing else
    verified = store.ok("verify", "--source-ip", "192.0.2.7", stdin=signed.raw)
    assert json.loads(verified.stdout)["Action"] == "Put"
    assert "verified" in verified.stderr

    both = store.run("sign", "GET", url, "--http", "-", "--curl", env=_credentials(key))
    assert both.returncode == 2
    assert "--curl" in both.stderr


def test_sign_json_of_a_request_without_a_body_says_so_and_http_refuses_bad_framing(
    store: Store, key: dict[str, str]
) -> None:
    env = _credentials(key)
    signed = store.json("sign", "GET", "http://ecs.example.com/", "--action", "A", env=env)
    assert (signed["Body"], signed["BodyEncoding"]) == ("", "utf-8")

    capture = store.directory / "get.http"
    store.ok(
        "sign", "GET", "http://ecs.example.com/", "--action", "A", "--http", str(capture), env=env
    )
    assert b"content-length" not in capture.read_bytes().lower()  # a GET without a body
    assert parse_http_request(capture.read_bytes()).body == b""

    for header in ("Content-Length: 99", "Transfer-Encoding: chunked"):
        bad = store.run(
            "sign", "POST", "http://ecs.example.com/", "--data", "abc", "-H", header,
            "--http", str(store.directory / "bad.http"), env=env,
        )  # fmt: skip
        assert bad.returncode == 1
        assert bad.stderr.startswith("error: "), bad.stderr
        assert not (store.directory / "bad.http").exists()


def test_the_writer_and_the_reader_agree_on_every_part_of_a_request() -> None:
    """In-process: a request with a non-UTF-8 header byte, an empty header, a query that
    needs encoding and a binary body comes back as the Request that was signed."""
    signer = Signer(AccessKey("LTAI" + "0" * 20, "s" * 30), clock=SIGNED_AT.timestamp)
    request = Request(
        "PATCH",
        host="api.example.com:8443",
        path="/a%2Fb/c~d",
        query={"q": "a b+c/é", "empty": "", "z": "1"},
        headers=[("x-acs-meta", "caf\udce9"), ("X-Empty", ""), ("Accept", "*/*")],
        body=BINARY,
    )
    signed = signer.sign(request, action="Patch", version="2024-01-01")
    raw = parse_http_request(format_http_request(signed))
    rebuilt = raw.to_request()
    assert rebuilt.body == signed.body == BINARY
    assert (rebuilt.method, rebuilt.path, rebuilt.host) == (
        "PATCH",
        "/a%2Fb/c~d",
        "api.example.com:8443",
    )
    assert sorted(rebuilt.query) == sorted(signed.query)
    assert list(rebuilt.headers.items()) == [
        *signed.headers.items(),
        ("Content-Length", str(len(BINARY))),
    ]


# -- verify without --source-ip -------------------------------------------------------------


def test_verify_without_a_source_ip_says_what_the_network_acl_did(
    store: Store, key: dict[str, str]
) -> None:
    env = _credentials(key)
    url = "http://ecs.example.com/"
    first, second, third = (store.directory / f"r{n}.http" for n in range(3))
    for capture in (first, second, third):
        store.ok(
            "sign", "GET", url, "--action", "A", "--version", "V", "--http", str(capture), env=env
        )

    no_policy = store.ok("verify", str(first))  # no policy: nothing to check the address for
    assert "no network policy is enabled for this key or its account" in no_policy.stderr

    store.ok("acl", "set", "--key", key["AccessKeyId"], "--public", "203.0.113.0/24")
    text = store.run("verify", str(second))
    as_json = store.run("verify", str(second), "--json")
    for result in (text, as_json):
        assert result.returncode == 1
        assert json.loads(result.stdout)["Code"] == "InvalidAccessKeyId.AccessPolicyDenied"
        assert "None" not in result.stderr
    assert "no source IP was given (--source-ip)" in text.stderr
    assert "key-level network policy is enabled" in text.stderr
    error = json.loads(as_json.stderr)
    assert error["Code"] == "InvalidAccessKeyId.AccessPolicyDenied"
    assert error["Detail"].startswith("no source IP was given (--source-ip) and the key-level")

    outside = store.run("verify", str(second), "--json", "--source-ip", "198.51.100.1")
    assert json.loads(outside.stderr)["Detail"] == "198.51.100.1 denied by the key-level policy"
    inside = store.ok("verify", str(third), "--source-ip", "203.0.113.9")
    assert json.loads(inside.stdout)["AclRule"]


# -- verify --explain --------------------------------------------------------------------


def _expected_signatures(scheme: str, secret: str, strings: list[str]) -> list[str]:
    """What the server computes for each string to sign: the forgery an explanation must
    never hand out."""
    if scheme == "ACS3":
        return [hmac.new(secret.encode(), s.encode(), hashlib.sha256).hexdigest() for s in strings]
    key = (secret + "&") if scheme == "RPC" else secret
    return [
        base64.b64encode(hmac.new(key.encode(), s.encode(), hashlib.sha1).digest()).decode()
        for s in strings
    ]


EXPLAINED = {
    "ACS3": (Request("POST", host="ecs.example.com", path="/v1/x", query={"b": "2", "a": "1"}, body=b'{"x": 1}'), b"x-acs-action: Run"),
    "RPC": (Request("POST", host="ecs.example.com", path="/", headers={"content-type": FORM}, body=b"Name=n%201"), b"Action=Run"),
    "ROA": (Request("PUT", host="cs.example.com", path="/c/1", query={"k": ""}, body=BINARY), b"x-acs-action: Run"),
}  # fmt: skip


@pytest.mark.parametrize("scheme", list(EXPLAINED))
def test_explain_shows_what_the_verifier_rebuilt_and_which_check_refused_never_a_forgery(
    store: Store, key: dict[str, str], scheme: str
) -> None:
    request, signed_action = EXPLAINED[scheme]
    signer = Signer(
        AccessKey(key["AccessKeyId"], key["AccessKeySecret"]),
        scheme=scheme,
        clock=SIGNED_AT.timestamp,
    )
    detailed = signer.sign_detailed(request, action="Run", version="2024-01-01")
    capture = store.directory / "request.http"
    capture.write_bytes(format_http_request(detailed.request))
    forged = _tamper(capture.read_bytes(), signed_action, signed_action.replace(b"Run", b"Rum"))

    # The genuine request: the verifier rebuilt what the signer signed.
    genuine = store.run(
        "verify", str(capture), "--explain", "--json", "--source-ip", "192.0.2.7", *NOW
    )
    assert genuine.returncode == 0, genuine.output
    shown = json.loads(genuine.stdout)
    assert shown["Result"]["Scheme"] == scheme
    explained = shown["Explain"]
    assert (explained["Scheme"], explained["Refused"]) == (scheme, None)
    assert explained["PresentedSignature"] == detailed.signature  # the client's: fine to show
    pairs = [(pair["CanonicalRequest"], pair["StringToSign"]) for pair in explained["Computed"]]
    assert (detailed.canonical_request, detailed.string_to_sign) in pairs

    # The forged one: refused at the signature check, with what the server computed.
    for mode in (["--json"], []):  # a refusal writes nothing: the same forgery twice
        refused = store.run(
            "verify", "-", "--explain", *mode, "--source-ip", "192.0.2.7", *NOW, stdin=forged
        )
        assert refused.returncode == 1
        if mode:
            explained = json.loads(refused.stdout)["Explain"]
            assert explained["Refused"]["Code"] == "SignatureDoesNotMatch"
            assert explained["Refused"]["Check"] == "step 5: the signature check"
            strings = [pair["StringToSign"] for pair in explained["Computed"]]
            assert detailed.string_to_sign not in strings  # it is the forgery's, rebuilt
            assert json.loads(refused.stderr)["Code"] == "SignatureDoesNotMatch"
        else:
            assert "string to sign" in refused.stdout
            assert "refused by  step 5: the signature check" in refused.stdout
            assert "SignatureDoesNotMatch" in refused.stdout
            assert "aliak verify: refused: SignatureDoesNotMatch" in refused.stderr
        assert key["AccessKeySecret"] not in refused.output
        for expected in _expected_signatures(scheme, key["AccessKeySecret"], strings):
            assert expected not in refused.output
        assert detailed.signature in refused.output  # the presented one is shown


def test_explain_says_why_nothing_was_rebuilt_and_masks_a_security_token(
    store: Store,
) -> None:
    store.create_key()
    unsigned = store.run("verify", "--explain", stdin=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert unsigned.returncode == 1
    assert "no signature scheme recognised" in unsigned.stdout
    assert "steps 1-2" in unsigned.stdout

    malformed = store.run("verify", "--explain", "--json", stdin=b"GET / HTTP/1.1\r\nHost: h\r\n"
                          b"Authorization: ACS3-HMAC-SHA256 Credential=x\r\n\r\n")  # fmt: skip
    explained = json.loads(malformed.stdout)["Explain"]
    assert explained["NotComputed"].startswith("the ACS3 signature's parts cannot be read")
    assert explained["Refused"]["Code"] == "IncompleteSignature"

    sts = store.json("sts", "assume-role", "--account", ACCOUNT, "--role", "R", "--session", "s-1")
    token = sts["SecurityToken"]
    for scheme in ("ACS3", "RPC"):
        capture = store.directory / f"{scheme}.http"
        store.ok(
            "sign", "GET", "http://ecs.example.com/", "--scheme", scheme, "--action", "A",
            "--version", "V", "--http", str(capture), env=_credentials(sts),
        )  # fmt: skip
        explained = store.run("verify", str(capture), "--explain")
        assert explained.returncode == 0, explained.output
        assert "<security token>" in explained.stdout
        assert token not in explained.output
        assert sts["AccessKeySecret"] not in explained.output


# -- --json errors -----------------------------------------------------------------------


def test_errors_under_json_are_one_object_on_stderr_and_text_is_unchanged(store: Store) -> None:
    store.create_key()
    unknown = "LTAIdoesnotexist0000"
    as_json = store.run("keys", "show", unknown, "--json")
    assert (as_json.returncode, as_json.stdout) == (1, "")
    assert len(as_json.stderr.splitlines()) == 1
    assert json.loads(as_json.stderr) == {
        "Code": "EntityNotExist.User.AccessKey",
        "Message": "The specified access key does not exist.",
        "Detail": unknown,
    }
    text = store.run("keys", "show", unknown)
    assert text.stderr == (
        "error: EntityNotExist.User.AccessKey: The specified access key does not exist. "
        f"({unknown})\n"
    )

    missing = store.run("verify", "no-such.http", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stderr) == {
        "Code": "OSError",
        "Message": "No such file or directory",
        "Detail": "no-such.http",
    }
    assert (
        store.run("verify", "no-such.http").stderr
        == "error: no-such.http: No such file or directory\n"
    )
    garbage = store.run("verify", "--json", stdin=b"not HTTP\r\n\r\n")
    assert garbage.returncode == 1
    error = json.loads(garbage.stderr)
    assert error["Code"] == "CommandFailed"
    assert error["Message"].startswith("not an HTTP/1.1 request")


# -- completion --------------------------------------------------------------------------


def _commands(parser: Any, path: str = "") -> dict[str, Any]:
    """Every command path of the parser (``keys create``), with its parser."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{path} {name}".strip()))
    return found


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    """What the script offers for ``words`` (the last one being completed)."""
    line = " ".join(f"'{word}'" for word in words)
    program = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _aliak; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, check=True, cwd=script.parent
    )
    assert done.stderr == ""
    return done.stdout.split()


def test_bash_completion_is_valid_and_completes_commands_options_and_values(store: Store) -> None:
    result = store.ok("completion", "bash")
    script = store.directory / "aliak.bash"
    script.write_text(result.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True)
    for word in ("keys", "create", "--account", "complete -F _aliak aliak"):
        assert word in result.stdout
    for path, parser in _commands(_parser()).items():  # every command and option is listed
        assert f"{path.split(' ')[-1]}" in result.stdout
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                assert option in result.stdout, (path, option)
    (store.directory / "capture.http").write_bytes(b"")
    assert _bash_complete(script, ["aliak", "ke"]) == ["keys"]
    assert _bash_complete(script, ["aliak", "keys", "cr"]) == ["create"]
    assert _bash_complete(script, ["aliak", "--db", "x.db", "keys", "create", "--acc"]) == [
        "--account"
    ]
    assert _bash_complete(script, ["aliak", "sign", "--scheme", ""]) == ["ACS3", "RPC", "ROA"]
    assert _bash_complete(script, ["aliak", "completion", ""]) == ["bash", "zsh"]
    assert _bash_complete(script, ["aliak", "verify", "capt"]) == ["capture.http"]
    assert _bash_complete(script, ["aliak", "sign", "--http", "capt"]) == ["capture.http"]
    assert _bash_complete(script, ["aliak", "keys", "create", "--account", ""]) == []  # a value


def test_zsh_completion_is_a_compdef_script_of_the_same_commands(store: Store) -> None:
    result = store.ok("completion", "zsh")
    text = result.stdout
    lines = text.splitlines()
    assert lines[0] == "#compdef aliak"
    for function in (
        "_aliak_commands",
        "_aliak_options",
        "_aliak_values",
        "_aliak_takes_value",
        "_aliak_is_file",
        "_aliak_is_command",
        "_aliak",
    ):
        assert f"{function}() {{" in lines
    assert "    compdef _aliak aliak" in lines
    assert "_describe -t commands command entries" in text
    assert "_files" in text
    # The same tables as bash's, with descriptions for _describe.
    assert "        keys) print -rl -- 'create:" in text
    assert "'--account:" in text
    assert "'sign|--scheme') print -rl -- ACS3 RPC ROA ;;" in text
    assert "'keys create|--account'" in text
    assert lines.count("}") == 7  # each function closed
    zsh = shutil.which("zsh")
    if zsh is not None:  # else: the structure above is what is checked
        script = store.directory / "_aliak"
        script.write_text(text)
        subprocess.run([zsh, "-n", str(script)], check=True)

    usage = store.run("completion", "fish")
    assert usage.returncode == 2
