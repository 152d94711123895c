"""The storage conformance suite: every guarantee of ``aliak.storage.protocols``.

Each test runs against every backend in ``conftest.BACKENDS``. A backend is done when
this file is green against the real engine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliak.acl import NetworkPolicy
from aliak.credentials import Secret
from aliak.errors import AccessKeyAlreadyExists, AccessKeyLimitExceeded, AccessKeyNotFound
from aliak.model import Account, KeyStatus, LastUsed, RamUser, SourceIpUse, UsageRecord
from aliak.storage.protocols import AsyncStore, PolicyTarget

from .conftest import (
    ACCOUNT,
    ALICE,
    BOB,
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


# -- Store ------------------------------------------------------------------------------


def test_close_can_be_called_twice(store: BackendStore) -> None:
    store.close()
    store.close()


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
