"""The storage conformance suite: every guarantee of ``aliak.storage.protocols``.

Each test runs against every backend in ``conftest.BACKENDS``. A backend is done when
this file is green against the real engine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Literal

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliak import AccessKey, KeyManager, Request, Signer
from aliak.acl import NetworkPolicy
from aliak.credentials import Secret
from aliak.errors import (
    AccessKeyAlreadyExists,
    AccessKeyLimitExceeded,
    AccessKeyNotFound,
    AccessKeyNotInactive,
    AccessKeyNotInRecycleBin,
    AliakError,
    InvalidParameter,
)
from aliak.model import (
    MAX_KEYS_IN_RECYCLE_BIN,
    RECYCLE_BIN_RETENTION,
    Account,
    AuditEvent,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    RamUser,
    SourceIpUse,
    UsageRecord,
)
from aliak.storage.protocols import AsyncStore, InvalidationChannel, PolicyTarget
from conftest import MakeVerifier, ShellVerifier

from .conftest import (
    ACCOUNT,
    ALICE,
    BOB,
    Backend,
    BackendStore,
    at,
    hmac_record,
    new_key_id,
    rsa_record,
    ts,
)

THREADS = 8


def run_together(count: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` on ``count`` threads released at the same instant."""
    start = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def worker(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = action(index)
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def use(key_id: str, used_at: int, service: str = "Ecs", ip: str | None = None) -> UsageRecord:
    return UsageRecord(key_id, ts(used_at), service, ip, ts(used_at))


# -- KeyStore: records ----------------------------------------------------------------


def test_unknown_key_id_gives_none(store: BackendStore) -> None:
    assert store.get_key("LTAIneverStoredAnywhere0") is None


def test_hmac_key_of_a_ram_user_round_trips(store: BackendStore) -> None:
    record = hmac_record(ALICE)
    store.add_key(record, max_keys_per_owner=2)
    assert store.get_key(record.access_key_id) == record


def test_rsa_key_of_a_root_account_round_trips(store: BackendStore) -> None:
    record = rsa_record(ACCOUNT)
    store.add_key(record, max_keys_per_owner=2)
    stored = store.get_key(record.access_key_id)
    assert stored == record
    assert stored is not None
    assert stored.is_root_key
    assert stored.sealed_secret is None


def test_inactive_status_round_trips(store: BackendStore) -> None:
    record = hmac_record(status=KeyStatus.INACTIVE)
    store.add_key(record, max_keys_per_owner=2)
    assert store.get_key(record.access_key_id) == record


def test_recycle_bin_fields_and_leak_flag_round_trip(store: BackendStore) -> None:
    record = hmac_record(status=KeyStatus.INACTIVE, recycled_at=at(3600), leak_restricted=True)
    store.add_key(record, max_keys_per_owner=2)
    stored = store.get_key(record.access_key_id)
    assert stored == record
    assert stored is not None
    assert stored.in_recycle_bin
    assert stored.purge_at == at(3600) + timedelta(days=30)


def test_stored_datetimes_come_back_equal_and_in_utc(store: BackendStore) -> None:
    record = hmac_record(created_at=at(59), recycled_at=at(86_400))
    store.add_key(record, max_keys_per_owner=2)
    stored = store.get_key(record.access_key_id)
    assert stored is not None
    for moment in (stored.created_at, stored.recycled_at):
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)
    assert (stored.created_at, stored.recycled_at) == (at(59), at(86_400))


def test_stored_secret_opens_with_the_keyring_that_sealed_it(store: BackendStore) -> None:
    key_id = new_key_id()
    sealed = store.keyring.seal_secret(key_id, Secret("s3cr3t"))
    store.add_key(hmac_record(access_key_id=key_id, sealed_secret=sealed), max_keys_per_owner=2)
    stored = store.get_key(key_id)
    assert stored is not None
    assert stored.sealed_secret is not None
    assert store.keyring.open_secret(key_id, stored.sealed_secret) == Secret("s3cr3t")


def test_reload_keyring_returns_a_keyring_that_opens_what_the_store_sealed(
    store: BackendStore,
) -> None:
    sealed = store.keyring.seal_secret("LTAIreload", Secret("s3cr3t"))
    assert store.reload_keyring().open_secret("LTAIreload", sealed) == Secret("s3cr3t")
    assert store.keyring.open_secret("LTAIreload", sealed) == Secret("s3cr3t")


# -- KeyStore: add_key and its limit ---------------------------------------------------


def test_duplicate_id_is_refused(store: BackendStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=5)
    with pytest.raises(AccessKeyAlreadyExists):
        store.add_key(record, max_keys_per_owner=5)


def test_duplicate_id_is_refused_for_another_owner(store: BackendStore) -> None:
    record = hmac_record(ALICE)
    store.add_key(record, max_keys_per_owner=5)
    with pytest.raises(AccessKeyAlreadyExists):
        store.add_key(attrs.evolve(record, owner=BOB), max_keys_per_owner=5)
    assert store.list_keys(BOB) == []


def test_duplicate_of_a_key_in_the_recycle_bin_is_refused(store: BackendStore) -> None:
    record = hmac_record(status=KeyStatus.INACTIVE, recycled_at=at(10))
    store.add_key(record, max_keys_per_owner=5)
    with pytest.raises(AccessKeyAlreadyExists):
        store.add_key(attrs.evolve(record, recycled_at=None), max_keys_per_owner=5)


def test_owner_limit_is_enforced(store: BackendStore) -> None:
    store.add_key(hmac_record(ALICE), max_keys_per_owner=2)
    store.add_key(hmac_record(ALICE), max_keys_per_owner=2)
    refused = hmac_record(ALICE)
    with pytest.raises(AccessKeyLimitExceeded):
        store.add_key(refused, max_keys_per_owner=2)
    assert store.get_key(refused.access_key_id) is None


def test_inactive_keys_count_toward_the_limit(store: BackendStore) -> None:
    store.add_key(hmac_record(ALICE, status=KeyStatus.INACTIVE), max_keys_per_owner=1)
    with pytest.raises(AccessKeyLimitExceeded):
        store.add_key(hmac_record(ALICE), max_keys_per_owner=1)


def test_keys_in_the_recycle_bin_do_not_count_toward_the_limit(store: BackendStore) -> None:
    for _ in range(3):
        binned = hmac_record(ALICE, status=KeyStatus.INACTIVE, recycled_at=at(5))
        store.add_key(binned, max_keys_per_owner=2)
    store.add_key(hmac_record(ALICE), max_keys_per_owner=2)
    store.add_key(hmac_record(ALICE), max_keys_per_owner=2)
    assert len(store.list_keys(ALICE)) == 2


def test_limit_is_counted_per_owner(store: BackendStore) -> None:
    for owner in (ALICE, BOB, ACCOUNT, Account("6543210987654321")):
        store.add_key(hmac_record(owner), max_keys_per_owner=1)
    assert all(len(store.list_keys(owner)) == 1 for owner in (ALICE, BOB, ACCOUNT))


def test_concurrent_adds_for_one_owner_never_pass_the_limit(store: BackendStore) -> None:
    records = [hmac_record(ALICE) for _ in range(THREADS)]
    outcomes = run_together(THREADS, lambda i: store.add_key(records[i], max_keys_per_owner=2))
    assert sum(outcome is None for outcome in outcomes) == 2
    refusals = [outcome for outcome in outcomes if outcome is not None]
    assert all(isinstance(outcome, AccessKeyLimitExceeded) for outcome in refusals)
    assert len(store.list_keys(ALICE)) == 2


# -- KeyStore: list_keys ---------------------------------------------------------------


def test_list_keys_is_oldest_first_with_ties_by_id(store: BackendStore) -> None:
    newest = hmac_record(created_at=at(30), access_key_id="LTAIaaaaaaaaaaaaaaaaaaaa")
    tie_b = hmac_record(created_at=at(10), access_key_id="LTAIbbbbbbbbbbbbbbbbbbbb")
    tie_a = hmac_record(created_at=at(10), access_key_id="LTAIAAAAAAAAAAAAAAAAAAAA")
    for record in (newest, tie_b, tie_a):
        store.add_key(record, max_keys_per_owner=5)
    assert store.list_keys(ALICE) == [tie_a, tie_b, newest]


def test_list_keys_leaves_out_the_recycle_bin(store: BackendStore) -> None:
    live = hmac_record()
    binned = hmac_record(status=KeyStatus.INACTIVE, recycled_at=at(60))
    store.add_key(live, max_keys_per_owner=5)
    store.add_key(binned, max_keys_per_owner=5)
    assert store.list_keys(ALICE) == [live]


def test_list_keys_gives_only_the_owners_keys(store: BackendStore) -> None:
    root, alices, bobs = hmac_record(ACCOUNT), hmac_record(ALICE), hmac_record(BOB)
    for record in (root, alices, bobs):
        store.add_key(record, max_keys_per_owner=5)
    assert store.list_keys(ACCOUNT) == [root]
    assert store.list_keys(ALICE) == [alices]


def test_list_keys_of_an_owner_without_keys_is_empty(store: BackendStore) -> None:
    assert store.list_keys(RamUser("1234567890123456", "nobody")) == []


# -- KeyStore: status, reseal, iteration ------------------------------------------------


def test_set_key_status_returns_and_keeps_the_updated_record(store: BackendStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=2)
    updated = store.set_key_status(record.access_key_id, KeyStatus.INACTIVE)
    assert updated == attrs.evolve(record, status=KeyStatus.INACTIVE)
    assert store.get_key(record.access_key_id) == updated


def test_set_key_status_can_enable_again(store: BackendStore) -> None:
    record = hmac_record(status=KeyStatus.INACTIVE)
    store.add_key(record, max_keys_per_owner=2)
    assert store.set_key_status(record.access_key_id, KeyStatus.ACTIVE).status is KeyStatus.ACTIVE


def test_set_key_status_of_an_unknown_id_raises_not_found(store: BackendStore) -> None:
    with pytest.raises(AccessKeyNotFound):
        store.set_key_status("LTAIneverStoredAnywhere0", KeyStatus.INACTIVE)


def test_reseal_replaces_the_secret_when_it_still_matches(store: BackendStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=2)
    assert record.sealed_secret is not None
    new = store.keyring.seal_secret(record.access_key_id, Secret("resealed"))
    assert store.reseal_secret(record.access_key_id, record.sealed_secret, new) is True
    stored = store.get_key(record.access_key_id)
    assert stored is not None
    assert stored.sealed_secret == new


