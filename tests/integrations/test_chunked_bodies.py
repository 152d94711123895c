"""Chunked request bodies (issue #11, item 6), over real sockets on 127.0.0.1.

The official Node SDK sends every body with ``Transfer-Encoding: chunked`` and no
``Content-Length``; ``wsgiref`` does not decode chunked bodies, and a middleware reading
``wsgi.input`` to its end waited for the client to give up. Here:

- a chunked JSON POST, signed by aliak without a length, verifies and is echoed whole by
  ``aliak serve`` (a subprocess), gunicorn (sync worker) running the WSGI middleware and
  uvicorn running the ASGI middleware; a body that does not match its signed hash is
  refused by each; curl's chunked upload is accepted by ``aliak serve``;
- ``aliak serve`` keeps the connection for the next request after a chunked one, and
  defers ``100 Continue`` until the body is wanted;
- a plain ``wsgiref`` server with the middleware answers 411 at once (nothing read);
- ``aliak serve``'s decoder refuses malformed framing (400), a body past
  ``--max-body-size`` (413, on the chunk-size line), and every head that two parsers
  could frame two ways -- the request smuggling shapes -- closing the connection after.

Every socket has a read timeout (``_serving.SOCKET_TIMEOUT``): a server that waits where
it should answer makes the test fail, never hang.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

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
    parse_authorization,
)
from aliak.cli._serve import echo_app
from aliak.integrations.asgi import AliakASGIMiddleware
from aliak.integrations.wsgi import AliakWSGIMiddleware

from ._serving import (
    SOCKET_TIMEOUT,
    START_DEADLINE,
    Reply,
    ServerProcess,
    aliak_serve,
    chunked,
    closed_by_server,
    connection,
    exchange,
    head,
    read_reply,
    sqlite_store_with_key,
)

ACCESS_KEY_ID = "LTAI5tChunkedBodyTest01"
SECRET = "cH7kQ2wN9pX4vB6mZ1rT8yL3sD5fG0"
OWNER = RamUser("1234567890123456", "chunked")
LIMIT = 4096  # --max-body-size of every server here
BODY = json.dumps(
    {"Name": "widget", "Tags": ["blue", "round"], "Note": "名前 " * 40},
    ensure_ascii=False,
    separators=(",", ":"),
).encode("utf-8")
# Uneven pieces, one of them cutting a UTF-8 character in two: chunk boundaries are
# framing, not content.
PIECES = [BODY[:7], BODY[7:100], BODY[100:]]


# ---------------------------------------------------------------------------------------
# Signing, and sending chunked
# ---------------------------------------------------------------------------------------


def sign(port: int, method: str = "POST", path: str = "/things", body: bytes = BODY) -> Request:
    """Signed as the Node SDK signs: host, content-type and x-acs-*; no Content-Length."""
    headers = {"content-type": "application/json; charset=utf-8"} if body else {}
    return Signer(AccessKey(ACCESS_KEY_ID, SECRET)).sign(
        Request(method, host=f"127.0.0.1:{port}", path=path, headers=headers, body=body),
        action="CreateThing",
        version="2024-01-01",
    )


def signed_head(signed: Request, *framing: tuple[str, str], version: str = "HTTP/1.1") -> bytes:
    return head(f"{signed.method} {signed.path} {version}", [*signed.headers.items(), *framing])


def post_chunked(port: int, signed: Request, pieces: list[bytes]) -> Reply:
    """``signed`` through http.client, its body sent chunked (``encode_chunked``)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=SOCKET_TIMEOUT)
    try:
        client.putrequest(signed.method, signed.path, skip_host=True, skip_accept_encoding=True)
        for name, value in signed.headers.items():
            client.putheader(name, value)
        client.putheader("Transfer-Encoding", "chunked")
        client.endheaders(iter(pieces), encode_chunked=True)
        response = client.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        client.close()


def assert_echoed(reply: Reply, body: bytes = BODY) -> dict[str, Any]:
    assert reply.status == 200, reply
    answer: dict[str, Any] = reply.json()
    assert answer["AccessKeyId"] == ACCESS_KEY_ID
    assert answer["BodyLength"] == len(body)
    return answer


