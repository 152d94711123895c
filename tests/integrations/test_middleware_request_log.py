"""The WSGI and ASGI middlewares with a request log, from the outside.

What an attacker sends (no ``Authorization``, a stale date, a signed header dropped, a
forged signature, a forged ``X-Forwarded-For``) and what an operator then finds: one
event per request, naming the client that really connected (or the one a trusted proxy
forwarded for), under the very request id the refusal answered with
(``x-acs-request-id`` and ``RequestId``) or the application was given
(``environ`` / ``scope["aliak.request_id"]``). Without a request log no id is made up
front and the application is given none, while refusals still carry one.

Most tests call the middlewares in-process with the environ or scope a server would
build; the last ones run them under real servers on 127.0.0.1 (gunicorn in a subprocess
for WSGI, uvicorn in a thread for ASGI), as an operator deploys them.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import uvicorn

from aliak import (
    AccessKey,
    AsyncVerifier,
    KeyManager,
    MemoryStore,
    RamUser,
    Request,
    Signer,
    Verifier,
)
from aliak.integrations import asgi as asgi_module
from aliak.integrations import wsgi as wsgi_module
from aliak.integrations.asgi import AliakASGIMiddleware
from aliak.integrations.wsgi import AliakWSGIMiddleware

from ._serving import START_DEADLINE, Reply, ServerProcess, exchange, head

ACCESS_KEY_ID = "LTAI5tRequestLogMiddle01"
SECRET = "rL4kQ9wN2pX7vB1mZ6tT3yH8sD5fG0"
WRONG_SECRET = "rL4kQ9wN2pX7vB1mZ6tT3yH8sD5fG1"
OWNER = RamUser("1234567890123456", "request-log")
HOST = "ecs.cn-hangzhou.aliyuncs.com"
BODY = b'{"Name":"widget"}'
PEER = "198.51.100.7"  # a client connecting directly, trusted by nobody
PROXY = "10.0.0.1"  # the operator's reverse proxy
CLIENT = "203.0.113.9"  # the client that proxy saw
SPOOFED = "192.0.2.66"  # what a client writes into X-Forwarded-For itself

Kind = Literal["wsgi", "asgi"]
KINDS: tuple[Kind, ...] = ("wsgi", "asgi")
NO_ID = object()  # what the application saw when there was no "aliak.request_id"


class ListLog:
    """An in-memory request log: every event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------
# Requests, as an honest client and as an attacker sends them
# ---------------------------------------------------------------------------------------


def signed(
    *,
    secret: str = SECRET,
    body: bytes = BODY,
    clock: Callable[[], float] | None = None,
    host: str = HOST,
) -> Request:
    headers = {"x-acs-meta-color": "blue", "user-agent": "request-log-test/1.0"}
    if body:
        headers["content-type"] = "application/json"
    method = "POST" if body else "GET"
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Signer(AccessKey(ACCESS_KEY_ID, secret), **options).sign(
        Request(method, host=host, path="/things", headers=headers, body=body),
        action="CreateThing",
        version="2024-01-01",
    )


def unsigned(*, body: bytes = BODY) -> Request:
    headers = {"content-type": "application/json"} if body else {}
    return Request("POST" if body else "GET", host=HOST, path="/things", headers=headers, body=body)


