"""``aliak demo``: the main job, end to end, on the embedded SQLite default.

1. Signs the documented worked example and shows each stage (canonical request,
   string-to-sign, Authorization) against the documented signature.
2. Creates a RAM user's key in a fresh SQLite store in a temporary directory, starts a
   verifying server on 127.0.0.1 (``AliakWSGIMiddleware`` under ``wsgiref``), sends real
   signed HTTP requests through ``requests`` and ``httpx``, and shows, as a table, the
   accepted requests and each refusal with the code the server returned.

Exits non-zero if any outcome differs from the expected one.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from aliak.acl import NetworkPolicy
from aliak.credentials import AccessKey
from aliak.keys import KeyManager
from aliak.model import RamRole, RamUser
from aliak.request import Request
from aliak.signer import Signer
from aliak.storage.sqlite import SQLiteStore
from aliak.timestamps import parse_acs_date
from aliak.verifier import Verifier

__all__ = ["run_demo"]

# The documented worked example: fixed inputs and the signature the docs give for them.
_EXAMPLE_ACCESS_KEY_ID = "YourAccessKeyId"
_EXAMPLE_SECRET = "YourAccessKeySecret"  # noqa: S105 - the docs' placeholder, not a credential
_EXAMPLE_DATE = "2023-10-26T10:22:32Z"
_EXAMPLE_NONCE = "3156853299f313e23d1673dc12e1703d"
_EXAMPLE_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"

_ACCOUNT = "1234567890123456"
_HOST = "ecs.cn-hangzhou.aliyuncs.com"


def _worked_example(out: TextIO) -> bool:
    request = Request(
        "POST",
        host="ecs.cn-shanghai.aliyuncs.com",
        path="/",
        query={
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        },
    )
    signer = Signer(
        AccessKey(_EXAMPLE_ACCESS_KEY_ID, _EXAMPLE_SECRET),
        clock=lambda: float(parse_acs_date(_EXAMPLE_DATE)),
        nonce_factory=lambda: _EXAMPLE_NONCE,
    )
    result = signer.sign_detailed(request, action="RunInstances", version="2014-05-26")
    out.write("1. The documented V3 worked example (ACS3-HMAC-SHA256)\n\n")
    out.write("== Canonical request ==\n")
    out.write(result.canonical_request + "\n\n")
    out.write("== String to sign ==\n")
    out.write(result.string_to_sign + "\n\n")
    out.write("== Authorization ==\n")
    out.write(result.authorization + "\n\n")
    if result.signature != _EXAMPLE_SIGNATURE:
        out.write(f"MISMATCH: the documented signature is {_EXAMPLE_SIGNATURE}\n\n")
        return False
    out.write("OK: the signature equals the one in Alibaba Cloud's documentation.\n\n")
    return True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The demo prints its own table; no access log."""


def _echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    verified = environ["aliak.verified"]
    body = json.dumps(verified.to_dict()).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


@contextlib.contextmanager
def _verifying_server(store: SQLiteStore) -> Iterator[str]:
    from aliak.integrations.wsgi import AliakWSGIMiddleware  # noqa: PLC0415 - optional layer

    # freshness=0: every request reads the key's current state, so the table shows a
    # change at once (a real deployment keeps the default, 1 s).
    verifier = Verifier(store, freshness=0)
    app = AliakWSGIMiddleware(_echo, verifier)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="aliak-demo", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        verifier.close()


class _Scenario:
    def __init__(self, client: str, what: str, expected: str, send: Callable[[], Any]) -> None:
        self.client = client
        self.what = what
        self.expected = expected
        self.send = send
        self.got = ""

    def run(self) -> bool:
        response = self.send()
        status = response.status_code
        if status == 200:
            self.got = "200 accepted"
        else:
            self.got = f"{status} {response.json().get('Code', '?')}"
        return self.got == self.expected