def assert_refused(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.json()["Code"] == code, reply


# ---------------------------------------------------------------------------------------
# The three servers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``aliak serve`` over a SQLite store holding the test key."""
    db = tmp_path_factory.mktemp("serve") / "aliak.db"
    sqlite_store_with_key(db, OWNER, ACCESS_KEY_ID, SECRET)
    with aliak_serve(db, "--max-body-size", str(LIMIT)) as server:
        yield server


GUNICORN_APP = """
from aliak import KeyManager, MemoryStore, RamUser, Verifier
from aliak.cli._serve import echo_app
from aliak.integrations.wsgi import AliakWSGIMiddleware

store = MemoryStore()
KeyManager(store).import_access_key(RamUser({account!r}, {user!r}), {key!r}, {secret!r})
app = AliakWSGIMiddleware(echo_app, Verifier(store), max_body_size={limit})
"""


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """gunicorn, one sync worker, serving the WSGI middleware around ``echo_app``."""
    directory = tmp_path_factory.mktemp("gunicorn")
    (directory / "chunked_app.py").write_text(
        GUNICORN_APP.format(
            account=OWNER.account_id, user=OWNER.name, key=ACCESS_KEY_ID, secret=SECRET, limit=LIMIT
        ),
        "utf-8",
    )
    server = ServerProcess(
        [
            sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
            "--worker-class", "sync", "--timeout", "30", "--chdir", str(directory),
            "chunked_app:app",
        ],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    )  # fmt: skip
    try:
        yield server
        assert server.stop() == 0, server.output
        assert "Traceback" not in server.output, server.output
    finally:
        server.kill()


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``echo_app`` for ASGI: the Verified JSON and the length of the body received."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    payload = json.dumps({**scope["aliak.verified"].to_dict(), "BodyLength": size}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[int]:
    """uvicorn in a thread, serving the ASGI middleware around ``asgi_echo``; its port."""
    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    app = AliakASGIMiddleware(asgi_echo, AsyncVerifier(store.as_async()), max_body_size=LIMIT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
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
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=SOCKET_TIMEOUT)
        sock.close()


@pytest.fixture(params=["aliak-serve", "gunicorn", "uvicorn"])
def port(request: pytest.FixtureRequest) -> int:
    if request.param == "uvicorn":
        return request.getfixturevalue("uvicorn_server")  # type: ignore[no-any-return]
    fixture = {"aliak-serve": "serve", "gunicorn": "gunicorn"}[request.param]
    server: ServerProcess = request.getfixturevalue(fixture)
    return server.port


# ---------------------------------------------------------------------------------------
# Every server: a chunked POST verifies; a changed one does not
# ---------------------------------------------------------------------------------------


def test_a_chunked_json_post_signed_without_a_length_verifies_and_is_echoed_whole(
    port: int,
) -> None:
    signed = sign(port)
    assert (
        "content-length" not in parse_authorization(signed.headers["Authorization"]).signed_headers
    )
    assert "content-length" not in signed.headers

    answer = assert_echoed(post_chunked(port, signed, PIECES))
    assert "content-length" not in answer["SignedHeaders"]
    assert answer["Action"] == "CreateThing"


def test_a_chunked_body_that_is_not_the_one_signed_is_refused(port: int) -> None:
    signed = sign(port)
    changed = [piece.replace(b"widget", b"gadget") for piece in PIECES]
    assert changed != PIECES

    assert_refused(post_chunked(port, signed, changed), 400, "SignatureDoesNotMatch")


# ---------------------------------------------------------------------------------------
# aliak serve: the connection after a chunked request; 100-continue; curl
# ---------------------------------------------------------------------------------------


def test_serve_keeps_the_connection_for_pipelined_requests_after_chunked_ones(
    serve: ServerProcess,
) -> None:
    # Extensions, upper-case hex and a trailer field are all valid framing; the three
    # requests go out at once, so the second starts in the buffer the first was read into.
    first = sign(serve.port)
    framed = (
        b'7;name=value;quoted="a \\"b\\""\r\n' + BODY[:7] + b"\r\n"
        + f"{len(BODY) - 7:X}\r\n".encode() + BODY[7:] + b"\r\n"
        + b"0\r\nX-Checksum: none\r\n\r\n"
    )  # fmt: skip
    second_body = b'{"Name":"second"}'
    second = sign(serve.port, body=second_body)
    third = sign(serve.port, method="GET", body=b"")
    data = (
        signed_head(first, ("Transfer-Encoding", "chunked")) + framed
        + signed_head(second, ("Transfer-Encoding", "chunked")) + chunked(second_body)
        + signed_head(third, ("Connection", "close"))
    )  # fmt: skip
    with connection(serve.port) as (sock, stream):
        sock.sendall(data)
        replies = [read_reply(stream) for _ in range(3)]
        assert closed_by_server(stream)  # after the third, which asked for it

    assert_echoed(replies[0])
    assert_echoed(replies[1], second_body)
    assert_echoed(replies[2], b"")
    assert [reply.header("Connection") for reply in replies] == [None, None, "close"]


def test_serve_sends_100_continue_only_when_the_body_is_wanted(serve: ServerProcess) -> None:
    signed = sign(serve.port)
    expect = ("Expect", "100-continue")
    with connection(serve.port) as (sock, stream):
        sock.sendall(signed_head(signed, ("Transfer-Encoding", "chunked"), expect))
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(chunked(*PIECES))
        assert_echoed(read_reply(stream))

    # Refused on its head alone: answered without being invited to send the body.
    unsigned = head(
        "POST /things HTTP/1.1",
        [("Host", f"127.0.0.1:{serve.port}"), ("Transfer-Encoding", "chunked"), expect],
    )
    with connection(serve.port) as (sock, stream):
        sock.sendall(unsigned)
        assert stream.readline().startswith(b"HTTP/1.1 400 ")


def test_curl_uploads_a_chunked_file_to_serve(serve: ServerProcess, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: its chunked upload is not tried")
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY)
    signed = sign(serve.port)
    header_options = [
        word for pair in signed.headers.items() for word in ("-H", f"{pair[0]}: {pair[1]}")
    ]
    result = subprocess.run(
        [
            curl, "--silent", "--show-error", "--max-time", str(SOCKET_TIMEOUT),
            "-X", "POST", *header_options, "-H", "Transfer-Encoding: chunked",
            "--data-binary", f"@{body_file}", "--write-out", "\n%{http_code}",
            f"http://127.0.0.1:{serve.port}{signed.path}",
        ],
        capture_output=True,
        text=True,
        timeout=SOCKET_TIMEOUT * 3,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    answer = json.loads(text)
    assert (answer["AccessKeyId"], answer["BodyLength"]) == (ACCESS_KEY_ID, len(BODY))


# ---------------------------------------------------------------------------------------
# A server that does not decode chunked bodies: 411, at once
# ---------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain_wsgiref() -> Iterator[tuple[int, list[str]]]:
    """Stock ``wsgiref`` (no chunked decoding, no ``wsgi.input_terminated``) with the
    middleware; the port, and the paths the application was called with."""
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    with Verifier(store) as verifier:
        middleware = AliakWSGIMiddleware(app, verifier, max_body_size=LIMIT)
        httpd = make_server("127.0.0.1", 0, middleware, handler_class=_QuietHandler)
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield httpd.server_address[1], calls
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=SOCKET_TIMEOUT)


@pytest.mark.parametrize(
    "framing",
    [
        [("Transfer-Encoding", "chunked")],
        # A length beside it would count framing bytes as body: refused the same way.
        [("Transfer-Encoding", "chunked"), ("Content-Length", str(len(BODY)))],
    ],
    ids=["chunked", "chunked-and-length"],
)
def test_a_server_that_does_not_decode_chunked_bodies_is_answered_411_at_once(
    plain_wsgiref: tuple[int, list[str]], framing: list[tuple[str, str]]
) -> None:
    port, calls = plain_wsgiref
    signed = sign(port)
    # The first chunk only: a reader waiting for the end of the body would wait forever
    # (until the socket timeout fails the test).
    first_chunk = f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n"

    reply = exchange(port, signed_head(signed, *framing) + first_chunk)

    assert_refused(reply, 411, "MissingContentLength")
    assert calls == []


class _CountingInput(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


@pytest.mark.parametrize(
    ("environ", "status", "read"),
    [
        ({"HTTP_TRANSFER_ENCODING": "chunked"}, "411 Length Required", 0),
        ({"HTTP_TRANSFER_ENCODING": "chunked", "CONTENT_LENGTH": "5"}, "411 Length Required", 0),
        ({"HTTP_TRANSFER_ENCODING": "gzip"}, "411 Length Required", 0),
        # A server that decoded it says so: the body is read to its end.
        ({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}, "200 OK", len(BODY)),
    ],
    ids=["chunked", "chunked-and-length", "other-coding", "terminated"],
)
def test_the_wsgi_middleware_reads_a_chunked_body_only_from_a_server_that_decoded_it(
    environ: dict[str, Any], status: str, read: int
) -> None:
    store = MemoryStore()
    KeyManager(store).import_access_key(OWNER, ACCESS_KEY_ID, SECRET)
    signed = sign(1)
    stream = _CountingInput(BODY)
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/things",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": signed.headers["content-type"],
        "wsgi.input": stream,
    }
    for name, value in signed.headers.items():
        if name.lower() != "content-type":
            base["HTTP_" + name.upper().replace("-", "_")] = value
    started: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    with Verifier(store) as verifier:
        middleware = AliakWSGIMiddleware(echo_app, verifier, max_body_size=LIMIT)
        answer = b"".join(middleware({**base, **environ}, start_response))
    assert started == [status], answer
    assert stream.bytes_read == read


# ---------------------------------------------------------------------------------------
# aliak serve's decoder: malformed framing, the limit, and ambiguous heads
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
        b"-5\r\nhello\r\n0\r\n\r\n",  # negative (int("-5", 16) would take it)
        b"0x5\r\nhello\r\n0\r\n\r\n",  # a prefix (so would int("0x5", 16))
        b"5_0\r\nhello\r\n0\r\n\r\n",  # an underscore (and int("5_0", 16))
        b" 5\r\nhello\r\n0\r\n\r\n",  # whitespace before
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after, with no extension
        b"",  # an empty chunk-size line: see below
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",  # 2**64 + 5: wraps to 5 in 64 bits
        b"0000000000000000005\r\nhello\r\n0\r\n\r\n",  # more than 16 digits
        b"5\nhello\r\n0\r\n\r\n",  # a bare LF
        b'5;name="unterminated\r\nhello\r\n0\r\n\r\n',  # a broken extension
        b"5;" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n",  # a line without end in sight
        b"3\r\nhello\r\n0\r\n\r\n",  # more data than the size says: no CRLF after 3 bytes
        b"5\r\nhelloXX0\r\n\r\n",  # the CRLF after the data missing
        b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n",  # a broken trailer
        b"5\r\nhello\r\n0\r\nX-A: 1\r\n folded\r\n\r\n",  # an obs-fold trailer
    ],
    ids=[
        "garbage", "negative", "hex-prefix", "underscore", "leading-space", "trailing-space",
        "empty-size", "size-overflow", "size-too-long", "bare-lf", "bad-extension",
        "endless-line", "size-too-small", "missing-crlf-after-data", "bad-trailer",
        "folded-trailer",
    ],
)  # fmt: skip
def test_serve_refuses_malformed_chunk_framing_at_once_and_closes(
    serve: ServerProcess, body: bytes
) -> None:
    body = body or b"\r\nhello\r\n0\r\n\r\n"
    signed = sign(serve.port)
    with connection(serve.port) as (sock, stream):
        # The client stays, sending nothing more: only an answer ends the wait.
        sock.sendall(signed_head(signed, ("Transfer-Encoding", "chunked")) + body)
        reply = read_reply(stream)
        assert_refused(reply, 400, "InvalidParameter")
        assert reply.header("Connection") == "close"
        assert closed_by_server(stream)


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhello\r\n0\r\n",  # the last chunk without the empty line after the trailers
        b"5\r\nhello\r\n",  # no last chunk
        b"5\r\nhel",  # inside a chunk's data
        b"5\r\nhello",  # before the CRLF after the data
        b"5",  # inside a chunk-size line
    ],
    ids=["no-final-crlf", "no-last-chunk", "mid-data", "before-data-crlf", "mid-size-line"],
)
def test_serve_answers_a_chunked_body_cut_short_with_400(serve: ServerProcess, body: bytes) -> None:
    signed = sign(serve.port)
    reply = exchange(
        serve.port, signed_head(signed, ("Transfer-Encoding", "chunked")) + body, half_close=True
    )
    assert_refused(reply, 400, "IncompleteBody")