def wire_headers(request: Request, drop: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The request's headers as sent, less ``drop``, with the Host and Content-Length a
    client adds."""
    headers = [(name, value) for name, value in request.headers.items() if name.lower() not in drop]
    if request.host and "host" not in {name.lower() for name, _ in headers}:
        headers.insert(0, ("Host", request.host))
    assert isinstance(request.body, bytes)
    if request.body:
        headers.append(("Content-Length", str(len(request.body))))
    return headers


# Refusals that precheck makes from the head alone, before a byte of the body is read.
PRECHECK_REFUSALS: dict[str, tuple[Callable[[], Request], tuple[str, ...], str]] = {
    "no-authorization": (unsigned, (), "IncompleteSignature"),
    "stale-x-acs-date": (
        lambda: signed(clock=lambda: time.time() - 3600),
        (),
        "InvalidTimeStamp.Expired",
    ),
    "signed-header-missing": (signed, ("x-acs-meta-color",), "IncompleteSignature"),
}


# ---------------------------------------------------------------------------------------
# The two middlewares, called as a server calls them
# ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    app_saw: list[Any] = field(default_factory=list)  # "aliak.request_id", per app call
    body_read: bool = False

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)


class Stack:
    """A middleware of ``kind`` around an application that records the request id it is
    given, over a store holding the test key, with ``log`` on the verifier."""

    def __init__(
        self,
        kind: Kind,
        log: ListLog | None,
        *,
        trusted_proxies: Iterable[str] = (),
        max_body_size: int = 10 * 1024 * 1024,
        metrics: Any = None,
    ) -> None:
        self.kind = kind
        self.app_saw: list[Any] = []
        store = MemoryStore()
        KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
        self.wsgi: AliakWSGIMiddleware | None = None
        self.asgi: AliakASGIMiddleware | None = None
        if kind == "wsgi":
            self.wsgi = AliakWSGIMiddleware(
                self._wsgi_app,
                Verifier(store, request_log=log, metrics=metrics),
                trusted_proxies=trusted_proxies,
                max_body_size=max_body_size,
            )
        else:
            self.asgi = AliakASGIMiddleware(
                self._asgi_app,
                AsyncVerifier(store.as_async(), request_log=log, metrics=metrics),
                trusted_proxies=trusted_proxies,
                max_body_size=max_body_size,
            )

    def _wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.app_saw.append(environ.get("aliak.request_id", NO_ID))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    async def _asgi_app(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.app_saw.append(scope.get("aliak.request_id", NO_ID))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def send(
        self,
        request: Request,
        *,
        peer: str = PEER,
        forwarded_for: str | None = None,
        drop: Sequence[str] = (),
    ) -> Answer:
        headers = wire_headers(request, drop)
        if forwarded_for is not None:
            headers.append(("X-Forwarded-For", forwarded_for))
        assert isinstance(request.body, bytes)
        before = len(self.app_saw)
        if self.kind == "wsgi":
            answer = self._send_wsgi(request.method, request.path, headers, request.body, peer)
        else:
            answer = self._send_asgi(request.method, request.path, headers, request.body, peer)
        answer.app_saw = self.app_saw[before:]
        return answer

    def _send_wsgi(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, peer: str
    ) -> Answer:
        assert self.wsgi is not None
        stream = io.BytesIO(body)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": HOST,
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": peer,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": stream,
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        started: list[Any] = []

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> Any:
            started.append((int(status[:3]), response_headers))

        payload = b"".join(self.wsgi(environ, start_response))  # type: ignore[arg-type]
        status, response_headers = started[0]
        return Answer(status, response_headers, payload, body_read=stream.tell() > 0)

    def _send_asgi(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, peer: str
    ) -> Answer:
        assert self.asgi is not None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
            "client": (peer, 50123),
            "server": (HOST, 80),
        }
        received: list[int] = []
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            received.append(1)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.asgi(scope, receive, send))  # type: ignore[arg-type]
        start = next(message for message in sent if message["type"] == "http.response.start")
        payload = b"".join(
            message.get("body", b"") for message in sent if message["type"] == "http.response.body"
        )
        response_headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in start["headers"]
        ]
        return Answer(start["status"], response_headers, payload, body_read=bool(received))


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


def assert_refusal_logged_once(
    log: ListLog, answer: Answer, *, code: str, source_ip: str
) -> dict[str, Any]:
    """The refusal answered, and the one event it left: the same id in the header, the
    body and the event; the client's address; the code the client was told."""
    assert answer.status == 400, answer
    assert answer.app_saw == []  # the application never ran
    [event] = log.events  # once: a precheck refusal is not logged again by verify
    request_id = answer.header("x-acs-request-id")
    assert request_id
    assert answer.json()["RequestId"] == request_id
    assert event["requestId"] == request_id
    assert event["sourceIpAddress"] == source_ip
    assert answer.json()["Code"] == code
    assert event["errorCode"] == code
    return event


# ---------------------------------------------------------------------------------------
# (a) refused before the body: precheck
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PRECHECK_REFUSALS)
def test_a_refusal_before_the_body_is_logged_once_with_the_peer_and_the_id_answered(
    kind: Kind, case: str
) -> None:
    build, drop, code = PRECHECK_REFUSALS[case]
    log = ListLog()
    answer = Stack(kind, log).send(build(), drop=drop)
    assert not answer.body_read  # refused from the head: the announced body is never read
    assert_refusal_logged_once(log, answer, code=code, source_ip=PEER)