def test_reseal_with_a_stale_old_value_changes_nothing(store: BackendStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=2)
    assert record.sealed_secret is not None
    first = store.keyring.seal_secret(record.access_key_id, Secret("first"))
    second = store.keyring.seal_secret(record.access_key_id, Secret("second"))
    assert store.reseal_secret(record.access_key_id, record.sealed_secret, first) is True
    assert store.reseal_secret(record.access_key_id, record.sealed_secret, second) is False
    stored = store.get_key(record.access_key_id)
    assert stored is not None
    assert stored.sealed_secret == first


def test_reseal_of_an_unknown_id_is_false(store: BackendStore) -> None:
    assert store.reseal_secret("LTAIneverStoredAnywhere0", b"old", b"new") is False


def test_iter_sealed_secrets_gives_every_sealed_secret_including_the_bin(
    store: BackendStore,
) -> None:
    live = hmac_record()
    binned = hmac_record(status=KeyStatus.INACTIVE, recycled_at=at(1))
    rsa = rsa_record()
    for record in (live, binned, rsa):
        store.add_key(record, max_keys_per_owner=5)
    assert sorted(store.iter_sealed_secrets()) == sorted(
        [
            (live.access_key_id, live.sealed_secret),
            (binned.access_key_id, binned.sealed_secret),
        ]
    )


def test_iter_sealed_secrets_of_an_empty_store_is_empty(store: BackendStore) -> None:
    assert list(store.iter_sealed_secrets()) == []


# -- NonceStore -------------------------------------------------------------------------

NOW = 1_700_000_000.0
LATER = NOW + 1800.0


def test_first_claim_of_a_nonce_succeeds(store: BackendStore) -> None:
    assert store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is True


def test_replayed_nonce_is_refused(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    assert store.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=LATER + 1) is False


def test_same_nonce_under_another_key_is_a_separate_claim(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    assert store.claim_nonce("LTAIother", "n-1", now=NOW, expires_at=LATER) is True


def test_claim_is_remembered_until_just_before_it_expires(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    assert store.claim_nonce("LTAIkey", "n-1", now=LATER - 0.001, expires_at=LATER + 9) is False


def test_expired_claim_can_be_claimed_again(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    assert store.claim_nonce("LTAIkey", "n-1", now=LATER, expires_at=LATER + 1800) is True


def test_reclaimed_nonce_is_held_until_its_new_expiry(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    store.claim_nonce("LTAIkey", "n-1", now=LATER, expires_at=LATER + 1800)
    assert store.claim_nonce("LTAIkey", "n-1", now=LATER + 1799, expires_at=LATER + 9e3) is False


def test_refused_replay_does_not_extend_the_claim(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    store.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=LATER + 10_000)
    assert store.claim_nonce("LTAIkey", "n-1", now=LATER, expires_at=LATER + 1) is True


def test_concurrent_claims_of_one_nonce_let_exactly_one_through(store: BackendStore) -> None:
    outcomes = run_together(
        THREADS, lambda i: store.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER)
    )
    assert sorted(outcomes, key=repr) == [False] * (THREADS - 1) + [True]


def test_prune_deletes_expired_claims_and_counts_them(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "old-1", now=NOW, expires_at=NOW + 10)
    store.claim_nonce("LTAIkey", "old-2", now=NOW, expires_at=NOW + 20)
    store.claim_nonce("LTAIkey", "live", now=NOW, expires_at=NOW + 21)
    assert store.prune_nonces(NOW + 20) == 2
    assert store.prune_nonces(NOW + 20) == 0


def test_fractional_expiry_is_never_rounded_down(store: BackendStore) -> None:
    # Record times may lose their fractions; a claim's expiry may only be rounded up,
    # or a replay could pass in the last fraction of a second before it.
    expires_at = NOW + 10.75
    store.claim_nonce("LTAIkey", "frac", now=NOW, expires_at=expires_at)
    assert store.prune_nonces(NOW + 10.5) == 0
    assert store.claim_nonce("LTAIkey", "frac", now=NOW + 10.5, expires_at=LATER) is False
    assert store.claim_nonce("LTAIkey", "frac", now=expires_at, expires_at=LATER) is True


def test_sub_millisecond_expiry_is_held_to_its_end(store: BackendStore) -> None:
    expires_at = NOW + 10.0004
    store.claim_nonce("LTAIkey", "frac", now=NOW, expires_at=expires_at)
    assert store.claim_nonce("LTAIkey", "frac", now=NOW + 10.0003, expires_at=LATER) is False
    assert store.prune_nonces(NOW + 10.0003) == 0


def test_prune_never_forgets_a_live_claim(store: BackendStore) -> None:
    store.claim_nonce("LTAIkey", "live", now=NOW, expires_at=LATER)
    assert store.prune_nonces(LATER - 0.001) == 0
    assert store.claim_nonce("LTAIkey", "live", now=LATER - 0.001, expires_at=LATER) is False


# -- PolicyStore ------------------------------------------------------------------------

TARGETS = [PolicyTarget.account("1234567890123456"), PolicyTarget.key("LTAI00000000000000000001")]
POLICY = NetworkPolicy(
    public=["203.0.113.0/24", "2001:db8::/32"], vpcs={"vpc-bp1abc": ["10.0.0.0/8"]}
)


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.level)
def test_target_without_a_policy_gives_none(store: BackendStore, target: PolicyTarget) -> None:
    assert store.get_network_policy(target) is None


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.level)
def test_policy_round_trips(store: BackendStore, target: PolicyTarget) -> None:
    store.set_network_policy(target, POLICY)
    assert store.get_network_policy(target) == POLICY


def test_disabled_policy_with_no_public_rule_round_trips(store: BackendStore) -> None:
    policy = NetworkPolicy(public=None, vpcs={"AllowAllVPC": ["0.0.0.0/0", "::/0"]}, enabled=False)
    store.set_network_policy(TARGETS[0], policy)
    assert store.get_network_policy(TARGETS[0]) == policy


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.level)
def test_setting_a_policy_replaces_the_previous_one(
    store: BackendStore, target: PolicyTarget
) -> None:
    replacement = NetworkPolicy(public=["198.51.100.7"])
    store.set_network_policy(target, POLICY)
    store.set_network_policy(target, replacement)
    assert store.get_network_policy(target) == replacement


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.level)
def test_none_detaches_the_policy(store: BackendStore, target: PolicyTarget) -> None:
    store.set_network_policy(target, POLICY)
    store.set_network_policy(target, None)
    assert store.get_network_policy(target) is None


def test_detaching_where_nothing_is_attached_is_harmless(store: BackendStore) -> None:
    store.set_network_policy(TARGETS[1], None)
    assert store.get_network_policy(TARGETS[1]) is None


def test_account_and_key_targets_with_the_same_id_are_independent(store: BackendStore) -> None:
    account, key = PolicyTarget.account("shared-id"), PolicyTarget.key("shared-id")
    store.set_network_policy(account, POLICY)
    assert store.get_network_policy(key) is None
    store.set_network_policy(key, NetworkPolicy(public=["192.0.2.1"]))
    store.set_network_policy(account, None)
    assert store.get_network_policy(key) == NetworkPolicy(public=["192.0.2.1"])


def test_policies_of_different_accounts_are_independent(store: BackendStore) -> None:
    store.set_network_policy(PolicyTarget.account("111"), POLICY)
    assert store.get_network_policy(PolicyTarget.account("222")) is None


# -- UsageLog ---------------------------------------------------------------------------


@pytest.fixture
def key_id(store: BackendStore) -> str:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=5)
    return record.access_key_id


def test_key_never_used_has_no_last_use(store: BackendStore, key_id: str) -> None:
    assert store.get_last_used(key_id) is None
    stored = store.get_key(key_id)
    assert stored is not None
    assert stored.last_used is None
    assert store.source_ip_history(key_id) == []


def test_latest_use_in_a_batch_wins(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 20, "Ram"), use(key_id, 30, "Ecs"), use(key_id, 10, "Oss")])
    assert store.get_last_used(key_id) == LastUsed(at(30), "Ecs")


def test_older_batch_arriving_late_does_not_win(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 30, "Ecs")])
    store.record_usage([use(key_id, 20, "Ram")])
    assert store.get_last_used(key_id) == LastUsed(at(30), "Ecs")


def test_newer_batch_replaces_the_last_use(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 20, "Ram")])
    store.record_usage([use(key_id, 30, "Ecs")])
    assert store.get_last_used(key_id) == LastUsed(at(30), "Ecs")


def test_uses_at_the_same_second_merge_alike_in_either_order(
    open_store: Callable[[], BackendStore],
) -> None:
    results = []
    for batches in (["Ecs", "Ram"], ["Ram", "Ecs"]):
        store = open_store()
        record = hmac_record()
        store.add_key(record, max_keys_per_owner=5)
        for service in batches:
            store.record_usage([use(record.access_key_id, 30, service)])
        results.append(store.get_last_used(record.access_key_id))
    assert results[0] == results[1]


def test_usage_of_unknown_ids_is_ignored(store: BackendStore, key_id: str) -> None:
    store.record_usage([use("LTAIunknown", 30, ip="203.0.113.7"), use(key_id, 20)])
    assert store.get_last_used("LTAIunknown") is None
    assert store.source_ip_history("LTAIunknown") == []
    assert store.get_last_used(key_id) == LastUsed(at(20), "Ecs")


def test_empty_batch_is_harmless(store: BackendStore, key_id: str) -> None:
    store.record_usage([])
    assert store.get_last_used(key_id) is None


def test_last_use_is_visible_in_get_key(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 40, "Sts")])
    stored = store.get_key(key_id)
    assert stored is not None
    assert stored.last_used == LastUsed(at(40), "Sts")


def test_last_use_is_visible_in_list_keys(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 40, "Sts")])
    (listed,) = store.list_keys(ALICE)
    assert listed.last_used == LastUsed(at(40), "Sts")


def test_last_use_is_visible_in_set_key_status(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 40, "Sts")])
    updated = store.set_key_status(key_id, KeyStatus.INACTIVE)
    assert updated.last_used == LastUsed(at(40), "Sts")


def test_use_without_a_source_ip_leaves_no_ip_history(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 40, ip=None)])
    assert store.source_ip_history(key_id) == []
    assert store.get_last_used(key_id) == LastUsed(at(40), "Ecs")


def test_source_ip_keeps_the_earliest_first_and_latest_last_seen(
    store: BackendStore, key_id: str
) -> None:
    ip = "203.0.113.7"
    store.record_usage([UsageRecord(key_id, ts(50), "Ecs", ip, ts(40))])
    store.record_usage([UsageRecord(key_id, ts(30), "Ecs", ip, ts(10))])
    store.record_usage([UsageRecord(key_id, ts(45), "Ecs", ip, ts(20))])
    assert store.source_ip_history(key_id) == [SourceIpUse(ip, at(10), at(50))]


