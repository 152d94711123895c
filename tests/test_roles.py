"""RAM roles administered through KeyManager and ``aliak roles``, and the trust decision."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aliak import (
    Account,
    AssumedRole,
    EntityAlreadyExistsRole,
    EntityNotExistRole,
    InvalidParameter,
    KeyManager,
    MemoryStore,
    NoPermission,
    RamRole,
    RamUser,
    RolesNotSupported,
)
from aliak.roles import check_trust, normalize_trusted_principal, trust_policy_document

ACCOUNT = "1234567890123456"
OTHER = "6543210987654321"


@pytest.fixture
def manager() -> KeyManager:
    return KeyManager(MemoryStore(), actor="ops@example")


def deployer(manager: KeyManager, *trusted: str, **options: Any) -> Any:
    return manager.create_role(
        RamRole(ACCOUNT, "Deployer"),
        trusted=list(trusted) or [f"acs:ram::{ACCOUNT}:user/ci"],
        **options,
    )


# -- the trust decision --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "caller", "allowed"),
    [
        (f"acs:ram::{ACCOUNT}:user/ci", RamUser(ACCOUNT, "ci"), True),
        (f"acs:ram::{ACCOUNT}:user/ci", RamUser(ACCOUNT, "CI"), True),  # names: any case
        (f"acs:ram::{ACCOUNT}:user/ci", RamUser(ACCOUNT, "ci2"), False),
        (f"acs:ram::{ACCOUNT}:user/ci", RamUser(OTHER, "ci"), False),
        (f"acs:ram::{ACCOUNT}:root", RamUser(ACCOUNT, "anyone"), True),
        (f"acs:ram::{ACCOUNT}:root", RamUser(OTHER, "anyone"), False),
        (f"acs:ram::{ACCOUNT}:root", AssumedRole(RamRole(ACCOUNT, "r"), "s1"), True),
        (f"acs:ram::{ACCOUNT}:role/r", AssumedRole(RamRole(ACCOUNT, "R"), "s1"), True),
        (f"acs:ram::{ACCOUNT}:role/r", AssumedRole(RamRole(OTHER, "r"), "s1"), False),
        (f"acs:ram::{ACCOUNT}:role/r", RamUser(ACCOUNT, "r"), False),  # a user is no role
        (f"acs:ram::{ACCOUNT}:user/r", AssumedRole(RamRole(ACCOUNT, "r"), "s1"), False),
    ],
)
def test_who_a_trust_admits(manager: KeyManager, trusted: str, caller: Any, allowed: bool) -> None:
    record = deployer(manager, trusted)
    if allowed:
        check_trust(record, caller, external_id=None)
    else:
        with pytest.raises(NoPermission):
            check_trust(record, caller, external_id=None)


def test_an_account_root_key_is_refused_whatever_the_trust(manager: KeyManager) -> None:
    record = deployer(manager, f"acs:ram::{ACCOUNT}:root")
    with pytest.raises(NoPermission, match="root accounts"):
        check_trust(record, Account(ACCOUNT), external_id=None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        f"acs:ram::{ACCOUNT}:*",
        f"acs:ram::{ACCOUNT}:user/*",
        f"acs:ram::{ACCOUNT}:group/devs",
        f"acs:ram::{ACCOUNT}:user/",
        f"acs:ram::{ACCOUNT}:root ",
        f"acs:ram:{ACCOUNT}:root",
        f"acs:ram::{ACCOUNT}:user/a/b",
        "acs:ram:::root",
        f"ACS:RAM::{ACCOUNT}:root",
    ],
)
def test_only_exact_principal_arns_are_trusted(text: str) -> None:
    with pytest.raises(InvalidParameter):
        normalize_trusted_principal(text)


def test_principal_names_are_stored_in_lower_case() -> None:
    assert normalize_trusted_principal(f"acs:ram::{ACCOUNT}:user/CI.Bot") == (
        f"acs:ram::{ACCOUNT}:user/ci.bot"
    )


# -- KeyManager -----------------------------------------------------------------------------


def test_create_get_list_update_delete(manager: KeyManager) -> None:
    created = deployer(manager, f"acs:ram::{ACCOUNT}:user/CI", description="ships builds")
    assert created.trusted == (f"acs:ram::{ACCOUNT}:user/ci",)
    assert manager.get_role(ACCOUNT, "deployer") == created
    assert [r.name for r in manager.list_roles(ACCOUNT)] == ["Deployer"]
    updated = manager.update_role(
        ACCOUNT, "DEPLOYER", max_session_duration=43_200, trusted=[f"acs:ram::{ACCOUNT}:root"]
    )
    assert (updated.role_id, updated.created) == (created.role_id, created.created)
    assert updated.role.max_session_duration == 43_200
    assert updated.description == "ships builds"
    assert manager.get_role(ACCOUNT, "Deployer").trusted == (f"acs:ram::{ACCOUNT}:root",)
    manager.delete_role(ACCOUNT, "Deployer")
    with pytest.raises(EntityNotExistRole):
        manager.get_role(ACCOUNT, "Deployer")
    with pytest.raises(EntityNotExistRole):
        manager.delete_role(ACCOUNT, "Deployer")
    actions = [(e.action, e.actor) for e in manager.audit_events() if "Role" in e.action]
    assert actions == [
        ("CreateRole", "ops@example"),
        ("UpdateRole", "ops@example"),
        ("DeleteRole", "ops@example"),
    ]


def test_a_second_role_of_the_same_name_in_any_case_is_refused(manager: KeyManager) -> None:
    deployer(manager)
    with pytest.raises(EntityAlreadyExistsRole):
        manager.create_role(RamRole(ACCOUNT, "DEPLOYER"), trusted=[f"acs:ram::{ACCOUNT}:root"])


def test_a_role_trusts_somebody(manager: KeyManager) -> None:
    with pytest.raises(InvalidParameter, match="Principal"):
        manager.create_role(RamRole(ACCOUNT, "Nobody"), trusted=[])
    with pytest.raises(TypeError):
        manager.create_role(RamRole(ACCOUNT, "Nobody"), trusted=f"acs:ram::{ACCOUNT}:root")  # type: ignore[arg-type]
    assert manager.list_roles(ACCOUNT) == []


def test_updating_a_missing_role_is_entity_not_exist(manager: KeyManager) -> None:
    with pytest.raises(EntityNotExistRole):
        manager.update_role(ACCOUNT, "ghost", description="x")


def test_the_external_id_is_never_shown(manager: KeyManager) -> None:
    record = deployer(manager, external_id="s3cr3t-ext-id")
    assert "s3cr3t" not in repr(record)
    assert "s3cr3t" not in json.dumps(record.to_dict())
    assert "s3cr3t" not in trust_policy_document(record)
    assert all("s3cr3t" not in e.detail for e in manager.audit_events())
    cleared = manager.update_role(ACCOUNT, "Deployer", external_id=None)
    assert cleared.external_id is None


def test_a_store_without_roles_says_so() -> None:
    manager = KeyManager(object())  # type: ignore[arg-type]
    with pytest.raises(RolesNotSupported):
        manager.list_roles(ACCOUNT)


# -- aliak roles ----------------------------------------------------------------------------


def aliak(
    db: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aliak", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_the_cli_manages_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "aliak.db"
    done = aliak(db, "roles", "create", "--account", ACCOUNT, "--name", "Deployer",
                 "--trust", f"acs:ram::{ACCOUNT}:user/ci", "--max-session-duration", "7200")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "acs:ram::1234567890123456:role/deployer" in done.stdout
    listed = aliak(db, "roles", "list", "--account", ACCOUNT, "--json")
    assert [r["RoleName"] for r in json.loads(listed.stdout)] == ["Deployer"]
    env = {**dict(__import__("os").environ), "ALIAK_ROLE_EXTERNAL_ID": "ext-from-env"}
    updated = aliak(db, "roles", "update", "--account", ACCOUNT, "--name", "deployer",
                    "--external-id-from-env", "--json", env=env)  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    shown = json.loads(updated.stdout)
    assert shown["ExternalId"] == "set"
    assert "ext-from-env" not in updated.stdout + updated.stderr
    assert shown["MaxSessionDuration"] == 7200
    again = aliak(db, "roles", "create", "--account", ACCOUNT, "--name", "DEPLOYER",
                  "--trust", f"acs:ram::{ACCOUNT}:root")  # fmt: skip
    assert again.returncode != 0
    assert "EntityAlreadyExists.Role" in again.stderr
    deleted = aliak(db, "roles", "delete", "--account", ACCOUNT, "--name", "Deployer")
    assert deleted.returncode == 0, deleted.stderr
    assert "no roles" in aliak(db, "roles", "list", "--account", ACCOUNT).stdout


def test_a_refused_role_command_creates_no_store(tmp_path: Path) -> None:
    db = tmp_path / "aliak.db"
    done = aliak(db, "roles", "create", "--account", ACCOUNT, "--name", "x",
                 "--trust", "acs:ram::1:group/devs")  # fmt: skip
    assert done.returncode != 0
    assert "Principal" in done.stderr
    assert not db.exists()