@pytest.mark.parametrize(
    "body",
    [
        f"{LIMIT + 1:x}\r\n".encode(),  # one chunk past the limit, announced: no data sent
        b"ffffffffffffffff\r\n",  # the largest size there is
        # Two chunks within the limit, and the size line of a third that is not.
        chunked(b"a" * 2000, b"b" * 2000)[: -len(b"0\r\n\r\n")] + b"7d0\r\n",
    ],
    ids=["one-chunk", "largest-size", "sum-of-chunks"],
)
def test_serve_refuses_a_chunked_body_past_the_limit_on_the_size_line(
    serve: ServerProcess, body: bytes
) -> None:
    # The data of the chunk that passes the limit is never sent: the answer cannot wait
    # for it, so nothing past the limit can have been read.
    signed = sign(serve.port)
    with connection(serve.port) as (sock, stream):
        sock.sendall(signed_head(signed, ("Transfer-Encoding", "chunked")) + body)
        reply = read_reply(stream)
        assert_refused(reply, 413, "PayloadTooLarge")
        assert closed_by_server(stream)


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize(
    ("framing", "version"),
    [
        ([("Content-Length", "5"), ("Transfer-Encoding", "chunked")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked"), ("Content-Length", "5")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked"), ("Content-Length", "0")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked, chunked")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], "HTTP/1.1"),
        ([("Transfer-Encoding", "gzip, chunked")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked, identity")], "HTTP/1.1"),
        ([("Transfer-Encoding", "identity")], "HTTP/1.1"),
        ([("Transfer-Encoding", "xchunked")], "HTTP/1.1"),
        ([("Transfer-Encoding", "chunked")], "HTTP/1.0"),
        ([("Transfer-Encoding ", "chunked")], "HTTP/1.1"),  # whitespace before the colon
        ([("Transfer_Encoding", "chunked")], "HTTP/1.1"),  # wsgiref's environ key alike
        ([("X-Fold", "a\r\n Transfer-Encoding: chunked")], "HTTP/1.1"),  # obs-fold
        ([("Content-Length", "5"), ("Content-Length", "5")], "HTTP/1.1"),
        ([("Content-Length", "5, 5")], "HTTP/1.1"),
        ([("Content-Length", "+5")], "HTTP/1.1"),
        ([("Content-Length", "0x5")], "HTTP/1.1"),
    ],
    ids=[
        "length-then-chunked", "chunked-then-length", "chunked-and-zero-length",
        "chunked-twice-listed", "chunked-twice-sent", "gzip-then-chunked",
        "chunked-not-last", "identity", "chunked-lookalike", "chunked-in-http-1.0",
        "space-before-colon", "underscore-name", "obs-fold", "length-twice",
        "length-list", "length-signed", "length-hex",
    ],
)  # fmt: skip
def test_serve_refuses_a_head_two_parsers_could_frame_two_ways_and_closes(
    serve: ServerProcess, framing: list[tuple[str, str]], version: str
) -> None:
    # Whatever a proxy in front made of it, the bytes after the head are never taken for
    # a request: one refusal, then the connection ends.
    signed = sign(serve.port)
    data = signed_head(signed, *framing, version=version) + b"hello" + chunked(b"x") + SMUGGLED
    with connection(serve.port) as (sock, stream):
        sock.sendall(data)
        reply = read_reply(stream)
        assert_refused(reply, 400, "InvalidParameter")
        assert closed_by_server(stream)


def test_serve_still_frames_a_content_length_body_and_keeps_the_connection(
    serve: ServerProcess,
) -> None:
    signed = sign(serve.port)
    data = signed_head(signed, ("Content-Length", str(len(BODY)))) + BODY
    second = sign(serve.port, method="GET", body=b"")
    with connection(serve.port) as (sock, stream):
        sock.sendall(data + signed_head(second, ("Connection", "close")))
        assert_echoed(read_reply(stream))
        assert_echoed(read_reply(stream), b"")
        assert closed_by_server(stream)


def test_serve_answers_head_without_a_body_so_the_next_answer_is_read_right(
    serve: ServerProcess,
) -> None:
    first = sign(serve.port, method="HEAD", body=b"")
    second = sign(serve.port, method="GET", body=b"")
    with connection(serve.port) as (sock, stream):
        sock.sendall(signed_head(first) + signed_head(second, ("Connection", "close")))
        status_line = stream.readline()
        assert status_line.startswith(b"HTTP/1.1 200 "), status_line
        while stream.readline() != b"\r\n":
            pass  # the HEAD answer's headers, its Content-Length that of the GET
        # The next bytes are the GET's answer, not a HEAD body.
        assert_echoed(read_reply(stream), b"")
        assert closed_by_server(stream)


def test_serve_survives_clients_that_leave_inside_their_head_or_body(
    serve: ServerProcess,
) -> None:
    signed = sign(serve.port)
    with connection(serve.port) as (sock, _):
        sock.sendall(signed_head(signed, ("Transfer-Encoding", "chunked")) + b"5\r\nhe")
    with connection(serve.port) as (sock, _):
        sock.sendall(b"POST /things HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    # The server still answers; the module's teardown checks it printed no traceback.
    assert_echoed(post_chunked(serve.port, sign(serve.port), PIECES))
