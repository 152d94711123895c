"""The server path: what a verify costs where a server runs it (issue 12, item 7).

Five parts, each printing every row's ratio to its peer measured in the same run:

- **Part 8**: ``AsyncVerifier`` over ``SQLiteStore(...).as_async()`` on one event loop,
  beside the sync ``Verifier`` on the same store (and, for scale, on a ``MemoryStore``).
- **Part 9**: ``MemoryStore`` verify throughput with 1, 2, 4 and 8 threads sharing one
  ``Verifier``, each row against the 1-thread row.
- **Part 10**: HTTP on loopback: uvicorn serving a bare ASGI app and the same app in
  ``AliakASGIMiddleware`` (``AsyncVerifier`` on SQLite), gunicorn (one ``gthread`` worker)
  serving a bare WSGI app and the same app in ``AliakWSGIMiddleware`` (``Verifier`` on
  SQLite). The load comes from a client in a separate process (this file run as a
  script): ``http.client`` over one keep-alive connection per server, requests signed
  with ``aliak.Signer`` before the timed rounds, a fresh nonce each.
- **Part 11**: ``SQLiteStore.claim_nonce`` latency (p50/p99/p99.9) after 1M stored
  nonces (20k with ``--quick``), beside the same claims on an empty store.
- **Part 12**: building the :class:`aliak.Request` from uvicorn's scope and gunicorn's
  environ for the bench request, beside ``Request.from_wire`` and the constructor.

The servers' apps are in this module too (:func:`asgi_app`, :func:`wsgi_app`): the server
subprocesses import it, and read the database and the mode from the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from functools import partial
from importlib.metadata import version
from typing import Any
from urllib.parse import urlencode

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
from aliak.storage.sqlite import SQLiteStore

HERE = os.path.dirname(os.path.abspath(__file__))
OWNER = RamUser("1234567890123456", "bench-server")
SOURCE_IP = "203.0.113.7"
ENV_DATABASE = "ALIAK_BENCH_DATABASE"
ENV_MODE = "ALIAK_BENCH_MODE"  # "bare" or "aliak"
THREAD_COUNTS = (1, 2, 4, 8)


# --- shared helpers --------------------------------------------------------------------


def print_ratio_rows(headings: list[str], rows: list[list[str]]) -> None:
    from run import print_table

    print_table(headings, rows)


def gc_paused() -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def paused() -> Iterator[None]:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if was_enabled:
                gc.enable()

    return paused()


def signed_requests(signer: Signer, unsigned: Request, count: int) -> list[Request]:
    """``count`` requests signed beforehand, each with its own nonce (a verify claims it)."""
    return [signer.sign(unsigned) for _ in range(count)]


def bench_request() -> Request:
    from run import GENERATED_HEADERS, HOST, QUERY, make_body

    return Request(
        "POST", host=HOST, path="/", query=QUERY, headers=GENERATED_HEADERS, body=make_body()
    )


def percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# --- Part 8: AsyncVerifier on SQLite ---------------------------------------------------


async def _verify_all(verifier: AsyncVerifier, requests: list[Request]) -> int:
    start = time.perf_counter_ns()
    for request in requests:
        await verifier.verify(request, source_ip=SOURCE_IP)
    return time.perf_counter_ns() - start


async def _verify_gathered(verifier: AsyncVerifier, requests: list[Request], width: int) -> int:
    """``width`` verifies in flight at a time, as a server with that many open requests."""
    start = time.perf_counter_ns()
    for first in range(0, len(requests), width):
        await asyncio.gather(
            *(
                verifier.verify(request, source_ip=SOURCE_IP)
                for request in requests[first : first + width]
            )
        )
    return time.perf_counter_ns() - start


def bench_async(
    name: str,
    loop: asyncio.AbstractEventLoop,
    timed: Callable[[list[Request]], Awaitable[int]],
    make: Callable[[int], list[Request]],
    settings: Any,
) -> Any:
    """Like ``run.bench_fresh`` for a coroutine: pre-signed requests, timed on ``loop``."""
    from run import Row

    probe = make(100)
    estimate = loop.run_until_complete(timed(probe)) / len(probe)  # type: ignore[arg-type]
    loops = max(50, round(settings.loop_seconds * 1e9 / max(estimate, 1)))
    per_op = []
    for _ in range(settings.repeats):
        requests = make(loops)
        with gc_paused():
            elapsed = loop.run_until_complete(timed(requests))  # type: ignore[arg-type]
        per_op.append(elapsed / loops)
    return Row(name, statistics.median(per_op), min(per_op), loops)


def part_async_sqlite(settings: Any) -> None:
    from run import bench_fresh, print_rows

    now = 1_700_000_000.0
    directory = tempfile.mkdtemp(prefix="aliak-bench-async-")
    sqlite = SQLiteStore(os.path.join(directory, "bench.db"))
    memory = MemoryStore()
    loop = asyncio.new_event_loop()
    unsigned = bench_request()
    try:
        rows = []
        for label, store in (("MemoryStore", memory), ("SQLiteStore", sqlite)):
            new = KeyManager(store, clock=lambda: now).create_access_key(OWNER)
            signer = Signer(new.access_key, clock=lambda: now)
            make = partial(signed_requests, signer, unsigned)
            verifier = Verifier(store, clock=lambda: now)
            verify = partial(verifier.verify, source_ip=SOURCE_IP)
            verify(make(1)[0])  # warm: key and policies cached
            rows.append(bench_fresh(f"sync Verifier, {label}", make, verify, settings))
            verifier.close()
            if store is sqlite:
                averifier = AsyncVerifier(sqlite.as_async(), clock=lambda: now)
                loop.run_until_complete(_verify_all(averifier, make(1)))
                rows.append(
                    bench_async(
                        "AsyncVerifier, SQLiteStore.as_async(), one at a time",
                        loop,
                        partial(_verify_all, averifier),
                        make,
                        settings,
                    )
                )
                rows.append(
                    bench_async(
                        "AsyncVerifier, SQLiteStore.as_async(), 8 in flight (gather)",
                        loop,
                        partial(_verify_gathered, averifier, width=8),
                        make,
                        settings,
                    )
                )
                loop.run_until_complete(averifier.aclose())
    finally:
        loop.close()
        sqlite.close()
        shutil.rmtree(directory, ignore_errors=True)

    memory_row, sync_row, async_row, gathered_row = rows
    print("Part 8: AsyncVerifier on SQLite (as_async: each store call in a worker thread)")
    print("beside the sync Verifier on the same store, one event loop, warm caches")
    print()
    print_rows(rows, settings)
    print()
    for name, row, peer in (
        ("AsyncVerifier (one at a time) / sync Verifier, SQLite", async_row, sync_row),
        ("AsyncVerifier (8 in flight) / sync Verifier, SQLite", gathered_row, sync_row),
        ("sync Verifier, SQLite / MemoryStore", sync_row, memory_row),
    ):
        print(f"ratio {name} = {row.median_ns / peer.median_ns:.2f}")
    print(
        "notes: a fresh pre-signed request per verify; the '8 in flight' row is wall time per "
        "verify with 8 verifies gathered at a time (the worker threads overlap)."
    )


# --- Part 9: thread scaling ------------------------------------------------------------


def _threaded_run(
    verify: Callable[[Request], object], shares: list[list[Request]]
) -> tuple[int, int]:
    """Wall and process CPU nanoseconds for ``len(shares)`` threads each verifying its
    share, started together at a barrier."""
    barrier = threading.Barrier(len(shares) + 1)
    failures: list[BaseException] = []

    def work(share: list[Request]) -> None:
        barrier.wait()
        try:
            for request in share:
                verify(request)
        except BaseException as error:  # reported after the run, outside the timing
            failures.append(error)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    with gc_paused():
        barrier.wait()
        start, cpu_start = time.perf_counter_ns(), time.process_time_ns()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu_start
    if failures:
        raise failures[0]
    return elapsed, cpu


def part_threads(settings: Any) -> None:
    now = 1_700_000_000.0
    store = MemoryStore()
    new = KeyManager(store, clock=lambda: now).create_access_key(OWNER)
    signer = Signer(new.access_key, clock=lambda: now)
    unsigned = bench_request()
    verifier = Verifier(store, clock=lambda: now)
    verify = partial(verifier.verify, source_ip=SOURCE_IP)
    verify(signer.sign(unsigned))
    probe = signed_requests(signer, unsigned, 200)
    estimate = _threaded_run(verify, [probe])[0] / len(probe)
    total = max(800, round(settings.loop_seconds * 1.5e9 / max(estimate, 1)))
    total -= total % 8  # every thread count splits it evenly
    repeats = 3 if settings.quick else 5
    results: dict[int, list[float]] = {count: [] for count in THREAD_COUNTS}
    per_cpu: dict[int, list[float]] = {count: [] for count in THREAD_COUNTS}
    for turn in range(repeats):  # thread counts in turn, alternating direction
        order = THREAD_COUNTS if turn % 2 == 0 else THREAD_COUNTS[::-1]
        for count in order:
            requests = signed_requests(signer, unsigned, total)
            shares = [requests[index::count] for index in range(count)]
            elapsed, cpu = _threaded_run(verify, shares)
            results[count].append(total * 1e9 / elapsed)
            per_cpu[count].append(total * 1e9 / max(cpu, 1))
    verifier.close()
    store.close()

    single = statistics.median(results[1])
    single_cpu = statistics.median(per_cpu[1])
    table = []
    for count in THREAD_COUNTS:
        rate = statistics.median(results[count])
        cpu_rate = statistics.median(per_cpu[count])
        table.append(
            [
                f"MemoryStore verify, {count} thread{'s' if count > 1 else ''}",
                f"{rate:,.0f}",
                f"{max(results[count]):,.0f}",
                f"{rate / single:.2f}",
                f"{cpu_rate:,.0f}",
                f"{cpu_rate / single_cpu:.2f}",
                f"{total} x {repeats}",
            ]
        )
    print(
        "Part 9: thread scaling, one Verifier on a MemoryStore shared by N threads "
        f"({os.cpu_count()} CPUs)"
    )
    print()
    print_ratio_rows(
        [
            "operation",
            "median verifies/s",
            "best verifies/s",
            "/ 1 thread",
            "verifies per CPU s",
            "/ 1 thread",
            "requests x repeats",
        ],
        table,
    )
    print()
    print(
        "notes: the same total of distinct pre-signed requests split evenly between the "
        "threads, started together at a barrier; throughput is total / wall time, and "
        "total / the process's CPU time (what the threads burned, contention included; "
        "steadier than wall time on a loaded machine); the thread counts take turns, in "
        "alternating order; GC paused. Under the GIL the ideal is 1.00 (no loss), not N."
    )


# --- Part 10: HTTP on loopback ---------------------------------------------------------


def _database_from_env() -> str:
    database = os.environ.get(ENV_DATABASE)
    if not database:
        raise RuntimeError(f"{ENV_DATABASE} is not set")
    return database


def _aliak_mode() -> bool:
    mode = os.environ.get(ENV_MODE, "bare")
    if mode not in ("bare", "aliak"):
        raise RuntimeError(f"{ENV_MODE} must be bare or aliak, not {mode!r}")
    return mode == "aliak"


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body, answers ``200 ok``: the least an HTTP app can do."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def asgi_app() -> Any:
    """uvicorn ``--factory`` target: :func:`bare_asgi`, wrapped in the ASGI middleware
    (AsyncVerifier on the SQLite file in the environment) when the mode is ``aliak``."""
    if not _aliak_mode():
        return bare_asgi
    from aliak.integrations.asgi import AliakASGIMiddleware

    store = SQLiteStore(_database_from_env())
    return AliakASGIMiddleware(bare_asgi, AsyncVerifier(store.as_async()))


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Reads the body, answers ``200 ok``."""
    length = environ.get("CONTENT_LENGTH") or "0"
    environ["wsgi.input"].read(int(length))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def wsgi_app() -> Any:
    """gunicorn target (``server:wsgi_app()``): :func:`bare_wsgi`, wrapped in the WSGI
    middleware (Verifier on the SQLite file in the environment) when the mode is ``aliak``."""
    if not _aliak_mode():
        return bare_wsgi
    from aliak.integrations.wsgi import AliakWSGIMiddleware

    store = SQLiteStore(_database_from_env())
    return AliakWSGIMiddleware(bare_wsgi, Verifier(store))