def test_source_ip_history_is_most_recently_seen_first(store: BackendStore, key_id: str) -> None:
    store.record_usage([use(key_id, 10, ip="192.0.2.1"), use(key_id, 30, ip="2001:db8::1")])
    store.record_usage([use(key_id, 20, ip="198.51.100.2")])
    history = store.source_ip_history(key_id)
    assert [entry.source_ip for entry in history] == ["2001:db8::1", "198.51.100.2", "192.0.2.1"]


def test_source_ip_history_since_keeps_ips_last_seen_at_or_after_it(
    store: BackendStore, key_id: str
) -> None:
    store.record_usage(
        [
            use(key_id, 10, ip="192.0.2.1"),
            use(key_id, 20, ip="192.0.2.2"),
            use(key_id, 30, ip="192.0.2.3"),
        ]
    )
    history = store.source_ip_history(key_id, since=at(20))
    assert [entry.source_ip for entry in history] == ["192.0.2.3", "192.0.2.2"]


def test_source_ip_history_is_per_key(store: BackendStore, key_id: str) -> None:
    other = hmac_record()
    store.add_key(other, max_keys_per_owner=5)
    store.record_usage(
        [use(key_id, 10, ip="192.0.2.1"), use(other.access_key_id, 10, ip="192.0.2.9")]
    )
    assert [entry.source_ip for entry in store.source_ip_history(key_id)] == ["192.0.2.1"]


# -- UsageLog: the bound on source-IP history ---------------------------------------------


def v6(n: int) -> str:
    """An address of one IPv6 /64: what a caller cycling through its block sends."""
    return f"2001:db8:0:1::{n:x}"


def ips_of(store: BackendStore, key_id: str) -> list[str]:
    return [entry.source_ip for entry in store.source_ip_history(key_id)]


def bounded_store(open_store: Callable[..., BackendStore], limit: int) -> tuple[BackendStore, str]:
    store = open_store(max_source_ips_per_key=limit)
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=5)
    return store, record.access_key_id


def test_source_ip_history_keeps_the_100_most_recent_addresses_by_default(
    store: BackendStore, key_id: str
) -> None:
    store.record_usage([use(key_id, n, ip=v6(n)) for n in range(1, 151)])
    assert ips_of(store, key_id) == [v6(n) for n in range(150, 50, -1)]


def test_source_ip_bound_holds_across_batches(open_store: Callable[..., BackendStore]) -> None:
    store, key_id = bounded_store(open_store, 3)
    for n in range(1, 11):
        store.record_usage([use(key_id, n, ip=v6(n))])
    assert ips_of(store, key_id) == [v6(10), v6(9), v6(8)]


def test_an_address_seen_again_stays_and_the_least_recently_seen_goes(
    open_store: Callable[..., BackendStore],
) -> None:
    store, key_id = bounded_store(open_store, 3)
    store.record_usage([use(key_id, 1, ip="192.0.2.1"), use(key_id, 2, ip="192.0.2.2")])
    store.record_usage([use(key_id, 3, ip="192.0.2.3")])
    store.record_usage([use(key_id, 4, ip="192.0.2.1")])
    store.record_usage([use(key_id, 5, ip="192.0.2.4")])
    assert ips_of(store, key_id) == ["192.0.2.4", "192.0.2.1", "192.0.2.3"]
    assert store.source_ip_history(key_id)[1] == SourceIpUse("192.0.2.1", at(1), at(4))


def test_a_late_batch_of_older_uses_never_pushes_out_newer_addresses(
    open_store: Callable[..., BackendStore],
) -> None:
    store, key_id = bounded_store(open_store, 2)
    store.record_usage([use(key_id, 10, ip="192.0.2.1"), use(key_id, 20, ip="192.0.2.2")])
    store.record_usage([use(key_id, 5, ip="192.0.2.3")])
    assert ips_of(store, key_id) == ["192.0.2.2", "192.0.2.1"]


def test_source_ip_bound_breaks_a_tie_in_time_by_address(
    open_store: Callable[..., BackendStore],
) -> None:
    store, key_id = bounded_store(open_store, 2)
    store.record_usage([use(key_id, 7, ip=ip) for ip in ("192.0.2.9", "192.0.2.1", "192.0.2.5")])
    assert ips_of(store, key_id) == ["192.0.2.1", "192.0.2.5"]


def test_source_ip_bound_is_per_key(open_store: Callable[..., BackendStore]) -> None:
    store, key_id = bounded_store(open_store, 2)
    other = hmac_record()
    store.add_key(other, max_keys_per_owner=5)
    store.record_usage([use(other.access_key_id, 1, ip="198.51.100.1")])
    store.record_usage([use(key_id, n, ip=v6(n)) for n in range(1, 6)])
    assert ips_of(store, key_id) == [v6(5), v6(4)]
    assert ips_of(store, other.access_key_id) == ["198.51.100.1"]


def test_the_bound_leaves_the_last_use_alone(open_store: Callable[..., BackendStore]) -> None:
    store, key_id = bounded_store(open_store, 1)
    store.record_usage([use(key_id, 9, "Ram", ip="192.0.2.1"), use(key_id, 3, ip="192.0.2.2")])
    assert store.get_last_used(key_id) == LastUsed(at(9), "Ram")
    assert ips_of(store, key_id) == ["192.0.2.1"]


def test_the_async_face_keeps_the_same_bound(open_store: Callable[..., BackendStore]) -> None:
    store, key_id = bounded_store(open_store, 2)
    async_store = store.as_async()
    asyncio.run(async_store.record_usage([use(key_id, n, ip=v6(n)) for n in range(1, 5)]))
    assert ips_of(store, key_id) == [v6(4), v6(3)]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3", None])
def test_an_unusable_source_ip_bound_is_refused(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory, bad: object
) -> None:
    with pytest.raises(InvalidParameter) as caught:
        backend.open(tmp_path_factory.mktemp("store"), max_source_ips_per_key=bad)
    assert caught.value.parameter == "max_source_ips_per_key"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), max_size=5),
        min_size=1,
        max_size=5,
    )
)
def test_bounded_history_is_the_most_recent_part_of_the_unbounded_one(
    open_store: Callable[..., BackendStore], batches: list[list[tuple[int, int]]]
) -> None:
    store, key_id = bounded_store(open_store, 3)
    latest: dict[str, int] = {}
    for batch in batches:
        store.record_usage([use(key_id, t, ip=f"192.0.2.{i}") for i, t in batch])
        for i, t in batch:
            latest[f"192.0.2.{i}"] = max(t, latest.get(f"192.0.2.{i}", t))
    expected = sorted(latest.items(), key=lambda entry: (-entry[1], entry[0]))[:3]
    history = store.source_ip_history(key_id)
    assert [(entry.source_ip, entry.last_seen) for entry in history] == [
        (ip, at(t)) for ip, t in expected
    ]
    store.close()


_usage_batches = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 1),  # which of two keys
            st.integers(0, 50),  # used at
            st.sampled_from(["Ecs", "Ram", "Oss"]),
            st.sampled_from([None, "192.0.2.1", "2001:db8::1"]),
            st.integers(0, 10),  # first use, this many seconds earlier
        ),
        max_size=4,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_usage_batches, order=st.randoms(use_true_random=False))
def test_usage_merge_does_not_depend_on_batch_order(
    open_store: Callable[[], BackendStore],
    batches: list[list[tuple[int, int, str, str | None, int]]],
    order: object,
) -> None:
    key_ids = [new_key_id(), new_key_id()]

    def merged(arrival: list[list[tuple[int, int, str, str | None, int]]]) -> object:
        store = open_store()
        for key in key_ids:
            store.add_key(hmac_record(access_key_id=key), max_keys_per_owner=5)
        for batch in arrival:
            store.record_usage(
                [
                    UsageRecord(key_ids[k], ts(t), svc, ip, ts(t - earlier))
                    for k, t, svc, ip, earlier in batch
                ]
            )
        result = [(store.get_last_used(k), store.source_ip_history(k)) for k in key_ids]
        store.close()
        return result

    shuffled = list(batches)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    assert merged(batches) == merged(shuffled)


# -- KeyStore: the key lifecycle (recycle bin, restore, purge) ----------------------------

BIN = MAX_KEYS_IN_RECYCLE_BIN
ADMIN = AuditEvent(at=at(0), actor="admin@1234567890123456", action="Test")


def audit(action: str, *, when: int = 0, **changes: Any) -> AuditEvent:
    return attrs.evolve(ADMIN, at=at(when), action=action, **changes)


def add(store: BackendStore, owner: Owner = ALICE, **changes: Any) -> KeyRecord:
    record = hmac_record(owner, **changes)
    store.add_key(record, max_keys_per_owner=20)
    return record


def recycled(store: BackendStore, owner: Owner = ALICE, *, when: int = 0, **changes: Any) -> str:
    """A key put in the bin the way an admin does: disabled, then recycled at ``when``."""
    key_id = add(store, owner, status=KeyStatus.INACTIVE, **changes).access_key_id
    store.recycle_key(key_id, now=at(when), max_in_recycle_bin=BIN)
    return key_id


def ids(records: Iterable[KeyRecord]) -> list[str]:
    return [record.access_key_id for record in records]


def attach_everything(store: BackendStore, key_id: str) -> None:
    """Usage, source-IP history and a key-level policy: what a purge must take along."""
    store.record_usage([use(key_id, 30, "Ecs", "192.0.2.1")])
    store.set_network_policy(PolicyTarget.key(key_id), POLICY)


def assert_nothing_left_of(store: BackendStore, key_id: str) -> None:
    assert store.get_key(key_id) is None
    assert store.get_last_used(key_id) is None
    assert store.source_ip_history(key_id) == []
    assert store.get_network_policy(PolicyTarget.key(key_id)) is None
    assert key_id not in dict(store.iter_sealed_secrets())
    assert key_id not in ids(store.iter_keys())


def test_recycle_moves_an_inactive_key_into_the_bin_at_now(store: BackendStore) -> None:
    record = add(store, status=KeyStatus.INACTIVE)
    assert store.recycle_key(record.access_key_id, now=at(600), max_in_recycle_bin=BIN) == []
    stored = store.get_key(record.access_key_id)
    assert stored == attrs.evolve(record, recycled_at=at(600))
    assert store.list_recycle_bin(ALICE) == [stored]
    assert store.list_keys(ALICE) == []


def test_recycle_of_an_active_key_raises_not_inactive(store: BackendStore) -> None:
    record = add(store)
    with pytest.raises(AccessKeyNotInactive):
        store.recycle_key(record.access_key_id, now=at(1), max_in_recycle_bin=BIN)
    assert store.get_key(record.access_key_id) == record


