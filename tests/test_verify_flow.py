"""The one verify flow: which store I/O each kind of request costs, in both shells.

The flow asks for I/O in steps; a shell only performs them. These tests watch the store
from below, so they hold for the sync and the async shell alike: a warm cache hit asks
for nothing but the nonce claim, a refusal before the key lookup asks for nothing, and
an engine's exception never escapes as itself.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs
import pytest

from aliak import (
    AccessKey,
    AliakError,
    KeyManager,
    MemoryStore,
    RamRole,
    RamUser,
    Request,
    Signer,
)
from aliak.errors import ServiceUnavailable
from aliak.sealing import MasterKeyring
from aliak.storage.protocols import PolicyTarget
from conftest import MakeVerifier

NOW = 1_700_000_000.0
OWNER = RamUser("1234567890123456", "flow")


class WatchedStore(MemoryStore):
    """A MemoryStore that records every read and claim the verifier makes, and can be
    told to fail a call the way an engine would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def _note(self, name: str) -> None:
        self.calls.append(name)
        failure = self.fail.get(name)
        if failure is not None:
            raise failure

    def get_key(self, access_key_id: str) -> Any:
        self._note("get_key")
        return super().get_key(access_key_id)

    def get_network_policy(self, target: PolicyTarget) -> Any:
        self._note(f"get_network_policy:{target.level}")
        return super().get_network_policy(target)

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        self._note("claim_nonce")
        return super().claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    def reload_keyring(self) -> MasterKeyring:
        self._note("reload_keyring")
        return super().reload_keyring()


def signed(access_key: Any, nonce: str) -> Request:
    signer = Signer(access_key, clock=lambda: NOW, nonce_factory=lambda: nonce)
    return signer.sign(
        Request("GET", host="api.example.com", path="/v1/items"),
        action="ListItems",
        version="2024-01-01",
    )


@pytest.fixture
def store() -> WatchedStore:
    return WatchedStore()


COLD = ["get_key", "get_network_policy:key", "get_network_policy:account", "claim_nonce"]