@pytest.mark.parametrize("case", PRECHECK_REFUSALS)
def test_a_refusal_before_the_body_behind_a_trusted_proxy_names_the_forwarded_client(
    kind: Kind, case: str
) -> None:
    build, drop, code = PRECHECK_REFUSALS[case]
    log = ListLog()
    stack = Stack(kind, log, trusted_proxies=[PROXY])
    # The client wrote an address of its own in front; the proxy appended the real one.
    answer = stack.send(build(), drop=drop, peer=PROXY, forwarded_for=f"{SPOOFED}, {CLIENT}")
    assert not answer.body_read
    assert_refusal_logged_once(log, answer, code=code, source_ip=CLIENT)


def test_a_refusal_of_a_request_without_a_body_is_logged_once_too(kind: Kind) -> None:
    # No body announced: the WSGI middleware leaves every check to verify(); either way
    # there is one event, under the id answered.
    log = ListLog()
    answer = Stack(kind, log).send(unsigned(body=b""))
    assert_refusal_logged_once(log, answer, code="IncompleteSignature", source_ip=PEER)


class CountingMetrics:
    """Every refusal the metrics hook is told of, by code."""

    def __init__(self) -> None:
        self.refusals: list[str] = []

    def accepted(self, scheme: str, seconds: float) -> None:
        pass

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        self.refusals.append(code)

    def key_cache(self, hit: bool) -> None:
        pass

    def store_error(self, operation: str) -> None:
        pass


def assert_middleware_refusal_logged_once(
    log: ListLog, answer: Answer, *, status: int, code: str
) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.app_saw == []
    [event] = log.events
    request_id = answer.header("x-acs-request-id")
    assert answer.json()["RequestId"] == request_id == event["requestId"]
    assert answer.json()["Code"] == code == event["errorCode"]
    assert event["sourceIpAddress"] == PEER
    return event


