"""Redis for a fleet: the replay guard (RedisNonceStore), the invalidation channel
(RedisInvalidation), and stores composed from parts (CompositeStore).

Tests that need a server run only when ALIAK_TEST_REDIS_URL is set (``.ci/services run``
sets it); the fault tests also need ALIAK_TEST_REDIS_CTL, which stops and restarts it.
Each test uses its own key prefix and channel, so tests never see each other's claims.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("redis", reason="the redis extra is not installed")

from aliak import AccessKey, KeyManager, RamUser, Request, Signer, SQLiteStore, Verifier
from aliak.acl import NetworkPolicy
from aliak.errors import (
    AliakError,
    InternalError,
    InvalidAccessKeyIdInactive,
    InvalidParameter,
    ServiceUnavailable,
    SignatureNonceUsed,
)
from aliak.model import KeyStatus
from aliak.storage.composite import AsyncCompositeStore, CompositeStore
from aliak.storage.invalidation import CombinedInvalidation
from aliak.storage.memory import MemoryStore
from aliak.storage.protocols import InvalidationChannel, PolicyTarget
from aliak.storage.redis import (
    RedisInvalidation,
    RedisNonceStore,
    _claim_arguments,
    _key_encoder,
    describe_url,
)

URL_VARIABLE = "ALIAK_TEST_REDIS_URL"
CTL_VARIABLE = "ALIAK_TEST_REDIS_CTL"
SPAWN = multiprocessing.get_context("spawn")
OWNER = RamUser("1234567890123456", "fleet-app")
PASSWORD = "s3cr3t-Pa55word"
NOW = 1_700_000_000.0
LATER = NOW + 1800.0


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(URL_VARIABLE)
    if not url:
        pytest.skip(f"set {URL_VARIABLE} to test against a Redis server")
    return url


@pytest.fixture
def prefix() -> str:
    return f"aliak-test:{uuid.uuid4().hex}:"


@pytest.fixture
def channel_name() -> str:
    return f"aliak-test:invalidate:{uuid.uuid4().hex}"


@pytest.fixture
def nonces(redis_url: str, prefix: str) -> Iterator[RedisNonceStore]:
    store = RedisNonceStore(redis_url, prefix=prefix)
    yield store
    store.close()


@pytest.fixture
def redis_ctl(redis_url: str) -> Iterator[Callable[[str], None]]:
    """Stops and starts the test server; it is always running again after the test."""
    script = os.environ.get(CTL_VARIABLE)
    if not script:
        pytest.skip(f"set {CTL_VARIABLE} to stop and restart the Redis server")

    def control(action: str) -> None:
        subprocess.run([script, action], check=False, timeout=30)

    yield control
    control("start")


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Poll ``condition``; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def signed_request(access_key: AccessKey) -> Request:
    return Signer(access_key).sign(
        Request("POST", host="api.example.com", path="/v1/orders", body=b'{"n":1}'),
        action="CreateOrder",
        version="2024-01-01",
    )


def error_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


# -- claims -----------------------------------------------------------------------------


def test_first_claim_succeeds_and_a_replay_is_refused(nonces: RedisNonceStore) -> None:
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=LATER + 1) is False


def test_the_same_nonce_under_another_key_id_is_a_separate_claim(nonces: RedisNonceStore) -> None:
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("LTAIother", "n-1", now=NOW, expires_at=LATER) is True


def test_ids_holding_colons_never_collide_with_another_id_and_nonce(
    nonces: RedisNonceStore,
) -> None:
    assert nonces.claim_nonce("a:b", "c", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("a", "b:c", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("a:b:c", "", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("a", "b:c", now=NOW, expires_at=LATER) is False


def test_keys_are_the_prefix_then_the_id_length_id_and_nonce(nonces: RedisNonceStore) -> None:
    assert nonces.key("a:b", "c") == f"{nonces.prefix}3:a:b:c".encode()
    assert nonces.key("a", "b:c") == f"{nonces.prefix}1:a:b:c".encode()


text = st.text(
    alphabet=st.characters()
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)  # lone surrogates too
    | st.sampled_from(":0123456789")
)


def decode_key(key: bytes, prefix: bytes) -> tuple[str, str]:
    """The inverse of the key encoding: that it exists proves the encoding injective."""
    assert key.startswith(prefix)
    length, _, rest = key[len(prefix) :].partition(b":")
    size = int(length)
    key_id, separator, nonce = rest[:size], rest[size : size + 1], rest[size + 1 :]
    assert separator == b":"
    return key_id.decode("utf-8", "surrogatepass"), nonce.decode("utf-8", "surrogatepass")


@given(access_key_id=text, nonce=text)
def test_the_key_encoding_is_injective(access_key_id: str, nonce: str) -> None:
    key = _key_encoder("aliak:nonce:")
    assert decode_key(key(access_key_id, nonce), b"aliak:nonce:") == (access_key_id, nonce)


def test_odd_characters_in_an_id_or_nonce_still_make_a_claim(nonces: RedisNonceStore) -> None:
    assert nonces.claim_nonce("LTAI\udcff", "\ud800\u00e9", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("LTAI\udcff", "\ud800\u00e9", now=NOW, expires_at=LATER) is False


def test_ttl_is_expires_at_minus_now_rounded_up_to_a_millisecond() -> None:
    assert _claim_arguments(NOW, NOW + 1.5)[1] == "1500"
    assert _claim_arguments(NOW, NOW + 1.2341)[1] == "1235"  # never forgotten early
    assert _claim_arguments(NOW, NOW + 0.0000001)[1] == "1"
    assert _claim_arguments(NOW, NOW - 5)[1] == "1"  # PX refuses 0 and below
    with pytest.raises(InvalidParameter):
        _claim_arguments(NOW, float("inf"))


def test_the_server_holds_the_claim_for_its_ttl(nonces: RedisNonceStore, redis_url: str) -> None:
    import redis

    nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    client = redis.Redis.from_url(redis_url)
    try:
        remaining = client.pttl(nonces.key("LTAIkey", "n-1"))
    finally:
        client.close()
    assert 1_795_000 <= remaining <= 1_800_000


def test_a_claim_is_free_again_after_its_ttl_and_never_before_expires_at(
    nonces: RedisNonceStore,
) -> None:
    now = time.time()
    expires_at = now + 1.5
    assert nonces.claim_nonce("LTAIkey", "short", now=now, expires_at=expires_at) is True
    while True:
        moment = time.time()
        claimed = nonces.claim_nonce("LTAIkey", "short", now=moment, expires_at=moment + 1.5)
        if claimed:
            break
        assert moment < expires_at + 0.5, "the claim outlived its TTL"
        time.sleep(0.02)
    assert time.time() >= expires_at  # never free before expires_at
    assert time.time() < now + 1.6 + 0.3  # and free soon after (~1.6 s)


def test_a_claim_expired_on_the_callers_clock_is_free_although_its_ttl_runs(
    nonces: RedisNonceStore,
) -> None:
    # The protocol's rule, the same for every backend: "expired at now" frees a claim.
    nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    assert nonces.claim_nonce("LTAIkey", "n-1", now=LATER - 0.001, expires_at=LATER + 9) is False
    assert nonces.claim_nonce("LTAIkey", "n-1", now=LATER, expires_at=LATER + 1800) is True


def test_prune_only_counts_what_the_callers_clock_says_expired(nonces: RedisNonceStore) -> None:
    nonces.claim_nonce("LTAIkey", "old", now=NOW, expires_at=NOW + 10)
    nonces.claim_nonce("LTAIkey", "live", now=NOW, expires_at=LATER)
    assert nonces.prune_nonces(NOW + 10) == 1
    assert nonces.prune_nonces(NOW + 10) == 0
    assert nonces.claim_nonce("LTAIkey", "live", now=NOW + 10, expires_at=LATER) is False


def test_prune_never_touches_keys_outside_the_prefix(redis_url: str, prefix: str) -> None:
    glob_like = RedisNonceStore(redis_url, prefix=prefix + "*[x]?")
    plain = RedisNonceStore(redis_url, prefix=prefix)
    try:
        plain.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 1)
        assert glob_like.prune_nonces(LATER) == 0
        assert plain.prune_nonces(LATER) == 1
    finally:
        glob_like.close()
        plain.close()


def test_eight_threads_claiming_one_nonce_let_exactly_one_through(
    nonces: RedisNonceStore,
) -> None:
    start = threading.Barrier(8)
    outcomes: list[bool] = []

    def claim() -> None:
        start.wait()
        outcomes.append(nonces.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [False] * 7 + [True]


def claim_in_child(url: str, prefix: str, barrier: Any, results: Any) -> None:
    store = RedisNonceStore(url, prefix=prefix)
    barrier.wait(timeout=30)
    try:
        results.put(store.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER))
    finally:
        store.close()


def test_four_processes_claiming_one_nonce_let_exactly_one_through(
    redis_url: str, prefix: str
) -> None:
    barrier = SPAWN.Barrier(4)
    results = SPAWN.Queue()
    workers = [
        SPAWN.Process(target=claim_in_child, args=(redis_url, prefix, barrier, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [False] * 3 + [True]


def test_twenty_gathered_async_claims_let_exactly_one_through(nonces: RedisNonceStore) -> None:
    async_nonces = nonces.as_async()

    async def scenario() -> list[bool]:
        try:
            claims = (
                async_nonces.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER)
                for _ in range(20)
            )
            return list(await asyncio.gather(*claims))
        finally:
            await async_nonces.aclose()

    assert sorted(asyncio.run(scenario())) == [False] * 19 + [True]


def test_the_async_face_shares_the_claims_of_the_sync_store(nonces: RedisNonceStore) -> None:
    nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    async_nonces = nonces.as_async()

    async def scenario() -> tuple[bool, bool]:
        try:
            replay = await async_nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
            fresh = await async_nonces.claim_nonce("LTAIkey", "n-2", now=NOW, expires_at=LATER)
            return replay, fresh
        finally:
            await async_nonces.aclose()

    assert asyncio.run(scenario()) == (False, True)
    assert nonces.claim_nonce("LTAIkey", "n-2", now=NOW, expires_at=LATER) is False


def test_the_async_face_works_across_event_loops(nonces: RedisNonceStore) -> None:
    async_nonces = nonces.as_async()
    claim = async_nonces.claim_nonce
    assert asyncio.run(claim("LTAIkey", "loop-1", now=NOW, expires_at=LATER)) is True
    assert asyncio.run(claim("LTAIkey", "loop-1", now=NOW, expires_at=LATER)) is False


# -- failing closed, and recovering -------------------------------------------------------


def test_claims_fail_closed_while_redis_is_down_and_work_again_after_it_restarts(
    nonces: RedisNonceStore, redis_ctl: Callable[[str], None]
) -> None:
    now = time.time()
    assert nonces.claim_nonce("LTAIkey", "before", now=now, expires_at=now + 60)
    async_nonces = nonces.as_async()
    redis_ctl("stop")

    with pytest.raises(ServiceUnavailable) as raised:
        nonces.claim_nonce("LTAIkey", "during", now=now, expires_at=now + 60)
    assert raised.value.code == "ServiceUnavailable"
    assert raised.value.http_status == 503
    assert raised.value.__cause__ is not None  # chained to the Redis error
    with pytest.raises(ServiceUnavailable):
        asyncio.run(async_nonces.claim_nonce("LTAIkey", "during", now=now, expires_at=now + 60))

    redis_ctl("start")

    def claims_again() -> bool:
        try:
            return nonces.claim_nonce("LTAIkey", "after", now=now, expires_at=now + 60)
        except ServiceUnavailable:
            return False

    assert wait_for(claims_again, timeout=5, step=0.05) < 5
    assert nonces.claim_nonce("LTAIkey", "after", now=now, expires_at=now + 60) is False


def test_an_os_error_from_below_the_client_fails_closed_as_service_unavailable(
    nonces: RedisNonceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_socket(**_: object) -> object:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(nonces, "_claim_script", broken_socket)
    with pytest.raises(ServiceUnavailable) as raised:
        nonces.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
    assert isinstance(raised.value.__cause__, OSError)


def test_a_verifier_refuses_a_valid_request_while_the_nonce_store_is_down(
    redis_url: str, prefix: str, redis_ctl: Callable[[str], None]
) -> None:
    store = CompositeStore(MemoryStore(), nonces=RedisNonceStore(redis_url, prefix=prefix))
    new = KeyManager(store).create_access_key(OWNER)
    verifier = Verifier(store)
    request = signed_request(new.access_key)
    redis_ctl("stop")
    try:
        with pytest.raises(InternalError) as raised:  # never accepted without its claim
            verifier.verify(request)
        assert any(isinstance(error, ServiceUnavailable) for error in error_chain(raised.value))
    finally:
        redis_ctl("start")

    # Refused, not consumed: once Redis is back the same request passes, exactly once.
    def accepted() -> bool:
        try:
            verifier.verify(request)
        except InternalError:
            return False
        return True

    wait_for(accepted, timeout=5, step=0.05)
    with pytest.raises(SignatureNonceUsed):
        verifier.verify(request)
    verifier.close()
    store.close()


# -- invalidation -----------------------------------------------------------------------


def fleet_store(db: str, url: str, prefix: str, channel: str) -> CompositeStore:
    return CompositeStore(
        SQLiteStore(db),
        nonces=RedisNonceStore(url, prefix=prefix),
        invalidations=RedisInvalidation(url, channel=channel),
    )


def disable_in_another_process(
    where: tuple[str, str, str, str], access_key_id: str, results: Any
) -> None:
    store = fleet_store(*where)
    try:
        KeyManager(store).disable_access_key(access_key_id)
        results.put(time.time())
    finally:
        store.close()


def redis_channel_of(store: CompositeStore) -> RedisInvalidation:
    """The Redis channel a composite's verifiers follow beside its base store's own."""
    combined = store.invalidations
    assert isinstance(combined, CombinedInvalidation)
    assert combined.channels[0] is store.base.invalidations
    redis = combined.channels[-1]
    assert isinstance(redis, RedisInvalidation)
    return redis


def listening(channel: RedisInvalidation, times: int = 1) -> Callable[[], bool]:
    return lambda: channel.subscriptions >= times


def refused_inactive(verifier: Verifier, access_key: AccessKey) -> Callable[[], bool]:
    def check() -> bool:
        try:
            verifier.verify(signed_request(access_key))
        except InvalidAccessKeyIdInactive:
            return True
        return False

    return check


def test_a_key_disabled_in_another_process_is_refused_at_once_not_after_the_freshness(
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    channel_name: str,
) -> None:
    db = str(tmp_path / "aliak.db")
    store = fleet_store(db, redis_url, prefix, channel_name)
    new = KeyManager(store).create_access_key(OWNER)
    verifier = Verifier(store, freshness=60)  # only the channel can make it fast
    wait_for(listening(redis_channel_of(store)), timeout=5)
    verifier.verify(signed_request(new.access_key))  # cached as Active for 60 s

    results = SPAWN.Queue()
    worker = SPAWN.Process(
        target=disable_in_another_process,
        args=((db, redis_url, prefix, channel_name), new.access_key_id, results),
    )
    worker.start()
    disabled_at = results.get(timeout=60)
    wait_for(refused_inactive(verifier, new.access_key), timeout=5)
    delay = time.time() - disabled_at
    worker.join(timeout=30)
    assert delay < 1.0, f"refused {delay:.3f} s after the disable"  # freshness: 60 s
    verifier.close()
    store.close()


def test_the_listener_survives_a_redis_restart(
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    channel_name: str,
    redis_ctl: Callable[[str], None],
) -> None:
    db = str(tmp_path / "aliak.db")
    verifying = fleet_store(db, redis_url, prefix, channel_name)
    administering = CompositeStore(
        SQLiteStore(db), invalidations=RedisInvalidation(redis_url, channel=channel_name)
    )
    new = KeyManager(administering).create_access_key(OWNER)
    verifier = Verifier(verifying, freshness=60)
    channel = redis_channel_of(verifying)
    heard: list[str | None] = []
    channel.subscribe(heard.append)
    wait_for(listening(channel), timeout=5)

    redis_ctl("stop")
    redis_ctl("start")
    wait_for(listening(channel, 2), timeout=5)  # resubscribed by itself
    assert None in heard  # "anything may have changed": messages may have been missed

    verifier.verify(signed_request(new.access_key))  # cached as Active again
    KeyManager(administering).disable_access_key(new.access_key_id)
    assert wait_for(refused_inactive(verifier, new.access_key), timeout=1) < 1.0
    wait_for(lambda: new.access_key_id in heard, timeout=1)  # Redis says so too
    verifier.close()
    verifying.close()
    administering.close()


def test_one_listener_thread_serves_every_callback_until_close(
    redis_url: str, channel_name: str
) -> None:
    channel = RedisInvalidation(redis_url, channel=channel_name)
    first: list[str | None] = []
    second: list[str | None] = []
    before = {thread.ident for thread in threading.enumerate()}
    stop_first = channel.subscribe(first.append)
    channel.subscribe(second.append)
    listeners = [
        thread
        for thread in threading.enumerate()
        if thread.ident not in before and thread.name == "aliak-redis-invalidation"
    ]
    assert len(listeners) == 1
    assert listeners[0].daemon
    wait_for(listening(channel), timeout=5)

    channel.publish("LTAIone")
    wait_for(lambda: "LTAIone" in first and "LTAIone" in second, timeout=2)
    stop_first()
    stop_first()  # idempotent
    channel.publish(None)
    wait_for(lambda: second[-1:] == [None] and second.count(None) >= 2, timeout=2)
    assert first.count(None) == 1  # only the one after subscribing

    channel.close()
    listeners[0].join(timeout=2)
    assert not listeners[0].is_alive()
    with pytest.raises(InternalError):
        channel.subscribe(first.append)


def test_a_failing_publish_is_logged_and_never_fails_the_admin_call(
    redis_url: str, channel_name: str, redis_ctl: Callable[[str], None], caplog: Any
) -> None:
    store = CompositeStore(
        MemoryStore(), invalidations=RedisInvalidation(redis_url, channel=channel_name)
    )
    manager = KeyManager(store)
    new = manager.create_access_key(OWNER)
    redis_ctl("stop")
    with caplog.at_level(logging.WARNING, logger="aliak"):
        info = manager.disable_access_key(new.access_key_id)
    assert info.status is KeyStatus.INACTIVE
    assert any(
        record.name == "aliak" and record.levelno == logging.WARNING for record in caplog.records
    )
    assert new.secret.reveal() not in caplog.text
    store.close()


class ExplodingChannel:
    def publish(self, access_key_id: str | None) -> None:
        raise RuntimeError("the channel is down")

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        return lambda: None

    def refresh(self) -> None:
        raise RuntimeError("the channel is down")


def test_a_channel_that_raises_never_fails_the_admin_call(caplog: Any) -> None:
    store = CompositeStore(MemoryStore(), invalidations=ExplodingChannel())
    manager = KeyManager(store)
    new = manager.create_access_key(OWNER)
    with caplog.at_level(logging.WARNING, logger="aliak"):
        manager.disable_access_key(new.access_key_id)
    record = store.get_key(new.access_key_id)
    assert record is not None
    assert record.status is KeyStatus.INACTIVE
    assert "RuntimeError" in caplog.text


# -- construction errors ------------------------------------------------------------------


@pytest.mark.parametrize("opener", [RedisNonceStore, RedisInvalidation])
def test_an_unreachable_server_is_a_clear_error_without_the_password(opener: Any) -> None:
    url = f"redis://admin:{PASSWORD}@127.0.0.1:1/0"
    with pytest.raises(ServiceUnavailable) as raised:
        opener(url, socket_timeout=1.0)
    told = "".join(traceback.format_exception(raised.value)) + repr(raised.value)
    assert "127.0.0.1:1" in str(raised.value)
    assert PASSWORD not in told


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://admin:{PASSWORD}@127.0.0.1:port/0",
        f"redis://admin:pa#{PASSWORD}@127.0.0.1:6379/0",
        f"redis://admin:pa/{PASSWORD}@127.0.0.1:notaport/0",
        "not a url at all",
    ],
)
def test_a_malformed_url_is_an_invalid_parameter_without_the_password(url: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        RedisNonceStore(url)
    told = "".join(traceback.format_exception(raised.value)) + repr(raised.value)
    assert raised.value.parameter == "url"
    assert PASSWORD not in told


def test_urls_are_described_without_credentials_or_query() -> None:
    assert describe_url(f"redis://u:{PASSWORD}@host:6379/0") == "redis://***@host:6379/0"
    assert describe_url(f"redis://host:6379/0?password={PASSWORD}") == "redis://host:6379/0"
    assert describe_url(f"redis://u:a@b/{PASSWORD}@host/0") == "redis://***@host/0"
    assert describe_url("redis://host:6379") == "redis://host:6379"


def test_the_store_repr_never_shows_the_password(redis_url: str) -> None:
    scheme, rest = redis_url.split("://", 1)
    with_password = f"{scheme}://default:{PASSWORD}@{rest}"
    try:
        store = RedisNonceStore(with_password)
    except AliakError as error:  # a server that checks passwords refuses this one
        assert PASSWORD not in "".join(traceback.format_exception(error))
        return
    assert PASSWORD not in repr(store)
    assert PASSWORD not in repr(store.as_async())
    store.close()


# -- the composite store ------------------------------------------------------------------


class RecordingChannel:
    def __init__(self) -> None:
        self.published: list[str | None] = []
        self.subscribers: list[Callable[[str | None], None]] = []
        self.closed = False

    def publish(self, access_key_id: str | None) -> None:
        self.published.append(access_key_id)

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class RecordingNonces:
    def __init__(self) -> None:
        self.claims: list[tuple[str, str]] = []
        self.closed = False

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        self.claims.append((access_key_id, nonce))
        return True

    def prune_nonces(self, now: float) -> int:
        return 7

    def close(self) -> None:
        self.closed = True


def test_every_change_through_the_composite_is_announced_after_it_succeeds() -> None:
    channel = RecordingChannel()
    store = CompositeStore(MemoryStore(), invalidations=channel)
    manager = KeyManager(store)

    new = manager.create_access_key(OWNER)
    key_id = new.access_key_id
    assert channel.published == [key_id]
    manager.disable_access_key(key_id)
    manager.delete_access_key(key_id)
    manager.restore_access_key(key_id)
    manager.mark_leaked(key_id)
    manager.set_network_policy(NetworkPolicy(), access_key_id=key_id)
    manager.set_network_policy(NetworkPolicy(), account_id=OWNER.account_id)
    manager.set_root_keys_allowed(False)
    assert manager.rotate_master_key() == 1  # a re-sealed secret is a changed record
    manager.delete_access_key(key_id)
    manager.purge_access_key(key_id)
    assert channel.published == [key_id] * 6 + [None, None] + [key_id] * 3

    channel.published.clear()
    with pytest.raises(AliakError):  # a change that fails is not announced
        store.set_key_status(key_id, KeyStatus.ACTIVE)
    assert not store.reseal_secret(key_id, b"old", b"new")
    assert channel.published == []


def test_a_purge_of_many_keys_is_announced_as_one_change_of_anything() -> None:
    from datetime import timedelta

    channel = RecordingChannel()
    store = CompositeStore(MemoryStore(), invalidations=channel)
    manager = KeyManager(store, max_keys_per_owner=100)
    owners = [RamUser(OWNER.account_id, f"user-{index}") for index in range(20)]
    for owner in owners:
        new = manager.create_access_key(owner)
        manager.disable_access_key(new.access_key_id)
        manager.delete_access_key(new.access_key_id)
    channel.published.clear()
    later = KeyManager(store, clock=lambda: time.time() + timedelta(days=31).total_seconds())
    assert len(later.purge_expired()) == 20
    assert channel.published == [None]


def test_the_composite_routes_nonces_and_delegates_everything_else(tmp_path: Path) -> None:
    base = SQLiteStore(tmp_path / "aliak.db")
    nonces = RecordingNonces()
    channel = RecordingChannel()
    store = CompositeStore(base, nonces=nonces, invalidations=channel)
    assert store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER) is True
    assert nonces.claims == [("LTAIkey", "n")]
    assert store.prune_nonces(LATER) == 7
    assert base.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER) is True  # untouched
    assert store.keyring is base.keyring
    assert store.key_file is base.key_file  # what the base offers beyond the protocol
    assert "SQLiteStore" in repr(store)

    store.close()
    assert nonces.closed
    assert channel.closed


class SilentMemoryStore(MemoryStore):
    """A store without a channel of its own, as a third-party backend may be."""

    def __init__(self) -> None:
        super().__init__()
        self.invalidations = None


def test_a_verifier_on_the_composite_follows_its_channel() -> None:
    channel = RecordingChannel()
    store = CompositeStore(SilentMemoryStore(), invalidations=channel)
    assert isinstance(store.invalidations, InvalidationChannel)
    new = KeyManager(store).create_access_key(OWNER)
    verifier = Verifier(store, freshness=60)
    assert len(channel.subscribers) == 1
    verifier.verify(signed_request(new.access_key))
    store.base.set_key_status(new.access_key_id, KeyStatus.INACTIVE)  # not announced
    verifier.verify(signed_request(new.access_key))  # still cached as Active
    channel.subscribers[0](new.access_key_id)
    with pytest.raises(InvalidAccessKeyIdInactive):
        verifier.verify(signed_request(new.access_key))
    verifier.close()
    assert channel.subscribers == []


def test_a_change_through_the_composite_is_seen_by_its_verifiers_on_the_next_request() -> None:
    # The fleet's channel is pushed from another thread: the change must not wait for it.
    for base in (MemoryStore(), SilentMemoryStore()):
        channel = RecordingChannel()
        store = CompositeStore(base, invalidations=channel)
        manager = KeyManager(store)
        new = manager.create_access_key(OWNER)
        verifier = Verifier(store, freshness=60)
        verifier.verify(signed_request(new.access_key))
        manager.disable_access_key(new.access_key_id)
        with pytest.raises(InvalidAccessKeyIdInactive):
            verifier.verify(signed_request(new.access_key))
        assert new.access_key_id in channel.published
        verifier.close()


def test_a_composite_follows_its_base_stores_own_channel_and_the_one_given() -> None:
    channel = RecordingChannel()
    base = MemoryStore()
    inner = CompositeStore(base, invalidations=channel)
    combined = inner.invalidations
    assert isinstance(combined, CombinedInvalidation)
    assert combined.channels == (base.invalidations, channel)
    outer = CompositeStore(inner, nonces=RecordingNonces())
    assert outer.invalidations is combined
    assert outer.as_async().invalidations is combined
    plain = CompositeStore(base)
    assert plain.invalidations is base.invalidations
    assert plain.as_async().invalidations is base.invalidations
    assert isinstance(CompositeStore(SilentMemoryStore()).invalidations, InvalidationChannel)


def test_the_async_composite_routes_nonces_and_announces_changes() -> None:
    channel = RecordingChannel()
    nonces = RecordingNonces()  # a nonce store without an async face: run in a thread
    store = CompositeStore(MemoryStore(), nonces=nonces, invalidations=channel)
    async_store = store.as_async()
    assert isinstance(async_store, AsyncCompositeStore)
    assert async_store.invalidations is store.invalidations
    new = KeyManager(store).create_access_key(OWNER)
    channel.published.clear()

    async def scenario() -> tuple[bool, int]:
        claimed = await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
        await async_store.set_key_status(new.access_key_id, KeyStatus.INACTIVE)
        await async_store.set_network_policy(PolicyTarget.account(OWNER.account_id), None)
        pruned = await async_store.prune_nonces(LATER)
        await async_store.aclose()
        return claimed, pruned

    assert asyncio.run(scenario()) == (True, 7)
    assert nonces.claims == [("LTAIkey", "n")]
    assert channel.published == [new.access_key_id, None]
    assert nonces.closed
    assert channel.closed


def test_the_async_composite_over_redis_shares_claims_with_the_sync_one(
    redis_url: str, prefix: str
) -> None:
    store = CompositeStore(MemoryStore(), nonces=RedisNonceStore(redis_url, prefix=prefix))
    store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
    async_store = store.as_async()

    async def scenario() -> bool:
        try:
            return await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=LATER)
        finally:
            await async_store.aclose()

    assert asyncio.run(scenario()) is False
