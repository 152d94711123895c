"""Async verifiers on SQLite claim nonces on the event loop's thread, without the hop to a
worker, and hop only where the claim would have to wait for another writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aliak.errors import InternalError
from aliak.keys import KeyManager
from aliak.model import KeyStatus, RamUser
from aliak.storage.async_adapter import AsyncStoreAdapter
from aliak.storage.sqlite import SQLiteStore

NOW = 1_700_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db)
    yield opened
    opened.close()


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    hops: list[Any] = []
    real = asyncio.to_thread

    async def counting(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return hops


def test_an_uncontended_claim_runs_on_the_loops_thread(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = count_hops(monkeypatch)
    adapter = store.as_async()

    async def claims() -> list[bool]:
        return [
            await adapter.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=NOW + 900),
            await adapter.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=NOW + 901),
            await adapter.claim_nonce("LTAIkey", "n-2", now=NOW + 1, expires_at=NOW + 901),
        ]

    assert asyncio.run(claims()) == [True, False, True]
    assert hops == []
    # What the loop's thread claimed, every other connection sees.
    assert store.claim_nonce("LTAIkey", "n-2", now=NOW + 2, expires_at=NOW + 902) is False


def hold_write_lock(db: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_claim_that_would_wait_returns_none_at_once(db: Path, store: SQLiteStore) -> None:
    holder = hold_write_lock(db)
    try:
        assert (
            store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9) is None
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9) is True
    assert store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9) is False


def test_a_busy_store_sends_the_claim_to_a_worker_and_the_loop_keeps_running(
    db: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = count_hops(monkeypatch)
    adapter = store.as_async()
    holder = hold_write_lock(db)
    release = threading.Timer(0.3, lambda: (holder.execute("ROLLBACK"), holder.close()))

    async def claim_while_ticking() -> tuple[bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        release.start()
        claimed = await adapter.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 900)
        ticker.cancel()
        return claimed, ticks

    claimed, ticks = asyncio.run(claim_while_ticking())
    release.join()
    assert claimed is True
    assert len(hops) == 1  # the worker waited for the lock, not the loop
    assert ticks >= 5
    assert store.claim_nonce("LTAIkey", "n", now=NOW + 1, expires_at=NOW + 901) is False


def test_a_memory_database_claims_inline_unless_another_thread_holds_it() -> None:
    store = SQLiteStore(":memory:")
    try:
        assert store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9)
        assert store._memory_lock is not None
        held = threading.Event()
        done = threading.Event()

        def hold() -> None:
            with store._memory_lock:  # type: ignore[union-attr]
                held.set()
                done.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        try:
            assert (
                store.claim_nonce_without_waiting("LTAIkey", "m", now=NOW, expires_at=NOW + 9)
                is None
            )
        finally:
            done.set()
            holder.join()
        assert (
            store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9) is False
        )
    finally:
        store.close()


def test_an_inline_claim_fails_closed_on_a_closed_store(store: SQLiteStore) -> None:
    store.close()
    with pytest.raises(InternalError):
        store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9)


def test_an_inline_claim_fails_closed_on_a_broken_database(db: Path, store: SQLiteStore) -> None:
    with sqlite3.connect(db) as raw:
        raw.execute("DROP TABLE aliak_nonce_eras")
    raw.close()
    with pytest.raises(InternalError):
        store.claim_nonce_without_waiting("LTAIkey", "n", now=NOW, expires_at=NOW + 9)


def test_explicit_prune_every_also_prunes_on_the_inline_path(db: Path) -> None:
    store = SQLiteStore(db, prune_every=10)
    try:
        for second in range(100):
            now = NOW + second
            assert store.claim_nonce_without_waiting(
                "LTAIkey", f"n-{second}", now=now, expires_at=now + 5
            )
        (rows,) = store._connection().execute("SELECT count(*) FROM aliak_nonces").fetchone()
        assert rows <= 10 + 5
    finally:
        store.close()


def test_an_adapter_without_offload_never_tries_the_inline_claim(store: SQLiteStore) -> None:
    assert AsyncStoreAdapter(store, offload=False)._claim_at_once is None
    assert store.as_async()._claim_at_once is not None


def test_the_loops_own_claims_do_not_send_the_change_check_to_the_log(db: Path) -> None:
    # The loop's thread claims on its second connection; the change check must watch from
    # that one, where those claims are its own writes -- and still see every other
    # connection's commit, this thread's first connection's included.
    watching, changing = SQLiteStore(db), SQLiteStore(db)
    invalidations = watching.invalidations
    assert invalidations is not None
    heard: list[str | None] = []
    invalidations.subscribe(heard.append)
    assert watching.claim_nonce_without_waiting("LTAIkey", "first", now=NOW, expires_at=NOW + 9)
    invalidations.refresh()  # both connections open; the first look reads the log once
    reads: list[str] = []
    for connection in (watching._connection(), watching._eager_connection()):
        connection.set_trace_callback(reads.append)
    for number in range(5):
        claim = watching.claim_nonce_without_waiting
        assert claim("LTAIkey", f"n-{number}", now=NOW, expires_at=NOW + 900)
        invalidations.refresh()
    assert [sql for sql in reads if "aliak_changes" in sql] == []
    made = KeyManager(changing).create_access_key(RamUser("1234567890123456", "w"))
    changing.set_key_status(made.access_key_id, KeyStatus.INACTIVE)
    invalidations.refresh()
    assert heard == [made.access_key_id]
    watching.set_key_status(made.access_key_id, KeyStatus.ACTIVE)  # this thread's first
    invalidations.refresh()
    assert len(heard) > 1
    assert set(heard[1:]) == {made.access_key_id}
    watching.close()
    changing.close()