class Served:
    """A server subprocess on an inherited, already listening 127.0.0.1 socket."""

    def __init__(
        self,
        name: str,
        argv: Callable[[int], list[str]],
        env: dict[str, str],
        log: str,
        *,
        inherit: bool,
    ) -> None:
        self.name = name
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        if inherit:  # the server takes the listening socket: no race for the port
            self.listener.listen(128)
            fds: tuple[int, ...] = (self.listener.fileno(),)
        else:  # the server binds the port itself, free a moment ago
            self.listener.close()
            fds = ()
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv(fds[0] if fds else self.port),
            cwd=HERE,
            env={**os.environ, **env},
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so stop() can signal the server's whole group
        )

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        """The socket accepts before the server does: wait for an HTTP answer."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.log()}"
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/ready")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer within {timeout} s: {self.log()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, "rb") as file:
            return file.read()[-2000:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.listener.close()
        self._log.close()


def uvicorn_argv(port: int) -> list[str]:
    # Not --fd: uvicorn takes an inherited socket for AF_UNIX, and then never sets
    # TCP_NODELAY, so each answer waits ~40 ms on the client's delayed ACK.
    return [
        sys.executable, "-m", "uvicorn", "server:asgi_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--app-dir", HERE, "--lifespan", "off",
        "--no-access-log", "--log-level", "warning", "--loop", "asyncio",
    ]  # fmt: skip


GUNICORN_THREADS = 4


def gunicorn_argv(fd: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "server:wsgi_app()",
        "--bind", f"fd://{fd}", "--chdir", HERE, "--workers", "1",
        "--worker-class", "gthread", "--threads", str(GUNICORN_THREADS),
        "--keep-alive", "30", "--log-level", "warning",
    ]  # fmt: skip


def run_client(config: dict[str, Any]) -> dict[str, Any]:
    """Start the load generator (this file as a script), hand it the config on stdin,
    return what it printed (JSON)."""
    completed = subprocess.run(
        [sys.executable, os.path.join(HERE, "server.py"), "client"],
        input=json.dumps(config).encode(),
        capture_output=True,
        check=False,
        timeout=300,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the client failed: {completed.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def http_pair(
    server: str,
    argv: Callable[[int], list[str]],
    *,
    database: str,
    key: AccessKey,
    settings: Any,
    logs: str,
    inherit: bool,
) -> dict[str, Any]:
    """Both apps served at once, the client alternating rounds between them."""
    served = []
    try:
        for mode in ("bare", "aliak"):
            served.append(
                Served(
                    f"{server} ({mode})",
                    argv,
                    {ENV_DATABASE: database, ENV_MODE: mode},
                    os.path.join(logs, f"{server}-{mode}.log"),
                    inherit=inherit,
                )
            )
        for one in served:
            one.wait_until_serving()
        config = {
            "access_key_id": key.access_key_id,
            "access_key_secret": key.secret.reveal(),
            "targets": [{"name": one.name, "port": one.port} for one in served],
            "rounds": 2 if settings.quick else 4,
            "round_seconds": 0.25 if settings.quick else 0.75,
            "warmup": 100 if settings.quick else 300,
        }
        return run_client(config)
    finally:
        for one in served:
            one.stop()


def part_http(settings: Any) -> None:
    print("Part 10: HTTP on loopback, each app bare and wrapped in aliak's middleware, in turn")
    missing = [name for name in ("uvicorn", "gunicorn") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"  skipped: {' and '.join(missing)} not installed (the test extra has them)")
        return
    directory = tempfile.mkdtemp(prefix="aliak-bench-http-")
    database = os.path.join(directory, "server.db")
    try:
        store = SQLiteStore(database)  # creates the file and its key file, which the servers open
        key = KeyManager(store).create_access_key(OWNER).access_key
        store.close()
        results = [
            http_pair(
                name,
                argv,
                database=database,
                key=key,
                settings=settings,
                logs=directory,
                inherit=inherit,
            )
            for name, argv, inherit in (
                ("uvicorn", uvicorn_argv, False),
                ("gunicorn", gunicorn_argv, True),
            )
        ]
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    table = []
    for result in results:
        bare, wrapped = result["targets"]
        for target in (bare, wrapped):
            is_bare = target is bare
            mean_us = 1e6 / target["rps"]
            table.append(
                [
                    target["name"],
                    f"{target['rps']:,.0f}",
                    "1.00" if is_bare else f"{target['rps'] / bare['rps']:.2f}",
                    f"{mean_us:.0f}",
                    "" if is_bare else f"{mean_us - 1e6 / bare['rps']:+.0f}",
                    f"{target['p50_us']:.0f}",
                    "" if is_bare else f"{target['p50_us'] - bare['p50_us']:+.0f}",
                    f"{target['p99_us']:.0f}",
                    str(target["requests"]),
                ]
            )
    print()
    print_ratio_rows(
        [
            "server (app)",
            "requests/s",
            "rps / bare",
            "mean µs",
            "added mean µs",
            "p50 µs",
            "added p50 µs",
            "p99 µs",
            "requests",
        ],
        table,
    )
    first = results[0]
    http_parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    print()
    print(
        f"notes: uvicorn {version('uvicorn')} (one process, asyncio loop, {http_parser}); "
        f"gunicorn {version('gunicorn')} (one gthread worker with {GUNICORN_THREADS} threads: "
        "sync workers close every connection, and the client keeps its connection). aliak: "
        "AsyncVerifier / Verifier on SQLiteStore (one temp file). The client: one process, "
        "one keep-alive http.client connection per server, a closed loop (the next request "
        "goes when the answer is in, so mean µs = 1 / requests/s), POST /?RegionId=...&"
        "ImageId=..., 215-byte JSON body, signed with aliak.Signer before each round (a "
        f"fresh nonce each); bare and aliak in turn, {first['rounds']} rounds of "
        f"{first['round_seconds']} s each, after {first['warmup']} untimed requests; every "
        "answer checked to be 200."
    )


Prepared = tuple[dict[str, str], bytes]


def _signed_for(signer: Signer, port: int, count: int) -> list[Prepared]:
    """``count`` requests to ``127.0.0.1:port``, each signed now with its own nonce, as
    the headers and body ``http.client`` sends."""
    from run import GENERATED_HEADERS, QUERY, make_body

    body = make_body()
    host = f"127.0.0.1:{port}"
    unsigned = Request(
        "POST", host=host, path="/", query=QUERY, headers=GENERATED_HEADERS, body=body
    )
    prepared = []
    for _ in range(count):
        headers = dict(signer.sign(unsigned).headers.items())
        if not any(name.lower() == "host" for name in headers):
            headers["Host"] = host
        prepared.append((headers, body))
    return prepared


def _send(connection: http.client.HTTPConnection, target: str, prepared: Prepared) -> None:
    headers, body = prepared
    connection.request("POST", target, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.status != 200:  # a refusal would time the wrong path
        raise SystemExit(f"{connection.port} answered {response.status}")


def _timed_round(
    connection: http.client.HTTPConnection,
    target: str,
    prepared: list[Prepared],
    seconds: float,
    latencies: list[int],
) -> int:
    """Send ``prepared`` in a closed loop until ``seconds`` pass; each request's latency
    goes to ``latencies``; returns the round's wall nanoseconds."""
    clock = time.perf_counter_ns
    with gc_paused():
        start = clock()
        deadline = start + int(seconds * 1e9)
        for request in prepared:
            before = clock()
            _send(connection, target, request)
            after = clock()
            latencies.append(after - before)
            if after >= deadline:
                break
        return clock() - start


