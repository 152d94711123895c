"""KeyManager: one test per lifecycle rule (spec verification.md §7), on every backend."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from aliak import (
    Account,
    AliakError,
    KeyManager,
    MemoryStore,
    NetworkPolicy,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
    Verifier,
)
from aliak.errors import InternalError, ServiceUnavailable
from aliak.keys import RootAccessKeyWarning
from aliak.model import KeyStatus, RamRole

ACCOUNT = "1234567890123456"
ALICE = RamUser(ACCOUNT, "alice")
BOB = RamUser(ACCOUNT, "bob")
ROOT = Account(ACCOUNT)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        sqlite = SQLiteStore(str(tmp_path / "aliak.db"))
        yield sqlite
        sqlite.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(store: Any, clock: Clock) -> KeyManager:
    return KeyManager(store, clock=clock, actor="ops@example.com")


def snapshot(store: Any) -> tuple[Any, ...]:
    records = sorted(repr(r) for r in store.iter_keys())
    return records, len(store.audit_events(limit=100_000))


def outcome(store: Any, clock: Clock, new: Any, action: str = "DescribeInstances") -> str:
    """What a verifier on the same store answers for a fresh request signed by ``new``."""
    signer = Signer(new.access_key, clock=clock)
    signed = signer.sign(
        Request("POST", host="ecs.cn-hangzhou.aliyuncs.com"), action=action, version="2014-05-26"
    )
    try:
        # The verifier guards ECS (it is told so: the leak restriction never trusts the
        # request's Host to say which service it is).
        Verifier(store, clock=clock, service_name="ecs").verify(signed, source_ip="203.0.113.7")
    except AliakError as error:
        return error.code
    return "accepted"


# -- 1. create ------------------------------------------------------------------------------


def test_created_keys_have_the_documented_format_from_a_csprng(keys: KeyManager) -> None:
    first = keys.create_access_key(ALICE)
    second = keys.create_access_key(BOB)
    assert re.fullmatch(r"LTAI[A-Za-z0-9]{20}", first.access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9]{30}", first.secret.reveal())
    assert first.access_key_id != second.access_key_id
    assert first.secret.reveal() != second.secret.reveal()
    assert first.status is KeyStatus.ACTIVE
    assert first.to_ram_dict() == {
        "AccessKeyId": first.access_key_id,
        "AccessKeySecret": first.secret.reveal(),
        "Status": "Active",
        "CreateDate": "2026-01-01T00:00:00Z",
    }


def test_the_secret_is_available_only_from_create(keys: KeyManager, store: Any) -> None:
    new = keys.create_access_key(ALICE)
    secret = new.secret.reveal()
    texts = [
        repr(keys.get_access_key(new.access_key_id)),
        repr(keys.list_access_keys(ALICE)),
        str(keys.get_access_key(new.access_key_id).to_ram_dict()),
        repr(keys.audit_events()),
        repr(store.get_key(new.access_key_id)),
        repr(new),
    ]
    assert all(secret not in text for text in texts)
    info = keys.get_access_key(new.access_key_id)
    assert not any("secret" in name for name in info.__attrs_attrs__.__dict__)


def test_a_ram_user_has_at_most_two_keys_and_a_third_changes_nothing(
    keys: KeyManager, store: Any
) -> None:
    keys.create_access_key(ALICE)
    keys.create_access_key(ALICE)
    before = snapshot(store)
    with pytest.raises(AliakError) as caught:
        keys.create_access_key(ALICE)
    assert caught.value.code == "LimitExceeded.User.AccessKey"
    assert snapshot(store) == before


def test_keys_in_the_recycle_bin_do_not_count_against_the_limit(keys: KeyManager) -> None:
    first = keys.create_access_key(ALICE)
    keys.create_access_key(ALICE)
    keys.disable_access_key(first.access_key_id)
    keys.delete_access_key(first.access_key_id)
    assert keys.create_access_key(ALICE).status is KeyStatus.ACTIVE


def test_a_root_key_is_allowed_with_a_warning_and_marked_in_listings(keys: KeyManager) -> None:
    with pytest.warns(RootAccessKeyWarning):
        new = keys.create_access_key(ROOT)
    (info,) = keys.list_access_keys(ROOT)
    assert info.access_key_id == new.access_key_id
    assert info.root_key
    assert info.to_ram_dict()["RootKey"] is True
    assert not keys.create_access_key(ALICE).access_key.access_key_id.startswith("STS.")


def test_root_keys_can_be_forbidden_store_wide(keys: KeyManager, store: Any, clock: Clock) -> None:
    keys.set_root_keys_allowed(False)
    other_manager = KeyManager(store, clock=clock)
    with pytest.raises(AliakError) as caught:
        other_manager.create_access_key(ROOT)
    assert caught.value.code == "NotSupported.RootAccessKey"
    assert not other_manager.root_keys_allowed()
    keys.set_root_keys_allowed(True)
    with pytest.warns(RootAccessKeyWarning):
        other_manager.create_access_key(ROOT)


# -- 2. list / get ------------------------------------------------------------------------------


def test_list_and_get_give_metadata_oldest_first(keys: KeyManager, clock: Clock) -> None:
    first = keys.create_access_key(ALICE)
    clock.now += 10
    second = keys.create_access_key(ALICE)
    listed = keys.list_access_keys(ALICE)
    assert [info.access_key_id for info in listed] == [first.access_key_id, second.access_key_id]
    info = keys.get_access_key(second.access_key_id)
    assert (info.status, info.created_at, info.last_used) == (
        KeyStatus.ACTIVE,
        datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc),
        None,
    )


def test_unknown_ids_and_owners_are_clear_errors(keys: KeyManager, store: Any) -> None:
    keys.create_access_key(ALICE)
    before = snapshot(store)
    for call in (
        lambda: keys.get_access_key("LTAInope"),
        lambda: keys.disable_access_key("LTAInope"),
        lambda: keys.delete_access_key("LTAInope"),
        lambda: keys.restore_access_key("LTAInope"),
        lambda: keys.purge_access_key("LTAInope"),
        lambda: keys.mark_leaked("LTAInope"),
        lambda: keys.get_last_used("LTAInope"),
        lambda: keys.find_owner("LTAInope"),
        lambda: keys.set_network_policy(NetworkPolicy(), access_key_id="LTAInope"),
    ):
        with pytest.raises(AliakError) as caught:
            call()
        assert caught.value.code == "EntityNotExist.User.AccessKey"
    with pytest.raises(AliakError) as caught:
        keys.list_access_keys(RamUser(ACCOUNT, "nobody"))
    assert caught.value.code == "EntityNotExist.User"
    with pytest.raises(AliakError):
        keys.list_recycle_bin(RamUser(ACCOUNT, "nobody"))
    assert snapshot(store) == before


# -- 3. disable / enable -------------------------------------------------------------------------


def test_disable_and_enable_take_effect_for_verifiers_within_the_freshness(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    assert outcome(store, clock, new) == "accepted"
    keys.disable_access_key(new.access_key_id)
    assert outcome(store, clock, new) == "InvalidAccessKeyId.Inactive"
    keys.enable_access_key(new.access_key_id)
    assert outcome(store, clock, new) == "accepted"


# -- 4. delete, recycle bin, restore, purge ---------------------------------------------------


def test_an_active_key_cannot_be_deleted(keys: KeyManager, store: Any) -> None:
    new = keys.create_access_key(ALICE)
    before = snapshot(store)
    with pytest.raises(AliakError) as caught:
        keys.delete_access_key(new.access_key_id)
    assert caught.value.code == "EntityNotAllowed.AccessKey.Active"
    assert snapshot(store) == before


def test_delete_moves_the_key_to_the_recycle_bin_with_its_dates(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    clock.now += DAY
    deleted = keys.delete_access_key(new.access_key_id)
    assert not deleted.purged
    assert deleted.recycled_at == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert deleted.purge_at == datetime(2026, 2, 1, tzinfo=timezone.utc)
    assert keys.list_access_keys(ALICE) == []
    (binned,) = keys.list_recycle_bin(ALICE)
    assert binned.to_ram_dict()["RecycleDate"] == "2026-01-02T00:00:00Z"
    assert binned.to_ram_dict()["DeleteDate"] == "2026-02-01T00:00:00Z"
    assert outcome(store, clock, new) == "InvalidAccessKeyId.Inactive"


def test_a_restored_key_comes_back_inactive_within_thirty_days(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    keys.delete_access_key(new.access_key_id)
    clock.now += 29 * DAY
    restored = keys.restore_access_key(new.access_key_id)
    assert restored.status is KeyStatus.INACTIVE
    assert restored.recycled_at is None
    assert outcome(store, clock, new) == "InvalidAccessKeyId.Inactive"
    keys.enable_access_key(new.access_key_id)
    assert outcome(store, clock, new) == "accepted"


def test_a_restore_after_thirty_days_is_refused_and_changes_nothing(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    keys.delete_access_key(new.access_key_id)
    clock.now += 30 * DAY
    before = snapshot(store)
    with pytest.raises(AliakError) as caught:
        keys.restore_access_key(new.access_key_id)
    assert caught.value.code == "EntityNotExist.RecycleBin.AccessKey"
    assert snapshot(store) == before


def test_a_restore_past_the_key_limit_is_refused(keys: KeyManager, store: Any) -> None:
    old = keys.create_access_key(ALICE)
    keys.disable_access_key(old.access_key_id)
    keys.delete_access_key(old.access_key_id)
    keys.create_access_key(ALICE)
    keys.create_access_key(ALICE)
    before = snapshot(store)
    with pytest.raises(AliakError) as caught:
        keys.restore_access_key(old.access_key_id)
    assert caught.value.code == "LimitExceeded.User.AccessKey"
    assert snapshot(store) == before


def test_purge_is_irreversible_and_destroys_the_sealed_secret(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    keys.delete_access_key(new.access_key_id)
    keys.purge_access_key(new.access_key_id)
    assert new.access_key_id not in dict(store.iter_sealed_secrets())
    with pytest.raises(AliakError) as caught:
        keys.restore_access_key(new.access_key_id)
    assert caught.value.code == "EntityNotExist.User.AccessKey"
    assert outcome(store, clock, new) == "InvalidAccessKeyId.NotFound"


def test_only_keys_in_the_bin_can_be_purged(keys: KeyManager) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    with pytest.raises(AliakError) as caught:
        keys.purge_access_key(new.access_key_id)
    assert caught.value.code == "EntityNotExist.RecycleBin.AccessKey"


def test_purge_expired_removes_what_has_been_in_the_bin_thirty_days(
    keys: KeyManager, clock: Clock
) -> None:
    early = keys.create_access_key(ALICE)
    late = keys.create_access_key(ALICE)
    keys.disable_access_key(early.access_key_id)
    keys.disable_access_key(late.access_key_id)
    keys.delete_access_key(early.access_key_id)
    clock.now += DAY
    keys.delete_access_key(late.access_key_id)
    clock.now = T0 + 30 * DAY
    assert keys.purge_expired() == [early.access_key_id]
    assert [info.access_key_id for info in keys.list_recycle_bin(ALICE)] == [late.access_key_id]


def test_a_fourth_deleted_key_evicts_the_oldest_from_the_bin(
    keys: KeyManager, clock: Clock
) -> None:
    deleted = []
    for _ in range(4):
        new = keys.create_access_key(ALICE)
        keys.disable_access_key(new.access_key_id)
        clock.now += 60
        result = keys.delete_access_key(new.access_key_id)
        deleted.append(new.access_key_id)
    assert result.evicted == (deleted[0],)
    assert [info.access_key_id for info in keys.list_recycle_bin(ALICE)] == deleted[1:]
    with pytest.raises(AliakError):
        keys.get_access_key(deleted[0])


def test_deleting_a_root_key_purges_it_at_once(keys: KeyManager, store: Any, clock: Clock) -> None:
    with pytest.warns(RootAccessKeyWarning):
        new = keys.create_access_key(ROOT)
    keys.disable_access_key(new.access_key_id)
    result = keys.delete_access_key(new.access_key_id)
    assert result.purged
    assert store.get_key(new.access_key_id) is None
    assert outcome(store, clock, new) == "InvalidAccessKeyId.NotFound"


# -- 5. last use -------------------------------------------------------------------------------


def test_last_used_and_source_ip_history_come_from_verified_traffic(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    assert keys.get_last_used(new.access_key_id) is None
    signer = Signer(new.access_key, clock=clock)
    with Verifier(store, clock=clock) as verifier:
        for source in ("203.0.113.7", "198.51.100.9", "203.0.113.7"):
            clock.now += 60
            verifier.verify(
                signer.sign(
                    Request("GET", host="ram.aliyuncs.com"), action="ListUsers", version="V"
                ),
                source_ip=source,
            )
    last = keys.get_last_used(new.access_key_id)
    assert last is not None
    assert (last.used_at, last.service_name) == (
        datetime(2026, 1, 1, 0, 3, tzinfo=timezone.utc),
        "ram",
    )
    history = keys.source_ip_history(new.access_key_id)
    assert [(use.source_ip, use.first_seen.minute, use.last_seen.minute) for use in history] == [
        ("203.0.113.7", 1, 3),
        ("198.51.100.9", 2, 2),
    ]
    since = datetime(2026, 1, 1, 0, 3, tzinfo=timezone.utc)
    assert [use.source_ip for use in keys.source_ip_history(new.access_key_id, since=since)] == [
        "203.0.113.7"
    ]


# -- 6. owner lookup ---------------------------------------------------------------------------


def test_find_owner_searches_the_store_bin_included_and_other_stores(
    keys: KeyManager, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.disable_access_key(new.access_key_id)
    keys.delete_access_key(new.access_key_id)
    found = keys.find_owner(new.access_key_id)
    assert (found.owner, found.in_recycle_bin, found.store_index) == (ALICE, True, 0)
    elsewhere = MemoryStore()
    other = KeyManager(elsewhere, clock=clock).create_access_key(RamUser("999", "carol"))
    found = keys.find_owner(other.access_key_id, elsewhere)
    assert (found.owner, found.store_index) == (RamUser("999", "carol"), 1)


# -- 7. leaks and rotation ---------------------------------------------------------------------


def test_a_leaked_key_is_refused_high_risk_actions_and_cannot_be_unmarked(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    info = keys.mark_leaked(new.access_key_id)
    assert info.leak_restricted
    assert outcome(store, clock, new, action="RunInstances") == "Forbidden"
    assert outcome(store, clock, new) == "accepted"  # DescribeInstances is not high-risk
    assert keys.mark_leaked(new.access_key_id).leak_restricted  # idempotent
    assert not hasattr(keys, "unmark_leaked")


def test_rotation_creates_the_replacement_and_the_old_key_can_then_go(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    old = keys.create_access_key(ALICE)
    keys.mark_leaked(old.access_key_id)
    new = keys.rotate_access_key(old.access_key_id)
    assert new.owner == ALICE
    assert outcome(store, clock, new, action="RunInstances") == "accepted"
    keys.disable_access_key(old.access_key_id)
    keys.delete_access_key(old.access_key_id)
    assert [info.access_key_id for info in keys.list_access_keys(ALICE)] == [new.access_key_id]


def test_rotation_at_the_key_limit_says_what_to_do(keys: KeyManager) -> None:
    old = keys.create_access_key(ALICE)
    keys.create_access_key(ALICE)
    with pytest.raises(AliakError) as caught:
        keys.rotate_access_key(old.access_key_id)
    assert caught.value.code == "LimitExceeded.User.AccessKey"
    assert "delete" in str(caught.value)


def test_the_rotation_report_lists_old_keys_and_users_with_several_active_keys(
    keys: KeyManager, clock: Clock
) -> None:
    old = keys.create_access_key(ALICE)
    clock.now += 60 * DAY
    keys.create_access_key(ALICE)
    single = keys.create_access_key(BOB)
    clock.now += 31 * DAY
    report = keys.rotation_report()
    assert [info.access_key_id for info in report.old_keys] == [old.access_key_id]
    assert report.owners_with_several_active_keys == (ALICE,)
    keys.disable_access_key(single.access_key_id)
    assert keys.rotation_report(max_age=timedelta(days=1)).owners_with_several_active_keys == (
        ALICE,
    )


# -- 8. network policies -------------------------------------------------------------------------


def test_network_policies_at_account_and_key_level_take_effect(
    keys: KeyManager, store: Any, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    keys.set_network_policy(NetworkPolicy(public=["198.51.100.0/24"]), account_id=ACCOUNT)
    assert keys.get_network_policy(account_id=ACCOUNT) == NetworkPolicy(public=["198.51.100.0/24"])
    assert outcome(store, clock, new) == "InvalidAccessKeyId.AccessPolicyDenied"
    keys.set_network_policy(
        NetworkPolicy(public=["203.0.113.0/24"]), access_key_id=new.access_key_id
    )
    assert outcome(store, clock, new) == "accepted"
    keys.set_network_policy(None, access_key_id=new.access_key_id)
    assert keys.get_network_policy(access_key_id=new.access_key_id) is None


def test_invalid_policies_are_refused_before_the_store_is_touched(
    keys: KeyManager, store: Any
) -> None:
    keys.create_access_key(ALICE)
    before = snapshot(store)
    with pytest.raises(AliakError) as caught:
        keys.set_network_policy(
            NetworkPolicy(public=[f"10.0.0.{n}" for n in range(51)]), account_id=ACCOUNT
        )
    assert caught.value.code == "LimitExceeded"
    with pytest.raises(AliakError) as caught:
        keys.set_network_policy(NetworkPolicy(public=["10.0.0.1/8"]), account_id=ACCOUNT)
    assert caught.value.code == "InvalidParameter"
    with pytest.raises(AliakError):
        keys.set_network_policy(NetworkPolicy(), account_id="bad id!")
    with pytest.raises(AliakError):
        keys.set_network_policy(NetworkPolicy(), account_id=ACCOUNT, access_key_id="LTAIx")
    assert snapshot(store) == before


# -- 10. audit trail ---------------------------------------------------------------------------


def test_every_state_change_is_in_the_audit_trail_with_who_what_when(
    keys: KeyManager, clock: Clock
) -> None:
    new = keys.create_access_key(ALICE)
    clock.now += 1
    keys.disable_access_key(new.access_key_id)
    keys.delete_access_key(new.access_key_id)
    keys.restore_access_key(new.access_key_id)
    keys.mark_leaked(new.access_key_id)
    keys.set_network_policy(NetworkPolicy(public=["203.0.113.0/24"]), account_id=ACCOUNT)
    events = keys.audit_events()
    assert [event.action for event in events] == [
        "CreateAccessKey",
        "UpdateAccessKey",
        "DeleteAccessKey",
        "RestoreAccessKeyFromRecycleBin",
        "MarkAccessKeyLeaked",
        "SetNetworkPolicy",
    ]
    assert {event.actor for event in events} == {"ops@example.com"}
    assert events[0].at == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert events[1].at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    assert [e.action for e in keys.audit_events(access_key_id=new.access_key_id)][:2] == [
        "CreateAccessKey",
        "UpdateAccessKey",
    ]
    assert len(keys.audit_events(owner=ALICE)) == 5
    assert keys.audit_events(owner=BOB) == []


def test_a_refused_change_leaves_no_audit_event(keys: KeyManager) -> None:
    new = keys.create_access_key(ALICE)
    count = len(keys.audit_events())
    with pytest.raises(AliakError):
        keys.delete_access_key(new.access_key_id)  # still Active
    assert len(keys.audit_events()) == count


def test_deleting_in_the_same_second_never_evicts_the_key_just_deleted(keys: KeyManager) -> None:
    deleted = []
    for _ in range(5):
        new = keys.create_access_key(ALICE)
        keys.disable_access_key(new.access_key_id)
        result = keys.delete_access_key(new.access_key_id)  # the clock never moves
        assert new.access_key_id not in result.evicted
        deleted.append(new.access_key_id)
    in_bin = {info.access_key_id for info in keys.list_recycle_bin(ALICE)}
    assert len(in_bin) == 3
    assert deleted[-1] in in_bin


# -- failures: an engine that cannot answer reaches the caller as an AliakError -------------
#
# protocols.py's failure contract, seen from KeyManager: engine down -> ServiceUnavailable
# (503), any other engine error -> InternalError (500), and never a driver exception.


@attrs.frozen
class Subjects:
    live: str
    inactive: str
    in_bin: str


def populate(keys: KeyManager, clock: Clock) -> Subjects:
    """Keys in every state, and one whose retention has ended, so that each write below
    has something to change."""
    now, clock.now = clock.now, clock.now - 31 * DAY
    expired = keys.create_access_key(RamUser(ACCOUNT, "dave")).access_key_id
    keys.disable_access_key(expired)
    keys.delete_access_key(expired)
    clock.now = now
    live = keys.create_access_key(ALICE).access_key_id
    inactive = keys.create_access_key(ALICE).access_key_id
    keys.disable_access_key(inactive)
    in_bin = keys.create_access_key(BOB).access_key_id
    keys.disable_access_key(in_bin)
    keys.delete_access_key(in_bin)
    return Subjects(live, inactive, in_bin)


Operation = Callable[[KeyManager, Subjects], object]
READS: dict[str, Operation] = {
    "get_access_key": lambda k, s: k.get_access_key(s.live),
    "list_access_keys": lambda k, s: k.list_access_keys(ALICE),
    "list_recycle_bin": lambda k, s: k.list_recycle_bin(BOB),
    "get_last_used": lambda k, s: k.get_last_used(s.live),
    "source_ip_history": lambda k, s: k.source_ip_history(s.live),
    "get_network_policy": lambda k, s: k.get_network_policy(account_id=ACCOUNT),
    "audit_events": lambda k, s: k.audit_events(),
    "rotation_report": lambda k, s: k.rotation_report(),
    "find_owner": lambda k, s: k.find_owner(s.live),
}
WRITES: dict[str, Operation] = {
    "create_access_key": lambda k, s: k.create_access_key(RamUser(ACCOUNT, "carol")),
    "disable_access_key": lambda k, s: k.disable_access_key(s.live),
    "enable_access_key": lambda k, s: k.enable_access_key(s.inactive),
    "delete_access_key": lambda k, s: k.delete_access_key(s.inactive),
    "restore_access_key": lambda k, s: k.restore_access_key(s.in_bin),
    "purge_access_key": lambda k, s: k.purge_access_key(s.in_bin),
    "purge_expired": lambda k, s: k.purge_expired(),
    "mark_leaked": lambda k, s: k.mark_leaked(s.live),
    "set_network_policy": lambda k, s: k.set_network_policy(
        NetworkPolicy(public=["203.0.113.0/24"]), access_key_id=s.live
    ),
    "set_root_keys_allowed": lambda k, s: k.set_root_keys_allowed(False),
    "assume_role": lambda k, s: k.assume_role(RamRole(ACCOUNT, "ops"), session_name="s1"),
    "rotate_master_key": lambda k, s: k.rotate_master_key(),
}


def outcomes(
    keys: KeyManager, subjects: Subjects, operations: dict[str, Operation], *, thread: bool
) -> dict[str, object]:
    """Each operation's result or exception; on a fresh thread if asked (a SQLite store
    opens a thread's connection on its first call, so it meets the file as it is now)."""
    results: dict[str, object] = {}

    def run_all() -> None:
        for name, operation in operations.items():
            try:
                results[name] = operation(keys, subjects)
            except Exception as error:
                results[name] = error

    if thread:
        worker = threading.Thread(target=run_all)
        worker.start()
        worker.join(timeout=120)
    else:
        run_all()
    return results


