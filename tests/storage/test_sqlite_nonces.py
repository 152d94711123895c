"""SQLite nonce claims: one B-tree keyed by era, pruning and WAL checkpoints run beside
requests (never in them), and the migration from the layout with an expiry index."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aliak.storage.sqlite as sqlite_backend
from aliak.errors import InvalidParameter
from aliak.storage.sqlite import SQLiteStore

NOW = 1_700_000_000.0
ERA = sqlite_backend._ERA_SECONDS
# The first second of the era after NOW's: claims made from here on prune NOW's era.
NEXT_ERA = (sqlite_backend._era(NOW) + 1) * ERA
HOUSEKEEPER = "aliak-sqlite-housekeeper-"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db)
    yield opened
    opened.close()


def eventually(condition: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def stored_nonces(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return [nonce for (nonce,) in connection.execute("SELECT nonce FROM aliak_nonces")]
    finally:
        connection.close()


def eras(db: Path) -> list[int]:
    connection = sqlite3.connect(db)
    try:
        return [era for (era,) in connection.execute("SELECT era FROM aliak_nonce_eras")]
    finally:
        connection.close()


def housekeepers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(HOUSEKEEPER)]


def test_expired_nonces_are_pruned_in_the_background(db: Path, store: SQLiteStore) -> None:
    assert store.claim_nonce("LTAIkey", "old", now=NOW, expires_at=NOW + 5)
    assert store.claim_nonce("LTAIkey", "new", now=NEXT_ERA, expires_at=NEXT_ERA + 900)
    assert eventually(lambda: stored_nonces(db) == ["new"])
    assert store.claim_nonce("LTAIkey", "new", now=NEXT_ERA + 1, expires_at=NEXT_ERA + 901) is False


def test_background_prune_waits_for_the_whole_era_to_end(db: Path, store: SQLiteStore) -> None:
    # Expired, but its era is still running: it stays stored (harmless: a claim that
    # finds it expired takes it over) until a claim's clock passes the era's end.
    era_start = sqlite_backend._era(NOW) * ERA
    assert store.claim_nonce("LTAIkey", "old", now=era_start, expires_at=era_start + 5)
    assert store.claim_nonce("LTAIkey", "new", now=era_start + 10, expires_at=era_start + 910)
    time.sleep(1.5)  # longer than the housekeeper's prune interval
    assert sorted(stored_nonces(db)) == ["new", "old"]
    assert store.claim_nonce("LTAIkey", "old", now=era_start + 11, expires_at=era_start + 911)
    assert (
        store.claim_nonce("LTAIkey", "old", now=era_start + 12, expires_at=era_start + 912) is False
    )


def test_background_prune_goes_by_the_claims_clock_not_the_hosts(
    db: Path, store: SQLiteStore
) -> None:
    # The verifier's clock (here years behind the host's) says these are live: a prune by
    # the host's clock would forget them and let their replays through.
    for number in range(3):
        store.claim_nonce("LTAIkey", f"n-{number}", now=NOW, expires_at=NOW + 900)
    time.sleep(1.5)  # longer than the housekeeper's prune interval
    assert sorted(stored_nonces(db)) == ["n-0", "n-1", "n-2"]
    assert store.claim_nonce("LTAIkey", "n-0", now=NOW + 1, expires_at=NOW + 900) is False


def test_background_prune_removes_more_than_one_batch(db: Path, store: SQLiteStore) -> None:
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        # Spread over two eras, so the prune also moves from one era to the next.
        connection.executemany(
            "INSERT INTO aliak_nonces (era, access_key_id, nonce, expires_at) VALUES (?, ?, ?, ?)",
            [
                (sqlite_backend._era(expires_at), "LTAIkey", f"old-{number}", expires_at)
                for number in range(1000)
                for expires_at in [NOW - ERA + number]
            ],
        )
    finally:
        connection.close()
    assert store.claim_nonce("LTAIkey", "live", now=NEXT_ERA, expires_at=NEXT_ERA + 900)
    assert eventually(lambda: stored_nonces(db) == ["live"])
    assert eras(db) == [sqlite_backend._era(NEXT_ERA + 900)]


def test_a_private_memory_database_is_pruned_in_the_background() -> None:
    store = SQLiteStore(":memory:")
    try:
        store.claim_nonce("LTAIkey", "old", now=NOW, expires_at=NOW + 5)
        store.claim_nonce("LTAIkey", "new", now=NEXT_ERA, expires_at=NEXT_ERA + 900)
        assert eventually(lambda: nonces_in_memory(store) == ["new"])
        assert store.claim_nonce("LTAIkey", "new", now=NEXT_ERA, expires_at=NEXT_ERA + 9) is False
    finally:
        store.close()


def nonces_in_memory(store: SQLiteStore) -> list[str]:
    with store._serial:  # the one connection, shared with the housekeeper
        rows = store._connection().execute("SELECT nonce FROM aliak_nonces").fetchall()
    return [nonce for (nonce,) in rows]


def test_explicit_prune_every_still_prunes_inside_the_claims(db: Path) -> None:
    store = SQLiteStore(db, prune_every=10)
    try:
        for second in range(30):
            now = NOW + second
            store.claim_nonce("LTAIkey", f"n-{second}", now=now, expires_at=now + 5)
        assert len(stored_nonces(db)) <= 10 + 5
        assert housekeepers() != []  # it still checkpoints
    finally:
        store.close()


def test_housekeeper_stops_when_the_store_closes(db: Path) -> None:
    before = set(housekeepers())
    store = SQLiteStore(db)
    store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 900)
    assert len(set(housekeepers()) - before) == 1
    store.close()
    assert set(housekeepers()) - before == set()


def test_request_connections_leave_checkpoints_to_the_housekeeper(db: Path) -> None:
    limit = 1 << 20
    store = SQLiteStore(db, wal_size_limit=limit)
    try:
        connection = store._connection()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        # Only a backstop: four limits' worth of frames, far past the housekeeper's reset.
        (pages,) = connection.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert pages == 4 * limit // (page_size + 24)
        assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        store.close()


def test_the_log_stays_bounded_when_the_housekeeper_falls_behind(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A housekeeper that never gets to checkpoint (a starved thread, a reset that always
    # finds the lock taken): the requests' backstop alone bounds the log.
    monkeypatch.setattr(SQLiteStore, "_checkpoint", lambda self, connection: None)
    limit = 1 << 18
    store = SQLiteStore(db, wal_size_limit=limit)
    wal = Path(f"{db}-wal")
    try:
        largest = 0
        for claim in range(64 * limit // 4096):
            store.claim_nonce("LTAIkey", f"n-{claim}", now=NOW, expires_at=NOW + 900)
            if claim % 64 == 0:
                largest = max(largest, wal.stat().st_size)
        assert largest > 2 * limit  # the backstop, not the housekeeper, bounded it
        assert largest < 6 * limit
    finally:
        store.close()


def test_the_log_stays_bounded_under_constant_claims(db: Path) -> None:
    limit = 1 << 20
    store = SQLiteStore(db, wal_size_limit=limit)
    wal = Path(f"{db}-wal")
    try:
        # Back-to-back claims: the log never catches a quiet moment to rewind by itself,
        # so the housekeeper's reset at the size limit bounds it, or, should that thread
        # fall behind, the requests' backstop at four limits. Counted, not timed, so a
        # slow machine makes the test longer, not different.
        claims = 64 * limit // 4096  # at least a page a claim: 64 limits' worth
        for claim in range(claims):
            store.claim_nonce("LTAIkey", f"n-{claim}", now=NOW, expires_at=NOW + 900)
        assert wal.stat().st_size < 16 * limit
    finally:
        store.close()


def test_wal_size_limit_is_checked() -> None:
    for value in (0, -1, 1.5, True, "64"):
        with pytest.raises(InvalidParameter):
            SQLiteStore(":memory:", wal_size_limit=value)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_its_own_housekeeper(db: Path, store: SQLiteStore) -> None:
    store.claim_nonce("LTAIkey", "old", now=NOW, expires_at=NOW + 5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            store.claim_nonce("LTAIkey", "new", now=NEXT_ERA, expires_at=NEXT_ERA + 900)
            pruned = eventually(lambda: stored_nonces(db) == ["new"])
            code = 0 if pruned and len(housekeepers()) == 1 else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- the era key ----------------------------------------------------------------------------

times = st.one_of(
    st.floats(allow_nan=False, allow_infinity=True),
    st.floats(min_value=NOW - 3 * ERA, max_value=NOW + 3 * ERA),
    st.integers(min_value=-(10**6), max_value=10**6).map(lambda k: k * ERA * 1.0),
)


@settings(max_examples=300, deadline=None)
@given(seconds=times)
def test_the_era_in_python_is_the_era_in_sql(seconds: float) -> None:
    connection = sqlite3.connect(":memory:")
    try:
        (in_sql,) = connection.execute(
            f"SELECT {sqlite_backend._ERA_OF_EXPIRES_AT} FROM (SELECT ? AS expires_at)",
            (seconds,),
        ).fetchone()
    finally:
        connection.close()
    assert in_sql == sqlite_backend._era(seconds)


@settings(max_examples=300, deadline=None)
@given(now=times, later=times)
def test_a_claim_live_at_now_is_never_in_an_era_before_nows(now: float, later: float) -> None:
    if later > now:
        assert sqlite_backend._era(later) >= sqlite_backend._era(now)


def test_a_claim_writes_one_tree_with_no_expiry_index(store: SQLiteStore) -> None:
    connection = store._connection()
    indexes = connection.execute("PRAGMA index_list(aliak_nonces)").fetchall()
    assert [origin for *_, origin, _partial in indexes] == ["pk"]
    (sql,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'aliak_nonces'"
    ).fetchone()
    assert "PRIMARY KEY (era, access_key_id, nonce)" in sql
    assert "WITHOUT ROWID" in sql


operations = st.lists(
    st.tuples(
        st.sampled_from(["claim", "claim", "claim", "prune"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=0, max_value=4 * ERA),  # now, seconds after NOW
        st.sampled_from([0.0, 0.25, 1.0, 5.0, ERA - 1.0, ERA * 1.0, 2.5 * ERA, 10 * ERA]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations=operations)
def test_claims_agree_with_a_model_across_eras_and_prunes(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, str, int, float]]
) -> None:
    db = tmp_path_factory.mktemp("model") / "aliak.db"
    store = SQLiteStore(db)  # the housekeeper runs too: it may only remove expired claims
    held: dict[str, float] = {}
    try:
        for operation, nonce, after, ttl in sorted(operations, key=lambda op: op[2]):
            now = NOW + after
            if operation == "prune":
                store.prune_nonces(now)
                held = {n: expires for n, expires in held.items() if expires > now}
                continue
            expected = not (nonce in held and held[nonce] > now)
            assert store.claim_nonce("LTAIkey", nonce, now=now, expires_at=now + ttl) is expected
            if expected:
                held[nonce] = now + ttl
        connection = sqlite3.connect(db)
        try:
            unlisted = connection.execute(
                "SELECT count(*) FROM aliak_nonces "
                "WHERE era NOT IN (SELECT era FROM aliak_nonce_eras)"
            ).fetchone()
        finally:
            connection.close()
        assert unlisted == (0,)
    finally:
        store.close()


def create_version_3_database(db: Path) -> None:
    """A database as the aliak of schema version 3 left it (nonces with an expiry index)."""
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        for statements in sqlite_backend._MIGRATIONS[:3]:
            for statement in statements:
                connection.execute(statement)
        connection.execute("INSERT INTO aliak_schema (id, version) VALUES (1, 3)")
        connection.executemany(
            "INSERT INTO aliak_nonces (access_key_id, nonce, expires_at) VALUES (?, ?, ?)",
            [
                ("LTAIkey", "live", NOW + 600.5),
                ("LTAIkey", "live-next-era", NOW + 2 * ERA),
                ("LTAIother", "live", NOW + 0.25),
                ("LTAIkey", "expired", NOW - 1),
            ],
        )
    finally:
        connection.close()


def test_a_version_3_database_keeps_its_claims_through_the_migration(db: Path) -> None:
    create_version_3_database(db)
    store = SQLiteStore(db)
    try:
        assert store.claim_nonce("LTAIkey", "live", now=NOW, expires_at=NOW + 900) is False
        assert store.claim_nonce("LTAIkey", "live", now=NOW + 600.4, expires_at=NOW + 900) is False
        assert (
            store.claim_nonce("LTAIkey", "live-next-era", now=NOW + ERA, expires_at=NOW + 3 * ERA)
            is False
        )
        assert store.claim_nonce("LTAIother", "live", now=NOW, expires_at=NOW + 900) is False
        assert store.claim_nonce("LTAIkey", "expired", now=NOW, expires_at=NOW + 900) is True
        assert store.claim_nonce("LTAIother", "live", now=NOW + 0.25, expires_at=NOW + 900) is True
        connection = store._connection()
        assert connection.execute("SELECT version FROM aliak_schema").fetchone() == (5,)
        names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        assert "aliak_nonces_by_expiry" not in names
        assert "aliak_nonces_by_era" not in names
    finally:
        store.close()
