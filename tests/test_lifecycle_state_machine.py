"""Random lifecycles against a simple model: after every step, the verifier's answer for
every key ever created matches the model (hypothesis.stateful), on both backends and
through both verifier shells (sync Verifier, AsyncVerifier)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from aliak import (
    Account,
    AliakError,
    KeyManager,
    MemoryStore,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
)
from aliak.keys import NewAccessKey
from conftest import verifier_factory

DAY = 86400
OWNERS = [RamUser("1234567890123456", "alice"), RamUser("1234567890123456", "bob"), Account("42")]
MAX_KEYS = 2
MAX_IN_BIN = 3
RETENTION = 30 * DAY

ACCEPTED = "accepted"
INACTIVE = "InvalidAccessKeyId.Inactive"
NOT_FOUND = "InvalidAccessKeyId.NotFound"


class KeyModel:
    """What the spec says a key's state is: active, inactive, in the bin since t, or gone."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.status = "active"
        self.recycled_at: int | None = None

    @property
    def gone(self) -> bool:
        return self.status == "gone"

    @property
    def in_bin(self) -> bool:
        return self.recycled_at is not None and not self.gone

    @property
    def live(self) -> bool:
        return not self.gone and not self.in_bin

    def expected(self) -> str:
        if self.gone:
            return NOT_FOUND
        if self.in_bin or self.status == "inactive":
            return INACTIVE
        return ACCEPTED


