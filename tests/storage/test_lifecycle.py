"""The lifecycle rules themselves (``aliak.storage.lifecycle``), without any backend.

The conformance suite checks that every backend applies them; this file checks the
rules: the bin does not count toward the owner limit, eviction never picks the key being
deleted, the retention boundary is exact, and restore and purge refuse what they must.
"""

from __future__ import annotations

import random
from datetime import timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliak.errors import (
    AccessKeyLimitExceeded,
    AccessKeyNotFound,
    AccessKeyNotInactive,
    AccessKeyNotInRecycleBin,
    InvalidParameter,
)
from aliak.model import RECYCLE_BIN_RETENTION, KeyRecord, KeyStatus, Owner
from aliak.storage import lifecycle

from .conftest import ACCOUNT, ALICE, T0, at, hmac_record

MICROSECOND = timedelta(microseconds=1)


def in_bin(key_id: str, when: int) -> KeyRecord:
    return hmac_record(ALICE, access_key_id=key_id, status=KeyStatus.INACTIVE, recycled_at=at(when))


def inactive(key_id: str = "LTAIdeleted", owner: Owner = ALICE) -> KeyRecord:
    return hmac_record(owner, access_key_id=key_id, status=KeyStatus.INACTIVE)


# -- the owner key limit -----------------------------------------------------------------


@given(live=st.integers(0, 6), binned=st.integers(0, 6), limit=st.integers(0, 6))
def test_owner_limit_counts_only_keys_outside_the_bin(live: int, binned: int, limit: int) -> None:
    flags = [False] * live + [True] * binned
    random.Random(live * 49 + binned * 7 + limit).shuffle(flags)
    if live >= limit:
        with pytest.raises(AccessKeyLimitExceeded):
            lifecycle.check_owner_limit(ALICE, flags, limit=limit)
    else:
        lifecycle.check_owner_limit(ALICE, flags, limit=limit)


def test_owner_limit_refusal_names_the_owner_and_the_count() -> None:
    with pytest.raises(AccessKeyLimitExceeded) as refused:
        lifecycle.check_owner_limit(ALICE, [False, False, True], limit=2)
    assert refused.value.detail == f"{ALICE.principal_name} has 2 keys"


# -- root keys and recycling -------------------------------------------------------------------


def test_root_keys_skip_the_recycle_bin_and_ram_user_keys_do_not() -> None:
    assert lifecycle.skips_recycle_bin(inactive(owner=ACCOUNT))
    assert not lifecycle.skips_recycle_bin(inactive(owner=ALICE))


def test_recycling_puts_an_inactive_key_in_the_bin_at_now() -> None:
    record = inactive()
    assert lifecycle.recycled(record, record.access_key_id, now=at(5)) == attrs.evolve(
        record, recycled_at=at(5)
    )


@pytest.mark.parametrize(
    ("record", "refusal"),
    [
        (None, AccessKeyNotFound),
        (in_bin("LTAIdeleted", 1), AccessKeyNotFound),
        (hmac_record(ALICE, access_key_id="LTAIdeleted"), AccessKeyNotInactive),
    ],
    ids=["unknown", "already-in-the-bin", "active"],
)
def test_recycling_refuses_what_cannot_be_deleted(
    record: KeyRecord | None, refusal: type[Exception]
) -> None:
    with pytest.raises(refusal):
        lifecycle.recycled(record, "LTAIdeleted", now=at(5))


# -- eviction --------------------------------------------------------------------------------


def test_a_fourth_deletion_evicts_the_oldest_other_key() -> None:
    bin_ = [in_bin("LTAIc", 30), in_bin("LTAIa", 10), in_bin("LTAIb", 20)]
    assert lifecycle.evictions(inactive(), bin_, max_in_recycle_bin=3) == ["LTAIa"]


def test_a_tie_in_deletion_time_goes_by_id_among_the_others_only() -> None:
    deleted = inactive("LTAI0first")  # sorts before every other id
    bin_ = [in_bin(key_id, 10) for key_id in ("LTAIc", "LTAIb", "LTAId")]
    assert lifecycle.evictions(deleted, bin_, max_in_recycle_bin=3) == ["LTAIb"]


def test_keys_deleted_later_by_a_server_whose_clock_is_ahead_are_still_the_older() -> None:
    deleted = attrs.evolve(inactive(), recycled_at=at(40))
    bin_ = [in_bin("LTAIx", 120), in_bin("LTAIy", 100), in_bin("LTAIz", 110)]
    assert lifecycle.evictions(deleted, bin_, max_in_recycle_bin=3) == ["LTAIy"]


def test_a_bin_with_room_evicts_nothing() -> None:
    bin_ = [in_bin("LTAIa", 1), in_bin("LTAIb", 2)]
    assert lifecycle.evictions(inactive(), bin_, max_in_recycle_bin=3) == []


def test_a_bin_of_capacity_zero_keeps_only_the_deleted_key() -> None:
    bin_ = [in_bin("LTAIb", 2), in_bin("LTAIa", 1)]
    assert lifecycle.evictions(inactive(), bin_, max_in_recycle_bin=0) == ["LTAIa", "LTAIb"]


_bins = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 5)),
    unique_by=lambda entry: entry[0],
    max_size=8,
)