def assert_refused_as(results: dict[str, object], error: type[AliakError], code: str) -> None:
    wrong = {
        name: f"{type(result).__name__}: {result}"
        for name, result in results.items()
        if not (isinstance(result, error) and result.code == code)
    }
    assert wrong == {}, f"expected {code} from every operation"
    for result in results.values():
        assert isinstance(result, AliakError)
        assert result.http_status == error.http_status


def assert_answered(results: dict[str, object]) -> None:
    failed = {
        name: repr(result) for name, result in results.items() if isinstance(result, Exception)
    }
    assert failed == {}


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """The file made unwritable for connections opened from now on. Root ignores mode
    bits, so as root the file is made immutable instead (where the filesystem can)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def sqlite_keys(tmp_path: Path, clock: Clock) -> Iterator[tuple[SQLiteStore, KeyManager, Path]]:
    db = tmp_path / "aliak.db"
    store = SQLiteStore(db, busy_timeout=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RootAccessKeyWarning)
        yield store, KeyManager(store, clock=clock), db
    store.close()


def test_a_read_only_sqlite_file_refuses_every_change_as_internal_error(
    sqlite_keys: tuple[SQLiteStore, KeyManager, Path], clock: Clock
) -> None:
    _, keys, db = sqlite_keys
    subjects = populate(keys, clock)
    with read_only(db):
        writes = outcomes(keys, subjects, WRITES, thread=True)
        reads = outcomes(keys, subjects, READS, thread=True)
    assert_refused_as(writes, InternalError, "InternalError")
    assert all(isinstance(result.__cause__, sqlite3.Error) for result in writes.values())  # type: ignore[union-attr]
    assert_answered(reads)


def test_a_corrupted_sqlite_file_refuses_everything_as_internal_error(
    sqlite_keys: tuple[SQLiteStore, KeyManager, Path], clock: Clock
) -> None:
    _, keys, db = sqlite_keys
    subjects = populate(keys, clock)
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file
    with db.open("r+b") as file:
        file.write(secrets.token_bytes(4096))  # the header and the schema page
    results = outcomes(keys, subjects, READS | WRITES, thread=True)
    assert_refused_as(results, InternalError, "InternalError")


def test_a_sqlite_file_locked_by_another_writer_refuses_changes_as_internal_error(
    sqlite_keys: tuple[SQLiteStore, KeyManager, Path], clock: Clock
) -> None:
    _, keys, db = sqlite_keys
    subjects = populate(keys, clock)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        writes = outcomes(keys, subjects, WRITES, thread=False)
        reads = outcomes(keys, subjects, READS, thread=False)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert_refused_as(writes, InternalError, "InternalError")
    assert_answered(reads)  # WAL: readers never wait for the writer


POSTGRES_DSN = "ALIAK_TEST_POSTGRES_DSN"
POSTGRES_CTL = "ALIAK_TEST_POSTGRES_CTL"


@pytest.fixture
def postgres_keys(clock: Clock) -> Iterator[tuple[KeyManager, str]]:
    dsn = os.environ.get(POSTGRES_DSN)
    if not dsn:
        pytest.skip(f"set {POSTGRES_DSN} to test against a server")
    psycopg = pytest.importorskip("psycopg")
    from aliak.sealing import MasterKeyring
    from aliak.storage.postgres import PostgresStore

    schema = f"aliak_keys_test_{secrets.token_hex(6)}"
    store = PostgresStore(
        dsn, schema=schema, master_key=MasterKeyring.generate(), connect_timeout=0.5
    )
    try:
        yield KeyManager(store, clock=clock), schema
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_stopped_postgres_server_refuses_everything_as_service_unavailable(
    postgres_keys: tuple[KeyManager, str], clock: Clock
) -> None:
    if not os.environ.get(POSTGRES_CTL):
        pytest.skip(f"set {POSTGRES_CTL} to stop and restart the server")
    import psycopg

    keys, _ = postgres_keys
    subjects = populate(keys, clock)
    subprocess.run([os.environ[POSTGRES_CTL], "stop"], check=True, timeout=60)
    try:
        results = outcomes(keys, subjects, READS | WRITES, thread=False)
    finally:
        subprocess.run([os.environ[POSTGRES_CTL], "start"], check=False, timeout=60)
    assert_refused_as(results, ServiceUnavailable, "ServiceUnavailable")
    assert all(isinstance(result.__cause__, psycopg.Error) for result in results.values())  # type: ignore[union-attr]


def test_a_postgres_error_that_is_not_an_outage_is_an_internal_error(
    postgres_keys: tuple[KeyManager, str], clock: Clock
) -> None:
    import psycopg

    keys, schema = postgres_keys
    subjects = populate(keys, clock)
    with psycopg.connect(os.environ[POSTGRES_DSN], autocommit=True) as connection:
        # Every table gone from under the store: the server answers, with an error.
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    results = outcomes(keys, subjects, READS | WRITES, thread=False)
    assert_refused_as(results, InternalError, "InternalError")
    assert not any(isinstance(result, ServiceUnavailable) for result in results.values())
