"""RedisNonceStore's claim as one SET NX PX GET (issue 12 item 6).

What the single command must keep: a claim written by the script the store used before
is still refused (same key, value and TTL), a fresh claim and a replay cost one SET and
no script, a claim expired on the caller's clock is still taken over atomically, and a
server without SET NX GET (Redis < 7.0) gets the script for every claim.

Runs only when ALIAK_TEST_REDIS_URL is set (``.ci/services run`` sets it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis
from redis.exceptions import ResponseError

from aliak.storage.redis import _CLAIM, RedisNonceStore, _claim_arguments

NOW = 1_700_000_000.0
LATER = NOW + 1800.0


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("ALIAK_TEST_REDIS_URL")
    if not url:
        pytest.skip("set ALIAK_TEST_REDIS_URL to test against a Redis server")
    return url


@pytest.fixture
def nonces(redis_url: str) -> Iterator[RedisNonceStore]:
    store = RedisNonceStore(redis_url, prefix=f"aliak-test:{uuid.uuid4().hex}:")
    yield store
    store.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    plain = redis.Redis.from_url(redis_url)
    yield plain
    plain.close()


def calls(client: redis.Redis) -> dict[str, int]:
    """How many times the server ran each command a claim might use."""
    stats = client.info("commandstats")
    return {
        name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("set", "get", "evalsha", "eval")
    }


def test_a_claim_the_script_wrote_before_is_still_refused(
    nonces: RedisNonceStore, client: redis.Redis
) -> None:
    key = nonces.key("LTAIkey", "old")
    assert client.eval(_CLAIM, 1, key, *_claim_arguments(NOW, LATER)) == 1
    assert nonces.claim_nonce("LTAIkey", "old", now=NOW + 1, expires_at=LATER + 1) is False
    assert nonces.claim_nonce("LTAIkey", "old", now=LATER, expires_at=LATER + 9) is True


def test_a_fresh_claim_and_a_replay_each_cost_one_set_and_no_script(
    nonces: RedisNonceStore, client: redis.Redis
) -> None:
    nonces.claim_nonce("LTAIkey", "warm", now=NOW, expires_at=LATER)
    client.config_resetstat()
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=LATER) is False
    counted = calls(client)
    assert counted["set"] == 2
    assert counted["evalsha"] + counted["eval"] + counted["get"] == 0


def test_the_claim_keeps_the_value_and_ttl_the_script_wrote(
    nonces: RedisNonceStore, client: redis.Redis
) -> None:
    nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER)
    key = nonces.key("LTAIkey", "n-1")
    assert float(client.get(key)) == LATER
    assert 1_795_000 <= client.pttl(key) <= 1_800_000


def test_a_claim_expired_on_the_callers_clock_is_taken_over_by_exactly_one(
    nonces: RedisNonceStore,
) -> None:
    nonces.claim_nonce("LTAIkey", "race", now=NOW, expires_at=LATER)
    start = threading.Barrier(8)
    outcomes: list[bool] = []

    def claim() -> None:
        start.wait()
        outcomes.append(nonces.claim_nonce("LTAIkey", "race", now=LATER, expires_at=LATER + 60))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]


def refuse_set_get(target: Any, monkeypatch: pytest.MonkeyPatch, *, is_async: bool) -> list[int]:
    """Make ``target``'s client answer SET NX GET as Redis < 7.0 does; count the tries."""
    tried: list[int] = []
    real = target.execute_command

    def old_server(*command: Any, **options: Any) -> Any:
        if command[0] == "SET" and "GET" in command:
            tried.append(1)
            raise ResponseError("syntax error")
        return real(*command, **options)

    async def old_server_async(*command: Any, **options: Any) -> Any:
        if command[0] == "SET" and "GET" in command:
            tried.append(1)
            raise ResponseError("syntax error")
        return await real(*command, **options)

    monkeypatch.setattr(target, "execute_command", old_server_async if is_async else old_server)
    return tried


def test_a_server_without_set_nx_get_claims_with_the_script(
    nonces: RedisNonceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried = refuse_set_get(nonces._redis, monkeypatch, is_async=False)
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is True
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=LATER) is False
    assert nonces.claim_nonce("LTAIkey", "n-1", now=LATER, expires_at=LATER + 9) is True
    assert len(tried) == 1  # asked once, then the script for good


def test_an_async_store_on_a_server_without_set_nx_get_claims_with_the_script(
    nonces: RedisNonceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async_nonces = nonces.as_async()

    async def scenario() -> tuple[list[bool], int]:
        opened = await async_nonces._client()
        tried = refuse_set_get(opened.client, monkeypatch, is_async=True)
        try:
            answers = [
                await async_nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER),
                await async_nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER),
            ]
        finally:
            await async_nonces.aclose()
        return answers, len(tried)

    assert asyncio.run(scenario()) == ([True, False], 1)
    assert nonces.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=LATER) is False


def test_another_refusal_of_the_set_is_not_mistaken_for_an_old_server(
    nonces: RedisNonceStore, client: redis.Redis
) -> None:
    from aliak.errors import InternalError

    client.lpush(nonces.key("LTAIkey", "list"), b"x")  # WRONGTYPE for GET
    with pytest.raises(InternalError):
        nonces.claim_nonce("LTAIkey", "list", now=NOW, expires_at=LATER)
    assert nonces.claim_nonce("LTAIkey", "n-2", now=NOW, expires_at=LATER) is True
    assert nonces._claim_script._set_get is True  # type: ignore[attr-defined]
