"""Nonce claims from an event loop on a SQLite store, three ways (issue 12 item 3).

- **worker hop**: each claim in ``asyncio.to_thread`` (the adapter before the change);
- **inline**: ``SQLiteStore.claim_nonce_without_waiting`` on the loop's thread, a worker
  only when the store is busy (what ``as_async()`` does now);
- **group commit**: one writer thread that takes every claim queued so far and runs them
  in one ``BEGIN IMMEDIATE ... COMMIT``, resolving each future on the loop.

Each is timed one claim at a time (latency) and with 64 claims in flight (throughput), in
alternated batches in one process, on a fresh file each. Prints µs per claim and the
ratio to the worker hop. Only the first two are in the library; the group-commit writer
lives here, as the measured alternative.

Usage: ``python benchmarks/async_claims.py [--claims 4000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aliak.storage.sqlite as sqlite_backend
from aliak.storage.sqlite import SQLiteStore

NOW = time.time()
KEY = "LTAI5tBenchmarkKey000000"


class GroupCommitWriter:
    """A writer thread: claims queued while it committed the last group go in the next."""

    def __init__(self, database: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._connection = sqlite3.connect(
            database, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def claim(self, nonce: str, now: float, expires_at: float) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = self._loop.create_future()
        self._queue.put((nonce, now, expires_at, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._connection.close()

    def _run(self) -> None:
        era = sqlite_backend._era
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            results = []
            self._connection.execute("BEGIN IMMEDIATE")
            for nonce, now, expires_at, future in group:
                claim = {
                    "era": era(expires_at),
                    "key": KEY,
                    "nonce": nonce,
                    "expires_at": expires_at,
                    "live": era(now),
                    "now": now,
                }
                cursor = self._connection.execute(sqlite_backend._CLAIM_NONCE, claim)
                results.append((future, cursor.rowcount == 1))
            self._connection.execute("COMMIT")
            for future, claimed in results:
                self._loop.call_soon_threadsafe(_settle, future, claimed)


def _settle(future: asyncio.Future[bool], claimed: bool) -> None:
    if not future.done():
        future.set_result(claimed)


async def run_way(way: str, database: Path, claims: int, in_flight: int) -> float:
    store = SQLiteStore(database)
    writer = GroupCommitWriter(database, asyncio.get_running_loop()) if way == "group" else None
    adapter = store.as_async()
    counter = iter(range(10**12))

    def one() -> Awaitable[bool]:
        nonce = f"{way}-{in_flight}-{next(counter)}-{os.urandom(4).hex()}"
        now = NOW
        if way == "hop":
            return asyncio.to_thread(store.claim_nonce, KEY, nonce, now=now, expires_at=now + 960)
        if way == "inline":
            return adapter.claim_nonce(KEY, nonce, now=now, expires_at=now + 960)
        assert writer is not None
        return writer.claim(nonce, now, now + 960)

    try:
        await asyncio.gather(*(one() for _ in range(64)))  # warm
        started = time.perf_counter()
        done = 0
        while done < claims:
            results = await asyncio.gather(*(one() for _ in range(in_flight)))
            if not all(results):
                raise AssertionError("a fresh nonce was refused")
            done += in_flight
        return (time.perf_counter() - started) / done * 1e6
    finally:
        if writer is not None:
            writer.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    ways = ["hop", "inline", "group"]
    results: dict[tuple[str, int], list[float]] = {(w, n): [] for w in ways for n in (1, 64)}
    with tempfile.TemporaryDirectory(prefix="aliak-async-claims-") as directory:
        for round_number in range(options.rounds):
            order = ways if round_number % 2 == 0 else list(reversed(ways))
            for in_flight in (1, 64):
                for way in order:
                    database = Path(directory) / f"{way}-{round_number}-{in_flight}.db"
                    timed = run_way(way, database, options.claims, in_flight)
                    results[(way, in_flight)].append(asyncio.run(timed))
    names = {
        "hop": "worker hop (asyncio.to_thread per claim)",
        "inline": "inline (claim_nonce_without_waiting)",
        "group": "group commit (one writer thread)",
    }
    print(
        f"{'claims from an event loop, SQLite file':44}  {'in flight':>9}  "
        f"{'median µs/claim':>15}  {'/ worker hop':>12}"
    )
    for in_flight in (1, 64):
        base = statistics.median(results[("hop", in_flight)])
        for way in ways:
            median = statistics.median(results[(way, in_flight)])
            print(f"{names[way]:44}  {in_flight:>9}  {median:>15.1f}  {median / base:>12.2f}")
    print(
        f"notes: {options.claims} claims per run, {options.rounds} rounds alternated; "
        "µs per claim is wall time / claims."
    )


if __name__ == "__main__":
    main()
