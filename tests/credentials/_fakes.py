"""Fake credential servers on 127.0.0.1: STS, the ECS metadata service, a credentials URI.

Each is a stdlib ``ThreadingHTTPServer`` in a thread, answering through a function of the
request it records. The STS fake checks every ``AssumeRole`` signature with aliak's RPC
functions (the same the verifier uses) and refuses a bad one as STS would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aliak.errors import AliakError
from aliak.legacy import legacy_verifying_key, rpc_string_to_sign

Answer = tuple[int, Any]  # status, and a JSON value or text


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("ascii"), keep_blank_values=True))


@dataclass
class FakeServer:
    answer: Callable[[Seen], Answer]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@contextmanager
def serve(answer: Callable[[Seen], Answer]) -> Iterator[FakeServer]:
    fake = FakeServer(answer)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            seen = Seen(
                self.command,
                parts.path,
                parse_qsl(parts.query, keep_blank_values=True),
                {name.lower(): value for name, value in self.headers.items()},
                self.rfile.read(length),
            )
            fake.seen.append(seen)
            status, value = fake.answer(seen)
            body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def issued(number: int, expires_at: float) -> dict[str, str]:
    return {
        "AccessKeyId": f"STS.issued{number}",
        "AccessKeySecret": f"issued-secret-{number}",
        "SecurityToken": f"issued-token-{number}",
        "Expiration": iso(expires_at),
    }


class FakeSts:
    """STS: AssumeRole for the keys it knows (signature checked), AssumeRoleWithOIDC for
    one token; each answer a new credential lasting ``lifetime`` from ``clock()``."""

    def __init__(
        self,
        keys: dict[str, str],
        *,
        clock: Callable[[], float] = time.time,
        oidc_token: str = "oidc-token",
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.oidc_token = oidc_token
        self.issued = 0
        self.fail_with: Answer | None = None

    def __call__(self, seen: Seen) -> Answer:
        if self.fail_with is not None:
            return self.fail_with
        params = seen.params
        action = params.get("Action")
        if action == "AssumeRole" and seen.method == "GET":
            refusal = self._check_signature(seen.query)
            if refusal is not None:
                return refusal
            duration = int(params["DurationSeconds"])
        elif action == "AssumeRoleWithOIDC" and seen.method == "POST":
            form = seen.form()
            if form.get("OIDCToken") != self.oidc_token:
                return 400, {"Code": "InvalidParameter.OIDCToken", "Message": "bad token"}
            duration = int(form["DurationSeconds"])
        else:
            return 400, {"Code": "InvalidAction.NotFound", "Message": f"{action} {seen.method}"}
        self.issued += 1
        return 200, {
            "RequestId": f"req-{self.issued}",
            "Credentials": issued(self.issued, self.clock() + duration),
        }

    def _check_signature(self, query: list[tuple[str, str]]) -> Answer | None:
        params = dict(query)
        secret = self.keys.get(params.get("AccessKeyId", ""))
        if secret is None:
            return 404, {"Code": "InvalidAccessKeyId.NotFound", "Message": "unknown key"}
        unsigned = [(name, value) for name, value in query if name != "Signature"]
        try:
            legacy_verifying_key("RPC-HMAC-SHA1", secret).verify(
                rpc_string_to_sign("GET", unsigned).encode("utf-8"), params.get("Signature", "")
            )
        except AliakError:
            return 400, {"Code": "SignatureDoesNotMatch", "Message": "signature"}
        return None


class FakeMetadata:
    """The ECS metadata service: IMDSv2 tokens unless ``v2`` is off, one role."""

    def __init__(
        self, *, role: str = "EcsRole", clock: Callable[[], float] = time.time, v2: bool = True
    ) -> None:
        self.role = role
        self.clock = clock
        self.v2 = v2
        self.require_token = False
        self.issued = 0
        self.token = "imds-session-token"
        self.lifetime = 6 * 3600.0
        self.down = False

    def __call__(self, seen: Seen) -> Answer:  # noqa: PLR0911 - one answer per path
        if self.down:
            return 500, "down"
        if seen.path == "/latest/api/token":
            if not self.v2 or seen.method != "PUT":
                return 404, "no IMDSv2 here"
            assert seen.headers["x-aliyun-ecs-metadata-token-ttl-seconds"] == "21600"
            return 200, self.token
        if self.require_token and seen.headers.get("x-aliyun-ecs-metadata-token") != self.token:
            return 401, "token required"
        base = "/latest/meta-data/ram/security-credentials/"
        if seen.path == base:
            return 200, self.role
        if seen.path == base + self.role:
            self.issued += 1
            return 200, {
                "Code": "Success",
                "LastUpdated": iso(self.clock()),
                **issued(self.issued, self.clock() + self.lifetime),
            }
        return 404, "not found"
