"""Nonce claim latency on a SQLite store that already holds many live nonces.

Fills a fresh database file with ``--rows`` live claims (one ``executemany`` in one
transaction, expiries spread over the next 16 minutes, as a 15-minute window plus the
verifier's 60 s leave them), checkpoints it, then times ``--claims`` fresh claims made
as the verifier makes them (``expires_at`` = now + 900 + 60) and prints
p50/p99/p99.9/max. The claims' clock starts where the filled expiries start and runs at
the wall clock's pace, so old claims expire during the run at the rate a steady load
would see (about 1,000 a second at 1M rows), however long the filling took. Whatever the
store does in a request besides the claim (its nonce prune, a WAL checkpoint) lands in
these numbers, which is the point.

Runs against whichever ``aliak`` is importable, so an older checkout can be measured
with ``PYTHONPATH=/path/to/checkout/src``.

Usage: ``python benchmarks/sqlite_claims.py [--rows 1000000] [--claims 20000]``
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import aliak
import aliak.storage.sqlite as sqlite_backend
from aliak.storage.sqlite import SCHEMA_VERSION, SQLiteStore

WINDOW = 900.0 + 60.0
KEYS = [f"LTAI5t{number:018d}" for number in range(16)]


def fill(database: Path, rows: int, now: float) -> None:
    """``rows`` live claims spread over the window, written straight into the table."""
    step = WINDOW / rows
    values = [
        (KEYS[number % len(KEYS)], secrets.token_hex(16), now + 1.0 + number * step)
        for number in range(rows)
    ]
    with sqlite3.connect(database, isolation_level=None) as connection:
        connection.execute("BEGIN IMMEDIATE")
        if SCHEMA_VERSION >= 4:  # keyed by era; the trigger files each era
            era = getattr(sqlite_backend, "_era")  # noqa: B009
            connection.executemany(
                "INSERT INTO aliak_nonces (era, access_key_id, nonce, expires_at) "
                "VALUES (?, ?, ?, ?)",
                ((era(expires_at), key, nonce, expires_at) for key, nonce, expires_at in values),
            )
        else:
            connection.executemany(
                "INSERT INTO aliak_nonces (access_key_id, nonce, expires_at) VALUES (?, ?, ?)",
                values,
            )
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def percentile(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=20_000)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aliak-claims-") as directory:
        database = Path(directory) / "aliak.db"
        SQLiteStore(database).close()  # the schema, as this aliak builds it
        started = time.perf_counter()
        base = time.time()
        fill(database, options.rows, base)
        filled = time.perf_counter() - started
        store = SQLiteStore(database)
        try:
            timings: list[int] = []
            gc.disable()
            run_started = time.perf_counter()
            for _ in range(options.claims):
                nonce = secrets.token_hex(16)
                key = KEYS[len(timings) % len(KEYS)]
                now = base + (time.perf_counter() - run_started)
                begin = time.perf_counter_ns()
                claimed = store.claim_nonce(key, nonce, now=now, expires_at=now + WINDOW)
                timings.append(time.perf_counter_ns() - begin)
                assert claimed
            elapsed = time.perf_counter() - run_started
            gc.enable()
        finally:
            store.close()
        wal = Path(str(database) + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        size = os.path.getsize(database)

    timings.sort()
    print(f"aliak {Path(aliak.__file__).parent} schema {SCHEMA_VERSION}")
    print(f"filled {options.rows:,} live nonces in {filled:.1f} s; db {size / 2**20:.0f} MiB")
    print(
        f"{options.claims:,} claims in {elapsed:.2f} s ({options.claims / elapsed:,.0f}/s): "
        f"p50 {percentile(timings, 0.5):.1f} us  p99 {percentile(timings, 0.99):.1f} us  "
        f"p99.9 {percentile(timings, 0.999):.1f} us  max {timings[-1] / 1000:.1f} us  "
        f"mean {statistics.fmean(timings) / 1000:.1f} us; wal after close {wal_size} B"
    )


if __name__ == "__main__":
    main()