def _scenarios(store: SQLiteStore, base: str) -> list[_Scenario]:
    import httpx  # noqa: PLC0415 - the demo's optional clients
    import requests  # noqa: PLC0415

    from aliak.integrations.httpx import AliakAuth as HttpxAuth  # noqa: PLC0415
    from aliak.integrations.requests import AliakAuth as RequestsAuth  # noqa: PLC0415

    keys = KeyManager(store, actor="aliak-demo")
    user = RamUser(_ACCOUNT, "demo-app")
    new = keys.create_access_key(user)
    url = f"{base}/?RegionId=cn-hangzhou&InstanceId.1=i-demo"
    headers = {"Host": _HOST}

    def requests_auth(credential: Any) -> Any:
        return RequestsAuth(credential, action="DescribeInstances", version="2014-05-26")

    def httpx_auth(credential: Any) -> Any:
        return HttpxAuth(credential, action="DescribeInstances", version="2014-05-26")

    def requests_get(auth: Any) -> Any:
        return requests.get(url, auth=auth, headers=headers, timeout=10)

    def httpx_post(auth: Any) -> Any:
        return httpx.post(url, auth=auth, headers=headers, content=b'{"demo":1}', timeout=10)

    def replay() -> Any:
        with requests.Session() as session:
            prepared = session.prepare_request(
                requests.Request("GET", url, headers=headers, auth=requests_auth(new.access_key))
            )
            session.send(prepared, timeout=10)
            return session.send(prepared, timeout=10)  # the same nonce, again

    def with_policy() -> Any:
        keys.set_network_policy(
            NetworkPolicy(public=["198.51.100.0/24"]), access_key_id=new.access_key_id
        )
        try:
            return requests_get(requests_auth(new.access_key))
        finally:
            keys.set_network_policy(None, access_key_id=new.access_key_id)

    def skewed() -> Any:
        late = Signer(new.access_key, clock=lambda: time.time() - 3600)
        return requests_get(requests_auth(late))

    def expired_sts() -> Any:
        two_hours_ago = KeyManager(store, clock=lambda: time.time() - 7200, actor="aliak-demo")
        credential = two_hours_ago.assume_role(
            RamRole(_ACCOUNT, "DemoRole"), session_name="demo", duration=3600
        )
        return httpx_post(httpx_auth(credential))

    def fresh_sts() -> Any:
        credential = keys.assume_role(RamRole(_ACCOUNT, "DemoRole"), session_name="demo")
        return httpx_post(httpx_auth(credential))

    def disabled() -> Any:
        keys.disable_access_key(new.access_key_id)
        return requests_get(requests_auth(new.access_key))

    def recycled() -> Any:
        keys.delete_access_key(new.access_key_id)
        return httpx_post(httpx_auth(new.access_key))

    forged = AccessKey(new.access_key_id, "not-the-secret-of-this-key-000")

    def signed_get() -> Any:
        return requests_get(requests_auth(new.access_key))

    def signed_post() -> Any:
        return httpx_post(httpx_auth(new.access_key))

    def wrong_secret() -> Any:
        return requests_get(requests_auth(forged))

    accepted = "200 accepted"
    return [
        _Scenario("requests", "signed GET", accepted, signed_get),
        _Scenario("httpx", "signed POST with a body", accepted, signed_post),
        _Scenario("httpx", "STS credential (AssumeRole)", accepted, fresh_sts),
        _Scenario("requests", "wrong secret", "400 SignatureDoesNotMatch", wrong_secret),
        _Scenario("requests", "replayed nonce", "400 SignatureNonceUsed", replay),
        _Scenario("requests", "skewed clock (1 hour late)", "400 InvalidTimeStamp.Expired", skewed),
        _Scenario("requests", "network ACL denies 127.0.0.1",
                  "400 InvalidAccessKeyId.AccessPolicyDenied", with_policy),
        _Scenario("httpx", "expired STS token", "400 InvalidSecurityToken.Expired", expired_sts),
        _Scenario("requests", "disabled key", "400 InvalidAccessKeyId.Inactive", disabled),
        _Scenario("httpx", "key in the recycle bin", "400 InvalidAccessKeyId.Inactive", recycled),
    ]  # fmt: skip


def _table(out: TextIO, scenarios: list[_Scenario], passed: list[bool]) -> None:
    rows = [["#", "client", "request", "expected", "server answered", "result"]]
    for number, (scenario, ok) in enumerate(zip(scenarios, passed, strict=True), start=1):
        rows.append(
            [str(number), scenario.client, scenario.what, scenario.expected, scenario.got,
             "ok" if ok else "UNEXPECTED"]
        )  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
        if index == 0:
            out.write("  ".join("-" * width for width in widths) + "\n")


def _end_to_end(out: TextIO) -> bool:
    out.write("2. A verifying server on 127.0.0.1 and real signed HTTP requests\n\n")
    with tempfile.TemporaryDirectory(prefix="aliak-demo-") as directory:
        store = SQLiteStore(str(Path(directory) / "aliak.db"))
        try:
            with _verifying_server(store) as base, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.write(
                    f"store:  {Path(directory) / 'aliak.db'} (SQLite, master key beside it)\n"
                )
                out.write(f"server: {base} (AliakWSGIMiddleware under wsgiref)\n\n")
                scenarios = _scenarios(store, base)
                passed = [scenario.run() for scenario in scenarios]
        finally:
            store.close()
    _table(out, scenarios, passed)
    out.write("\n")
    if all(passed):
        out.write(f"OK: all {len(passed)} outcomes are the expected ones.\n")
        return True
    out.write(f"FAILED: {passed.count(False)} outcome(s) differ from the expected ones.\n")
    return False


def run_demo(out: TextIO) -> int:
    """Both parts; 0 when every outcome is the expected one, 1 otherwise."""
    out.write("aliak demo\n\n")
    example_ok = _worked_example(out)
    end_to_end_ok = _end_to_end(out)
    return 0 if example_ok and end_to_end_ok else 1