def test_recycle_of_an_unknown_id_raises_not_found(store: BackendStore) -> None:
    with pytest.raises(AccessKeyNotFound):
        store.recycle_key("LTAIneverStoredAnywhere0", now=at(1), max_in_recycle_bin=BIN)


def test_recycle_of_a_purged_key_raises_not_found(store: BackendStore) -> None:
    key_id = recycled(store)
    store.purge_key(key_id, only_if="in_recycle_bin")
    with pytest.raises(AccessKeyNotFound):
        store.recycle_key(key_id, now=at(1), max_in_recycle_bin=BIN)


def test_recycle_of_a_key_already_in_the_bin_raises_not_found(store: BackendStore) -> None:
    key_id = recycled(store, when=5)
    with pytest.raises(AccessKeyNotFound):
        store.recycle_key(key_id, now=at(9), max_in_recycle_bin=BIN)
    assert ids(store.list_recycle_bin(ALICE)) == [key_id]
    stored = store.get_key(key_id)
    assert stored is not None
    assert stored.recycled_at == at(5)


def test_recycle_of_a_fourth_key_evicts_the_oldest_and_returns_its_id(
    store: BackendStore,
) -> None:
    first, second, third = (recycled(store, when=when) for when in (30, 10, 20))
    fourth = add(store, status=KeyStatus.INACTIVE).access_key_id
    assert store.recycle_key(fourth, now=at(40), max_in_recycle_bin=BIN) == [second]
    assert ids(store.list_recycle_bin(ALICE)) == [third, first, fourth]


@pytest.mark.parametrize(
    ("in_bin", "deleted", "evicted"),
    [
        # A tie in deletion time is broken by id among the keys already in the bin ...
        ("CAB", "D", "A"),
        # ... and the deleted key is never one of them, even when its id sorts first: a
        # backend that orders it with the others by (time, id) evicts the key it deletes.
        ("CDB", "A", "B"),
    ],
)
def test_recycle_eviction_in_a_same_second_tie_takes_the_lowest_id_of_the_others(
    store: BackendStore, in_bin: str, deleted: str, evicted: str
) -> None:
    def key_id(letter: str) -> str:
        return "LTAIbin0000000000000000" + letter

    for letter in in_bin:
        recycled(store, when=10, access_key_id=key_id(letter))
    last = add(store, status=KeyStatus.INACTIVE, access_key_id=key_id(deleted))
    assert store.recycle_key(last.access_key_id, now=at(10), max_in_recycle_bin=BIN) == [
        key_id(evicted)
    ]
    kept = sorted({*in_bin, deleted} - {evicted})
    assert sorted(ids(store.list_recycle_bin(ALICE))) == [key_id(letter) for letter in kept]


def test_recycle_never_evicts_the_key_it_deletes_when_the_bin_holds_later_times(
    store: BackendStore,
) -> None:
    # Another server, its clock ahead of this one's, deleted the three keys in the bin
    # "after" now: the key deleted now is still the newest, so the oldest other goes.
    later = {"LTAIahead000000000000002": 120, "LTAIahead000000000000001": 100}
    later["LTAIahead000000000000003"] = 110
    for key_id, when in later.items():
        recycled(store, when=when, access_key_id=key_id)
    deleted = add(store, status=KeyStatus.INACTIVE, access_key_id="LTAIahead000000000000009")
    evicted = store.recycle_key(deleted.access_key_id, now=at(40), max_in_recycle_bin=BIN)
    assert evicted == ["LTAIahead000000000000001"]
    stored = store.get_key(deleted.access_key_id)
    assert stored is not None
    assert stored.recycled_at == at(40)
    assert sorted(ids(store.list_recycle_bin(ALICE))) == [
        "LTAIahead000000000000002",
        "LTAIahead000000000000003",
        "LTAIahead000000000000009",
    ]


def test_recycle_into_a_bin_of_capacity_zero_keeps_only_the_key_it_deletes(
    store: BackendStore,
) -> None:
    binned = [recycled(store, when=when) for when in (50, 60)]
    deleted = add(store, status=KeyStatus.INACTIVE).access_key_id
    assert store.recycle_key(deleted, now=at(1), max_in_recycle_bin=0) == binned
    assert ids(store.list_recycle_bin(ALICE)) == [deleted]


def test_recycle_evicts_as_many_as_the_bin_overflows(store: BackendStore) -> None:
    oldest = [recycled(store, when=when) for when in (1, 2, 3)]
    newest = add(store, status=KeyStatus.INACTIVE).access_key_id
    assert store.recycle_key(newest, now=at(4), max_in_recycle_bin=1) == oldest
    assert ids(store.list_recycle_bin(ALICE)) == [newest]


def test_evicted_key_is_gone_with_its_usage_and_policy(store: BackendStore) -> None:
    oldest = add(store, status=KeyStatus.INACTIVE).access_key_id
    attach_everything(store, oldest)
    store.recycle_key(oldest, now=at(1), max_in_recycle_bin=BIN)
    for when in (2, 3, 4):
        recycled(store, when=when)
    assert_nothing_left_of(store, oldest)


def test_recycle_evicts_only_from_the_owners_own_bin(store: BackendStore) -> None:
    bobs = recycled(store, BOB, when=0)
    roots = recycled(store, ACCOUNT, when=0)
    for when in (1, 2, 3, 4):
        recycled(store, ALICE, when=when)
    assert ids(store.list_recycle_bin(BOB)) == [bobs]
    assert ids(store.list_recycle_bin(ACCOUNT)) == [roots]
    assert len(store.list_recycle_bin(ALICE)) == BIN


def test_set_key_status_of_a_key_in_the_bin_raises_not_found(store: BackendStore) -> None:
    key_id = recycled(store)
    with pytest.raises(AccessKeyNotFound):
        store.set_key_status(key_id, KeyStatus.ACTIVE)
    stored = store.get_key(key_id)
    assert stored is not None
    assert (stored.status, stored.in_recycle_bin) == (KeyStatus.INACTIVE, True)


def test_restore_within_retention_brings_the_key_back_inactive(store: BackendStore) -> None:
    record = add(store, status=KeyStatus.INACTIVE)
    store.recycle_key(record.access_key_id, now=at(0), max_in_recycle_bin=BIN)
    restored = store.restore_key(record.access_key_id, now=at(3600), max_keys_per_owner=2)
    assert restored == record
    assert store.get_key(record.access_key_id) == record
    assert store.list_keys(ALICE) == [record]
    assert store.list_recycle_bin(ALICE) == []


def test_restore_of_a_key_stored_active_in_the_bin_brings_it_back_inactive(
    store: BackendStore,
) -> None:
    record = add(store, status=KeyStatus.ACTIVE, recycled_at=at(0))
    restored = store.restore_key(record.access_key_id, now=at(1), max_keys_per_owner=2)
    assert restored.status is KeyStatus.INACTIVE
    assert restored.recycled_at is None


def test_restore_one_second_before_purge_at_succeeds(store: BackendStore) -> None:
    key_id = recycled(store, when=0)
    just_in_time = at(0) + RECYCLE_BIN_RETENTION - timedelta(seconds=1)
    assert store.restore_key(key_id, now=just_in_time, max_keys_per_owner=2).recycled_at is None


def test_restore_at_purge_at_raises_not_in_recycle_bin(store: BackendStore) -> None:
    key_id = recycled(store, when=0)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(key_id, now=at(0) + RECYCLE_BIN_RETENTION, max_keys_per_owner=2)
    assert ids(store.list_recycle_bin(ALICE)) == [key_id]


def test_restore_after_purge_at_raises_not_in_recycle_bin(store: BackendStore) -> None:
    key_id = recycled(store, when=0)
    too_late = at(0) + RECYCLE_BIN_RETENTION + timedelta(days=3)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(key_id, now=too_late, max_keys_per_owner=2)


def test_restore_of_a_live_key_raises_not_in_recycle_bin(store: BackendStore) -> None:
    record = add(store, status=KeyStatus.INACTIVE)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(record.access_key_id, now=at(1), max_keys_per_owner=2)


def test_restore_of_an_unknown_id_raises_not_in_recycle_bin(store: BackendStore) -> None:
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key("LTAIneverStoredAnywhere0", now=at(1), max_keys_per_owner=2)


def test_restore_at_the_owner_limit_raises_limit_exceeded_and_changes_nothing(
    store: BackendStore,
) -> None:
    key_id = recycled(store, when=0)
    live = [add(store), add(store)]
    before = store.get_key(key_id)
    with pytest.raises(AccessKeyLimitExceeded):
        store.restore_key(key_id, now=at(1), max_keys_per_owner=2)
    assert store.get_key(key_id) == before
    assert ids(store.list_recycle_bin(ALICE)) == [key_id]
    assert store.list_keys(ALICE) == live


def test_restore_counts_only_the_owners_keys_toward_the_limit(store: BackendStore) -> None:
    key_id = recycled(store, ALICE)
    add(store, BOB)
    add(store, BOB)
    add(store, ACCOUNT)
    assert store.restore_key(key_id, now=at(1), max_keys_per_owner=1).access_key_id == key_id


def test_restored_key_keeps_its_last_use(store: BackendStore) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    store.record_usage([use(key_id, 40, "Sts")])
    store.recycle_key(key_id, now=at(50), max_in_recycle_bin=BIN)
    restored = store.restore_key(key_id, now=at(60), max_keys_per_owner=2)
    assert restored.last_used == LastUsed(at(40), "Sts")


def test_purge_in_recycle_bin_destroys_the_key_and_returns_it_as_it_was(
    store: BackendStore,
) -> None:
    key_id = recycled(store)
    before = store.get_key(key_id)
    assert store.purge_key(key_id, only_if="in_recycle_bin") == before
    assert store.get_key(key_id) is None
    assert store.list_recycle_bin(ALICE) == []


def test_purge_returns_the_record_with_its_last_use(store: BackendStore) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    store.record_usage([use(key_id, 40, "Sts")])
    assert store.purge_key(key_id, only_if="inactive").last_used == LastUsed(at(40), "Sts")


def test_purge_in_recycle_bin_of_a_live_key_raises_not_in_recycle_bin(
    store: BackendStore,
) -> None:
    record = add(store, status=KeyStatus.INACTIVE)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.purge_key(record.access_key_id, only_if="in_recycle_bin")
    assert store.get_key(record.access_key_id) == record


def test_purge_in_recycle_bin_of_an_unknown_id_raises_not_in_recycle_bin(
    store: BackendStore,
) -> None:
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.purge_key("LTAIneverStoredAnywhere0", only_if="in_recycle_bin")


def test_purge_if_inactive_destroys_an_inactive_key(store: BackendStore) -> None:
    record = add(store, ACCOUNT, status=KeyStatus.INACTIVE)
    assert store.purge_key(record.access_key_id, only_if="inactive") == record
    assert store.get_key(record.access_key_id) is None
    assert store.list_keys(ACCOUNT) == []


