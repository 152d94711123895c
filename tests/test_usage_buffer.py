"""The verifier's usage buffer takes no lock per use and still loses none.

Threads add uses while another drains, over and over; every (key, source IP) must come
out with its earliest and latest use and the service of the latest, whatever the
interleaving, and the log of unmerged uses stays bounded.
"""

from __future__ import annotations

import sys
import threading

from aliak.model import UsageRecord
from aliak.verifier import _USAGE_MERGE_AT, _UsageBuffer


def test_uses_added_by_many_threads_while_draining_are_all_recorded() -> None:
    buffer = _UsageBuffer()
    threads, uses, keys = 6, 4000, 7
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    drained: list[list[UsageRecord]] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleavings a test can meet

    def use(number: int) -> None:
        start.wait()
        for step in range(uses):
            key = f"LTAI-key-{step % keys}"
            buffer.add(key, float(step), f"svc-{number}-{step}", f"10.0.{number}.1")

    def drain() -> None:
        start.wait()
        while not done.is_set():
            drained.append(list(buffer.drain()))

    try:
        workers = [threading.Thread(target=use, args=(n,)) for n in range(threads)]
        drainer = threading.Thread(target=drain)
        for thread in [*workers, drainer]:
            thread.start()
        for thread in workers:
            thread.join()
        done.set()
        drainer.join()
    finally:
        sys.setswitchinterval(interval)
    drained.append(list(buffer.drain()))
    assert len(drained) > 2  # drains really ran between the uses
    merged: dict[tuple[str, str | None], tuple[float, float, str]] = {}
    for batch in drained:
        for record in batch:
            key = (record.access_key_id, record.source_ip)
            first, last = record.first_used_at, record.used_at
            service = record.service_name
            seen = merged.get(key)
            if seen is None or last >= seen[1]:
                merged[key] = (min(first, seen[0]) if seen else first, last, service)
            else:
                merged[key] = (min(first, seen[0]), seen[1], seen[2])
    assert len(merged) == threads * keys
    for number in range(threads):
        for k in range(keys):
            first, last, service = merged[(f"LTAI-key-{k}", f"10.0.{number}.1")]
            final = max(step for step in range(uses) if step % keys == k)
            assert first == k
            assert last == final
            assert service == f"svc-{number}-{final}"


def test_the_log_of_unmerged_uses_stays_bounded_without_a_drain() -> None:
    buffer = _UsageBuffer()
    for step in range(10 * _USAGE_MERGE_AT):
        buffer.add("LTAI-key", float(step), "ecs", "10.0.0.1")
    assert len(buffer._log) < _USAGE_MERGE_AT
    [record] = buffer.drain()
    assert (record.first_used_at, record.used_at) == (0.0, 10 * _USAGE_MERGE_AT - 1.0)
    assert buffer.drain() == []