def client_main() -> int:
    """The load generator: reads its config (JSON) on stdin, prints results (JSON)."""
    from run import QUERY

    config = json.load(sys.stdin)
    signer = Signer(AccessKey(config["access_key_id"], config["access_key_secret"]))
    target = "/?" + urlencode(QUERY)
    seconds = config["round_seconds"]
    budget = max(2000, round(seconds * 20_000))  # per round: more than a round can send
    targets = config["targets"]
    connections = {
        one["name"]: http.client.HTTPConnection("127.0.0.1", one["port"], timeout=30)
        for one in targets
    }
    for one in targets:  # untimed: connections open, code paths and caches warm
        for request in _signed_for(signer, one["port"], config["warmup"]):
            _send(connections[one["name"]], target, request)
    samples: dict[str, list[int]] = {one["name"]: [] for one in targets}
    elapsed = {one["name"]: 0 for one in targets}
    for turn in range(config["rounds"]):
        for one in targets if turn % 2 == 0 else targets[::-1]:
            name = one["name"]
            prepared = _signed_for(signer, one["port"], budget)
            elapsed[name] += _timed_round(
                connections[name], target, prepared, seconds, samples[name]
            )
    for connection in connections.values():
        connection.close()
    results = []
    for one in targets:
        ordered = sorted(samples[one["name"]])
        results.append(
            {
                "name": one["name"],
                "requests": len(ordered),
                "rps": len(ordered) * 1e9 / elapsed[one["name"]],
                "p50_us": percentile(ordered, 0.50) / 1000,
                "p99_us": percentile(ordered, 0.99) / 1000,
            }
        )
    json.dump({**config, "access_key_secret": None, "targets": results}, sys.stdout)
    return 0