def test_purge_if_inactive_of_an_active_key_raises_not_inactive(store: BackendStore) -> None:
    record = add(store, ACCOUNT)
    with pytest.raises(AccessKeyNotInactive):
        store.purge_key(record.access_key_id, only_if="inactive")
    assert store.get_key(record.access_key_id) == record


def test_purge_if_inactive_of_a_key_in_the_bin_raises_not_found(store: BackendStore) -> None:
    key_id = recycled(store)
    with pytest.raises(AccessKeyNotFound):
        store.purge_key(key_id, only_if="inactive")
    assert ids(store.list_recycle_bin(ALICE)) == [key_id]


def test_purge_if_inactive_of_an_unknown_id_raises_not_found(store: BackendStore) -> None:
    with pytest.raises(AccessKeyNotFound):
        store.purge_key("LTAIneverStoredAnywhere0", only_if="inactive")


@pytest.mark.parametrize("only_if", ["in_recycle_bin", "inactive"])
def test_purge_takes_the_usage_history_and_key_policy_along(
    store: BackendStore, only_if: Literal["in_recycle_bin", "inactive"]
) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    attach_everything(store, key_id)
    if only_if == "in_recycle_bin":
        store.recycle_key(key_id, now=at(1), max_in_recycle_bin=BIN)
    store.purge_key(key_id, only_if=only_if)
    assert_nothing_left_of(store, key_id)


def test_purge_leaves_the_account_policy_and_other_keys_alone(store: BackendStore) -> None:
    account_target = PolicyTarget.account(ALICE.account_id)
    store.set_network_policy(account_target, POLICY)
    other = add(store)
    store.record_usage([use(other.access_key_id, 30, "Ecs", "192.0.2.9")])
    store.purge_key(recycled(store), only_if="in_recycle_bin")
    assert store.get_network_policy(account_target) == POLICY
    assert store.get_last_used(other.access_key_id) == LastUsed(at(30), "Ecs")
    assert len(store.source_ip_history(other.access_key_id)) == 1


def test_purged_key_can_never_be_restored(store: BackendStore) -> None:
    key_id = recycled(store)
    store.purge_key(key_id, only_if="in_recycle_bin")
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(key_id, now=at(1), max_keys_per_owner=2)
    assert store.get_key(key_id) is None


def test_evicted_key_can_never_be_restored(store: BackendStore) -> None:
    oldest = recycled(store, when=1)
    for when in (2, 3, 4):
        recycled(store, when=when)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(oldest, now=at(5), max_keys_per_owner=2)


def test_purge_expired_purges_at_exactly_the_end_of_retention_and_returns_ids(
    store: BackendStore,
) -> None:
    due = [recycled(store, ALICE, when=0), recycled(store, BOB, when=-60)]
    purged = store.purge_expired(now=at(0) + RECYCLE_BIN_RETENTION)
    assert sorted(purged) == sorted(due)
    for key_id in due:
        assert store.get_key(key_id) is None


def test_purge_expired_keeps_a_key_one_second_short_of_retention(store: BackendStore) -> None:
    key_id = recycled(store, when=1)
    assert store.purge_expired(now=at(0) + RECYCLE_BIN_RETENTION) == []
    assert ids(store.list_recycle_bin(ALICE)) == [key_id]


def test_purge_expired_never_touches_live_keys(store: BackendStore) -> None:
    old = add(store, status=KeyStatus.INACTIVE, created_at=at(-86_400 * 400))
    assert store.purge_expired(now=at(0) + 10 * RECYCLE_BIN_RETENTION) == []
    assert store.get_key(old.access_key_id) == old


def test_purge_expired_takes_the_usage_history_and_key_policy_along(
    store: BackendStore,
) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    attach_everything(store, key_id)
    store.recycle_key(key_id, now=at(0), max_in_recycle_bin=BIN)
    assert store.purge_expired(now=at(0) + RECYCLE_BIN_RETENTION) == [key_id]
    assert_nothing_left_of(store, key_id)


def test_expired_key_can_never_be_restored(store: BackendStore) -> None:
    key_id = recycled(store, when=0)
    store.purge_expired(now=at(0) + RECYCLE_BIN_RETENTION)
    with pytest.raises(AccessKeyNotInRecycleBin):
        store.restore_key(key_id, now=at(1), max_keys_per_owner=2)


def test_list_recycle_bin_is_oldest_deletion_first_with_ties_by_id(store: BackendStore) -> None:
    late = recycled(store, when=30, access_key_id="LTAIbin000000000000000AA")
    tie_b = recycled(store, when=10, access_key_id="LTAIbin000000000000000bb")
    tie_a = recycled(store, when=10, access_key_id="LTAIbin000000000000000BB")
    assert ids(store.list_recycle_bin(ALICE)) == [tie_a, tie_b, late]


def test_list_recycle_bin_gives_only_the_owners_keys(store: BackendStore) -> None:
    root, alices, bobs = recycled(store, ACCOUNT), recycled(store, ALICE), recycled(store, BOB)
    add(store, ALICE, status=KeyStatus.INACTIVE)
    assert ids(store.list_recycle_bin(ACCOUNT)) == [root]
    assert ids(store.list_recycle_bin(ALICE)) == [alices]
    assert ids(store.list_recycle_bin(BOB)) == [bobs]


def test_list_recycle_bin_of_an_owner_without_one_is_empty(store: BackendStore) -> None:
    add(store, ALICE)
    assert store.list_recycle_bin(ALICE) == []


def test_list_recycle_bin_shows_purge_at(store: BackendStore) -> None:
    recycled(store, when=100)
    (binned,) = store.list_recycle_bin(ALICE)
    assert binned.purge_at == at(100) + RECYCLE_BIN_RETENTION


# -- KeyStore: the leak flag, iteration, settings ------------------------------------------


def test_mark_leak_restricted_sets_the_flag_and_returns_the_record(store: BackendStore) -> None:
    record = add(store)
    marked = store.mark_leak_restricted(record.access_key_id)
    assert marked == attrs.evolve(record, leak_restricted=True)
    assert store.get_key(record.access_key_id) == marked


def test_mark_leak_restricted_is_idempotent(store: BackendStore) -> None:
    record = add(store)
    first = store.mark_leak_restricted(record.access_key_id)
    assert store.mark_leak_restricted(record.access_key_id) == first


def test_mark_leak_restricted_works_on_a_key_in_the_bin(store: BackendStore) -> None:
    key_id = recycled(store)
    assert store.mark_leak_restricted(key_id).leak_restricted is True


def test_mark_leak_restricted_of_an_unknown_id_raises_not_found(store: BackendStore) -> None:
    with pytest.raises(AccessKeyNotFound):
        store.mark_leak_restricted("LTAIneverStoredAnywhere0")


def test_mark_leak_restricted_of_a_purged_key_raises_not_found(store: BackendStore) -> None:
    key_id = recycled(store)
    store.purge_key(key_id, only_if="in_recycle_bin")
    with pytest.raises(AccessKeyNotFound):
        store.mark_leak_restricted(key_id)


def test_leak_restriction_survives_status_changes(store: BackendStore) -> None:
    key_id = add(store).access_key_id
    store.mark_leak_restricted(key_id)
    store.set_key_status(key_id, KeyStatus.INACTIVE)
    assert store.set_key_status(key_id, KeyStatus.ACTIVE).leak_restricted is True


def test_leak_restriction_survives_recycle_and_restore(store: BackendStore) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    store.mark_leak_restricted(key_id)
    store.recycle_key(key_id, now=at(1), max_in_recycle_bin=BIN)
    (binned,) = store.list_recycle_bin(ALICE)
    assert binned.leak_restricted is True
    assert store.restore_key(key_id, now=at(2), max_keys_per_owner=2).leak_restricted is True


def test_iter_keys_gives_every_key_live_and_in_the_bin(store: BackendStore) -> None:
    live, root = add(store), add(store, ACCOUNT, status=KeyStatus.INACTIVE)
    binned = store.get_key(recycled(store, BOB))
    assert binned is not None
    by_id = sorted([live, root, binned], key=lambda record: record.access_key_id)
    assert sorted(store.iter_keys(), key=lambda record: record.access_key_id) == by_id


def test_iter_keys_shows_the_last_use(store: BackendStore) -> None:
    key_id = add(store).access_key_id
    store.record_usage([use(key_id, 40, "Sts")])
    (listed,) = store.iter_keys()
    assert listed.last_used == LastUsed(at(40), "Sts")


def test_iter_keys_of_an_empty_store_is_empty(store: BackendStore) -> None:
    assert list(store.iter_keys()) == []


def test_unset_setting_is_none(store: BackendStore) -> None:
    assert store.get_setting("allow_root_keys") is None


def test_setting_round_trips(store: BackendStore) -> None:
    store.set_setting("allow_root_keys", "false")
    assert store.get_setting("allow_root_keys") == "false"


def test_setting_again_replaces_the_value(store: BackendStore) -> None:
    store.set_setting("allow_root_keys", "false")
    store.set_setting("allow_root_keys", "true")
    assert store.get_setting("allow_root_keys") == "true"


def test_settings_are_independent_by_name(store: BackendStore) -> None:
    store.set_setting("allow_root_keys", "false")
    store.set_setting("max_keys", "")
    assert store.get_setting("allow_root_keys") == "false"
    assert store.get_setting("max_keys") == ""
    assert store.get_setting("Allow_Root_Keys") is None


# -- the lifecycle under concurrency ---------------------------------------------------------


def test_restore_racing_purge_of_one_key_has_exactly_one_winner(store: BackendStore) -> None:
    for _ in range(5):
        key_id = recycled(store)

        def race(index: int, key_id: str = key_id) -> object:
            if index % 2:
                return store.purge_key(key_id, only_if="in_recycle_bin")
            return store.restore_key(key_id, now=at(1), max_keys_per_owner=THREADS)

        outcomes = run_together(4, race)
        winners = [outcome for outcome in outcomes if isinstance(outcome, KeyRecord)]
        assert len(winners) == 1
        losers = [outcome for outcome in outcomes if not isinstance(outcome, KeyRecord)]
        assert all(isinstance(outcome, AccessKeyNotInRecycleBin) for outcome in losers)
        restored = outcomes.index(winners[0]) % 2 == 0
        stored = store.get_key(key_id)
        assert (stored is not None and not stored.in_recycle_bin) if restored else stored is None
        assert key_id not in ids(store.list_recycle_bin(ALICE))


