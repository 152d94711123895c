"""``Signer.sign`` on a static credential vs. on a refreshing provider (issue 13 item 2).

A :class:`~aliak.Signer` built on a provider asks it for the credential on every request;
a :class:`~aliak.RefreshingCredentialsProvider` answers from its cache with one clock
read and one comparison until the credential goes stale. The rows:

- ``static StsCredential``: the signer holds the credential itself;
- ``RefreshingCredentialsProvider``: the same kind of credential (an STS one, so the
  same headers are signed), served from the provider's cache;
- ``DefaultCredentialsProvider (env)``: the chain, resolved to the environment source,
  one delegation more (a permanent AccessKey, so compare it with ``static AccessKey``).

Each pair runs in alternated batches in one process, since this machine is noisy; the
median per sign and the ratio to the static row are printed.

Usage: ``python benchmarks/credentials.py [--batch N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from aliak import (
    AccessKey,
    DefaultCredentialsProvider,
    RefreshingCredentialsProvider,
    Request,
    Signer,
    StsCredential,
)
from aliak.credentials import Credential

FAR = datetime.now(timezone.utc) + timedelta(days=1)
STS = StsCredential("STS.bench0000000001", "bench-secret", "bench-security-token", FAR)
KEY = AccessKey("LTAIbench0000000001", "bench-secret")
REQUEST = Request(
    "POST",
    host="ecs.cn-hangzhou.aliyuncs.com",
    query={"RegionId": "cn-hangzhou"},
    headers={"content-type": "application/json"},
    body=b'{"DryRun":true}',
)


class CachedSts(RefreshingCredentialsProvider):
    source = "the benchmark"

    def fetch(self) -> Credential:
        return STS


def batch_ns(signer: Signer, loops: int) -> float:
    sign = signer.sign
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(loops):
            sign(REQUEST, action="DescribeInstances", version="2014-05-26")
        return (time.perf_counter_ns() - start) / loops
    finally:
        if gc_was_enabled:
            gc.enable()


def compare(rows: dict[str, Signer], batch: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for signer in rows.values():
        batch_ns(signer, batch // 10)  # warm-up: prepared keys, caches
    for _ in range(rounds):
        for name, signer in rows.items():
            samples[name].append(batch_ns(signer, batch))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_rows(title: str, medians: dict[str, float]) -> None:
    base = next(iter(medians.values()))
    print(title)
    for name, value in medians.items():
        print(f"  {name:<36} {value / 1000:8.2f} us/sign   {value / base:5.3f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=5000, help="signs per batch")
    parser.add_argument("--rounds", type=int, default=15, help="alternated batches per row")
    args = parser.parse_args(argv)
    chain = DefaultCredentialsProvider(
        environ={
            "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY.secret.reveal(),
        }
    )
    sts_rows: dict[str, Signer] = {
        "static StsCredential": Signer(STS),
        "RefreshingCredentialsProvider": Signer(CachedSts()),
    }
    key_rows: dict[str, Signer] = {
        "static AccessKey": Signer(KEY),
        "DefaultCredentialsProvider (env)": Signer(chain),
    }
    print_rows("STS credential, ACS3-HMAC-SHA256 POST", compare(sts_rows, args.batch, args.rounds))
    print_rows("AccessKey, ACS3-HMAC-SHA256 POST", compare(key_rows, args.batch, args.rounds))
    # The provider's own cost, without the signature around it.
    provider: Callable[[], Credential] = CachedSts().get_credential
    provider()
    start = time.perf_counter_ns()
    for _ in range(args.batch * 10):
        provider()
    per_call = (time.perf_counter_ns() - start) / (args.batch * 10)
    print(f"  get_credential() alone (cache hit): {per_call:.0f} ns")


if __name__ == "__main__":
    main()
