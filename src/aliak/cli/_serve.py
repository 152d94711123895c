"""``aliak serve``: a verifying echo server, for trying clients against the store.

Every request goes through :class:`~aliak.integrations.wsgi.AliakWSGIMiddleware`; a
verified one is answered 200 with the :class:`~aliak.Verified` JSON (and the body's
length), a refused one with the Alibaba error body and status. It listens on loopback
unless told otherwise: it is a test bench, not a production server.

It runs on ``wsgiref``, with the request handler doing what ``wsgiref`` does not: it
frames every body itself (:mod:`aliak.cli._framing`: chunked bodies decoded, strictly and
bounded by ``--max-body-size``; ambiguous framing refused), hands it to the middleware as
a terminated stream (``wsgi.input_terminated``), and keeps an HTTP/1.1 connection open
for the next request when the body was read to its end (closed otherwise, so that no
unread body byte is ever taken for a request). ``Expect: 100-continue`` is answered only
when the body is first read: a request refused on its head is never invited to send it.

``--request-log PATH`` writes one event per verified or refused request (ActionTrail's
shape) to the ``aliak_request_log`` table of the SQLite file PATH (the store's own file
will do), which ``aliak audit --requests`` reads. ``--metrics`` answers ``GET /metrics``
with the verifier's Prometheus metrics, on the same server, ahead of the verifying
middleware (unauthenticated: loopback is the default for a reason).

With ``--tls-cert`` and ``--tls-key`` it speaks HTTPS (TLS 1.2 or later). Each connection's
handshake runs in that connection's own thread, under the socket timeout: a client that
connects and stalls holds only its thread, never the accepting one. A failed handshake
(plain HTTP to the TLS port, an untrusted certificate) closes that connection alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import ipaddress
import json
import logging
import signal
import socket
import sqlite3
import ssl
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import IO, TYPE_CHECKING, Any, cast
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from aliak import AliakError, normalize_network
from aliak.cli._console import CommandFailed, Console
from aliak.cli._framing import RequestBody, frame_body
from aliak.cli._store import open_store
from aliak.integrations.http import DEFAULT_MAX_BODY_SIZE, error_response
from aliak.integrations.sts import AssumeRoleApp
from aliak.integrations.wsgi import AliakWSGIMiddleware
from aliak.keys import KeyManager
from aliak.metrics import VerifierMetrics
from aliak.requestlog import SQLiteRequestLog
from aliak.verifier import Verified, Verifier

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["add_serve_command", "echo_app"]

_JSON = ("Content-Type", "application/json;charset=utf-8")
# A connection idle this long between requests, or a client stalled this long inside
# one, is closed: each open connection holds a thread.
SOCKET_TIMEOUT = 30.0
# http.server's own bound on the request line.
_MAX_REQUEST_LINE = 65536

logger = logging.getLogger(__name__)


def echo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answer with what the middleware verified; a path outside ``--paths`` was not."""
    verified = environ.get("aliak.verified")
    if isinstance(verified, Verified):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        answer: dict[str, object] = {**verified.to_dict(), "BodyLength": length}
    else:
        answer = {
            "Verified": False,
            "Method": environ.get("REQUEST_METHOD"),
            "Path": environ.get("PATH_INFO"),
        }
    payload = json.dumps(answer, ensure_ascii=False).encode("utf-8")
    start_response("200 OK", [_JSON, ("Content-Length", str(len(payload)))])
    return [payload]


class _ServerHandler(ServerHandler):
    """wsgiref's response writer, answering in the request's HTTP version and saying
    ``Connection: close`` whenever the connection will not carry another request."""

    headers: Headers  # set by start_response, before cleanup_headers runs (undeclared in typeshed)

    def __init__(
        self, request: _RequestHandler, body: RequestBody, environ: dict[str, Any]
    ) -> None:
        wfile = cast("IO[bytes]", request.wfile)
        super().__init__(body, wfile, request.get_stderr(), environ, multithread=True)
        self.request_handler = request
        self.http_version = "1.1" if request.request_version == "HTTP/1.1" else "1.0"

    def write(self, data: bytes) -> None:
        if self.request_handler.command == "HEAD":
            # No body, the headers as for GET (RFC 9110 §9.3.2): on a connection kept
            # open, body bytes after a HEAD answer would be read as the next answer.
            data = b""
        super().write(data)

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        request = self.request_handler
        if "Content-Length" not in self.headers or not request.body_complete():
            # A response without a length ends with the connection; an unread body
            # would be read as the next request.
            request.close_connection = True
        if request.close_connection:
            self.headers["Connection"] = "close"