def test_concurrent_restores_never_pass_the_owner_limit(store: BackendStore) -> None:
    for round_number in range(3):
        owner = RamUser(ALICE.account_id, f"racer-{round_number}")
        binned = [recycled(store, owner, when=when) for when in range(BIN)]
        add(store, owner)

        def restore(index: int, binned: list[str] = binned) -> object:
            return store.restore_key(binned[index], now=at(9), max_keys_per_owner=2)

        outcomes = run_together(BIN, restore)
        assert sum(isinstance(outcome, KeyRecord) for outcome in outcomes) == 1
        refused = [outcome for outcome in outcomes if not isinstance(outcome, KeyRecord)]
        assert all(isinstance(outcome, AccessKeyLimitExceeded) for outcome in refused)
        assert len(store.list_keys(owner)) == 2
        assert len(store.list_recycle_bin(owner)) == BIN - 1


def test_concurrent_recycles_of_one_owner_never_overfill_the_bin(store: BackendStore) -> None:
    keys = [add(store, status=KeyStatus.INACTIVE).access_key_id for _ in range(THREADS)]
    event = audit("DeleteAccessKey").about(ALICE)
    outcomes = run_together(
        THREADS,
        lambda i: store.recycle_key(
            keys[i],
            now=at(i),
            max_in_recycle_bin=BIN,
            audit=attrs.evolve(event, access_key_id=keys[i]),
        ),
    )
    returned = [outcome for outcome in outcomes if isinstance(outcome, list)]
    assert len(returned) == THREADS
    evicted = [key_id for evictions in returned for key_id in evictions]
    in_bin = ids(store.list_recycle_bin(ALICE))
    assert len(in_bin) == BIN
    assert len(evicted) == len(set(evicted)) == THREADS - BIN
    assert sorted(evicted + in_bin) == sorted(keys)
    for key_id in evicted:
        assert store.get_key(key_id) is None
    events = store.audit_events(owner=ALICE)
    assert len(events) == THREADS + len(evicted)
    purged = [event.access_key_id for event in events if event.action == "PurgeAccessKey"]
    assert sorted(key_id or "" for key_id in purged) == sorted(evicted)


# -- nothing changes when a lifecycle call is refused ----------------------------------------


@attrs.frozen
class Population:
    """A store with one of everything a refusal could wrongly touch."""

    active: str
    inactive: str
    in_bin: str


def populate(store: BackendStore) -> Population:
    active = add(store).access_key_id
    inactive = add(store, status=KeyStatus.INACTIVE).access_key_id
    in_bin = recycled(store, when=0)
    for key_id in (active, inactive, in_bin):
        attach_everything(store, key_id)
    add(store, ACCOUNT)
    recycled(store, BOB, when=0)
    store.append_audit_event(audit("Setup"))
    return Population(active, inactive, in_bin)


def snapshot(store: BackendStore) -> object:
    return (
        sorted(store.iter_keys(), key=lambda record: record.access_key_id),
        [store.list_recycle_bin(owner) for owner in (ACCOUNT, ALICE, BOB)],
        store.audit_events(),
    )


LATE = at(0) + RECYCLE_BIN_RETENTION
_Refusal = tuple[Callable[[BackendStore, Population, AuditEvent], object], type[Exception]]
_REFUSALS: dict[str, _Refusal] = {
    "recycle-active": (
        lambda s, p, e: s.recycle_key(p.active, now=at(1), max_in_recycle_bin=BIN, audit=e),
        AccessKeyNotInactive,
    ),
    "recycle-unknown": (
        lambda s, p, e: s.recycle_key("LTAInone", now=at(1), max_in_recycle_bin=BIN, audit=e),
        AccessKeyNotFound,
    ),
    "recycle-in-bin": (
        lambda s, p, e: s.recycle_key(p.in_bin, now=at(1), max_in_recycle_bin=BIN, audit=e),
        AccessKeyNotFound,
    ),
    "restore-live": (
        lambda s, p, e: s.restore_key(p.inactive, now=at(1), max_keys_per_owner=9, audit=e),
        AccessKeyNotInRecycleBin,
    ),
    "restore-unknown": (
        lambda s, p, e: s.restore_key("LTAInone", now=at(1), max_keys_per_owner=9, audit=e),
        AccessKeyNotInRecycleBin,
    ),
    "restore-after-retention": (
        lambda s, p, e: s.restore_key(p.in_bin, now=LATE, max_keys_per_owner=9, audit=e),
        AccessKeyNotInRecycleBin,
    ),
    "restore-at-limit": (
        lambda s, p, e: s.restore_key(p.in_bin, now=at(1), max_keys_per_owner=2, audit=e),
        AccessKeyLimitExceeded,
    ),
    "purge-bin-of-live": (
        lambda s, p, e: s.purge_key(p.inactive, only_if="in_recycle_bin", audit=e),
        AccessKeyNotInRecycleBin,
    ),
    "purge-bin-of-unknown": (
        lambda s, p, e: s.purge_key("LTAInone", only_if="in_recycle_bin", audit=e),
        AccessKeyNotInRecycleBin,
    ),
    "purge-inactive-of-active": (
        lambda s, p, e: s.purge_key(p.active, only_if="inactive", audit=e),
        AccessKeyNotInactive,
    ),
    "purge-inactive-of-in-bin": (
        lambda s, p, e: s.purge_key(p.in_bin, only_if="inactive", audit=e),
        AccessKeyNotFound,
    ),
    "purge-inactive-of-unknown": (
        lambda s, p, e: s.purge_key("LTAInone", only_if="inactive", audit=e),
        AccessKeyNotFound,
    ),
    "set-status-in-bin": (
        lambda s, p, e: s.set_key_status(p.in_bin, KeyStatus.ACTIVE, audit=e),
        AccessKeyNotFound,
    ),
    "set-status-unknown": (
        lambda s, p, e: s.set_key_status("LTAInone", KeyStatus.ACTIVE, audit=e),
        AccessKeyNotFound,
    ),
    "mark-leak-unknown": (
        lambda s, p, e: s.mark_leak_restricted("LTAInone", audit=e),
        AccessKeyNotFound,
    ),
    "add-duplicate": (
        lambda s, p, e: s.add_key(
            hmac_record(BOB, access_key_id=p.in_bin), max_keys_per_owner=9, audit=e
        ),
        AccessKeyAlreadyExists,
    ),
    "add-over-limit": (
        lambda s, p, e: s.add_key(hmac_record(ALICE), max_keys_per_owner=2, audit=e),
        AccessKeyLimitExceeded,
    ),
}


@pytest.mark.parametrize("refusal", sorted(_REFUSALS))
def test_refused_call_leaves_the_store_unchanged(store: BackendStore, refusal: str) -> None:
    call, error = _REFUSALS[refusal]
    population = populate(store)
    before = snapshot(store)
    with pytest.raises(error):
        call(store, population, audit("Refused", when=5))
    assert snapshot(store) == before


# -- AuditLog: what each change appends ----------------------------------------------------

Mutation = Callable[[BackendStore, AuditEvent | None], object]


def _mutate_add(s: BackendStore, e: AuditEvent | None) -> None:
    s.add_key(hmac_record(), max_keys_per_owner=2, audit=e)


def _mutate_status(s: BackendStore, e: AuditEvent | None) -> object:
    return s.set_key_status(add(s).access_key_id, KeyStatus.INACTIVE, audit=e)


def _mutate_recycle(s: BackendStore, e: AuditEvent | None) -> object:
    key_id = add(s, status=KeyStatus.INACTIVE).access_key_id
    return s.recycle_key(key_id, now=at(1), max_in_recycle_bin=BIN, audit=e)


def _mutate_restore(s: BackendStore, e: AuditEvent | None) -> object:
    return s.restore_key(recycled(s), now=at(1), max_keys_per_owner=2, audit=e)


def _mutate_purge_bin(s: BackendStore, e: AuditEvent | None) -> object:
    return s.purge_key(recycled(s), only_if="in_recycle_bin", audit=e)


def _mutate_purge_inactive(s: BackendStore, e: AuditEvent | None) -> object:
    key_id = add(s, ACCOUNT, status=KeyStatus.INACTIVE).access_key_id
    return s.purge_key(key_id, only_if="inactive", audit=e)


def _mutate_leak(s: BackendStore, e: AuditEvent | None) -> object:
    return s.mark_leak_restricted(add(s).access_key_id, audit=e)


def _mutate_setting(s: BackendStore, e: AuditEvent | None) -> None:
    s.set_setting("allow_root_keys", "false", audit=e)


def _mutate_attach_policy(s: BackendStore, e: AuditEvent | None) -> None:
    s.set_network_policy(TARGETS[0], POLICY, audit=e)


def _mutate_detach_policy(s: BackendStore, e: AuditEvent | None) -> None:
    s.set_network_policy(TARGETS[1], POLICY)
    s.set_network_policy(TARGETS[1], None, audit=e)


