"""MemoryStore's nonce claims filed by the second they expire in (issue 12 item 4).

The conformance suite holds every backend to the protocol; these tests hold what the
filing adds: claims of an ended second are dropped by later claims without a scan, a
claim taken again is never dropped under the second it was first filed in, and the
store answers as a plain dict of claims would, whatever the order of claims and prunes.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aliak.errors import InvalidParameter
from aliak.storage.memory import MemoryStore

NOW = 1_700_000_000.0
SPREAD = 400  # nonces, enough to land in every shard


def claim_everywhere(store: MemoryStore, now: float, tag: str) -> None:
    """A claim in every shard at ``now``, so each drops the seconds that have ended."""
    for number in range(SPREAD):
        assert store.claim_nonce("LTAIother", f"{tag}-{number}", now=now, expires_at=now + 900)


def test_claims_of_an_ended_second_are_dropped_by_later_claims() -> None:
    store = MemoryStore()
    for number in range(1000):
        store.claim_nonce("LTAIkey", f"n{number}", now=NOW, expires_at=NOW + 10.5)
    claim_everywhere(store, NOW + 11, "later")
    assert store.prune_nonces(NOW + 11) == 0  # nothing expired was left to prune


def test_without_automatic_expiry_only_prune_drops_claims() -> None:
    store = MemoryStore(prune_every=0)
    for number in range(1000):
        store.claim_nonce("LTAIkey", f"n{number}", now=NOW, expires_at=NOW + 10.5)
    claim_everywhere(store, NOW + 11, "later")
    assert store.prune_nonces(NOW + 11) == 1000


def test_a_claim_taken_again_outlives_the_second_it_was_first_filed_in() -> None:
    store = MemoryStore()
    assert store.claim_nonce("LTAIkey", "again", now=NOW, expires_at=NOW + 10)
    assert store.claim_nonce("LTAIkey", "again", now=NOW + 10, expires_at=NOW + 100)
    claim_everywhere(store, NOW + 20, "later")  # the first claim's second has ended
    assert store.prune_nonces(NOW + 20) == 0
    assert store.claim_nonce("LTAIkey", "again", now=NOW + 99.9, expires_at=NOW + 999) is False
    assert store.claim_nonce("LTAIkey", "again", now=NOW + 100, expires_at=NOW + 999) is True


def test_a_claim_taken_again_within_one_second_is_counted_once() -> None:
    store = MemoryStore()
    store.claim_nonce("LTAIkey", "twice", now=NOW, expires_at=NOW + 10.2)
    store.claim_nonce("LTAIkey", "twice", now=NOW + 10.2, expires_at=NOW + 10.9)
    assert store.prune_nonces(NOW + 10.5) == 0
    assert store.claim_nonce("LTAIkey", "twice", now=NOW + 10.5, expires_at=NOW + 99) is False
    assert store.prune_nonces(NOW + 11) == 1


def test_prune_takes_what_expired_within_the_second_it_runs_in() -> None:
    store = MemoryStore()
    store.claim_nonce("LTAIkey", "early", now=NOW, expires_at=NOW + 10.25)
    store.claim_nonce("LTAIkey", "late", now=NOW, expires_at=NOW + 10.75)
    assert store.prune_nonces(NOW + 10.5) == 1
    assert store.claim_nonce("LTAIkey", "late", now=NOW + 10.5, expires_at=NOW + 99) is False
    assert store.prune_nonces(NOW + 10.75) == 1
    assert store.claim_nonce("LTAIkey", "late", now=NOW + 10.75, expires_at=NOW + 99) is True


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_claim_without_a_finite_expiry_is_refused_as_invalid(bad: float) -> None:
    with pytest.raises(InvalidParameter):
        MemoryStore().claim_nonce("LTAIkey", "n", now=NOW, expires_at=bad)
    with pytest.raises(InvalidParameter):
        MemoryStore().claim_nonce("LTAIkey", "n", now=bad, expires_at=NOW)


def test_racing_threads_on_many_nonces_each_let_exactly_one_through() -> None:
    store = MemoryStore()
    threads, nonces = 4, 2000
    start = threading.Barrier(threads)
    won: list[list[str]] = [[] for _ in range(threads)]

    def race(index: int) -> None:
        start.wait()
        for number in range(nonces):
            nonce = f"n{number}"
            if store.claim_nonce("LTAIkey", nonce, now=NOW, expires_at=NOW + 900):
                won[index].append(nonce)

    workers = [threading.Thread(target=race, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    winners = [nonce for mine in won for nonce in mine]
    assert sorted(winners) == sorted(f"n{number}" for number in range(nonces))


class ReferenceNonces:
    """The protocol as a plain dict: what every claim and prune must answer."""

    def __init__(self) -> None:
        self.expiry: dict[tuple[str, str], float] = {}

    def claim(self, key: tuple[str, str], now: float, expires_at: float) -> bool:
        held = self.expiry.get(key)
        if held is not None and held > now:
            return False
        self.expiry[key] = expires_at
        return True

    def prune(self, now: float) -> int:
        expired = [key for key, held in self.expiry.items() if held <= now]
        for key in expired:
            del self.expiry[key]
        return len(expired)


steps = st.integers(min_value=0, max_value=6).map(lambda quarters: quarters / 4)
operations = st.lists(
    st.tuples(
        st.sampled_from(["claim", "claim", "claim", "prune"]),
        st.sampled_from(["a", "b", "c", "d", "e"]),
        steps,  # how far the clock moved since the operation before
        st.integers(min_value=0, max_value=12).map(lambda quarters: quarters / 4),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=operations, prune_every=st.sampled_from([0, 1, 2, 5]))
def test_claims_and_prunes_answer_as_a_plain_dict_would(
    operations: list[tuple[str, str, float, float]], prune_every: int
) -> None:
    store = MemoryStore(prune_every=prune_every)
    reference = ReferenceNonces()
    now = NOW
    for kind, nonce, step, hold in operations:
        now += step
        if kind == "claim":
            expected = reference.claim(("LTAIkey", nonce), now, now + hold)
            assert store.claim_nonce("LTAIkey", nonce, now=now, expires_at=now + hold) == expected
        else:
            pruned, expected_pruned = store.prune_nonces(now), reference.prune(now)
            if prune_every:  # automatic expiry may have taken some of them already
                assert pruned <= expected_pruned
            else:
                assert pruned == expected_pruned
    assert store.prune_nonces(now + 5) <= reference.prune(now + 5)
    for nonce in "abcde":  # and nothing live was lost: every claim still answers the same
        expected = reference.claim(("LTAIkey", nonce), now + 1, now + 2)
        assert store.claim_nonce("LTAIkey", nonce, now=now + 1, expires_at=now + 2) == expected


def test_claims_racing_takeovers_and_prunes_keep_one_winner_and_every_live_claim() -> None:
    # Every nonce was claimed once and has expired; 4 threads race to take each over
    # while a fifth prunes the second they now fall in, again and again.
    store = MemoryStore()
    nonces = [f"n{number}" for number in range(3000)]
    for nonce in nonces:
        store.claim_nonce("LTAIkey", nonce, now=NOW, expires_at=NOW + 10)
    start = threading.Barrier(5)
    racing = threading.Event()
    won: list[list[str]] = [[] for _ in range(4)]

    def take_over(index: int) -> None:
        start.wait()
        for nonce in nonces:
            if store.claim_nonce("LTAIkey", nonce, now=NOW + 20.5, expires_at=NOW + 20.9):
                won[index].append(nonce)

    def prune() -> None:
        start.wait()
        while racing.is_set():
            store.prune_nonces(NOW + 20.5)

    racing.set()
    pruner = threading.Thread(target=prune)
    workers = [threading.Thread(target=take_over, args=(index,)) for index in range(4)]
    for thread in [pruner, *workers]:
        thread.start()
    for worker in workers:
        worker.join()
    racing.clear()
    pruner.join()
    assert sorted(nonce for mine in won for nonce in mine) == sorted(nonces)
    assert not any(
        store.claim_nonce("LTAIkey", nonce, now=NOW + 20.8, expires_at=NOW + 99) for nonce in nonces
    )
    assert store.prune_nonces(NOW + 20.9) == len(nonces)