@given(
    bin_=_bins,
    deleted=st.tuples(st.sampled_from("abcdefgh"), st.integers(-3, 8)),
    capacity=st.integers(0, 5),
    include_deleted=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_eviction_never_picks_the_deleted_key_and_takes_the_oldest_others(
    bin_: list[tuple[str, int]],
    deleted: tuple[str, int],
    capacity: int,
    include_deleted: bool,
    order: random.Random,
) -> None:
    deleted_id, deleted_at = deleted
    record = attrs.evolve(inactive(f"LTAI{deleted_id}"), recycled_at=at(deleted_at))
    others = [in_bin(f"LTAI{key_id}", when) for key_id, when in bin_ if key_id != deleted_id]
    given_bin = [*others, record] if include_deleted else list(others)
    order.shuffle(given_bin)

    evicted = lifecycle.evictions(record, given_bin, max_in_recycle_bin=capacity)

    assert record.access_key_id not in evicted
    assert len(evicted) == min(len(others), max(0, len(others) + 1 - capacity))
    oldest_first = sorted(others, key=lambda other: (other.recycled_at, other.access_key_id))
    assert evicted == [other.access_key_id for other in oldest_first[: len(evicted)]]


# -- retention ---------------------------------------------------------------------------------


def test_retention_ends_exactly_thirty_days_after_the_deletion() -> None:
    recycled_at = at(0)
    end = recycled_at + RECYCLE_BIN_RETENTION
    assert not lifecycle.retention_ended(recycled_at, end - MICROSECOND)
    assert lifecycle.retention_ended(recycled_at, end)
    assert lifecycle.retention_ended(recycled_at, end + MICROSECOND)


@given(offset=st.timedeltas(min_value=-timedelta(days=2), max_value=timedelta(days=2)))
def test_retention_cutoff_is_the_boundary_retention_ended_uses(offset: timedelta) -> None:
    now = T0 + RECYCLE_BIN_RETENTION + offset
    cutoff = lifecycle.retention_cutoff(now)
    assert lifecycle.retention_ended(cutoff, now)
    assert not lifecycle.retention_ended(cutoff + MICROSECOND, now)


def test_expired_gives_only_keys_past_retention_by_id() -> None:
    now = at(100) + RECYCLE_BIN_RETENTION
    records = [
        in_bin("LTAIlate", 101),
        in_bin("LTAIzz", 100),
        in_bin("LTAIaa", 40),
        hmac_record(ALICE, access_key_id="LTAIlive"),
    ]
    assert [record.access_key_id for record in lifecycle.expired(records, now)] == [
        "LTAIaa",
        "LTAIzz",
    ]


# -- restore -----------------------------------------------------------------------------------


def test_restore_brings_the_key_back_inactive_and_out_of_the_bin() -> None:
    record = attrs.evolve(in_bin("LTAIa", 0), status=KeyStatus.ACTIVE)
    assert lifecycle.restorable(record, "LTAIa", now=at(1)) is record
    assert lifecycle.restored(record, [True], max_keys_per_owner=2) == attrs.evolve(
        record, recycled_at=None, status=KeyStatus.INACTIVE
    )


def test_restore_one_microsecond_before_purge_at_succeeds_and_at_it_is_refused() -> None:
    record = in_bin("LTAIa", 0)
    assert record.purge_at is not None
    assert lifecycle.restorable(record, "LTAIa", now=record.purge_at - MICROSECOND) is record
    with pytest.raises(AccessKeyNotInRecycleBin, match="retention ended"):
        lifecycle.restorable(record, "LTAIa", now=record.purge_at)


@pytest.mark.parametrize(
    "record", [None, hmac_record(ALICE, access_key_id="LTAIa")], ids=["unknown", "live"]
)
def test_restore_of_a_key_not_in_the_bin_is_refused(record: KeyRecord | None) -> None:
    with pytest.raises(AccessKeyNotInRecycleBin):
        lifecycle.restorable(record, "LTAIa", now=at(1))


def test_restore_without_room_for_the_owner_is_refused() -> None:
    with pytest.raises(AccessKeyLimitExceeded):
        lifecycle.restored(in_bin("LTAIa", 0), [True, False, False], max_keys_per_owner=2)


# -- purge -------------------------------------------------------------------------------------

_PURGES: list[tuple[str, KeyRecord | None, type[Exception] | None]] = [
    ("in_recycle_bin", in_bin("LTAIa", 0), None),
    ("in_recycle_bin", inactive("LTAIa"), AccessKeyNotInRecycleBin),
    ("in_recycle_bin", None, AccessKeyNotInRecycleBin),
    ("inactive", inactive("LTAIa", ACCOUNT), None),
    ("inactive", hmac_record(ACCOUNT, access_key_id="LTAIa"), AccessKeyNotInactive),
    ("inactive", in_bin("LTAIa", 0), AccessKeyNotFound),
    ("inactive", None, AccessKeyNotFound),
]


@pytest.mark.parametrize(
    ("only_if", "record", "refusal"),
    _PURGES,
    ids=[
        "bin-of-binned",
        "bin-of-live",
        "bin-of-unknown",
        "inactive-of-inactive",
        "inactive-of-active",
        "inactive-of-binned",
        "inactive-of-unknown",
    ],
)
def test_purge_destroys_only_what_its_condition_allows(
    only_if: lifecycle.PurgeCondition,
    record: KeyRecord | None,
    refusal: type[Exception] | None,
) -> None:
    if refusal is None:
        assert lifecycle.check_purgeable(record, "LTAIa", only_if=only_if) is record
    else:
        with pytest.raises(refusal):
            lifecycle.check_purgeable(record, "LTAIa", only_if=only_if)


@pytest.mark.parametrize("only_if", ["in_recycle_bin", "inactive"])
def test_purge_conditions_are_the_two_the_protocol_names(only_if: str) -> None:
    assert lifecycle.check_purge_condition(only_if) == only_if


@pytest.mark.parametrize("only_if", ["active", "", None, "IN_RECYCLE_BIN"])
def test_any_other_purge_condition_is_refused(only_if: object) -> None:
    with pytest.raises(InvalidParameter):
        lifecycle.check_purge_condition(only_if)
