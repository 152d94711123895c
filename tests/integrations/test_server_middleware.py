"""The WSGI and ASGI middlewares, over real HTTP on 127.0.0.1.

Servers: ``wsgiref.simple_server`` (stock, and a variant that exposes the raw request
target as ``REQUEST_URI`` the way uWSGI and mod_wsgi do) and uvicorn. Clients: the
official Alibaba Cloud SDK (``alibabacloud_tea_openapi`` ``call_api``, V3), a minimal
inline signer (``aliak.Signer`` + ``http.client``), and raw sockets for what no polite
client sends (a 100 MB announcement, a body cut short).

Each server runs once per module; each test installs its own middleware stack (fresh
store, verifier, echo app) into the server's slot. The echo app answers with
``Verified.to_dict()`` and the length and hash of the body it read, which proves the
body was replayed to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import uvicorn
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.client import Client as OpenApiClient
from alibabacloud_tea_openapi.exceptions import ClientException
from darabonba.exceptions import ResponseException
from darabonba.runtime import RuntimeOptions
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from Tea.exceptions import TeaException

from aliak import (
    AccessKey,
    AsyncVerifier,
    KeyManager,
    MemoryStore,
    NetworkPolicy,
    RamUser,
    Request,
    Signer,
    Verifier,
    percent_encode,
)
from aliak.errors import InvalidParameter
from aliak.integrations.asgi import AliakASGIMiddleware, request_from_scope
from aliak.integrations.wsgi import AliakWSGIMiddleware, request_from_environ

ACCESS_KEY_ID = "LTAI5tMiddlewareTest01"
SECRET = "mW3pQ8vX1tR6zY4bN9cH2jK7sD0fG5"
WRONG_SECRET = "mW3pQ8vX1tR6zY4bN9cH2jK7sD0fG6"
OWNER = RamUser("1234567890123456", "middleware-user")
TIMEOUT = 5.0
ERROR_KEYS = ["RequestId", "HostId", "Code", "Message", "Recommend"]
SIGNATURE_MESSAGE = "Specified signature is not matched with our calculation."


# ---------------------------------------------------------------------------------------
# Servers: one of each per module, with a slot each test fills
# ---------------------------------------------------------------------------------------


class Tracker:
    """Counts finished middleware calls (and what they raised), so a test can wait for a
    request whose client is gone before asserting what the application saw."""

    def __init__(self) -> None:
        self.finished = 0
        self.errors: list[BaseException] = []
        self.body_bytes = 0  # of the body, what the middleware read from the server
        self._changed = threading.Condition()

    def consumed(self, size: int) -> None:
        with self._changed:
            self.body_bytes += size

    def done(self, error: BaseException | None = None) -> None:
        with self._changed:
            self.finished += 1
            if error is not None:
                self.errors.append(error)
            self._changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.finished >= count, TIMEOUT)


class WsgiSlot:
    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return self.app(environ, start_response)  # type: ignore[no-any-return]


class AsgiSlot:
    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> io.StringIO:
        return io.StringIO()


class _RawUriHandler(_QuietHandler):
    """Exposes the raw request target as ``REQUEST_URI``, as uWSGI and mod_wsgi do."""

    def get_environ(self) -> dict[str, str]:
        environ = super().get_environ()
        environ["REQUEST_URI"] = self.path
        return environ


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that vanished; what matters is asserted through the Tracker


@dataclass
class Server:
    port: int
    slot: Any


class _DualStackWSGIServer(_ThreadingWSGIServer):
    """Bound to ``::`` with ``IPV6_V6ONLY`` off: an IPv4 client is seen as ``::ffff:a.b.c.d``."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _dual_stack_missing() -> str | None:
    """Why this machine cannot run a dual-stack server on loopback (``None``: it can)."""
    if not socket.has_ipv6:
        return "Python has no IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind(("::", 0))
            listener.listen()
            listener.settimeout(TIMEOUT)
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
                accepted, peer = listener.accept()
                accepted.close()
    except OSError as error:
        return f"no IPv6 loopback / dual-stack socket on this machine: {error}"
    if not str(peer[0]).startswith("::ffff:"):
        return f"a dual-stack socket reports an IPv4 peer as {peer[0]!r}, not ::ffff:a.b.c.d"
    return None