def test_a_body_announced_over_the_limit_is_logged_with_the_key_the_head_presents(
    kind: Kind,
) -> None:
    # The middleware refuses it itself (the verifier never sees the request), so a flood
    # of oversized uploads must still leave its trace: once, under the id answered, with
    # the key id and action the signed head presents.
    log, metrics = ListLog(), CountingMetrics()
    stack = Stack(kind, log, max_body_size=8, metrics=metrics)
    answer = stack.send(signed(body=b"x" * 64))
    assert not answer.body_read
    event = assert_middleware_refusal_logged_once(log, answer, status=413, code="PayloadTooLarge")
    assert event["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID
    assert event["eventName"] == "CreateThing"
    assert "userName" not in event["userIdentity"]  # the signature was never checked
    assert metrics.refusals == ["PayloadTooLarge"]


def test_a_request_the_middleware_cannot_read_is_logged_once(kind: Kind) -> None:
    log, metrics = ListLog(), CountingMetrics()
    stack = Stack(kind, log, metrics=metrics)
    request = signed()
    headers = wire_headers(request)
    if kind == "wsgi":  # PATH_INFO is decoded (and re-encoded): a header carries the NUL
        headers.append(("X-Acs-Meta-Note", "a\x00b"))
        answer = stack._send_wsgi(request.method, request.path, headers, BODY, PEER)
    else:  # raw_path is what came on the request line
        answer = stack._send_asgi(request.method, "/th\x01ings", headers, BODY, PEER)
    answer.app_saw = list(stack.app_saw)
    event = assert_middleware_refusal_logged_once(log, answer, status=400, code="InvalidParameter")
    assert event.get("userIdentity", {}).get("accessKeyId") is None  # no request was built
    assert metrics.refusals == ["InvalidParameter"]


def test_a_transfer_coding_the_wsgi_server_did_not_decode_is_logged_once() -> None:
    log = ListLog()
    stack = Stack("wsgi", log)
    request = signed()
    headers = [(n, v) for n, v in wire_headers(request) if n.lower() != "content-length"]
    headers.append(("Transfer-Encoding", "chunked"))
    answer = stack._send_wsgi(request.method, request.path, headers, BODY, PEER)
    answer.app_saw = list(stack.app_saw)
    assert not answer.body_read
    event = assert_middleware_refusal_logged_once(
        log, answer, status=411, code="MissingContentLength"
    )
    assert event["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID


def test_without_a_log_or_metrics_a_middleware_refusal_reports_nothing(kind: Kind) -> None:
    answer = Stack(kind, None, max_body_size=8).send(signed(body=b"x" * 64))
    assert answer.status == 413
    assert answer.header("x-acs-request-id")


# ---------------------------------------------------------------------------------------
# (b) refused after the body: verify
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [BODY, b""], ids=["with-body", "without-body"])
def test_a_forged_signature_is_logged_once_with_the_peer_and_the_id_answered(
    kind: Kind, body: bytes
) -> None:
    log = ListLog()
    answer = Stack(kind, log).send(signed(secret=WRONG_SECRET, body=body))
    if body:
        assert answer.body_read  # the head was fine: the body was wanted
    event = assert_refusal_logged_once(log, answer, code="SignatureDoesNotMatch", source_ip=PEER)
    assert event["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID
    assert "userName" not in event["userIdentity"]  # a forger is nobody's principal


def test_a_forged_signature_behind_a_trusted_proxy_names_the_forwarded_client(
    kind: Kind,
) -> None:
    log = ListLog()
    stack = Stack(kind, log, trusted_proxies=[PROXY])
    answer = stack.send(signed(secret=WRONG_SECRET), peer=PROXY, forwarded_for=CLIENT)
    assert_refusal_logged_once(log, answer, code="SignatureDoesNotMatch", source_ip=CLIENT)


# ---------------------------------------------------------------------------------------
# (c) accepted: the application is given the event's id
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [BODY, b""], ids=["with-body", "without-body"])
def test_an_accepted_request_gives_the_application_the_id_of_its_event(
    kind: Kind, body: bytes
) -> None:
    log = ListLog()
    stack = Stack(kind, log)
    answers = [stack.send(signed(body=body)) for _ in range(2)]
    assert [answer.status for answer in answers] == [200, 200]
    assert len(log.events) == 2  # one event per request
    for answer, event in zip(answers, log.events, strict=True):
        [request_id] = answer.app_saw
        assert isinstance(request_id, str)
        assert request_id
        assert event["requestId"] == request_id
        assert "errorCode" not in event
        assert event["sourceIpAddress"] == PEER
        assert event["userIdentity"]["userName"] == OWNER.name
    assert answers[0].app_saw != answers[1].app_saw  # a new id for every request


def test_an_accepted_request_behind_a_trusted_proxy_is_logged_for_the_forwarded_client(
    kind: Kind,
) -> None:
    log = ListLog()
    stack = Stack(kind, log, trusted_proxies=[PROXY])
    answer = stack.send(signed(), peer=PROXY, forwarded_for=f"{SPOOFED}, {CLIENT}")
    assert answer.status == 200
    [event] = log.events
    assert (event["requestId"], event["sourceIpAddress"]) == (answer.app_saw[0], CLIENT)


# ---------------------------------------------------------------------------------------
# (d) an X-Forwarded-For from anyone but a trusted proxy is not believed
# ---------------------------------------------------------------------------------------


OUTCOMES: dict[str, tuple[Callable[[], Request], tuple[str, ...], int]] = {
    "refused-before-the-body": (unsigned, (), 400),
    "refused-after-the-body": (lambda: signed(secret=WRONG_SECRET), (), 400),
    "accepted": (signed, (), 200),
}


@pytest.mark.parametrize("trusted", [(), (PROXY,)], ids=["no-proxy-trusted", "another-trusted"])
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_an_untrusted_x_forwarded_for_is_not_what_the_event_records(
    kind: Kind, outcome: str, trusted: tuple[str, ...]
) -> None:
    build, drop, status = OUTCOMES[outcome]
    log = ListLog()
    stack = Stack(kind, log, trusted_proxies=trusted)
    answer = stack.send(build(), drop=drop, peer=PEER, forwarded_for=CLIENT)
    assert answer.status == status
    [event] = log.events
    assert event["sourceIpAddress"] == PEER
    assert CLIENT not in json.dumps(event)
    answered = answer.app_saw[0] if status == 200 else answer.header("x-acs-request-id")
    assert event["requestId"] == answered


# ---------------------------------------------------------------------------------------
# (e) without a request log
# ---------------------------------------------------------------------------------------


def test_without_a_request_log_no_id_is_made_up_front_and_refusals_still_carry_one(
    kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_id_up_front() -> str:
        raise AssertionError("a request id was made without a request log")

    # The middleware's own id maker; a refusal's answer makes its own, as before.
    module = wsgi_module if kind == "wsgi" else asgi_module
    monkeypatch.setattr(module, "new_request_id", no_id_up_front)
    stack = Stack(kind, None)
    accepted = stack.send(signed())
    assert accepted.status == 200
    assert accepted.app_saw == [NO_ID]  # no "aliak.request_id" key at all
    refusals = [
        stack.send(unsigned()),  # before the body
        stack.send(signed(), drop=("x-acs-meta-color",)),
        stack.send(signed(secret=WRONG_SECRET)),  # after it
    ]
    ids = []
    for answer in refusals:
        assert answer.status == 400
        request_id = answer.header("x-acs-request-id")
        assert request_id
        assert answer.json()["RequestId"] == request_id
        ids.append(request_id)
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------------------
# (f) one event per request, whatever happens to it
# ---------------------------------------------------------------------------------------


def test_every_request_leaves_exactly_one_event_under_the_id_it_was_answered_with(
    kind: Kind,
) -> None:
    log = ListLog()
    stack = Stack(kind, log, trusted_proxies=[PROXY])
    replayed = signed()
    sends: list[tuple[Request, dict[str, Any]]] = [
        (unsigned(), {}),
        (signed(clock=lambda: time.time() - 3600), {"peer": PROXY, "forwarded_for": CLIENT}),
        (signed(), {"drop": ("x-acs-meta-color",)}),
        (signed(secret=WRONG_SECRET), {}),
        (replayed, {"peer": PROXY, "forwarded_for": CLIENT}),
        (replayed, {}),  # the nonce again: refused after the body
        (signed(body=b""), {}),
    ]
    answered = []
    for request, options in sends:
        answer = stack.send(request, **options)
        answered.append(
            answer.app_saw[0] if answer.status == 200 else answer.header("x-acs-request-id")
        )
        assert len(log.events) == len(answered), (request, answer)  # one event, now
    assert [event["requestId"] for event in log.events] == answered
    assert len(set(answered)) == len(answered)
    assert [event.get("errorCode") for event in log.events] == [
        "IncompleteSignature",
        "InvalidTimeStamp.Expired",
        "IncompleteSignature",
        "SignatureDoesNotMatch",
        None,
        "SignatureNonceUsed",
        None,
    ]
    assert [event["sourceIpAddress"] for event in log.events] == [
        PEER, CLIENT, PEER, PEER, CLIENT, PEER, PEER,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Over real sockets: gunicorn (WSGI, a subprocess) and uvicorn (ASGI, a thread)
# ---------------------------------------------------------------------------------------


GUNICORN_APP = """
import json

from aliak import KeyManager, MemoryStore, RamUser, Verifier
from aliak.integrations.wsgi import AliakWSGIMiddleware


class FileLog:
    \"\"\"Each event as one JSON line, written before the answer is sent.\"\"\"

    def emit(self, event):
        with open({log!r}, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\\n")

    def close(self):
        pass


def app(environ, start_response):
    payload = json.dumps({{"AppRequestId": environ.get("aliak.request_id")}}).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


store = MemoryStore()
KeyManager(store).import_access_key(RamUser({account!r}, {user!r}), {key!r}, {secret!r})
application = AliakWSGIMiddleware(
    app, Verifier(store, request_log=FileLog()), trusted_proxies=["127.0.0.1"]
)
"""


@dataclass
class Served:
    port: int
    events: Callable[[], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """gunicorn, one sync worker, running the WSGI middleware with a request log file."""
    directory = tmp_path_factory.mktemp("gunicorn")
    log = directory / "events.jsonl"
    (directory / "request_log_app.py").write_text(
        GUNICORN_APP.format(
            log=str(log), account=OWNER.account_id, user=OWNER.name, key=ACCESS_KEY_ID,
            secret=SECRET,
        ),
        "utf-8",
    )  # fmt: skip
    server = ServerProcess(
        [
            sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
            "--worker-class", "sync", "--timeout", "30", "--chdir", str(directory),
            "request_log_app:application",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    )  # fmt: skip

    def events() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text("utf-8").splitlines()]

    try:
        yield Served(server.port, events)
        assert server.stop() == 0, server.output
        assert "Traceback" not in server.output, server.output
    finally:
        server.kill()


async def _asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    payload = json.dumps({"AppRequestId": scope.get("aliak.request_id")}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[Served]:
    """uvicorn in a thread, running the ASGI middleware with an in-memory request log."""
    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    log = ListLog()
    verifier = AsyncVerifier(store.as_async(), request_log=log)
    app = AliakASGIMiddleware(_asgi_app, verifier, trusted_proxies=["127.0.0.1"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        # uvicorn's own X-Forwarded-For handling would rewrite scope["client"]: the
        # middleware's trusted_proxies is what is under test.
        proxy_headers=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_DEADLINE
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(sock.getsockname()[1], lambda: list(log.events))
    finally:
        server.should_exit = True
        thread.join(timeout=START_DEADLINE)
        sock.close()


@pytest.fixture(params=["gunicorn", "uvicorn"])
def served(request: pytest.FixtureRequest) -> Served:
    return request.getfixturevalue(  # type: ignore[no-any-return]
        {"gunicorn": "gunicorn", "uvicorn": "uvicorn_server"}[request.param]
    )


def over_the_wire(
    port: int, request: Request, *, drop: Sequence[str] = (), forwarded_for: str | None = None
) -> Reply:
    headers = wire_headers(request, drop)
    if forwarded_for is not None:
        headers.append(("X-Forwarded-For", forwarded_for))
    headers.append(("Connection", "close"))
    assert isinstance(request.body, bytes)
    return exchange(port, head(f"{request.method} {request.path} HTTP/1.1", headers) + request.body)


def test_over_a_real_socket_the_refusal_header_is_the_logged_request_id(served: Served) -> None:
    before = len(served.events())
    refused = over_the_wire(served.port, unsigned())  # a body announced, never read
    assert refused.status == 400, refused
    request_id = refused.header("x-acs-request-id")
    assert request_id
    assert refused.json()["RequestId"] == request_id
    [event] = served.events()[before:]
    assert event["requestId"] == request_id
    assert event["errorCode"] == refused.json()["Code"] == "IncompleteSignature"
    assert event["sourceIpAddress"] == "127.0.0.1"  # the peer, no proxy header


def test_over_a_real_socket_refusals_and_acceptances_behind_the_proxy_are_logged_once(
    served: Served,
) -> None:
    before = len(served.events())
    host = f"127.0.0.1:{served.port}"
    forged = over_the_wire(
        served.port, signed(secret=WRONG_SECRET, host=host), forwarded_for=f"{SPOOFED}, {CLIENT}"
    )
    dropped = over_the_wire(
        served.port, signed(host=host), drop=("x-acs-meta-color",), forwarded_for=CLIENT
    )
    accepted = over_the_wire(served.port, signed(host=host), forwarded_for=CLIENT)
    assert (forged.status, dropped.status, accepted.status) == (400, 400, 200), (
        forged,
        dropped,
        accepted,
    )
    events = served.events()[before:]
    assert [event["requestId"] for event in events] == [
        forged.header("x-acs-request-id"),
        dropped.header("x-acs-request-id"),
        accepted.json()["AppRequestId"],
    ]
    assert [event.get("errorCode") for event in events] == [
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        None,
    ]
    assert {event["sourceIpAddress"] for event in events} == {CLIENT}


def test_over_a_real_socket_a_body_announced_over_the_limit_is_logged(served: Served) -> None:
    # The middleware refuses from the head (Content-Length over max_body_size, 10 MiB by
    # default) before reading a byte of the body: the event still lands, under the id
    # answered, naming the key the signed head presents.
    before = len(served.events())
    request = signed()
    headers = [(n, v) for n, v in wire_headers(request) if n.lower() != "content-length"]
    headers += [("Content-Length", str(20 * 1024 * 1024)), ("Connection", "close")]
    refused = exchange(served.port, head(f"POST {request.path} HTTP/1.1", headers))
    assert refused.status == 413, refused
    request_id = refused.header("x-acs-request-id")
    [event] = served.events()[before:]
    assert event["requestId"] == request_id == refused.json()["RequestId"]
    assert event["errorCode"] == refused.json()["Code"] == "PayloadTooLarge"
    assert event["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID
    assert event["sourceIpAddress"] == "127.0.0.1"