# --- Part 11: SQLite claim latency after 1M stored nonces ------------------------------


def fill_nonces(store: SQLiteStore, key_id: str, count: int, now: float) -> str:
    """Store ``count`` unexpired nonces through the store's own ``claim_nonce`` (whatever
    the table's shape), inside one transaction on the store's connection for this thread
    so that a million rows commit once; if that connection is gone or a claim cannot run
    inside it, one commit per claim. Returns how it was done, for the notes."""

    def claim(number: int) -> None:
        # Each claim expires later, as a live stream of requests would leave them.
        expires_at = now + 900 + number * 1e-4
        if not store.claim_nonce(key_id, os.urandom(16).hex(), now=now, expires_at=expires_at):
            raise AssertionError("a fresh nonce was refused")

    connect = getattr(store, "_connection", None)
    if connect is not None:
        connection = connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            for number in range(count):
                claim(number)
            connection.execute("COMMIT")
            return "in one transaction"
        except Exception:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
    for number in range(count):
        claim(number)
    return "one commit per claim"


def claim_latencies(store: SQLiteStore, key_id: str, count: int, now: float) -> list[int]:
    clock = time.perf_counter_ns
    nonces = [os.urandom(16).hex() for _ in range(count)]
    samples = []
    with gc_paused():
        for nonce in nonces:
            start = clock()
            claimed = store.claim_nonce(key_id, nonce, now=now, expires_at=now + 900)
            samples.append(clock() - start)
            if not claimed:
                raise AssertionError("a fresh nonce was refused")
    return samples