class _RequestHandler(WSGIRequestHandler):
    """One connection: its requests in turn, each body framed here (see the module
    docstring)."""

    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    _body: RequestBody | None = None
    _continue_pending = False
    _tls = False  # the connection is wrapped in TLS
    _handshake_failed = False

    def setup(self) -> None:
        # Here, in the connection's thread: a handshake in the accepting thread would let
        # one slow client stall every other.
        server = self.server
        assert isinstance(server, _EchoServer)
        if server.ssl_context is not None:
            self.request.settimeout(SOCKET_TIMEOUT)  # the handshake's bound too
            try:
                self.request = server.ssl_context.wrap_socket(self.request, server_side=True)
            except OSError as error:  # ssl.SSLError, a timeout, a reset: this connection only
                # wrap_socket closed the socket; handle and finish have nothing to do.
                self._handshake_failed = True
                logger.info("TLS handshake with %s failed: %s", self.client_address[0], error)
                return
            self._tls = True
        super().setup()

    def handle(self) -> None:
        if self._handshake_failed:
            return
        # wsgiref serves one request per connection; http.server's loop serves them all.
        http.server.BaseHTTPRequestHandler.handle(self)

    def finish(self) -> None:
        if self._handshake_failed:
            return
        try:
            super().finish()
        finally:
            if self._tls:
                # The server shuts down the socket it accepted, detached by the wrapping:
                # the TLS socket is closed here (no close_notify wait on a closing client).
                self.server.shutdown_request(self.request)

    def handle_one_request(self) -> None:
        self._body = None
        self._continue_pending = False
        try:
            self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
        except TimeoutError:
            self.close_connection = True  # idle past the timeout
            return
        try:
            self._handle_request()
        except TimeoutError as error:  # a client stalled inside its head (as http.server)
            self.log_error("Request timed out: %r", error)
            self.close_connection = True

    def _handle_request(self) -> None:
        if len(self.raw_requestline) > _MAX_REQUEST_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True  # the client closed the connection
            return
        if not self.parse_request():  # an error was answered, and the connection closes
            return
        if self.request_version != "HTTP/1.1":
            self.close_connection = True  # HTTP/1.0 keep-alive is not offered
        server = self.server
        assert isinstance(server, _EchoServer)
        try:
            self._body = frame_body(
                self.headers,
                self.request_version,
                self.rfile,
                server.max_body_size,
                on_first_read=self._send_continue,
            )
        except AliakError as error:
            self._refuse(error)
            return
        app = server.get_app()
        assert app is not None  # set before serving
        _ServerHandler(self, self._body, self.get_environ()).run(app)
        if not self._body.complete:
            self.close_connection = True
        self.wfile.flush()

    def body_complete(self) -> bool:
        return self._body is not None and self._body.complete

    def handle_expect_100(self) -> bool:
        # Deferred to the first read of the body (_send_continue): a request the
        # middleware refuses on its head alone is answered without inviting the body.
        self._continue_pending = True
        return True

    def _send_continue(self) -> None:
        if self._continue_pending:
            self._continue_pending = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()

    def _refuse(self, error: AliakError) -> None:
        """A head whose body cannot be framed safely: the Alibaba error, and the
        connection closed (what follows the head cannot be told apart from a request)."""
        logger.info("refused %s %r: %s", self.command, self.path, error)
        host = self.headers.get("Host")
        status, headers, payload = error_response(error, host=host)
        self.close_connection = True
        self.send_response(status)
        for name, value in headers:
            if name != "Date":  # send_response wrote one
                self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        # The request target as sent: the middleware verifies the path on the wire, not
        # the percent-decoded PATH_INFO.
        environ["RAW_URI"] = self.path
        # Every body is framed here and ends where its framing says (PEP 3333 extension,
        # as gunicorn and werkzeug set it): the middleware may read a chunked one to its end.
        environ["wsgi.input_terminated"] = True
        if self.headers.get("Content-Type") is None:
            # wsgiref says text/plain for a request that sent no Content-Type; an ROA
            # signature covers that line either way, so only what was sent may stand.
            environ.pop("CONTENT_TYPE", None)
        # Not the stock wsgiref any more: the middleware need not guess at its inventions.
        environ["SERVER_SOFTWARE"] = f"aliak-serve {environ.get('SERVER_SOFTWARE', '')}".strip()
        if self._tls:
            # wsgiref derives wsgi.url_scheme from HTTPS (wsgiref.util.guess_scheme).
            environ["HTTPS"] = "on"
            environ["wsgi.url_scheme"] = "https"
        return environ


