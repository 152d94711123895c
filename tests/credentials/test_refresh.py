"""The refresh rules of RefreshingCredentialsProvider, on an injected clock: stale at
Expiration - 15 min, the last good value served while refreshes fail and until it
expires, one refresh at a time across threads, asyncio without blocking the loop."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone

import pytest

from aliak import AccessKey, CredentialsUnavailable, StsCredential
from aliak.credentials import STALE_MARGIN, RefreshingCredentialsProvider
from aliak.credentials._values import Credential

T0 = 1_700_000_000.0
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sts(number: int, expires_at: float) -> StsCredential:
    return StsCredential(
        f"STS.n{number}",
        f"secret-{number}",
        f"token-{number}",
        datetime.fromtimestamp(expires_at, tz=timezone.utc),
    )


class Source(RefreshingCredentialsProvider):
    """Issues credential n, valid ``lifetime`` from now, or fails when told to."""

    source = "the test source"

    def __init__(self, clock: Clock, *, lifetime: float = HOUR, **options: float) -> None:
        super().__init__(clock=clock, **options)  # type: ignore[arg-type]
        self.clock = clock
        self.lifetime = lifetime
        self.fetches = 0
        self.failing = False

    def fetch(self) -> Credential:
        self.fetches += 1
        if self.failing:
            raise CredentialsUnavailable(self.source, detail="STS said no")
        return sts(self.fetches, self.clock.now + self.lifetime)


def test_a_fresh_credential_is_served_without_asking_the_source_again() -> None:
    clock = Clock()
    source = Source(clock)
    first = source.get_credential()
    clock.now += HOUR - STALE_MARGIN - 1
    assert source.get_credential() is first
    assert source.fetches == 1


def test_a_stale_credential_is_refreshed_before_it_is_served() -> None:
    clock = Clock()
    source = Source(clock)
    first = source.get_credential()
    clock.now += HOUR - STALE_MARGIN
    second = source.get_credential()
    assert second is not first
    assert second.access_key_id == "STS.n2"
    assert source.fetches == 2


def test_a_failed_refresh_serves_the_last_good_value_until_it_expires() -> None:
    clock = Clock()
    source = Source(clock)
    first = source.get_credential()
    source.failing = True
    clock.now += HOUR - STALE_MARGIN
    assert source.get_credential() is first
    assert isinstance(source.last_error, CredentialsUnavailable)
    clock.now = T0 + HOUR - 1  # one second before it expires
    assert source.get_credential() is first
    clock.now = T0 + HOUR
    with pytest.raises(CredentialsUnavailable) as caught:
        source.get_credential()
    assert "expired" in str(caught.value)
    assert "STS said no" in str(caught.value)


def test_refreshes_that_fail_are_retried_at_the_retry_interval_not_on_every_call() -> None:
    clock = Clock()
    source = Source(clock, retry_interval=10.0)
    source.get_credential()
    source.failing = True
    clock.now += HOUR - STALE_MARGIN
    source.get_credential()
    source.get_credential()
    assert source.fetches == 2
    clock.now += 10.0
    source.get_credential()
    assert source.fetches == 3
    source.failing = False
    clock.now += 10.0
    assert source.get_credential().access_key_id == "STS.n4"


def test_a_first_fetch_that_fails_raises_and_the_next_call_tries_again() -> None:
    clock = Clock()
    source = Source(clock)
    source.failing = True
    with pytest.raises(CredentialsUnavailable):
        source.get_credential()
    source.failing = False
    assert source.get_credential().access_key_id == "STS.n2"


def test_the_backoff_never_serves_a_credential_past_its_expiry() -> None:
    clock = Clock()
    source = Source(clock, retry_interval=600.0)
    source.get_credential()
    source.failing = True
    clock.now = T0 + HOUR - 5  # the retry interval would reach past the expiry
    source.get_credential()
    clock.now = T0 + HOUR
    with pytest.raises(CredentialsUnavailable):
        source.get_credential()


def test_a_credential_shorter_than_the_margin_goes_stale_half_way() -> None:
    clock = Clock()
    source = Source(clock, lifetime=900.0)  # the shortest AssumeRole
    first = source.get_credential()
    clock.now += 449
    assert source.get_credential() is first
    clock.now += 1
    assert source.get_credential() is not first


def test_an_already_expired_answer_counts_as_a_failure() -> None:
    clock = Clock()
    source = Source(clock, lifetime=-1.0)
    with pytest.raises(CredentialsUnavailable) as caught:
        source.get_credential()
    assert "clock" in str(caught.value)


def test_a_permanent_credential_is_never_refreshed() -> None:
    clock = Clock()

    class Permanent(Source):
        def fetch(self) -> Credential:
            self.fetches += 1
            return AccessKey("LTAIpermanent", "secret")

    source = Permanent(clock)
    first = source.get_credential()
    clock.now += 10 * 365 * 24 * HOUR
    assert source.get_credential() is first
    assert source.fetches == 1


def test_prefetch_refreshes_in_the_background_while_callers_keep_the_value() -> None:
    clock = Clock()
    entered, release = threading.Event(), threading.Event()

    class Slow(Source):
        def fetch(self) -> Credential:
            if self.fetches:
                entered.set()
                assert release.wait(30)
            return super().fetch()

    source = Slow(clock, lifetime=6 * HOUR, prefetch_after=HOUR)
    first = source.get_credential()
    clock.now += HOUR
    assert source.get_credential() is first  # the prefetch starts, the caller goes on
    assert entered.wait(30)
    assert source.get_credential() is first  # still being fetched: the current value
    release.set()
    source.refresh_if_due()  # waits for the background refresh's lock, then finds it done
    assert source.get_credential().access_key_id == "STS.n2"
    assert source.fetches == 2


def test_many_threads_on_a_stale_credential_cause_one_refresh_and_never_wait() -> None:
    clock = Clock()
    entered, release = threading.Event(), threading.Event()

    class Slow(Source):
        def fetch(self) -> Credential:
            if self.fetches:
                entered.set()
                assert release.wait(30)
            return super().fetch()

    source = Slow(clock)
    first = source.get_credential()
    clock.now += HOUR - STALE_MARGIN
    results: list[str] = []
    refresher = threading.Thread(
        target=lambda: results.append(source.get_credential().access_key_id)
    )
    refresher.start()
    assert entered.wait(30)
    others = [
        threading.Thread(target=lambda: results.append(source.get_credential().access_key_id))
        for _ in range(16)
    ]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()  # they return while the refresh is still held up
    assert results == [first.access_key_id] * 16
    release.set()
    refresher.join()
    assert results[-1] == "STS.n2"
    assert source.fetches == 2


def test_many_threads_with_nothing_to_serve_wait_for_one_fetch() -> None:
    clock = Clock()
    source = Source(clock)
    barrier = threading.Barrier(16)
    results: list[str] = []

    def call() -> None:
        barrier.wait()
        results.append(source.get_credential().access_key_id)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["STS.n1"] * 16
    assert source.fetches == 1


def test_the_async_accessor_refreshes_off_the_event_loop() -> None:
    clock = Clock()
    loop_threads: set[int] = set()

    class Recording(Source):
        def fetch(self) -> Credential:
            loop_threads.add(threading.get_ident())
            return super().fetch()

    source = Recording(clock)

    async def main() -> tuple[str, str, int]:
        first = await source.get_credential_async()
        clock.now += HOUR - STALE_MARGIN
        second = await source.get_credential_async()
        return first.access_key_id, second.access_key_id, threading.get_ident()

    first, second, loop_thread = asyncio.run(main())
    assert (first, second) == ("STS.n1", "STS.n2")
    assert loop_thread not in loop_threads


def test_the_repr_names_the_source_and_the_id_never_the_secret() -> None:
    source = Source(Clock())
    source.get_credential()
    text = repr(source)
    assert "STS.n1" in text
    assert "secret-1" not in text
    assert "token-1" not in text