MUTATIONS: dict[str, Mutation] = {
    "add_key": _mutate_add,
    "set_key_status": _mutate_status,
    "recycle_key": _mutate_recycle,
    "restore_key": _mutate_restore,
    "purge_key-in_recycle_bin": _mutate_purge_bin,
    "purge_key-inactive": _mutate_purge_inactive,
    "mark_leak_restricted": _mutate_leak,
    "set_setting": _mutate_setting,
    "set_network_policy-attach": _mutate_attach_policy,
    "set_network_policy-detach": _mutate_detach_policy,
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_change_with_an_audit_event_appends_exactly_that_event(
    store: BackendStore, mutation: str
) -> None:
    event = audit(mutation, when=7, access_key_id="LTAIsubject", detail="why: ünïcode")
    MUTATIONS[mutation](store, event)
    assert store.audit_events() == [event]


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_change_without_an_audit_event_appends_nothing(store: BackendStore, mutation: str) -> None:
    MUTATIONS[mutation](store, None)
    assert store.audit_events() == []


def test_append_audit_event_appends_exactly_that_event(store: BackendStore) -> None:
    event = audit("AssumeRole", account_id=ALICE.account_id, detail="role/admin")
    store.append_audit_event(event)
    assert store.audit_events() == [event]


def test_audit_event_with_every_field_round_trips(store: BackendStore) -> None:
    event = AuditEvent(
        at=at(3),
        actor="alice@1234567890123456",
        action="UpdateAccessKey",
        access_key_id="LTAI00000000000000000009",
        account_id="1234567890123456",
        user_name="alice",
        detail="Active -> Inactive; 理由",
    )
    store.append_audit_event(event)
    (stored,) = store.audit_events()
    assert stored == event
    assert stored.at.utcoffset() == timedelta(0)


def test_refused_recycle_appends_no_audit_event(store: BackendStore) -> None:
    key_id = add(store).access_key_id
    with pytest.raises(AccessKeyNotInactive):
        store.recycle_key(key_id, now=at(1), max_in_recycle_bin=BIN, audit=audit("Delete"))
    assert store.audit_events() == []


def _without_detail(event: AuditEvent) -> AuditEvent:
    assert event.detail  # says why the key was purged
    return attrs.evolve(event, detail="")


def test_eviction_appends_a_purge_event_derived_from_the_recycle_event(
    store: BackendStore,
) -> None:
    oldest = recycled(store, when=1)
    for when in (2, 3):
        recycled(store, when=when)
    newest = add(store, status=KeyStatus.INACTIVE).access_key_id
    event = audit("DeleteAccessKey", when=4, access_key_id=newest).about(ALICE)
    store.recycle_key(newest, now=at(4), max_in_recycle_bin=BIN, audit=event)
    recycle_event, purge_event = store.audit_events()
    assert recycle_event == event
    assert _without_detail(purge_event) == attrs.evolve(
        event, action="PurgeAccessKey", access_key_id=oldest, detail=""
    )


def test_purge_expired_appends_a_purge_event_per_key_naming_its_owner(
    store: BackendStore,
) -> None:
    alice_key = recycled(store, ALICE, when=0)
    bob_key = recycled(store, BOB, when=0)
    recycled(store, ALICE, when=60)
    event = audit("PurgeExpiredAccessKeys", when=99, actor="system")
    store.purge_expired(now=at(0) + RECYCLE_BIN_RETENTION, audit=event)
    events = sorted(store.audit_events(), key=lambda e: e.access_key_id or "")
    purged = attrs.evolve(event, action="PurgeAccessKey", detail="")
    expected = sorted(
        [
            attrs.evolve(purged, access_key_id=alice_key).about(ALICE),
            attrs.evolve(purged, access_key_id=bob_key).about(BOB),
        ],
        key=lambda e: e.access_key_id or "",
    )
    assert [_without_detail(e) for e in events] == expected
    assert [e.access_key_id for e in store.audit_events(owner=ALICE)] == [alice_key]


def test_purge_expired_with_nothing_due_appends_nothing(store: BackendStore) -> None:
    recycled(store, when=0)
    store.purge_expired(now=at(1), audit=audit("PurgeExpiredAccessKeys"))
    assert store.audit_events() == []


def test_audit_events_about_a_purged_key_remain(store: BackendStore) -> None:
    key_id = add(store, status=KeyStatus.INACTIVE).access_key_id
    disabled = audit("UpdateAccessKey", access_key_id=key_id)
    store.append_audit_event(disabled)
    store.purge_key(key_id, only_if="inactive")
    assert store.audit_events(access_key_id=key_id) == [disabled]


# -- AuditLog: reading the trail ------------------------------------------------------------


def test_audit_trail_of_an_empty_store_is_empty(store: BackendStore) -> None:
    assert store.audit_events() == []


def test_audit_events_are_oldest_first(store: BackendStore) -> None:
    late, early, middle = audit("C", when=30), audit("A", when=10), audit("B", when=20)
    for event in (late, early, middle):
        store.append_audit_event(event)
    assert store.audit_events() == [early, middle, late]


def test_audit_events_of_one_second_keep_append_order(store: BackendStore) -> None:
    events = [audit(action, when=5) for action in ("Zeta", "Alpha", "Mid", "Beta")]
    for event in events:
        store.append_audit_event(event)
    assert store.audit_events() == events


def test_audit_events_filter_by_access_key_id(store: BackendStore) -> None:
    mine = audit("A", access_key_id="LTAImine")
    for event in (mine, audit("B", access_key_id="LTAIother"), audit("C")):
        store.append_audit_event(event)
    assert store.audit_events(access_key_id="LTAImine") == [mine]


def test_audit_events_filter_by_ram_user(store: BackendStore) -> None:
    alices = audit("A").about(ALICE)
    for event in (alices, audit("B").about(BOB), audit("C").about(ACCOUNT), audit("D")):
        store.append_audit_event(event)
    assert store.audit_events(owner=ALICE) == [alices]


def test_audit_events_filter_by_account_matches_only_the_accounts_own_keys(
    store: BackendStore,
) -> None:
    roots = audit("A").about(ACCOUNT)
    others = (audit("B").about(ALICE), audit("C").about(Account("6543210987654321")))
    for event in (roots, *others):
        store.append_audit_event(event)
    assert store.audit_events(owner=ACCOUNT) == [roots]


def test_audit_events_since_is_inclusive(store: BackendStore) -> None:
    events = [audit(str(when), when=when) for when in (10, 20, 30)]
    for event in events:
        store.append_audit_event(event)
    assert store.audit_events(since=at(20)) == events[1:]


def test_audit_events_since_between_seconds_leaves_the_earlier_second_out(
    store: BackendStore,
) -> None:
    events = [audit(str(when), when=when) for when in (10, 11)]
    for event in events:
        store.append_audit_event(event)
    assert store.audit_events(since=at(10) + timedelta(milliseconds=500)) == events[1:]


def test_audit_events_limit_keeps_the_oldest(store: BackendStore) -> None:
    events = [audit(str(when), when=when) for when in (30, 10, 20)]
    for event in events:
        store.append_audit_event(event)
    assert store.audit_events(limit=2) == [events[1], events[2]]


def test_audit_events_limit_zero_gives_nothing(store: BackendStore) -> None:
    store.append_audit_event(audit("A"))
    assert store.audit_events(limit=0) == []


def test_audit_events_match_every_filter_given(store: BackendStore) -> None:
    wanted = audit("Wanted", when=20, access_key_id="LTAImine").about(ALICE)
    for event in (
        audit("TooEarly", when=5, access_key_id="LTAImine").about(ALICE),
        audit("OtherKey", when=20, access_key_id="LTAIother").about(ALICE),
        audit("OtherOwner", when=20, access_key_id="LTAImine").about(BOB),
        wanted,
        audit("Later", when=40, access_key_id="LTAImine").about(ALICE),
    ):
        store.append_audit_event(event)
    assert store.audit_events(access_key_id="LTAImine", owner=ALICE, since=at(10), limit=1) == [
        wanted
    ]


# -- Store ------------------------------------------------------------------------------


def test_close_can_be_called_twice(store: BackendStore) -> None:
    store.close()
    store.close()


def test_store_and_its_async_face_declare_the_same_invalidation_channel(
    store: BackendStore, async_store: AsyncStore
) -> None:
    # Verifiers read the attribute directly: a store without a channel says None.
    channel = store.invalidations
    assert channel is None or isinstance(channel, InvalidationChannel)
    assert async_store.invalidations is channel


# -- the async face ----------------------------------------------------------------------


def test_async_add_then_get_round_trips(async_store: AsyncStore) -> None:
    record = hmac_record()

    async def scenario() -> object:
        await async_store.add_key(record, max_keys_per_owner=2)
        return await async_store.get_key(record.access_key_id)

    assert asyncio.run(scenario()) == record


def test_async_limit_is_enforced(async_store: AsyncStore) -> None:
    async def scenario() -> None:
        await async_store.add_key(hmac_record(), max_keys_per_owner=1)
        await async_store.add_key(hmac_record(), max_keys_per_owner=1)

    with pytest.raises(AccessKeyLimitExceeded):
        asyncio.run(scenario())


def test_async_list_and_set_status(async_store: AsyncStore) -> None:
    record = hmac_record()

    async def scenario() -> tuple[object, object]:
        await async_store.add_key(record, max_keys_per_owner=2)
        updated = await async_store.set_key_status(record.access_key_id, KeyStatus.INACTIVE)
        return updated, await async_store.list_keys(ALICE)

    updated, listed = asyncio.run(scenario())
    assert updated == attrs.evolve(record, status=KeyStatus.INACTIVE)
    assert listed == [updated]


def test_async_set_status_of_an_unknown_id_raises_not_found(async_store: AsyncStore) -> None:
    with pytest.raises(AccessKeyNotFound):
        asyncio.run(async_store.set_key_status("LTAIneverStored", KeyStatus.ACTIVE))


def test_async_reseal_is_compare_and_set(async_store: AsyncStore) -> None:
    record = hmac_record()
    sealed = record.sealed_secret
    assert sealed is not None

    async def scenario() -> tuple[bool, bool]:
        await async_store.add_key(record, max_keys_per_owner=2)
        first = await async_store.reseal_secret(record.access_key_id, sealed, b"x" * 40)
        again = await async_store.reseal_secret(record.access_key_id, sealed, b"y" * 40)
        return first, again

    assert asyncio.run(scenario()) == (True, False)


def test_async_replayed_nonce_is_refused(async_store: AsyncStore) -> None:
    async def scenario() -> list[bool]:
        first = await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
        again = await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
        return [first, again, await async_store.prune_nonces(LATER) == 1]

    assert asyncio.run(scenario()) == [True, False, True]


def test_async_concurrent_claims_let_exactly_one_through(async_store: AsyncStore) -> None:
    async def scenario() -> list[bool]:
        claims = (
            async_store.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER)
            for _ in range(THREADS)
        )
        return list(await asyncio.gather(*claims))

    assert sorted(asyncio.run(scenario())) == [False] * (THREADS - 1) + [True]


def test_async_policy_set_get_detach(async_store: AsyncStore) -> None:
    target = TARGETS[1]

    async def scenario() -> tuple[object, object]:
        await async_store.set_network_policy(target, POLICY)
        attached = await async_store.get_network_policy(target)
        await async_store.set_network_policy(target, None)
        return attached, await async_store.get_network_policy(target)

    assert asyncio.run(scenario()) == (POLICY, None)


def test_async_usage_merge_and_history(async_store: AsyncStore) -> None:
    record = hmac_record()

    async def scenario() -> tuple[object, object]:
        await async_store.add_key(record, max_keys_per_owner=2)
        await async_store.record_usage([use(record.access_key_id, 30, "Ecs", "192.0.2.1")])
        await async_store.record_usage([use(record.access_key_id, 20, "Ram", "192.0.2.2")])
        return (
            await async_store.get_last_used(record.access_key_id),
            await async_store.source_ip_history(record.access_key_id, since=at(25)),
        )

    last_used, history = asyncio.run(scenario())
    assert last_used == LastUsed(at(30), "Ecs")
    assert history == [SourceIpUse("192.0.2.1", at(30), at(30))]


def test_async_keyring_and_reload(async_store: AsyncStore) -> None:
    sealed = async_store.keyring.seal_secret("LTAIasync", Secret("s3cr3t"))
    reloaded = asyncio.run(async_store.reload_keyring())
    assert reloaded.open_secret("LTAIasync", sealed) == Secret("s3cr3t")


def test_async_close(async_store: AsyncStore) -> None:
    asyncio.run(async_store.aclose())


