"""Servers in subprocesses (``aliak serve``, gunicorn) and HTTP/1.1 over raw sockets, for
the tests that need the real framing on the wire (test_chunked_bodies, test_node_sdk).

Every socket has a timeout and every wait a deadline, so a server that hangs makes a
test fail instead of the suite stall.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aliak import KeyManager, RamUser, SQLiteStore

# A socket read waits at most this long: a server that never answers fails the test.
SOCKET_TIMEOUT = 10.0
# How long a server may take to start (a guard against a stall, not a measurement).
START_DEADLINE = 60.0


class ServerProcess:
    """A server in a subprocess; ``port`` is read from the line it prints when listening
    (``pattern``'s first group), its stderr is kept in ``output``."""

    def __init__(self, command: Sequence[str], pattern: str, *, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._output: list[str] = []
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        self.port = self._wait_for_port(re.compile(pattern))

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._output.append(line)
            self._lines.put(line)

    def _wait_for_port(self, pattern: re.Pattern[str]) -> int:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            match = pattern.search(line)
            if match:
                return int(match[1])
        self.kill()
        raise AssertionError(f"{self.process.args[:4]} did not start:\n{self.output}")

    @property
    def output(self) -> str:
        return "".join(self._output)

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server ignored SIGTERM:\n{self.output}") from None
        self._collector.join(timeout=10)
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def sqlite_store_with_key(
    db: Path, owner: RamUser, access_key_id: str | None = None, secret: str | None = None
) -> tuple[str, str]:
    """A SQLite store at ``db`` holding one key of ``owner`` (the given one, or a new one):
    its id and secret."""
    store = SQLiteStore(str(db))
    try:
        keys = KeyManager(store)
        if access_key_id is None or secret is None:
            created = keys.create_access_key(owner)
            return created.access_key_id, created.secret.reveal()
        keys.import_access_key(owner, access_key_id, secret)
        return access_key_id, secret
    finally:
        store.close()


@contextmanager
def aliak_serve(db: Path, *options: str) -> Iterator[ServerProcess]:
    """``python -m aliak --db DB serve --port 0 OPTIONS`` on 127.0.0.1; stopped after,
    and required to stop cleanly."""
    server = ServerProcess(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0", *options],
        r"aliak serve: listening on http://127\.0\.0\.1:(\d+)",
        cwd=db.parent,
    )
    try:
        yield server
        assert server.stop() == 0, server.output
        assert "Traceback" not in server.output, server.output
    finally:
        server.kill()


# ---------------------------------------------------------------------------------------
# HTTP/1.1 by hand
# ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(stream: IO[bytes]) -> Reply:
    """One response, framed by its Content-Length (every server under test sends one);
    interim 1xx responses are skipped."""
    while True:
        status_line = stream.readline(65537)
        assert status_line, "the server closed the connection without answering"
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version.startswith("HTTP/1."), status_line
        headers: list[tuple[str, str]] = []
        while (line := stream.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        if not 100 <= int(status) < 200:
            break
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    assert length is not None, headers
    body = stream.read(length)
    assert len(body) == length, "the response body was cut short"
    return Reply(int(status), headers, body)


@contextmanager
def connection(port: int) -> Iterator[tuple[socket.socket, IO[bytes]]]:
    """A socket to 127.0.0.1:port with a read timeout, and one buffered reader over it
    (so that pipelined responses are read in turn)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    with sock, sock.makefile("rb") as stream:
        yield sock, stream


def exchange(port: int, data: bytes, *, half_close: bool = False) -> Reply:
    """Send ``data`` (and with ``half_close``, end the sending side), read one reply."""
    with connection(port) as (sock, stream):
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_reply(stream)


def closed_by_server(stream: IO[bytes]) -> bool:
    """Whether the server closed the connection after the reply just read (``False``: it
    sent more). Raises on the read timeout: the server kept it open, waiting."""
    return stream.read(1) == b""


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` in chunked framing, with the last chunk and the empty trailer section."""
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces if p) + b"0\r\n\r\n"


def head(request_line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [request_line, *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("utf-8")
