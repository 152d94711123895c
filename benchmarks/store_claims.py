"""Nonce claims alone: MemoryStore throughput (1 and 4 threads) and Redis latency.

What issue 12 items 4 and 6 change, measured without the verifier around it:

- **MemoryStore**: claims/s of fresh nonces with 1 thread and with 4 threads (their
  ratio is what lock contention costs under the GIL), on a table already holding
  ``--prefill`` live claims (one window of traffic), so the periodic pruning runs as it
  does in a server; plus the slowest claim seen (a prune that scans the table under the
  lock shows here).
- **RedisNonceStore**: p50/p99/p99.9 of one claim, one thread, against the server
  ``.ci/services`` starts (``ALIAK_TEST_REDIS_URL``; skipped without it), for fresh
  nonces and for replays.

To compare two trees, run it with each on ``PYTHONPATH`` in turn, interleaved, since the
machine is noisy::

    git worktree add /tmp/before HEAD
    for i in 1 2 3; do
        PYTHONPATH=/tmp/before/src .ci/services run .venv/bin/python benchmarks/store_claims.py
        .ci/services run .venv/bin/python benchmarks/store_claims.py
    done

Usage: ``python benchmarks/store_claims.py [--seconds S] [--repeat R] [--prefill N]
[--redis-samples N]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import threading
import time
import uuid
from pathlib import Path

import aliak
from aliak.storage.memory import MemoryStore

WINDOW = 900.0  # seconds a claim is held, as the verifier's default window


def memory_claims(threads: int, seconds: float, prefill: int) -> tuple[float, float]:
    """(claims/s over all threads, slowest single claim in ms)."""
    store = MemoryStore()
    now = time.time()
    for number in range(prefill):
        # Spread over the window, as a server's table is: expiries from now to now+WINDOW.
        store.claim_nonce("LTAIprefill", f"p{number}", now=now, expires_at=now + 1 + number % 900)
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads
    slowest = [0] * threads

    def claim(index: int) -> None:
        claim_nonce = store.claim_nonce
        clock = time.perf_counter_ns
        key_id = f"LTAIthread{index}"
        done = worst = 0
        start.wait()
        while not stop.is_set():
            for _ in range(200):
                moment = time.time()
                before = clock()
                claim_nonce(key_id, f"n{done}", now=moment, expires_at=moment + WINDOW)
                took = clock() - before
                worst = max(worst, took)
                done += 1
        counts[index] = done
        slowest[index] = worst

    workers = [threading.Thread(target=claim, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    gc.disable()
    try:
        start.wait()
        began = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
    finally:
        gc.enable()
    return sum(counts) / elapsed, max(slowest) / 1e6


def percentile(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000


def redis_claims(url: str, samples: int) -> dict[str, tuple[float, float, float]]:
    """p50/p99/p99.9 µs of fresh claims and of replays."""
    from aliak.storage.redis import RedisNonceStore

    nonces = RedisNonceStore(url, prefix=f"aliak-bench:{uuid.uuid4().hex}:")
    rows: dict[str, tuple[float, float, float]] = {}
    try:
        now = time.time()
        for number in range(200):  # warm the connection (and the script cache)
            nonces.claim_nonce("LTAIwarm", f"w{number}", now=now, expires_at=now + WINDOW)
        for name in ("fresh", "replay"):  # the replays claim the fresh row's nonces again
            taken = []
            for number in range(samples):
                moment = time.time()
                before = time.perf_counter_ns()
                nonces.claim_nonce(
                    "LTAIbench", f"n{number}", now=moment, expires_at=moment + WINDOW
                )
                taken.append(time.perf_counter_ns() - before)
            taken.sort()
            rows[name] = (
                percentile(taken, 0.50),
                percentile(taken, 0.99),
                percentile(taken, 0.999),
            )
    finally:
        nonces.close()
    return rows


def redis_commands(url: str, samples: int) -> dict[str, tuple[float, float, float]]:
    """p50/p99/p99.9 µs of the two ways to claim, in alternated batches in one process
    (so the noise of a shared machine falls on both): the script the store used before
    (EVALSHA) and the one command it sends now (SET NX PX GET). Raw redis-py calls."""
    import redis

    from aliak.storage.redis import _CLAIM

    client = redis.Redis.from_url(url)
    script = client.register_script(_CLAIM)
    prefix = f"aliak-bench:{uuid.uuid4().hex}:"
    taken: dict[str, list[int]] = {"EVALSHA claim script": [], "SET NX PX GET": []}
    try:
        now = time.time()
        arguments = [repr(now + WINDOW), str(int(WINDOW * 1000)), repr(now)]
        script(keys=[prefix + "warm"], args=arguments)
        for batch in range(0, samples, 250):
            for name, samples_of in taken.items():
                for number in range(batch, min(batch + 250, samples)):
                    key = f"{prefix}{name[0]}{number}"
                    before = time.perf_counter_ns()
                    if name.startswith("EVALSHA"):
                        script(keys=[key], args=arguments)
                    else:
                        client.execute_command(
                            "SET", key, arguments[0], "NX", "PX", arguments[1], "GET", get=True
                        )
                    samples_of.append(time.perf_counter_ns() - before)
    finally:
        client.close()
    rows = {}
    for name, samples_of in taken.items():
        samples_of.sort()
        rows[name] = tuple(percentile(samples_of, q) for q in (0.50, 0.99, 0.999))
    return rows  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per MemoryStore run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per MemoryStore row")
    parser.add_argument("--prefill", type=int, default=300_000, help="live claims before")
    parser.add_argument("--redis-samples", type=int, default=5000)
    options = parser.parse_args()

    print(f"aliak from {Path(aliak.__file__).parent}")
    runs: dict[int, list[tuple[float, float]]] = {1: [], 4: []}
    for _ in range(options.repeat):  # alternated, so a noisy moment hits both rows
        for threads, taken in runs.items():
            taken.append(memory_claims(threads, options.seconds, options.prefill))
    print(
        f"MemoryStore, {options.prefill:,} live claims before, "
        f"median of {options.repeat} runs of {options.seconds:g} s"
    )
    median = {}
    for threads, taken in runs.items():
        median[threads] = statistics.median(rate for rate, _ in taken)
        worst = max(slowest for _, slowest in taken)
        label = f"{threads} thread{'s' if threads > 1 else ''}"
        print(f"  {label:<9}: {median[threads]:>10,.0f} claims/s  slowest claim {worst:7.2f} ms")
    print(f"  4 threads / 1 thread: {median[4] / median[1]:.2f}")

    url = os.environ.get("ALIAK_TEST_REDIS_URL")
    if not url:
        print("RedisNonceStore: skipped (run under .ci/services, which sets ALIAK_TEST_REDIS_URL)")
        return
    rows = redis_claims(url, options.redis_samples)
    print(f"RedisNonceStore.claim_nonce, one thread, {options.redis_samples} samples each, µs")
    for name, (p50, p99, p999) in rows.items():
        print(f"  {name:<7} p50 {p50:6.1f}  p99 {p99:6.1f}  p99.9 {p999:7.1f}")
    print(f"Redis, the claim's command alone, alternated batches, {options.redis_samples} each, µs")
    for name, (p50, p99, p999) in redis_commands(url, options.redis_samples).items():
        print(f"  {name:<20} p50 {p50:6.1f}  p99 {p99:6.1f}  p99.9 {p999:7.1f}")


if __name__ == "__main__":
    main()