def test_async_add_with_an_audit_event_appends_it(async_store: AsyncStore) -> None:
    record = hmac_record()
    event = audit("CreateAccessKey", access_key_id=record.access_key_id).about(ALICE)

    async def scenario() -> list[AuditEvent]:
        await async_store.add_key(record, max_keys_per_owner=2, audit=event)
        return await async_store.audit_events(access_key_id=record.access_key_id)

    assert asyncio.run(scenario()) == [event]


def test_async_set_status_with_an_audit_event_appends_it(async_store: AsyncStore) -> None:
    record = hmac_record()
    event = audit("UpdateAccessKey", access_key_id=record.access_key_id)

    async def scenario() -> list[AuditEvent]:
        await async_store.add_key(record, max_keys_per_owner=2)
        await async_store.set_key_status(record.access_key_id, KeyStatus.INACTIVE, audit=event)
        return await async_store.audit_events()

    assert asyncio.run(scenario()) == [event]


def test_async_set_status_of_a_key_in_the_bin_raises_not_found(
    store: BackendStore, async_store: AsyncStore
) -> None:
    key_id = recycled(store)
    with pytest.raises(AccessKeyNotFound):
        asyncio.run(async_store.set_key_status(key_id, KeyStatus.ACTIVE, audit=audit("Update")))
    assert store.audit_events() == []


def test_async_set_policy_with_an_audit_event_appends_it(async_store: AsyncStore) -> None:
    event = audit("SetNetworkPolicy", account_id=ACCOUNT.account_id)

    async def scenario() -> tuple[object, list[AuditEvent]]:
        await async_store.set_network_policy(TARGETS[0], POLICY, audit=event)
        attached = await async_store.get_network_policy(TARGETS[0])
        return attached, await async_store.audit_events(owner=ACCOUNT)

    assert asyncio.run(scenario()) == (POLICY, [event])


def test_async_audit_trail_is_filtered_and_ordered(async_store: AsyncStore) -> None:
    late, early = audit("Late", when=30).about(BOB), audit("Early", when=10).about(BOB)
    other = audit("Other", when=20).about(ALICE)

    async def scenario() -> tuple[list[AuditEvent], list[AuditEvent]]:
        for event in (late, other, early):
            await async_store.append_audit_event(event)
        return (
            await async_store.audit_events(owner=BOB),
            await async_store.audit_events(since=at(15), limit=1),
        )

    assert asyncio.run(scenario()) == ([early, late], [other])


# -- invalidations: read-your-writes and prompt effect elsewhere ------------------------

INVALIDATION_OWNER = RamUser("1234567890123456", "invalidation-app")


def signed_request(access_key: AccessKey) -> Request:
    return Signer(access_key).sign(
        Request("POST", host="api.example.com", path="/v1/orders", body=b'{"n":1}'),
        action="CreateOrder",
        version="2024-01-01",
    )


def answer_within(
    verifier: ShellVerifier, access_key: AccessKey, wanted: str, seconds: float
) -> str:
    """Verify fresh requests until the answer ("accepted" or a refusal's code) is
    ``wanted``, for at most ``seconds`` (bounded, and no assertion on how fast); the
    last answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            verifier.verify(signed_request(access_key))
            answer = "accepted"
        except AliakError as error:
            answer = error.code
        if answer == wanted or time.monotonic() > deadline:
            return answer
        time.sleep(0.005)


def subscribed(store: BackendStore) -> tuple[list[str | None], Callable[[], None]]:
    channel = store.invalidations
    assert isinstance(channel, InvalidationChannel), "every store announces its changes"
    heard: list[str | None] = []
    return heard, channel.subscribe(heard.append)


def test_every_change_through_key_manager_reaches_a_subscriber_before_the_call_returns(
    store: BackendStore,
) -> None:
    manager = KeyManager(store, max_keys_per_owner=5)
    heard, unsubscribe = subscribed(store)
    new = manager.create_access_key(INVALIDATION_OWNER)
    key_id = new.access_key_id
    changes: list[tuple[str, Callable[[], object], str | None]] = [
        ("disable", lambda: manager.disable_access_key(key_id), key_id),
        ("enable", lambda: manager.enable_access_key(key_id), key_id),
        ("mark leaked", lambda: manager.mark_leaked(key_id), key_id),
        (
            "key policy",
            lambda: manager.set_network_policy(NetworkPolicy(), access_key_id=key_id),
            key_id,
        ),
        (
            "account policy",
            lambda: manager.set_network_policy(
                NetworkPolicy(), account_id=INVALIDATION_OWNER.account_id
            ),
            None,
        ),
        ("root keys", lambda: manager.set_root_keys_allowed(True), None),
        ("master key", manager.rotate_master_key, key_id),
        ("disable again", lambda: manager.disable_access_key(key_id), key_id),
        ("delete to the bin", lambda: manager.delete_access_key(key_id), key_id),
        ("restore", lambda: manager.restore_access_key(key_id), key_id),
        ("delete again", lambda: manager.delete_access_key(key_id), key_id),
        ("purge", lambda: manager.purge_access_key(key_id), key_id),
    ]
    assert key_id in heard, "create: a verifier may have cached the id as unknown"
    for name, change, expected in changes:
        heard.clear()
        change()
        assert expected in heard or None in heard, f"{name}: not announced"
    rotated = manager.create_access_key(INVALIDATION_OWNER)
    heard.clear()
    replacement = manager.rotate_access_key(rotated.access_key_id)
    assert replacement.access_key_id in heard or None in heard
    unsubscribe()
    heard.clear()
    manager.disable_access_key(rotated.access_key_id)
    assert heard == [], "unsubscribed"


def test_purge_expired_reaches_a_subscriber(store: BackendStore) -> None:
    now = [time.time()]
    manager = KeyManager(store, clock=lambda: now[0])
    new = manager.create_access_key(INVALIDATION_OWNER)
    manager.disable_access_key(new.access_key_id)
    manager.delete_access_key(new.access_key_id)
    heard, unsubscribe = subscribed(store)
    now[0] += RECYCLE_BIN_RETENTION.total_seconds() + 1
    assert manager.purge_expired() == [new.access_key_id]
    assert new.access_key_id in heard or None in heard
    unsubscribe()


def test_a_refused_change_announces_nothing(store: BackendStore) -> None:
    manager = KeyManager(store)
    new = manager.create_access_key(INVALIDATION_OWNER)
    heard, unsubscribe = subscribed(store)
    with pytest.raises(AliakError):
        manager.restore_access_key(new.access_key_id)  # not in the bin
    with pytest.raises(AliakError):
        manager.purge_access_key(new.access_key_id)  # not in the bin
    # (A channel that starts listening says None: what came before it is unknown.)
    assert [key_id for key_id in heard if key_id is not None] == []
    unsubscribe()


def outcome(verifier: ShellVerifier, access_key: AccessKey) -> str:
    """Either "accepted" or the refusal's code and detail."""
    try:
        verifier.verify(signed_request(access_key), source_ip="203.0.113.7")
    except AliakError as error:
        return f"{error.code}: {error.detail}"
    return "accepted"


@pytest.mark.parametrize(
    ("change", "before", "after"),
    [
        ("disable", "accepted", "InvalidAccessKeyId.Inactive: {} is Inactive"),
        # A key in the bin is Inactive: its deletion changes no answer, its purge does.
        ("purge", "{} is Inactive", "InvalidAccessKeyId.NotFound"),
        ("key policy", "accepted", "InvalidAccessKeyId.AccessPolicyDenied"),
        ("account policy", "accepted", "InvalidAccessKeyId.AccessPolicyDenied"),
    ],
)
def test_a_verifier_on_the_same_store_object_sees_a_change_on_the_very_next_request(
    store: BackendStore, make_verifier: MakeVerifier, change: str, before: str, after: str
) -> None:
    manager = KeyManager(store)
    new = manager.create_access_key(INVALIDATION_OWNER)
    key_id = new.access_key_id
    elsewhere = NetworkPolicy(public=["198.51.100.0/24"])
    steps: dict[str, Callable[[], object]] = {
        "disable": lambda: manager.disable_access_key(key_id),
        "delete": lambda: manager.delete_access_key(key_id),
        "purge": lambda: manager.purge_access_key(key_id),
        "key policy": lambda: manager.set_network_policy(elsewhere, access_key_id=key_id),
        "account policy": lambda: manager.set_network_policy(
            elsewhere, account_id=INVALIDATION_OWNER.account_id
        ),
    }
    lifecycle = ["disable", "delete", "purge"]
    for step in lifecycle[: lifecycle.index(change)] if change in lifecycle else []:
        steps[step]()
    verifier = make_verifier(store, freshness=60)  # only an invalidation can make it prompt
    try:
        assert before.format(key_id) in outcome(verifier, new.access_key)  # now cached
        steps[change]()
        assert after.format(key_id) in outcome(verifier, new.access_key)
    finally:
        verifier.close()


def test_a_verifier_sees_a_key_enabled_on_the_very_next_request(
    store: BackendStore, make_verifier: MakeVerifier
) -> None:
    manager = KeyManager(store)
    new = manager.create_access_key(INVALIDATION_OWNER)
    manager.disable_access_key(new.access_key_id)
    verifier = make_verifier(store, freshness=60)
    try:
        with pytest.raises(AliakError):
            verifier.verify(signed_request(new.access_key))  # cached as Inactive
        manager.enable_access_key(new.access_key_id)
        assert verifier.verify(signed_request(new.access_key)).access_key_id == new.access_key_id
    finally:
        verifier.close()


def test_a_change_through_another_store_object_is_seen_promptly(
    store: BackendStore,
    reopen_store: Callable[[BackendStore], BackendStore],
    make_verifier: MakeVerifier,
) -> None:
    # The second object is what another process (another server of the fleet) holds.
    new = KeyManager(store).create_access_key(INVALIDATION_OWNER)
    other = KeyManager(reopen_store(store))
    verifier = make_verifier(store, freshness=60)
    try:
        verifier.verify(signed_request(new.access_key))  # cached as Active for 60 s
        other.disable_access_key(new.access_key_id)
        inactive = "InvalidAccessKeyId.Inactive"
        assert answer_within(verifier, new.access_key, inactive, 5) == inactive
        other.enable_access_key(new.access_key_id)
        assert answer_within(verifier, new.access_key, "accepted", 5) == "accepted"
    finally:
        verifier.close()


def test_refresh_is_harmless_on_a_store_with_no_change(store: BackendStore) -> None:
    channel = store.invalidations
    assert isinstance(channel, InvalidationChannel)
    heard, unsubscribe = subscribed(store)
    for _ in range(3):
        channel.refresh()
    assert [key_id for key_id in heard if key_id is not None] == []
    unsubscribe()