class _EchoServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    max_body_size = DEFAULT_MAX_BODY_SIZE
    # Set for HTTPS: each connection is wrapped in its handler's thread (_RequestHandler.setup).
    ssl_context: ssl.SSLContext | None = None


class _EchoServerV6(_EchoServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # Bound to ::, serve IPv4 too (whatever the system default): its peers arrive as
        # ::ffff:a.b.c.d, which the middleware reads as the IPv4 addresses they are.
        if hasattr(socket, "IPV6_V6ONLY"):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _read_pem(path: str, what: str, marker: bytes) -> None:
    """Fail with a message naming ``path`` if it cannot be read or holds no ``marker``
    (its content is never shown: the key file's is a secret)."""
    try:
        with open(path, "rb") as pem:
            content = pem.read()
    except OSError as error:
        raise CommandFailed(f"cannot read the TLS {what} {path}: {error.strerror}") from None
    if marker not in content:
        raise CommandFailed(f"the TLS {what} {path} is not PEM (no {marker.decode()} line)")


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the PEM certificate chain ``cert`` and its key ``key``."""
    _read_pem(cert, "certificate", b"-----BEGIN CERTIFICATE-----")
    _read_pem(key, "key", b"PRIVATE KEY-----")

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal for a passphrase.
        raise CommandFailed(f"the TLS key {key} is encrypted: give an unencrypted PEM key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as error:
        reason = (
            "the key does not match the certificate"
            if error.reason == "KEY_VALUES_MISMATCH"
            else str(error.reason or error)
        )
        raise CommandFailed(
            f"cannot use the TLS certificate {cert} with the key {key}: {reason}"
        ) from None
    except OSError as error:  # a file gone since it was read
        raise CommandFailed(
            f"cannot load the TLS certificate {cert} and key {key}: {error.strerror}"
        ) from None
    return context


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; the previous handlers come back after."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, lambda _number, _frame: stop.set())
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _log_refusals(console: Console) -> None:
    # The middleware logs each refusal with its detail: what a client author needs.
    handler = logging.StreamHandler(console.err)
    handler.setFormatter(logging.Formatter("aliak serve: %(message)s"))
    for source in (logging.getLogger("aliak.integrations.wsgi"), logger):
        source.addHandler(handler)
        source.setLevel(logging.INFO)


def _byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _proxy(text: str) -> str:
    try:
        normalize_network(text, field="--trusted-proxy", strict=False)
    except AliakError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not an IPv4/IPv6 address or CIDR block"
        ) from None
    return text


METRICS_PATH = "/metrics"


def _prometheus() -> tuple[VerifierMetrics, WSGIApplication]:
    """The verifier's Prometheus hook, and the WSGI app that answers with its metrics."""
    try:
        from prometheus_client import (  # noqa: PLC0415 - an optional dependency
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )

        from aliak.integrations.prometheus import PrometheusMetrics  # noqa: PLC0415
    except ImportError:
        raise CommandFailed(
            "--metrics needs prometheus_client: pip install 'aliak[prometheus]'"
        ) from None
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)

    def exposition(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        payload = generate_latest(registry)
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    return metrics, exposition


def _with_metrics(app: WSGIApplication, exposition: WSGIApplication) -> WSGIApplication:
    """``GET /metrics`` answered by ``exposition``, before ``app`` (the verifying
    middleware) sees it; every other request goes to ``app``."""

    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH and environ.get("REQUEST_METHOD") in (
            "GET",
            "HEAD",
        ):
            return exposition(environ, start_response)
        return app(environ, start_response)

    return route


def _request_log(path: str) -> SQLiteRequestLog:
    try:
        return SQLiteRequestLog(path)
    except (sqlite3.Error, OSError) as error:
        raise CommandFailed(f"cannot open the request log {path}: {error}") from None


def _serve(args: argparse.Namespace, console: Console) -> int:
    if not args.allow_remote and not _is_loopback(args.host):
        args.subparser.error(
            f"--host {args.host} is not a loopback address; this server is for trying "
            "clients: add --allow-remote to listen there anyway"
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        args.subparser.error("--tls-cert and --tls-key go together: give both, or neither")
    context = None if args.tls_cert is None else _tls_context(args.tls_cert, args.tls_key)
    scheme = "http" if context is None else "https"
    server_class = _EchoServerV6 if ":" in args.host else _EchoServer
    stop = threading.Event()
    metrics, exposition = _prometheus() if args.metrics else (None, None)
    request_log = None if args.request_log is None else _request_log(args.request_log)
    # Closed last, after the verifier: every event of a request served is written.
    log_closing = (
        contextlib.nullcontext() if request_log is None else contextlib.closing(request_log)
    )
    with (
        log_closing,
        open_store(args.db) as store,
        Verifier(store, metrics=metrics, request_log=request_log) as verifier,
    ):
        inner: WSGIApplication = echo_app
        if args.sts:
            inner = AssumeRoleApp(KeyManager(store, actor="aliak serve"), echo_app)
        app: WSGIApplication = AliakWSGIMiddleware(
            inner,
            verifier,
            paths=args.paths,
            trusted_proxies=args.trusted_proxy or (),
            max_body_size=args.max_body_size,
        )
        if exposition is not None:
            app = _with_metrics(app, exposition)
        try:
            server = server_class((args.host, args.port), _RequestHandler)
        except OSError as error:
            raise CommandFailed(
                f"cannot listen on {_url(args.host, args.port, scheme)}: {error.strerror}"
            ) from None
        server.set_app(app)
        server.max_body_size = args.max_body_size
        server.ssl_context = context
        _log_refusals(console)
        with _stop_on_signals(stop), server:
            worker = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
            worker.start()
            url = _url(args.host, server.server_port, scheme)
            console.note(f"aliak serve: listening on {url}")
            if exposition is not None:
                console.note(f"aliak serve: metrics at {url}{METRICS_PATH} (unauthenticated)")
            console.err.flush()
            while not stop.wait(0.5):
                pass
            server.shutdown()
            worker.join()
    # Leaving the block closed the verifier: its batched last-use records are written.
    console.note("aliak serve: stopped")
    return 0


def add_serve_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run a verifying echo server on loopback, for trying clients",
        description="A verifying echo server: every request is verified against the "
        "store; 200 with the Verified JSON (and BodyLength), or the Alibaba error body "
        "and status. Stops cleanly on SIGINT/SIGTERM.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address (default 127.0.0.1); :: listens on IPv6 and IPv4 alike, an IPv4 "
        "peer read as IPv4 (needs --allow-remote)",
    )
    serve.add_argument(
        "--port", type=int, default=8080, help="the port (default 8080; 0 picks a free one)"
    )
    serve.add_argument(
        "--paths",
        nargs="+",
        action="extend",
        metavar="PREFIX",
        help="verify only paths under these prefixes (default: every path)",
    )
    serve.add_argument(
        "--trusted-proxy",
        nargs="+",
        action="extend",
        type=_proxy,
        metavar="ADDR",
        help="proxies (addresses or CIDRs) whose X-Forwarded-For is believed",
    )
    serve.add_argument(
        "--max-body-size",
        type=_byte_count,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help=f"refuse longer bodies with 413, unread (default {DEFAULT_MAX_BODY_SIZE}); a "
        "request refused for its headers (no or a bad Authorization, a stale date) has "
        "none of its body read",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS (TLS 1.2+) with this PEM certificate chain (needs --tls-key)",
    )
    serve.add_argument(
        "--tls-key",
        metavar="FILE",
        help="the PEM private key of --tls-cert, unencrypted (needs --tls-cert)",
    )
    serve.add_argument(
        "--sts",
        action="store_true",
        help="answer STS AssumeRole (version 2015-04-01, path /) for the principals the "
        "store's roles trust (aliak roles), issuing temporary credentials this store's "
        "verifiers accept; give --tls-cert/--tls-key too for the official credentials "
        "libraries, which call STS over HTTPS only",
    )
    serve.add_argument(
        "--request-log",
        metavar="PATH",
        help="write an event per verified or refused request (ActionTrail's shape; never a "
        "secret, token or signature) to the aliak_request_log table of this SQLite file "
        "(the store's own file will do); read it with aliak audit --requests",
    )
    serve.add_argument(
        "--metrics",
        action="store_true",
        help=f"answer GET {METRICS_PATH} with the verifier's Prometheus metrics, on this "
        "server, unauthenticated (needs aliak[prometheus])",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback",
    )
    serve.set_defaults(run=_serve, subparser=serve)