def _wsgi_server(
    handler: type[WSGIRequestHandler],
    *,
    host: str = "127.0.0.1",
    server_class: type[WSGIServer] = _ThreadingWSGIServer,
) -> Iterator[Server]:
    slot = WsgiSlot()
    httpd = make_server(host, 0, slot, server_class=server_class, handler_class=handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Server(httpd.server_address[1], slot)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def wsgi_server() -> Iterator[Server]:
    yield from _wsgi_server(_QuietHandler)


@pytest.fixture(scope="module")
def wsgi_raw_uri_server() -> Iterator[Server]:
    yield from _wsgi_server(_RawUriHandler)


@pytest.fixture(scope="module")
def wsgi_dual_stack_server() -> Iterator[Server]:
    missing = _dual_stack_missing()
    if missing is not None:
        pytest.skip(missing)
    yield from _wsgi_server(_QuietHandler, host="::", server_class=_DualStackWSGIServer)


def _uvicorn_server(sock: socket.socket) -> Iterator[Server]:
    slot = AsgiSlot()
    config = uvicorn.Config(
        slot,
        interface="asgi3",
        log_level="warning",
        lifespan="off",
        access_log=False,
        # uvicorn's own X-Forwarded-For handling trusts 127.0.0.1 by default and would
        # rewrite scope["client"]; the middleware's trusted_proxies is what is under test.
        proxy_headers=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield Server(sock.getsockname()[1], slot)
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT)
        sock.close()


@pytest.fixture(scope="module")
def asgi_server() -> Iterator[Server]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here: no race for a free port
    yield from _uvicorn_server(sock)


@pytest.fixture(scope="module")
def asgi_dual_stack_server() -> Iterator[Server]:
    missing = _dual_stack_missing()
    if missing is not None:
        pytest.skip(missing)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    yield from _uvicorn_server(sock)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads proxies and a user-agent suffix from the environment.
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "ALIBABA_CLOUD_USER_AGENT",
        "DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------
# The application behind the middleware: an echo
# ---------------------------------------------------------------------------------------


def _echo(verified: Any, body: bytes, path: str) -> bytes:
    return json.dumps(
        {
            "Verified": None if verified is None else verified.to_dict(),
            "BodyLength": len(body),
            "BodySha256": hashlib.sha256(body).hexdigest(),
            "Path": path,
        }
    ).encode()


def wsgi_echo(calls: list[str]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        calls.append(environ["PATH_INFO"])
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        payload = _echo(environ.get("aliak.verified"), body, environ["PATH_INFO"])
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


def asgi_echo(calls: list[str]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        chunks = []
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        payload = _echo(scope.get("aliak.verified"), b"".join(chunks), scope["path"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


class _CountedInput:
    """The server's ``wsgi.input``, counting what is read of it."""

    def __init__(self, stream: Any, tracker: Tracker) -> None:
        self._stream = stream
        self._tracker = tracker

    def read(self, *size: int) -> bytes:
        chunk: bytes = self._stream.read(*size)
        self._tracker.consumed(len(chunk))
        return chunk

    def readline(self, *size: int) -> bytes:
        line: bytes = self._stream.readline(*size)
        self._tracker.consumed(len(line))
        return line


def tracked_wsgi(app: Any, tracker: Tracker) -> Callable[..., Iterable[bytes]]:
    def wrapper(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["wsgi.input"] = _CountedInput(environ["wsgi.input"], tracker)
        try:
            result = list(app(environ, start_response))
        except BaseException as error:
            tracker.done(error)
            raise
        tracker.done()
        return result

    return wrapper


def tracked_asgi(app: Any, tracker: Tracker) -> Callable[..., Any]:
    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def counted_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            tracker.consumed(len(message.get("body") or b""))
            return message

        try:
            await app(scope, counted_receive, send)
        except BaseException as error:
            tracker.done(error)
            raise
        tracker.done()

    return wrapper


# ---------------------------------------------------------------------------------------
# Clients: inline signer + http.client, raw sockets
# ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) == 1, (name, self.headers)
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)


def target(request: Request) -> str:
    query = "&".join(
        f"{percent_encode(name)}={percent_encode(value)}" for name, value in sorted(request.query)
    )
    return request.path + ("?" + query if query else "")


def send(
    port: int,
    request: Request,
    *,
    body: bytes | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> Reply:
    """Send a signed aliak.Request verbatim (``body`` replaces the signed body)."""
    payload = request.body if body is None else body
    assert isinstance(payload, bytes)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.putrequest(
            request.method, target(request), skip_host=True, skip_accept_encoding=True
        )
        for name, value in (*request.headers.items(), *extra_headers):
            connection.putheader(name, value.encode("utf-8", "surrogateescape"))
        if payload or request.method in ("POST", "PUT", "PATCH"):
            connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload or None)
        response = connection.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def raw_exchange(port: int, data: bytes) -> Reply:
    """Write ``data`` and read the answer, without ever sending more."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.getheaders(), response.read())


# ---------------------------------------------------------------------------------------
# One middleware stack per test
# ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    kind: str
    port: int
    store: MemoryStore
    keys: KeyManager
    calls: list[str]  # the paths the application was called with
    tracker: Tracker = field(default_factory=Tracker)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sign(
        self,
        method: str = "POST",
        path: str = "/api/echo",
        *,
        query: Any = (),
        headers: Any = (),
        body: bytes = b"",
        secret: str = SECRET,
        access_key_id: str = ACCESS_KEY_ID,
        clock: Callable[[], float] = time.time,
    ) -> Request:
        signer = Signer(AccessKey(access_key_id, secret), clock=clock)
        return signer.sign(
            Request(method, host=self.host, path=path, query=query, headers=headers, body=body),
            action="DescribeThings",
            version="2024-01-01",
        )

    def send(self, request: Request, **options: Any) -> Reply:
        return send(self.port, request, **options)


StackFactory = Callable[..., Stack]


SERVER_FIXTURES = {
    "wsgi": "wsgi_server",
    "wsgi-raw-uri": "wsgi_raw_uri_server",
    "wsgi-dual-stack": "wsgi_dual_stack_server",
    "asgi": "asgi_server",
    "asgi-dual-stack": "asgi_dual_stack_server",
}


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_stack(request: pytest.FixtureRequest) -> StackFactory:
    def make(kind: str, **options: Any) -> Stack:
        store = MemoryStore()
        keys = KeyManager(store)
        keys.import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
        calls: list[str] = []
        tracker = Tracker()
        server: Server = request.getfixturevalue(SERVER_FIXTURES[kind])
        if kind.startswith("wsgi"):
            verifier = Verifier(store)
            request.addfinalizer(verifier.close)
            middleware: Any = AliakWSGIMiddleware(wsgi_echo(calls), verifier, **options)
            server.slot.app = tracked_wsgi(middleware, tracker)
        else:
            middleware = AliakASGIMiddleware(
                asgi_echo(calls), AsyncVerifier(store.as_async()), **options
            )
            server.slot.app = tracked_asgi(middleware, tracker)
        stack = Stack(kind, server.port, store, keys, calls, tracker)
        request.addfinalizer(lambda: _assert_no_middleware_error(stack))
        return stack

    return make


def _assert_no_middleware_error(stack: Stack) -> None:
    assert stack.tracker.errors == [], stack.tracker.errors


def assert_refusal(reply: Reply, stack: Stack, status: int, code: str) -> dict[str, Any]:
    """The Alibaba error shape (verification.md §3), and the code expected."""
    assert reply.status == status, reply
    assert reply.header("Content-Type") == "application/json;charset=utf-8"
    body = reply.json()
    assert list(body) == ERROR_KEYS
    assert body["Code"] == code, body
    assert body["HostId"] == stack.host
    assert reply.header("x-acs-request-id") == body["RequestId"]
    assert body["RequestId"] == body["RequestId"].upper()
    assert len(body["RequestId"]) == 36
    assert parsedate_to_datetime(reply.header("Date")).tzinfo is not None
    assert body["Recommend"].startswith(f"https://api.aliyun.com/troubleshoot?q={code}&")
    return body  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# The official SDK against both middlewares
# ---------------------------------------------------------------------------------------


def sdk_client(port: int, *, secret: str = SECRET) -> OpenApiClient:
    return OpenApiClient(
        open_api_models.Config(
            access_key_id=ACCESS_KEY_ID,
            access_key_secret=secret,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
            region_id="cn-hangzhou",
            connect_timeout=2000,
            read_timeout=2000,
        )
    )


def sdk_call(
    port: int,
    *,
    style: str,
    action: str,
    pathname: str = "/",
    query: dict[str, str] | None = None,
    body: Any = None,
    secret: str = SECRET,
) -> dict[str, Any]:
    params = open_api_models.Params(
        action=action,
        version="2014-05-26",
        protocol="HTTP",
        pathname=pathname,
        method="POST",
        auth_type="AK",
        style=style,
        req_body_type="json",
        body_type="json",
    )
    runtime = RuntimeOptions(
        autoretry=False, max_attempts=0, connect_timeout=2000, read_timeout=2000
    )
    request = open_api_models.OpenApiRequest(query=query, body=body)
    return sdk_client(port, secret=secret).call_api(params, request, runtime)  # type: ignore[no-any-return]


RPC_QUERY = {"RegionId": "cn-hangzhou", "Zeta": "a b*c~d+e/f é", "Alpha": "!'()=&%", "Empty": ""}
ROA_BODY = {"nodepool_id": "np-1", "description": "节点 pool * ~ + / é", "count": 3}


@pytest.mark.parametrize("server_kind", ["wsgi", "wsgi-raw-uri", "asgi"])
def test_sdk_rpc_request_is_accepted_and_the_app_sees_the_verified_caller(
    make_stack: StackFactory, server_kind: str
) -> None:
    stack = make_stack(server_kind)
    response = sdk_call(stack.port, style="RPC", action="DescribeInstances", query=RPC_QUERY)

    assert response["statusCode"] == 200
    echo = response["body"]
    verified = echo["Verified"]
    assert verified["AccessKeyId"] == ACCESS_KEY_ID
    assert verified["Principal"] == {"AccountId": OWNER.account_id, "UserName": OWNER.name}
    assert verified["Action"] == "DescribeInstances"
    assert verified["Version"] == "2014-05-26"
    assert verified["SourceIp"] == "127.0.0.1"
    # The SDK signs every header it sends, not only host and x-acs-*.
    assert {"accept", "user-agent", "x-acs-credentials-provider"} <= set(verified["SignedHeaders"])
    assert echo["BodyLength"] == 0
    assert stack.calls == ["/"]


@pytest.mark.parametrize(
    ("server_kind", "pathname", "decoded"),
    [
        # Without a raw request target, the decoded PATH_INFO is re-encoded per segment.
        ("wsgi", "/clusters/c-82e6%20b%C3%A9/attach", "/clusters/c-82e6 bé/attach"),
        # With one, even an encoded slash inside a segment is verified as sent.
        ("wsgi-raw-uri", "/clusters/c-82e6%2Fb%209/attach", "/clusters/c-82e6/b 9/attach"),
        ("asgi", "/clusters/c-82e6%2Fb%209/attach", "/clusters/c-82e6/b 9/attach"),
    ],
)
def test_sdk_roa_request_with_encoded_path_and_json_body_is_accepted(
    make_stack: StackFactory, server_kind: str, pathname: str, decoded: str
) -> None:
    stack = make_stack(server_kind)
    response = sdk_call(
        stack.port,
        style="ROA",
        action="AttachInstances",
        pathname=pathname,
        query={"force": "true"},
        body=ROA_BODY,
    )

    assert response["statusCode"] == 200
    echo = response["body"]
    assert echo["Verified"]["Action"] == "AttachInstances"
    assert "content-type" in echo["Verified"]["SignedHeaders"]
    sent = json.dumps(ROA_BODY, ensure_ascii=False, separators=(",", ":")).encode()
    # The body was read for verification and replayed, byte for byte, to the app.
    assert echo["BodyLength"] == len(sent)
    assert echo["BodySha256"] == hashlib.sha256(sent).hexdigest()
    if server_kind.startswith("wsgi"):
        decoded = decoded.encode().decode("latin-1")  # PEP 3333 native string
    assert echo["Path"] == decoded


def test_without_a_raw_uri_an_encoded_slash_in_a_segment_cannot_be_verified(
    make_stack: StackFactory,
) -> None:
    # Stock wsgiref decodes %2F into PATH_INFO and keeps no raw form: the path the
    # middleware can rebuild differs from the one signed. A known limit (spec §5.2).
    stack = make_stack("wsgi")
    with pytest.raises(ClientException) as refused:
        sdk_call(
            stack.port,
            style="ROA",
            action="AttachInstances",
            pathname="/clusters/c-82e6%2Fb/attach",
            body=ROA_BODY,
        )
    assert refused.value.code == "SignatureDoesNotMatch"
    assert stack.calls == []


@pytest.mark.parametrize("server_kind", ["wsgi", "asgi"])
def test_sdk_with_a_wrong_secret_raises_its_client_exception_with_our_code_and_message(
    make_stack: StackFactory, server_kind: str
) -> None:
    stack = make_stack(server_kind)
    with pytest.raises(ClientException) as refused:
        sdk_call(
            stack.port,
            style="RPC",
            action="DescribeInstances",
            query=RPC_QUERY,
            secret=WRONG_SECRET,
        )

    error = refused.value
    # ClientException < AlibabaCloudException < darabonba ResponseException < DaraException
    # < Tea TeaException: the 4xx branch of call_api, parsing our JSON body.
    assert isinstance(error, ResponseException)
    assert isinstance(error, TeaException)
    assert error.code == "SignatureDoesNotMatch"
    assert error.status_code == 400
    # The SDK keeps our body in .data and wraps the message as
    # "code: <status>, <Message> request id: <RequestId>".
    assert error.data["Code"] == "SignatureDoesNotMatch"
    assert error.data["Message"].startswith(SIGNATURE_MESSAGE + " server string to sign is:")
    assert error.message.startswith(f"code: 400, {SIGNATURE_MESSAGE}")
    assert error.request_id == error.data["RequestId"]
    assert WRONG_SECRET not in str(error.data)
    assert SECRET not in str(error.data)
    assert stack.calls == []


# ---------------------------------------------------------------------------------------
# FastAPI under uvicorn
# ---------------------------------------------------------------------------------------


@pytest.fixture
def fastapi_stack(make_stack: StackFactory, asgi_server: Server) -> Stack:
    stack = make_stack("asgi")  # store, key, tracker; the app is replaced below
    api = FastAPI()

    @api.post("/api/items/{item_id}")
    async def create_item(item_id: str, request: FastAPIRequest) -> dict[str, Any]:
        body = await request.body()
        verified = request.scope["aliak.verified"]
        stack.calls.append(request.url.path)
        return {"ItemId": item_id, "Item": json.loads(body), "Verified": verified.to_dict()}

    @api.get("/health")
    async def health(request: FastAPIRequest) -> dict[str, Any]:
        return {"Ok": True, "Verified": "aliak.verified" in request.scope}

    api.add_middleware(
        AliakASGIMiddleware, verifier=AsyncVerifier(stack.store.as_async()), paths=["/api"]
    )
    asgi_server.slot.app = tracked_asgi(api, stack.tracker)
    return stack


def test_fastapi_route_reads_the_replayed_body_and_the_verified_caller(
    fastapi_stack: Stack,
) -> None:
    item = {"name": "web 01", "note": "é 中"}
    body = json.dumps(item, ensure_ascii=False).encode()
    request = fastapi_stack.sign(
        path="/api/items/it%20em-1",
        query={"DryRun": "false"},
        headers={"Content-Type": "application/json"},
        body=body,
    )
    reply = fastapi_stack.send(request)

    assert reply.status == 200, reply
    echo = reply.json()
    assert echo["ItemId"] == "it em-1"
    assert echo["Item"] == item
    assert echo["Verified"]["AccessKeyId"] == ACCESS_KEY_ID
    assert echo["Verified"]["Action"] == "DescribeThings"
    assert fastapi_stack.calls == ["/api/items/it em-1"]


def test_fastapi_refuses_an_unsigned_request_and_serves_unprotected_routes(
    fastapi_stack: Stack,
) -> None:
    unsigned = Request("POST", host=fastapi_stack.host, path="/api/items/x", body=b"{}")
    reply = send(fastapi_stack.port, unsigned, extra_headers=[("Host", fastapi_stack.host)])
    assert_refusal(reply, fastapi_stack, 400, "IncompleteSignature")

    health = send(
        fastapi_stack.port,
        Request("GET", path="/health"),
        extra_headers=[("Host", fastapi_stack.host)],
    )
    assert health.status == 200
    assert health.json() == {"Ok": True, "Verified": False}
    assert fastapi_stack.calls == []


# ---------------------------------------------------------------------------------------
# Accepted and refused, on both middlewares
# ---------------------------------------------------------------------------------------


def test_signed_request_is_accepted_and_its_body_replayed(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind)
    body = bytes(range(256)) * 8
    reply = stack.send(stack.sign(query={"Name": "a b", "Empty": ""}, body=body))

    assert reply.status == 200, reply
    echo = reply.json()
    assert echo["BodyLength"] == len(body)
    assert echo["BodySha256"] == hashlib.sha256(body).hexdigest()
    assert echo["Verified"]["KeyType"] == "permanent"
    assert stack.calls == ["/api/echo"]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("unsigned", 400, "IncompleteSignature"),
        ("tampered-body", 400, "SignatureDoesNotMatch"),
        ("tampered-query", 400, "SignatureDoesNotMatch"),
        ("unknown-key", 404, "InvalidAccessKeyId.NotFound"),
        ("replayed", 400, "SignatureNonceUsed"),
    ],
)
def test_every_refusal_has_the_alibaba_error_shape_and_never_reaches_the_app(
    make_stack: StackFactory, kind: str, case: str, status: int, code: str
) -> None:
    stack = make_stack(kind)
    signed = stack.sign(query={"Name": "x"}, body=b'{"a":1}')
    if case == "unsigned":
        reply = send(
            stack.port,
            Request("POST", path="/api/echo", body=b"{}"),
            extra_headers=[("Host", stack.host)],
        )
    elif case == "tampered-body":
        reply = stack.send(signed, body=b'{"a":2}')
    elif case == "tampered-query":
        reply = stack.send(
            Request(
                "POST",
                path=signed.path,
                query={"Name": "y"},
                headers=signed.headers,
                body=signed.body,
            )
        )
    elif case == "unknown-key":
        reply = stack.send(stack.sign(access_key_id="LTAI5tNobodyHasThisKey"))
    else:
        assert stack.send(signed).status == 200
        stack.calls.clear()
        reply = stack.send(signed)

    body = assert_refusal(reply, stack, status, code)
    if code == "SignatureDoesNotMatch":
        assert body["Message"].startswith(SIGNATURE_MESSAGE + " server string to sign is:")
    assert stack.calls == []


def test_a_refused_tampered_copy_burns_no_nonce(make_stack: StackFactory, kind: str) -> None:
    stack = make_stack(kind)
    signed = stack.sign(body=b"original")

    assert_refusal(stack.send(signed, body=b"tampered"), stack, 400, "SignatureDoesNotMatch")
    assert stack.calls == []

    accepted = stack.send(signed)
    assert accepted.status == 200, accepted
    assert accepted.json()["Verified"]["Nonce"] == signed.headers["x-acs-signature-nonce"]
    # ... and the nonce is claimed now, by the request that proved itself.
    assert_refusal(stack.send(signed), stack, 400, "SignatureNonceUsed")


def test_unprotected_paths_pass_through_without_authorization(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind, paths=["/api"])
    unsigned = [("Host", stack.host)]

    public = send(
        stack.port, Request("POST", path="/public/ping", body=b"hi"), extra_headers=unsigned
    )
    assert public.status == 200
    assert public.json()["Verified"] is None
    assert public.json()["BodyLength"] == 2

    # The prefix is checked on the decoded and the normalised path: no way around it.
    for path in ("/api/echo", "//api/echo", "/%61pi/echo", "/public/../api/echo"):
        reply = send(stack.port, Request("GET", path=path), extra_headers=unsigned)
        assert_refusal(reply, stack, 400, "IncompleteSignature")
    assert stack.calls == ["/public/ping"]


def test_a_raw_path_the_request_model_refuses_is_answered_with_invalid_parameter(
    make_stack: StackFactory,
) -> None:
    for server_kind in ("wsgi-raw-uri", "asgi"):
        stack = make_stack(server_kind)
        head = f"GET /api/a%zz HTTP/1.1\r\nHost: {stack.host}\r\nConnection: close\r\n\r\n"
        reply = raw_exchange(stack.port, head.encode())
        body = assert_refusal(reply, stack, 400, "InvalidParameter")
        assert "path" in body["Message"]
        assert stack.calls == []


# ---------------------------------------------------------------------------------------
# Bad input: sizes and vanished clients
# ---------------------------------------------------------------------------------------


def test_an_announced_body_over_the_limit_is_refused_before_any_of_it_is_sent(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind, max_body_size=1024)
    signed = stack.sign(body=b"x" * 10)
    lines = [f"POST {target(signed)} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    lines += [f"Content-Length: {100 * 1024 * 1024}", "", ""]
    started = time.monotonic()
    # Only the head goes out: answering at all proves the server did not wait for the body.
    reply = raw_exchange(stack.port, "\r\n".join(lines).encode())

    assert time.monotonic() - started < TIMEOUT
    assert_refusal(reply, stack, 413, "PayloadTooLarge")
    assert stack.calls == []
    assert stack.tracker.wait_for(1)
    assert stack.tracker.body_bytes == 0


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    make_stack: StackFactory,
) -> None:
    # uvicorn decodes chunked bodies (stock wsgiref cannot; the WSGI side is covered below
    # with wsgi.input_terminated). The final chunk never comes: the answer must not wait.
    stack = make_stack("asgi", max_body_size=1024)
    signed = stack.sign(body=b"x" * 10)
    lines = [f"POST {target(signed)} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    lines += ["Transfer-Encoding: chunked", "", ""]
    chunk = b"x" * 2000
    data = "\r\n".join(lines).encode() + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    reply = raw_exchange(stack.port, data)

    assert_refusal(reply, stack, 413, "PayloadTooLarge")
    assert stack.calls == []


def test_a_client_that_disconnects_mid_body_never_reaches_the_app_nor_breaks_the_server(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind)
    signed = stack.sign(body=b"y" * 1000)
    lines = [f"POST {target(signed)} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in signed.headers.items()]
    lines += ["Content-Length: 1000", "", ""]
    with socket.create_connection(("127.0.0.1", stack.port), timeout=TIMEOUT) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"y" * 10)
        time.sleep(0.05)  # let the server start on the body

    assert stack.tracker.wait_for(1), "the middleware never finished the cut-short request"
    assert stack.calls == []
    assert stack.tracker.errors == []

    # The same signed request, whole this time: its nonce was not burned either.
    reply = stack.send(signed)
    assert reply.status == 200, reply
    assert reply.json()["BodyLength"] == 1000
    assert stack.calls == ["/api/echo"]


# ---------------------------------------------------------------------------------------
# Source address: X-Forwarded-For and trusted proxies
# ---------------------------------------------------------------------------------------


def test_a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind)
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7")])
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "127.0.0.1"

    # And it does not open a network ACL that names the forged address.
    stack = make_stack(kind)
    stack.keys.set_network_policy(
        NetworkPolicy(public=["203.0.113.7"]), account_id=OWNER.account_id
    )
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7")])
    assert_refusal(reply, stack, 400, "InvalidAccessKeyId.AccessPolicyDenied")
    assert stack.calls == []


def test_behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_used(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind, trusted_proxies=["127.0.0.1"])
    stack.keys.set_network_policy(
        NetworkPolicy(public=["203.0.113.7"]), account_id=OWNER.account_id
    )
    # The left entry is whatever the client claimed; the proxy appended the real one.
    reply = stack.send(
        stack.sign(), extra_headers=[("X-Forwarded-For", "198.51.100.1, 203.0.113.7")]
    )
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "203.0.113.7"

    reply = stack.send(
        stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7, 198.51.100.9")]
    )
    body = assert_refusal(reply, stack, 400, "InvalidAccessKeyId.AccessPolicyDenied")
    assert "198.51.100.9" not in body["Message"]


# ---------------------------------------------------------------------------------------
# A dual-stack server (bound to ::, IPV6_V6ONLY off) behind an IPv4 proxy: the peer is
# ::ffff:127.0.0.1, and must be read as the IPv4 proxy 127.0.0.1 it is
# ---------------------------------------------------------------------------------------


@pytest.fixture(params=["wsgi-dual-stack", "asgi-dual-stack"])
def dual_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def _allow_only(stack: Stack, *addresses: str) -> None:
    stack.keys.set_network_policy(
        NetworkPolicy(public=list(addresses)), account_id=OWNER.account_id
    )


def test_dual_stack_an_ipv4_client_is_recorded_as_ipv4(
    make_stack: StackFactory, dual_kind: str
) -> None:
    stack = make_stack(dual_kind)
    reply = stack.send(stack.sign())
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "127.0.0.1"


def test_dual_stack_an_ipv4_trusted_proxy_is_recognised_and_its_client_checked(
    make_stack: StackFactory, dual_kind: str
) -> None:
    stack = make_stack(dual_kind, trusted_proxies=["127.0.0.1"])
    _allow_only(stack, "203.0.113.7")
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7")])
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "203.0.113.7"
    assert reply.json()["Verified"]["AclRule"] == "public:203.0.113.7/32"


def test_dual_stack_the_proxys_own_address_never_stands_in_for_the_client(
    make_stack: StackFactory, dual_kind: str
) -> None:
    # The attack: an ACL that allows the proxy. Were the proxy not recognised, its own
    # address would be checked, and every client behind it let through.
    stack = make_stack(dual_kind, trusted_proxies=["127.0.0.1"])
    _allow_only(stack, "127.0.0.1")
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "198.51.100.9")])
    body = assert_refusal(reply, stack, 400, "InvalidAccessKeyId.AccessPolicyDenied")
    assert "127.0.0.1" not in body["Message"]
    assert stack.calls == []


def test_dual_stack_a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_stack: StackFactory, dual_kind: str
) -> None:
    stack = make_stack(dual_kind, trusted_proxies=["10.0.0.0/8"])
    _allow_only(stack, "203.0.113.7")
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7")])
    assert_refusal(reply, stack, 400, "InvalidAccessKeyId.AccessPolicyDenied")
    assert stack.calls == []


def test_dual_stack_a_mapped_x_forwarded_for_entry_is_normalised_before_the_acl(
    make_stack: StackFactory, dual_kind: str
) -> None:
    stack = make_stack(dual_kind, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    _allow_only(stack, "203.0.113.7")
    # The client as a dual-stack proxy wrote it, then a second (trusted) proxy, mapped too.
    forwarded = "198.51.100.1, ::ffff:203.0.113.7, ::FFFF:10.0.0.5"
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", forwarded)])
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "203.0.113.7"


def test_dual_stack_several_and_garbage_x_forwarded_for_headers_as_before(
    make_stack: StackFactory, dual_kind: str
) -> None:
    stack = make_stack(dual_kind, trusted_proxies=["127.0.0.1"])
    two = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")]
    reply = stack.send(stack.sign(), extra_headers=two)
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "203.0.113.7"  # the right-most

    # A hop that is not an address: the client is unknown, so a policy fails closed...
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7, bogus")])
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] is None
    # ...and neither the proxy nor the address inside the garbage stands in for it.
    stack = make_stack(dual_kind, trusted_proxies=["127.0.0.1"])
    _allow_only(stack, "127.0.0.1", "203.0.113.7")
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "[203.0.113.7]:80")])
    assert_refusal(reply, stack, 400, "InvalidAccessKeyId.AccessPolicyDenied")


def test_a_trusted_proxy_written_in_mapped_form_is_recognised(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind, trusted_proxies=["::ffff:127.0.0.1"])
    _allow_only(stack, "203.0.113.7")
    reply = stack.send(stack.sign(), extra_headers=[("X-Forwarded-For", "203.0.113.7")])
    assert reply.status == 200, reply
    assert reply.json()["Verified"]["SourceIp"] == "203.0.113.7"


# ---------------------------------------------------------------------------------------
# Cheap refusals first: what the head condemns is refused before the body is read
# ---------------------------------------------------------------------------------------

UPLOAD_SIZE = 8 * 1024 * 1024


@dataclass
class Trickled:
    reply: Reply
    sent_before_reply: int  # body bytes the client had sent when the answer came


def trickle(port: int, head: bytes, body_size: int = UPLOAD_SIZE) -> Trickled:
    """Send ``head``, then a body of ``body_size`` bytes slowly from another thread
    (64 KiB every 10 ms: about 1.3 s for 8 MiB), and read the answer meanwhile."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sent = 0
    stop = threading.Event()

    def send_body() -> None:
        nonlocal sent
        piece = b"u" * (64 * 1024)
        try:
            while sent < body_size and not stop.is_set():
                sock.sendall(piece[: body_size - sent])
                sent += min(len(piece), body_size - sent)
                time.sleep(0.01)
        except OSError:
            pass  # the server answered and closed: what a refusal looks like

    sender = threading.Thread(target=send_body, daemon=True)
    try:
        sock.sendall(head)
        sender.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        sent_before_reply = sent
        reply = Reply(response.status, response.getheaders(), response.read())
    finally:
        stop.set()
        sender.join(timeout=TIMEOUT)
        sock.close()
    return Trickled(reply, sent_before_reply)


def upload_head(request: Request, *, drop: Iterable[str] = (), size: int = UPLOAD_SIZE) -> bytes:
    lines = [f"{request.method} {target(request)} HTTP/1.1"]
    lines += [
        f"{name}: {value}" for name, value in request.headers.items() if name.lower() not in drop
    ]
    lines += [f"Content-Length: {size}", "", ""]
    return "\r\n".join(lines).encode()


def _forged(stack: Stack, case: str) -> bytes:
    if case == "no Authorization":
        return upload_head(stack.sign(), drop={"authorization"})
    if case == "malformed Authorization":
        signed = stack.sign()
        head = upload_head(signed, drop={"authorization"})
        return head[:-2] + b"Authorization: ACS3-HMAC-SHA256 Credential\r\n\r\n"
    if case == "signed header missing":
        return upload_head(stack.sign(headers={"x-acs-region": "cn"}), drop={"x-acs-region"})
    assert case == "expired date"
    return upload_head(stack.sign(clock=lambda: time.time() - 3600))


CHEAP_REFUSALS = {
    "no Authorization": "IncompleteSignature",
    "malformed Authorization": "IncompleteSignature",
    "signed header missing": "IncompleteSignature",
    "expired date": "InvalidTimeStamp.Expired",
}


@pytest.mark.parametrize("case", list(CHEAP_REFUSALS))
def test_a_forged_or_stale_upload_is_refused_before_its_body_is_read(
    make_stack: StackFactory, kind: str, case: str
) -> None:
    stack = make_stack(kind)
    trickled = trickle(stack.port, _forged(stack, case))

    assert_refusal(trickled.reply, stack, 400, CHEAP_REFUSALS[case])
    # The answer came while most of the 8 MiB was still to be sent...
    assert trickled.sent_before_reply < UPLOAD_SIZE // 2
    # ...and the middleware took none of it from the server.
    assert stack.tracker.wait_for(1)
    assert stack.tracker.body_bytes == 0
    assert stack.calls == []


def test_a_valid_upload_is_still_read_whole_and_accepted(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind)
    body = bytes(range(256)) * 4096  # 1 MiB
    reply = stack.send(stack.sign(body=body))
    assert reply.status == 200, reply
    assert reply.json()["BodyLength"] == len(body)
    assert reply.json()["BodySha256"] == hashlib.sha256(body).hexdigest()
    assert stack.tracker.wait_for(1)
    assert stack.tracker.body_bytes == len(body)


def test_a_signed_upload_announced_over_the_default_limit_is_refused_unread(
    make_stack: StackFactory, kind: str
) -> None:
    stack = make_stack(kind)  # DEFAULT_MAX_BODY_SIZE: 10 MiB
    trickled = trickle(stack.port, upload_head(stack.sign(), size=11 * 1024 * 1024))
    assert_refusal(trickled.reply, stack, 413, "PayloadTooLarge")
    assert trickled.sent_before_reply < UPLOAD_SIZE // 2
    assert stack.tracker.wait_for(1)
    assert stack.tracker.body_bytes == 0


# ---------------------------------------------------------------------------------------
# In-process: what HTTP cannot show (bytes read, messages received)
# ---------------------------------------------------------------------------------------


class CountingInput(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def _call_wsgi(middleware: AliakWSGIMiddleware, environ: dict[str, Any]) -> tuple[str, bytes]:
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    body = b"".join(middleware(environ, start_response))
    return started[0], body


def _base_environ(stream: io.BytesIO, **extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/echo",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:1",
        "wsgi.input": stream,
        **extra,
    }


def signed_head(host: str = "127.0.0.1:1", *, clock: Callable[[], float] = time.time) -> Request:
    """A request signed with the test key (for an empty body): its head passes the
    verifier's precheck, so what follows is about the body."""
    signer = Signer(AccessKey(ACCESS_KEY_ID, SECRET), clock=clock)
    return signer.sign(
        Request("POST", host=host, path="/api/echo"),
        action="DescribeThings",
        version="2024-01-01",
    )


def _signed_environ(stream: io.BytesIO, **extra: Any) -> dict[str, Any]:
    """A WSGI environ whose head is signed (the body is then read, and found wanting)."""
    environ = _base_environ(stream)
    for name, value in signed_head().headers.items():
        if name.lower() != "host":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return {**environ, **extra}


@pytest.fixture
def wsgi_in_process() -> Iterator[tuple[AliakWSGIMiddleware, list[str]]]:
    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    calls: list[str] = []
    with Verifier(store) as verifier:
        yield AliakWSGIMiddleware(wsgi_echo(calls), verifier, max_body_size=1000), calls


def test_wsgi_reads_nothing_of_a_body_announced_over_the_limit(
    wsgi_in_process: tuple[AliakWSGIMiddleware, list[str]],
) -> None:
    middleware, calls = wsgi_in_process
    stream = CountingInput(b"z" * 5000)
    status, body = _call_wsgi(middleware, _base_environ(stream, CONTENT_LENGTH="104857600"))
    assert status == "413 Request Entity Too Large" or status.startswith("413 ")
    assert json.loads(body)["Code"] == "PayloadTooLarge"
    assert stream.bytes_read == 0
    assert calls == []


@pytest.mark.parametrize(
    # Chunked without wsgi.input_terminated is refused unread (411): test_chunked_bodies.py.
    "extra",
    [
        {"wsgi.input_terminated": True},
        {"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"},
    ],
)
def test_wsgi_reads_at_most_one_byte_past_the_limit_of_a_body_without_length(
    wsgi_in_process: tuple[AliakWSGIMiddleware, list[str]], extra: dict[str, Any]
) -> None:
    middleware, calls = wsgi_in_process
    stream = CountingInput(b"z" * 5000)
    status, body = _call_wsgi(middleware, _signed_environ(stream, **extra))
    assert status.startswith("413 ")
    assert json.loads(body)["Code"] == "PayloadTooLarge"
    assert stream.bytes_read == 1001
    assert calls == []


def test_wsgi_body_shorter_than_announced_is_an_incomplete_body(
    wsgi_in_process: tuple[AliakWSGIMiddleware, list[str]],
) -> None:
    middleware, calls = wsgi_in_process
    stream = CountingInput(b"z" * 10)
    status, body = _call_wsgi(middleware, _signed_environ(stream, CONTENT_LENGTH="900"))
    assert status == "400 Bad Request"
    assert json.loads(body)["Code"] == "IncompleteBody"
    assert calls == []


def _unsigned_environ(stream: io.BytesIO, **extra: Any) -> dict[str, Any]:
    return _base_environ(stream, CONTENT_LENGTH="500", **extra)


def _stale_environ(stream: io.BytesIO) -> dict[str, Any]:
    environ = _base_environ(stream, CONTENT_LENGTH="500")
    for name, value in signed_head(clock=lambda: time.time() - 3600).headers.items():
        if name.lower() != "host":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


@pytest.mark.parametrize(
    ("make_environ", "code"),
    [
        (_unsigned_environ, "IncompleteSignature"),
        (
            lambda stream: _unsigned_environ(stream, HTTP_AUTHORIZATION="ACS3-HMAC-SHA256 x"),
            "IncompleteSignature",
        ),
        (_stale_environ, "InvalidTimeStamp.Expired"),
    ],
    ids=["no Authorization", "malformed Authorization", "expired date"],
)
def test_wsgi_reads_nothing_of_a_body_whose_head_the_verifier_refuses(
    wsgi_in_process: tuple[AliakWSGIMiddleware, list[str]],
    make_environ: Callable[[io.BytesIO], dict[str, Any]],
    code: str,
) -> None:
    middleware, calls = wsgi_in_process
    stream = CountingInput(b"z" * 500)
    status, body = _call_wsgi(middleware, make_environ(stream))
    assert status == "400 Bad Request"
    assert json.loads(body)["Code"] == code
    assert stream.bytes_read == 0
    assert calls == []


def test_wsgi_opaque_profile_refuses_an_unsigned_head_unread_as_access_denied() -> None:
    store = MemoryStore()
    calls: list[str] = []
    with Verifier(store, error_profile="opaque") as verifier:
        middleware = AliakWSGIMiddleware(wsgi_echo(calls), verifier)
        stream = CountingInput(b"z" * 500)
        status, body = _call_wsgi(middleware, _unsigned_environ(stream))
    assert status == "403 Forbidden"
    assert json.loads(body)["Code"] == "AccessDenied"
    assert stream.bytes_read == 0


def test_wsgi_a_signed_head_is_read_then_verified_whole(
    wsgi_in_process: tuple[AliakWSGIMiddleware, list[str]],
) -> None:
    middleware, calls = wsgi_in_process
    signed = signed_head()
    stream = CountingInput(b"tampered body")
    environ = _signed_environ(stream, CONTENT_LENGTH=str(len(b"tampered body")))
    assert environ["HTTP_X_ACS_CONTENT_SHA256"] == signed.headers["x-acs-content-sha256"]
    status, body = _call_wsgi(middleware, environ)
    # The head passed the precheck, so the body was read; the signature then failed.
    assert status == "400 Bad Request"
    assert stream.bytes_read == len(b"tampered body")
    assert json.loads(body)["Code"] == "SignatureDoesNotMatch"
    assert calls == []


def test_request_from_environ_rebuilds_the_wire_form() -> None:
    environ = {
        "REQUEST_METHOD": "put",
        "SCRIPT_NAME": "/svc",
        # PEP 3333: PATH_INFO is decoded, its bytes carried as latin-1 characters.
        "PATH_INFO": "/a b/é/x".encode().decode("latin-1"),
        "QUERY_STRING": "Name=a+b&Tag=%E4%B8%AD&Empty",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "2",
        "HTTP_HOST": "ecs.example.com",
        "HTTP_X_ACS_TEST": "ü".encode().decode("latin-1"),
        "HTTP_X_RAW": "\xff",  # not UTF-8: kept as the byte it was
        "SERVER_SOFTWARE": "test",
    }
    request = request_from_environ(environ, b"{}")
    assert request.method == "PUT"
    assert request.host == "ecs.example.com"
    assert request.path == "/svc/a%20b/%C3%A9/x"
    assert request.query == (("Name", "a b"), ("Tag", "中"), ("Empty", ""))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == "2"
    assert request.headers["x-acs-test"] == "ü"
    assert request.headers["x-raw"].encode("utf-8", "surrogateescape") == b"\xff"
    assert request.body == b"{}"

    # A raw request target wins over PATH_INFO: query cut off, absolute form reduced.
    raw = request_from_environ({**environ, "RAW_URI": "/a%2Fb?x=1"}, b"")
    assert raw.path == "/a%2Fb"
    absolute = request_from_environ({**environ, "REQUEST_URI": "http://h/p%20q?x=1"}, b"")
    assert absolute.path == "/p%20q"


def test_a_malformed_raw_path_is_an_invalid_parameter_response() -> None:
    with pytest.raises(InvalidParameter):
        request_from_environ({"REQUEST_METHOD": "GET", "RAW_URI": "/a b"}, b"")
    store = MemoryStore()
    calls: list[str] = []
    with Verifier(store) as verifier:
        middleware = AliakWSGIMiddleware(wsgi_echo(calls), verifier)
        status, body = _call_wsgi(
            middleware, _base_environ(CountingInput(b""), RAW_URI="/api/a b", CONTENT_LENGTH="0")
        )
    assert status == "400 Bad Request"
    assert json.loads(body)["Code"] == "InvalidParameter"
    assert calls == []


def test_request_from_scope_keeps_raw_path_query_and_duplicate_headers() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/a/b c",
        "raw_path": b"/a%2Fb%20c?ignored=1",
        "query_string": b"Name=a+b&Tag=%E4%B8%AD",
        "headers": [
            (b"host", b"ecs.example.com"),
            (b"x-acs-test", b"https"),
            (b"x-acs-test", b"http"),
            (b"x-note", "é".encode()),
        ],
    }
    request = request_from_scope(scope, b"body")
    assert request.path == "/a%2Fb%20c"
    assert request.host == "ecs.example.com"
    assert request.query == (("Name", "a b"), ("Tag", "中"))
    assert request.headers.get_all("x-acs-test") == ["https", "http"]
    assert request.headers["x-note"] == "é"
    # Without raw_path, the decoded path is re-encoded segment by segment.
    assert request_from_scope({**scope, "raw_path": None}, b"").path == "/a/b%20c"


def _run_asgi(
    middleware: AliakASGIMiddleware, scope: dict[str, Any], messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Drive the middleware with scripted receive messages; returns what it sent and how
    many messages it asked for."""
    sent: list[dict[str, Any]] = []
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if asked > len(messages):
            await asyncio.sleep(3600)  # a client that never sends more: must not be awaited
        return messages[asked - 1]

    async def send_message(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(middleware(scope, receive, send_message), TIMEOUT)

    asyncio.run(run())
    return sent, asked


@pytest.fixture
def asgi_in_process() -> tuple[AliakASGIMiddleware, list[str]]:
    store = MemoryStore()
    calls: list[str] = []
    return (
        AliakASGIMiddleware(asgi_echo(calls), AsyncVerifier(store.as_async()), max_body_size=100),
        calls,
    )


HTTP_SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/api/echo",
    "raw_path": b"/api/echo",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:1")],
    "client": ("127.0.0.1", 5000),
}


def signed_scope(**extra: Any) -> dict[str, Any]:
    """An ``http`` scope whose head is signed (the body is then received)."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in signed_head().headers.items()
    ]
    return {**HTTP_SCOPE, "headers": headers, **extra}


def test_asgi_stops_receiving_as_soon_as_the_body_passes_the_limit(
    asgi_in_process: tuple[AliakASGIMiddleware, list[str]],
) -> None:
    middleware, calls = asgi_in_process
    messages = [{"type": "http.request", "body": b"z" * 60, "more_body": True}] * 5
    sent, asked = _run_asgi(middleware, signed_scope(), messages)
    assert asked == 2  # 120 bytes > 100: refused at the second message
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["Code"] == "PayloadTooLarge"
    assert calls == []


@pytest.mark.parametrize("opaque", [False, True])
def test_asgi_refuses_an_unsigned_or_stale_head_without_receiving_and_closes(
    opaque: bool,
) -> None:
    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    verifier = AsyncVerifier(store.as_async(), error_profile="opaque" if opaque else "alibaba")
    calls: list[str] = []
    middleware = AliakASGIMiddleware(asgi_echo(calls), verifier)
    body = [{"type": "http.request", "body": b"z" * 60, "more_body": True}] * 5
    stale = signed_scope()
    stale["headers"] = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in signed_head(clock=lambda: time.time() - 3600).headers.items()
    ]
    length = (b"content-length", b"300")
    unsigned = {**HTTP_SCOPE, "headers": [*HTTP_SCOPE["headers"], length]}
    stale["headers"].append(length)
    for scope, code in ((unsigned, "IncompleteSignature"), (stale, "InvalidTimeStamp.Expired")):
        sent, asked = _run_asgi(middleware, scope, body)
        assert asked == 0
        document = json.loads(sent[1]["body"])
        if opaque:
            assert (sent[0]["status"], document["Code"]) == (403, "AccessDenied")
        else:
            assert (sent[0]["status"], document["Code"]) == (400, code)
        # The body is left unread: the connection cannot carry another request.
        assert (b"connection", b"close") in sent[0]["headers"]
    assert calls == []

    # Without a body to follow, the connection stays usable.
    bodiless = {**HTTP_SCOPE, "method": "GET"}
    sent, asked = _run_asgi(middleware, bodiless, [])
    assert asked == 0
    assert (b"connection", b"close") not in sent[0]["headers"]


def test_asgi_refuses_an_announced_length_over_the_limit_without_receiving(
    asgi_in_process: tuple[AliakASGIMiddleware, list[str]],
) -> None:
    middleware, _ = asgi_in_process
    scope = {**HTTP_SCOPE, "headers": [(b"host", b"h"), (b"content-length", b"101")]}
    sent, asked = _run_asgi(middleware, scope, [])
    assert asked == 0
    assert sent[0]["status"] == 413


def test_asgi_disconnect_mid_body_sends_nothing_and_skips_the_app(
    asgi_in_process: tuple[AliakASGIMiddleware, list[str]],
) -> None:
    middleware, calls = asgi_in_process
    messages = [
        {"type": "http.request", "body": b"z" * 10, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent, asked = _run_asgi(middleware, signed_scope(), messages)
    assert asked == 2
    assert sent == []
    assert calls == []


def test_asgi_lifespan_and_websocket_scopes_pass_through(
    asgi_in_process: tuple[AliakASGIMiddleware, list[str]],
) -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = AliakASGIMiddleware(inner, asgi_in_process[0].verifier)
    for scope_type in ("lifespan", "websocket"):
        sent, asked = _run_asgi(middleware, {"type": scope_type, "path": "/api/x"}, [])
        assert (sent, asked) == ([], 0)
    assert seen == ["lifespan", "websocket"]