class Lifecycle(RuleBasedStateMachine):
    backend = "memory"
    shell = "sync"

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.now = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
        self.directory = tempfile.mkdtemp(prefix="aliak-lifecycle-")
        self.store: Any = (
            MemoryStore() if self.backend == "memory" else SQLiteStore(f"{self.directory}/a.db")
        )
        self.manager = KeyManager(self.store, clock=self.clock)
        self.model: dict[str, KeyModel] = {}
        self.created: dict[str, NewAccessKey] = {}

    def clock(self) -> float:
        return float(self.now)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def live_count(self, owner: Any) -> int:
        return sum(1 for key in self.model.values() if key.owner == owner and key.live)

    def call(self, operation: Any) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                operation()
        except AliakError as error:
            return error.code
        return "ok"

    @rule(target=keys, owner=st.sampled_from(OWNERS))
    def create(self, owner: Any) -> str:
        expected = "ok" if self.live_count(owner) < MAX_KEYS else "LimitExceeded.User.AccessKey"
        made: list[NewAccessKey] = []
        result = self.call(lambda: made.append(self.manager.create_access_key(owner)))
        assert result == expected
        if not made:
            return "LTAInever-created"
        new = made[0]
        self.model[new.access_key_id] = KeyModel(owner)
        self.created[new.access_key_id] = new
        return new.access_key_id

    @rule(key=keys)
    def disable(self, key: str) -> None:
        state = self.model.get(key)
        expected = "ok" if state is not None and state.live else "EntityNotExist.User.AccessKey"
        assert self.call(lambda: self.manager.disable_access_key(key)) == expected
        if expected == "ok":
            state.status = "inactive"  # type: ignore[union-attr]

    @rule(key=keys)
    def enable(self, key: str) -> None:
        state = self.model.get(key)
        expected = "ok" if state is not None and state.live else "EntityNotExist.User.AccessKey"
        assert self.call(lambda: self.manager.enable_access_key(key)) == expected
        if expected == "ok":
            state.status = "active"  # type: ignore[union-attr]

    @rule(key=keys)
    def delete(self, key: str) -> None:
        state = self.model.get(key)
        if state is None or not state.live:
            expected = "EntityNotExist.User.AccessKey"
        elif state.status == "active":
            expected = "EntityNotAllowed.AccessKey.Active"
        else:
            expected = "ok"
        assert self.call(lambda: self.manager.delete_access_key(key)) == expected
        if expected != "ok":
            return
        assert state is not None
        if isinstance(state.owner, Account):
            state.status = "gone"  # a root key has no recycle bin
            return
        # The key just deleted is the newest in the bin whatever the clocks say: only the
        # others (oldest first, ties by id) make room for it.
        others = sorted(
            (other.recycled_at, other_id)
            for other_id, other in self.model.items()
            if other.owner == state.owner and other.in_bin
        )
        state.recycled_at = self.now
        for _, evicted in others[: max(0, len(others) + 1 - MAX_IN_BIN)]:
            self.model[evicted].status = "gone"

    @rule(key=keys)
    def restore(self, key: str) -> None:
        state = self.model.get(key)
        if state is None or state.gone:
            expected = "EntityNotExist.User.AccessKey"
        elif not state.in_bin or self.now >= state.recycled_at + RETENTION:  # type: ignore[operator]
            expected = "EntityNotExist.RecycleBin.AccessKey"
        elif self.live_count(state.owner) >= MAX_KEYS:
            expected = "LimitExceeded.User.AccessKey"
        else:
            expected = "ok"
        assert self.call(lambda: self.manager.restore_access_key(key)) == expected
        if expected == "ok":
            assert state is not None
            state.recycled_at = None
            state.status = "inactive"

    @rule(key=keys)
    def purge(self, key: str) -> None:
        state = self.model.get(key)
        if state is None or state.gone:
            expected = "EntityNotExist.User.AccessKey"
        elif not state.in_bin:
            expected = "EntityNotExist.RecycleBin.AccessKey"
        else:
            expected = "ok"
        assert self.call(lambda: self.manager.purge_access_key(key)) == expected
        if expected == "ok":
            assert state is not None
            state.status = "gone"

    @rule()
    def purge_expired(self) -> None:
        expected = sorted(
            key_id
            for key_id, state in self.model.items()
            if state.in_bin and state.recycled_at + RETENTION <= self.now  # type: ignore[operator]
        )
        assert sorted(self.manager.purge_expired()) == expected
        for key_id in expected:
            self.model[key_id].status = "gone"

    @rule(days=st.integers(min_value=0, max_value=40), seconds=st.integers(0, DAY - 1))
    def advance_clock(self, days: int, seconds: int) -> None:
        self.now += days * DAY + seconds

    @rule(seconds=st.integers(min_value=0, max_value=120))
    def move_to_a_server_whose_clock_is_behind(self, seconds: int) -> None:
        """The next calls come from a fleet member whose clock is a little behind."""
        self.now -= seconds

    @rule(key=consumes(keys))
    def forget(self, key: str) -> None:
        """Drop a key from the bundle (keeps rule arguments varied); the model keeps it."""

    @invariant()
    def the_verifier_agrees_with_the_model(self) -> None:
        with verifier_factory(self.shell) as make:
            verifier = make(self.store, clock=self.clock, freshness=0)
            for key_id, new in self.created.items():
                signed = Signer(new.access_key, clock=self.clock).sign(
                    Request("GET", host="ecs.cn-hangzhou.aliyuncs.com"),
                    action="DescribeInstances",
                    version="2014-05-26",
                )
                try:
                    verifier.verify(signed)
                    answer = ACCEPTED
                except AliakError as error:
                    answer = error.code
                assert answer == self.model[key_id].expected(), key_id

    @invariant()
    def a_purged_key_never_comes_back(self) -> None:
        for key_id, state in self.model.items():
            if state.gone:
                assert self.store.get_key(key_id) is None


class SQLiteLifecycle(Lifecycle):
    backend = "sqlite"


class AsyncMemoryLifecycle(Lifecycle):
    shell = "async"


class AsyncSQLiteLifecycle(SQLiteLifecycle):
    shell = "async"


TestMemoryLifecycle = Lifecycle.TestCase
TestMemoryLifecycle.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSQLiteLifecycle = SQLiteLifecycle.TestCase
TestSQLiteLifecycle.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestAsyncMemoryLifecycle = AsyncMemoryLifecycle.TestCase
TestAsyncMemoryLifecycle.settings = TestMemoryLifecycle.settings
TestAsyncSQLiteLifecycle = AsyncSQLiteLifecycle.TestCase
TestAsyncSQLiteLifecycle.settings = TestSQLiteLifecycle.settings
