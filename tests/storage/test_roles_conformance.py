"""The RoleStore port on every backend (``conftest.BACKENDS``): RAM roles as records."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aliak.model import AuditEvent, RamRole
from aliak.roles import RoleRecord, new_role_id
from aliak.storage.protocols import RoleStore

from .conftest import ACCOUNT as OWNER
from .conftest import BackendStore, at
from .test_conformance import THREADS, run_together

ACCOUNT = OWNER.account_id
OTHER_ACCOUNT = "9999999999999999"


def role(name: str = "Deployer", account: str = ACCOUNT, **changes: object) -> RoleRecord:
    options: dict[str, object] = {
        "role_id": new_role_id(),
        "trusted": (f"acs:ram::{account}:root",),
        "created": at(0),
        **changes,
    }
    return RoleRecord(RamRole(account, name), **options)  # type: ignore[arg-type]


def event(action: str) -> AuditEvent:
    return AuditEvent(at=at(1), actor="test", action=action, account_id=ACCOUNT)


def roles_of(store: BackendStore) -> RoleStore:
    assert isinstance(store, RoleStore)
    return store


def role_events(store: BackendStore) -> list[str]:
    return [e.action for e in store.audit_events(owner=OWNER) if "Role" in e.action]


def test_a_created_role_reads_back_whole(store: BackendStore) -> None:
    record = role(description="deploys", external_id="ext-123", trusted=(
        f"acs:ram::{ACCOUNT}:user/ci", f"acs:ram::{OTHER_ACCOUNT}:role/builder",
    ))  # fmt: skip
    assert roles_of(store).put_role(record, create=True, audit=event("CreateRole"))
    assert roles_of(store).get_role(ACCOUNT, "Deployer") == record
    assert roles_of(store).get_role(ACCOUNT, "Deployer").external_id == "ext-123"  # type: ignore[union-attr]


def test_role_names_are_unique_and_found_regardless_of_case(store: BackendStore) -> None:
    first = role("Deployer")
    assert roles_of(store).put_role(first, create=True, audit=event("CreateRole"))
    assert roles_of(store).get_role(ACCOUNT, "DEPLOYER") == first
    assert not roles_of(store).put_role(role("deployer"), create=True, audit=event("CreateRole"))
    # The refused create changed nothing and recorded nothing.
    assert roles_of(store).get_role(ACCOUNT, "deployer") == first
    assert role_events(store) == ["CreateRole"]


def test_roles_are_kept_per_account_and_listed_by_name(store: BackendStore) -> None:
    for name in ("zeta", "Alpha", "mid"):
        roles_of(store).put_role(role(name), create=True)
    roles_of(store).put_role(role("alpha", account=OTHER_ACCOUNT), create=True)
    assert [r.name for r in roles_of(store).list_roles(ACCOUNT)] == ["Alpha", "mid", "zeta"]
    assert [r.name for r in roles_of(store).list_roles(OTHER_ACCOUNT)] == ["alpha"]
    assert roles_of(store).list_roles("1111") == []
    assert roles_of(store).get_role(OTHER_ACCOUNT, "zeta") is None


def test_replacing_needs_the_role_to_exist(store: BackendStore) -> None:
    record = role()
    assert not roles_of(store).put_role(record, create=False, audit=event("UpdateRole"))
    assert roles_of(store).get_role(ACCOUNT, "Deployer") is None
    roles_of(store).put_role(record, create=True)
    changed = RoleRecord(
        RamRole(ACCOUNT, "Deployer", max_session_duration=7200),
        role_id=record.role_id,
        trusted=(f"acs:ram::{ACCOUNT}:user/alice",),
        created=record.created,
    )
    assert roles_of(store).put_role(changed, create=False, audit=event("UpdateRole"))
    stored = roles_of(store).get_role(ACCOUNT, "deployer")
    assert stored == changed
    assert stored is not None
    assert stored.role.max_session_duration == 7200
    assert role_events(store) == ["UpdateRole"]


def test_deleting_removes_the_role_once(store: BackendStore) -> None:
    roles_of(store).put_role(role(), create=True)
    assert roles_of(store).delete_role(ACCOUNT, "DePloYer", audit=event("DeleteRole"))
    assert roles_of(store).get_role(ACCOUNT, "Deployer") is None
    assert not roles_of(store).delete_role(ACCOUNT, "Deployer", audit=event("DeleteRole"))
    assert role_events(store) == ["DeleteRole"]


def test_concurrent_creates_of_one_name_make_exactly_one_role(store: BackendStore) -> None:
    candidates = [role("Racer", trusted=(f"acs:ram::{ACCOUNT}:user/u{i}",)) for i in range(THREADS)]
    outcomes = run_together(
        THREADS,
        lambda i: roles_of(store).put_role(candidates[i], create=True, audit=event("CreateRole")),
    )
    assert sorted(map(repr, outcomes)) == ["False"] * (THREADS - 1) + ["True"]
    winner = candidates[outcomes.index(True)]
    assert roles_of(store).get_role(ACCOUNT, "racer") == winner
    assert role_events(store) == ["CreateRole"]


def test_another_store_object_sees_the_roles(
    store: BackendStore, reopen_store: Callable[[BackendStore], BackendStore]
) -> None:
    record = role()
    roles_of(store).put_role(record, create=True)
    other = reopen_store(store)
    assert roles_of(other).get_role(ACCOUNT, "deployer") == record
    assert roles_of(other).delete_role(ACCOUNT, "deployer")
    assert roles_of(store).get_role(ACCOUNT, "deployer") is None


@pytest.mark.parametrize("name", ["a", "Role.With-All_Chars", "x" * 64])
def test_every_valid_role_name_round_trips(store: BackendStore, name: str) -> None:
    record = role(name)
    roles_of(store).put_role(record, create=True)
    assert roles_of(store).get_role(ACCOUNT, name.upper()) == record