def part_claims(settings: Any) -> None:
    stored = 20_000 if settings.quick else 1_000_000
    count = 2000 if settings.quick else 20_000
    directory = tempfile.mkdtemp(prefix="aliak-bench-claims-")
    key_id = "LTAI5tBenchServerPath000"
    now = time.time()
    try:
        empty = SQLiteStore(os.path.join(directory, "empty.db"))
        full = SQLiteStore(os.path.join(directory, "full.db"))
        fill_started = time.perf_counter()
        filled = fill_nonces(full, key_id, stored, now)
        fill_seconds = time.perf_counter() - fill_started
        claim_latencies(empty, key_id, 200, now)  # warm both the same way
        claim_latencies(full, key_id, 200, now)
        empty_ns: list[int] = []
        full_ns: list[int] = []
        for _ in range(2):  # in turn, so a noisy moment falls on both
            empty_ns += claim_latencies(empty, key_id, count // 2, now)
            full_ns += claim_latencies(full, key_id, count // 2, now)
        database_mb = os.path.getsize(os.path.join(directory, "full.db")) / (1 << 20)
        empty.close()
        full.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    def stats(samples: list[int]) -> list[float]:
        ordered = sorted(samples)
        return [percentile(ordered, fraction) / 1000 for fraction in (0.5, 0.99, 0.999)]

    empty_stats, full_stats = stats(empty_ns), stats(full_ns)
    print(f"Part 11: SQLiteStore.claim_nonce latency after {stored:,} stored nonces")
    print()
    print_ratio_rows(
        ["store", "p50 µs", "p99 µs", "p99.9 µs", "p99.9 / empty", "claims"],
        [
            [
                "SQLiteStore, empty nonce table",
                *(f"{v:.1f}" for v in empty_stats),
                "1.00",
                str(len(empty_ns)),
            ],
            [
                f"SQLiteStore, {stored:,} nonces stored",
                *(f"{v:.1f}" for v in full_stats),
                f"{full_stats[2] / empty_stats[2]:.2f}",
                str(len(full_ns)),
            ],
        ],
    )
    print()
    print(
        f"ratio p50 full / empty = {full_stats[0] / empty_stats[0]:.2f}, "
        f"p99 = {full_stats[1] / empty_stats[1]:.2f}"
    )
    print(
        f"notes: filled through the store's own claim_nonce {filled} "
        f"({fill_seconds:.1f} s, {database_mb:.0f} MB file); then one claim per commit "
        "(WAL, synchronous=NORMAL, the store's default pruning and checkpoints), random "
        "32-hex nonces, the two stores in turn, GC paused."
    )


# --- entry points ----------------------------------------------------------------------


# --- Part 12: from the wire to a Request -----------------------------------------------

WIRE_TARGET_US = 5.0  # issue 12: building the Request from environ/scope


def _wire_head(signer: Signer) -> tuple[str, list[tuple[str, str]]]:
    """The query string and the header pairs http.client sends for the bench request."""
    from run import QUERY

    signed = signer.sign(bench_request())
    pairs = [(name.lower(), value) for name, value in signed.headers.items()]
    pairs += [("accept-encoding", "identity"), ("content-length", str(len(signed.body)))]
    return urlencode(QUERY), pairs


def uvicorn_scope(query: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The scope uvicorn (h11) builds for the request: bytes pairs as received."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "scheme": "http", "method": "POST", "root_path": "", "path": "/", "raw_path": b"/",
        "query_string": query.encode("ascii"),
        "headers": [(name.encode("latin-1"), value.encode("utf-8")) for name, value in pairs],
        "state": {},
    }  # fmt: skip


def gunicorn_environ(query: str, pairs: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """The environ gunicorn 23 builds for the request: its keys, in its order."""
    environ: dict[str, Any] = {
        "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.file_wrapper": None,
        "wsgi.input_terminated": True, "SERVER_SOFTWARE": "gunicorn/23.0.0",
        "wsgi.input": io.BytesIO(body), "gunicorn.socket": None, "REQUEST_METHOD": "POST",
        "QUERY_STRING": query, "RAW_URI": f"/?{query}", "SERVER_PROTOCOL": "HTTP/1.1",
    }  # fmt: skip
    for name, value in pairs:
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    environ.update(
        {"wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000",
         "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "PATH_INFO": "/", "SCRIPT_NAME": ""}
    )  # fmt: skip
    return environ


def part_wire(settings: Any) -> None:
    from aliak.integrations.asgi import request_from_scope
    from aliak.integrations.wsgi import request_from_environ
    from run import bench, print_rows

    new = KeyManager(MemoryStore()).create_access_key(OWNER)
    signer = Signer(new.access_key)
    query, pairs = _wire_head(signer)
    scope = uvicorn_scope(query, pairs)
    environ = gunicorn_environ(query, pairs, b"")
    body = bench_request().body
    assert isinstance(body, bytes)
    from_scope = request_from_scope(scope, body)
    assert from_scope == request_from_environ(environ, body)
    assert from_scope == Request.from_wire("POST", f"/?{query}", query.encode(), pairs, body)
    rows = [
        bench("request_from_scope (uvicorn's scope)", partial(request_from_scope, scope, body),
              settings),
        bench("request_from_environ (gunicorn's environ)",
              partial(request_from_environ, environ, body), settings),
        bench("Request.from_wire (str pairs)",
              partial(Request.from_wire, "POST", f"/?{query}", query.encode(), pairs, body),
              settings),
        bench("Request(...) (the validating constructor)",
              partial(Request, "POST", host=pairs[0][1], path="/", query=from_scope.query,
                      headers=pairs, body=body), settings),
    ]  # fmt: skip
    print(f"Part 12: from the wire to a Request ({len(pairs)} headers, 2 query parameters)")
    print()
    print_rows(rows, settings)
    print()
    constructor = rows[3].median_ns
    for row in rows[:2]:
        median_us = row.median_ns / 1000
        print(
            f"{row.name}: {median_us:.2f} us (target <= {WIRE_TARGET_US:.1f} us) "
            f"{'ok' if median_us <= WIRE_TARGET_US else 'MISSED'}; "
            f"/ the constructor {row.median_ns / constructor:.2f}"
        )
    print(
        "notes: the same request each time (a server sees a few header layouts, which the "
        "fast path remembers); every form is checked to give the same Request first."
    )


def run_all(settings: Any) -> None:
    """Every part of this module, in order (what ``benchmarks/run.py`` calls)."""
    part_async_sqlite(settings)
    print()
    part_threads(settings)
    print()
    part_http(settings)
    print()
    part_claims(settings)
    print()
    part_wire(settings)


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        sys.exit(client_main())
    from run import Settings

    run_all(Settings("--quick" in sys.argv[1:]))