def test_a_cold_request_reads_key_and_policies_then_a_warm_one_only_claims(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    key = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    verifier = make_verifier(store, clock=lambda: NOW)
    verifier.verify(signed(key.access_key, "nonce-1"))
    assert store.calls == COLD
    store.calls.clear()
    verifier.verify(signed(key.access_key, "nonce-2"))
    assert store.calls == ["claim_nonce"]
    verifier.invalidate(key.access_key_id)  # a change announced: the next one is cold
    store.calls.clear()
    verifier.verify(signed(key.access_key, "nonce-3"))
    assert store.calls == COLD


def test_a_refusal_before_the_lookup_asks_for_nothing(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    key = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    verifier = make_verifier(store, clock=lambda: NOW + 3600)  # the date is an hour old
    with pytest.raises(AliakError) as caught:
        verifier.verify(signed(key.access_key, "nonce-1"))
    assert caught.value.code == "InvalidTimeStamp.Expired"
    assert store.calls == []


def test_an_unknown_id_costs_one_lookup_and_then_none(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(store, clock=lambda: NOW)
    stranger = AccessKey("LTAI" + "x" * 20, "not-a-real-secret")
    for nonce in ("nonce-1", "nonce-2"):
        with pytest.raises(AliakError) as caught:
            verifier.verify(signed(stranger, nonce))
        assert caught.value.code == "InvalidAccessKeyId.NotFound"
    assert store.calls == ["get_key"]


def test_an_sts_credential_reads_no_key_record(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    keys = KeyManager(store, clock=lambda: NOW)
    credential = keys.assume_role(RamRole("1234567890123456", "Deployer"), session_name="ci")
    verifier = make_verifier(store, clock=lambda: NOW)
    verifier.verify(signed(credential, "nonce-1"))
    verifier.verify(signed(credential, "nonce-2"))
    assert store.calls == ["claim_nonce", "claim_nonce"]


def test_a_key_sealed_under_a_newer_master_key_reloads_the_keyring_once(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    keys = KeyManager(store, clock=lambda: NOW)
    key = keys.create_access_key(OWNER)
    verifier = make_verifier(store, clock=lambda: NOW)
    # Another process rotated the master key and re-sealed the secret; this process
    # still holds the old keyring until it reloads.
    old = store.keyring
    keys.rotate_master_key()
    rotated = store.keyring
    store.set_keyring(old)
    store.reload_keyring = lambda: (store._note("reload_keyring"), rotated)[1]  # type: ignore[method-assign]
    store.calls.clear()
    verifier.verify(signed(key.access_key, "nonce-1"))
    assert store.calls.count("reload_keyring") == 1


@pytest.mark.parametrize(
    "failing",
    ["get_key", "get_network_policy:key", "get_network_policy:account", "claim_nonce"],
)
def test_an_engine_exception_fails_closed_as_internal_error(
    store: WatchedStore, make_verifier: MakeVerifier, failing: str
) -> None:
    key = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    verifier = make_verifier(store, clock=lambda: NOW)
    engine_error = sqlite3.OperationalError("disk I/O error")
    store.fail[failing] = engine_error
    with pytest.raises(AliakError) as caught:
        verifier.verify(signed(key.access_key, "nonce-1"))
    assert (caught.value.code, caught.value.http_status) == ("InternalError", 500)
    assert caught.value.__cause__ is engine_error
    assert "disk I/O error" not in str(caught.value)  # the engine's text stays inside


@pytest.mark.parametrize("profile", ["alibaba", "opaque"])
def test_a_stores_own_refusal_stands_as_it_is(
    store: WatchedStore, make_verifier: MakeVerifier, profile: str
) -> None:
    key = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    verifier = make_verifier(store, clock=lambda: NOW, error_profile=profile)
    store.fail["get_key"] = ServiceUnavailable(detail="engine down")
    with pytest.raises(AliakError) as caught:
        verifier.verify(signed(key.access_key, "nonce-1"))
    # A server failure is not a refusal: the opaque profile does not hide it either.
    assert (caught.value.code, caught.value.http_status) == ("ServiceUnavailable", 503)


def test_a_wrong_python_type_is_a_type_error(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(store, clock=lambda: NOW)
    with pytest.raises(TypeError, match=r"aliak\.Request"):
        verifier.verify(attrs.asdict)  # type: ignore[arg-type]
    assert store.calls == []


class UnreadableBody:
    """A body stream that fails the test if anything reads it."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("precheck read the body")


def test_precheck_refuses_what_verify_would_without_the_store_or_the_body(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    key = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    signed_request = attrs.evolve(signed(key.access_key, "nonce-1"), body=UnreadableBody())
    store.calls.clear()
    late = make_verifier(store, clock=lambda: NOW + 3600)
    unsigned = attrs.evolve(
        signed_request,
        headers=[(n, v) for n, v in signed_request.headers.items() if n != "Authorization"],
    )
    with pytest.raises(AliakError) as stale:
        late.precheck(signed_request)
    assert stale.value.code == "InvalidTimeStamp.Expired"
    with pytest.raises(AliakError) as missing:
        late.precheck(unsigned)
    assert missing.value.code == "IncompleteSignature"
    on_time = make_verifier(store, clock=lambda: NOW)
    on_time.precheck(signed_request)
    assert store.calls == []  # nothing claimed: verify() still runs every check


def test_precheck_speaks_the_opaque_profile_too(
    store: WatchedStore, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(store, clock=lambda: NOW, error_profile="opaque")
    with pytest.raises(AliakError) as caught:
        verifier.precheck(Request("GET", host="api.example.com"))
    assert caught.value.code == "AccessDenied"
    assert caught.value.reason.code == "IncompleteSignature"  # type: ignore[attr-defined]
