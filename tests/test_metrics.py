"""The verifier's metrics hook, and its Prometheus and OpenTelemetry adapters.

A real verifier over a real store reports to a hook that records its calls; the
adapters are read back through their own libraries (``prometheus_client``'s registry,
the OpenTelemetry SDK's ``InMemoryMetricReader``), and ``aliak serve --metrics`` over a
real socket. Labels must come from small fixed sets: never a key id, an account id or an
address.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aliak import (
    AccessKey,
    AliakError,
    AsyncVerifier,
    KeyManager,
    MemoryStore,
    NoMetrics,
    RamRole,
    RamUser,
    Request,
    Signer,
    Verifier,
    VerifierMetrics,
)
from aliak.integrations.opentelemetry import OpenTelemetryMetrics
from aliak.integrations.prometheus import PrometheusMetrics
from aliak.metrics import OTHER_CODE, REFUSAL_CODES, SCHEME_LABELS, STORE_OPERATIONS

NOW = 1_700_000_000
ACCOUNT = "1234567890123456"
IP = "203.0.113.7"
UNKNOWN = "LTAI" + "7" * 20


class Recorder(NoMetrics):
    """A hook that keeps every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def accepted(self, scheme: str, seconds: float) -> None:
        assert 0 <= seconds < 5
        self.calls.append(("accepted", scheme))

    def refused(self, code: str, scheme: str, seconds: float) -> None:
        assert 0 <= seconds < 5
        self.calls.append(("refused", code, scheme))

    def key_cache(self, hit: bool) -> None:
        self.calls.append(("cache", hit))

    def store_error(self, operation: str) -> None:
        self.calls.append(("store_error", operation))


class FailingStore(MemoryStore):
    """A store whose nonce claims (or usage writes) fail, as a lost database does."""

    fail_claims = False
    fail_usage = False

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        if self.fail_claims:
            raise RuntimeError("the database went away")
        return super().claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    def record_usage(self, records: Any) -> None:
        if self.fail_usage:
            raise RuntimeError("the database went away")
        super().record_usage(records)


@pytest.fixture
def store() -> FailingStore:
    return FailingStore()


@pytest.fixture
def access_key(store: FailingStore) -> AccessKey:
    keys = KeyManager(store, clock=lambda: NOW)
    return keys.create_access_key(RamUser(ACCOUNT, "alice")).access_key


def _signed(key: AccessKey, scheme: str = "ACS3") -> Request:
    return Signer(key, clock=lambda: NOW, scheme=scheme).sign(
        Request("GET", host="ecs.cn-hangzhou.aliyuncs.com", path="/"),
        action="DescribeRegions",
        version="2014-05-26",
    )


def _refuse(verifier: Verifier, request: Request) -> str:
    with pytest.raises(AliakError) as caught:
        verifier.verify(request, source_ip=IP)
    return caught.value.code


def test_the_hook_hears_every_outcome_and_the_key_cache(
    store: FailingStore, access_key: AccessKey
) -> None:
    recorder = Recorder()
    verifier = Verifier(store, clock=lambda: NOW, metrics=recorder)
    request = _signed(access_key)
    verifier.verify(request, source_ip=IP)  # a miss, then accepted
    verifier.verify(_signed(access_key, "RPC"), source_ip=IP)  # a hit
    assert _refuse(verifier, request) == "SignatureNonceUsed"  # a hit, refused
    assert _refuse(verifier, _signed(AccessKey(UNKNOWN, "x" * 30))) == (
        "InvalidAccessKeyId.NotFound"
    )
    assert _refuse(verifier, Request("GET", host="x.example.com")) == "IncompleteSignature"
    assert recorder.calls == [
        ("cache", False),
        ("accepted", "ACS3"),
        ("cache", True),
        ("accepted", "RPC"),
        ("cache", True),
        ("refused", "SignatureNonceUsed", "ACS3"),
        ("cache", False),
        ("refused", "InvalidAccessKeyId.NotFound", "ACS3"),
        ("refused", "IncompleteSignature", "none"),  # refused before any key look-up
    ]


def test_a_known_and_an_unknown_id_report_alike_but_for_the_code(
    store: FailingStore, access_key: AccessKey
) -> None:
    reports = []
    for key_id in (access_key.access_key_id, UNKNOWN):
        recorder = Recorder()
        verifier = Verifier(store, clock=lambda: NOW, metrics=recorder)
        _refuse(verifier, _signed(AccessKey(key_id, "w" * 30)))
        reports.append(recorder.calls)
    known, unknown = reports
    assert known == [("cache", False), ("refused", "SignatureDoesNotMatch", "ACS3")]
    assert unknown == [("cache", False), ("refused", "InvalidAccessKeyId.NotFound", "ACS3")]


def test_the_opaque_profile_reports_the_precise_code(
    store: FailingStore, access_key: AccessKey
) -> None:
    recorder = Recorder()
    verifier = Verifier(store, clock=lambda: NOW, metrics=recorder, error_profile="opaque")
    assert _refuse(verifier, _signed(AccessKey(UNKNOWN, "x" * 30))) == "AccessDenied"
    assert recorder.calls[-1] == ("refused", "InvalidAccessKeyId.NotFound", "ACS3")
    with pytest.raises(AliakError) as caught:
        verifier.precheck(Request("GET", host="x.example.com"))
    assert caught.value.code == "AccessDenied"
    assert recorder.calls[-1] == ("refused", "IncompleteSignature", "none")


def test_store_errors_are_counted_and_the_verifier_still_fails_closed(
    store: FailingStore, access_key: AccessKey
) -> None:
    recorder = Recorder()
    verifier = Verifier(store, clock=lambda: NOW, metrics=recorder, usage_flush_interval=0)
    store.fail_claims = True
    assert _refuse(verifier, _signed(access_key)) == "InternalError"
    assert ("store_error", "claim_nonce") in recorder.calls
    assert recorder.calls[-1] == ("refused", "InternalError", "ACS3")
    store.fail_claims = False
    store.fail_usage = True
    verifier.verify(_signed(access_key), source_ip=IP)  # the usage write is in the background
    verifier.flush()  # waits for it: it failed, quietly (the request had its answer)
    assert ("store_error", "record_usage") in recorder.calls
    assert {call[1] for call in recorder.calls if call[0] == "store_error"} <= set(STORE_OPERATIONS)


def test_a_custom_error_code_is_counted_as_other(access_key: AccessKey) -> None:
    class Odd(AliakError):
        code = "Custom.Code"

    class OddStore(FailingStore):
        def get_key(self, access_key_id: str) -> Any:
            raise Odd()

    recorder = Recorder()
    verifier = Verifier(OddStore(), clock=lambda: NOW, metrics=recorder)
    assert _refuse(verifier, _signed(access_key)) == "Custom.Code"
    assert recorder.calls[-2:] == [("store_error", "get_key"), ("refused", OTHER_CODE, "ACS3")]
    assert "Custom.Code" not in REFUSAL_CODES
    assert {"SignatureDoesNotMatch", "InternalError", "AccessDenied"} <= REFUSAL_CODES


def test_the_async_verifier_reports_the_same(store: FailingStore, access_key: AccessKey) -> None:
    recorder = Recorder()

    async def run() -> None:
        verifier = AsyncVerifier(store.as_async(), clock=lambda: NOW, metrics=recorder)
        await verifier.verify(_signed(access_key), source_ip=IP)
        with pytest.raises(AliakError):
            await verifier.verify(_signed(AccessKey(UNKNOWN, "x" * 30)))
        await verifier.aclose()

    asyncio.run(run())
    assert recorder.calls == [
        ("cache", False),
        ("accepted", "ACS3"),
        ("cache", False),
        ("refused", "InvalidAccessKeyId.NotFound", "ACS3"),
    ]


def test_no_hook_is_no_work(store: FailingStore, access_key: AccessKey) -> None:
    assert Verifier(store)._observer is None
    assert Verifier(store, metrics=NoMetrics())._observer is None  # records nothing anyway
    assert Verifier(store, metrics=Recorder())._observer is not None
    assert isinstance(Recorder(), VerifierMetrics)
    with pytest.raises(TypeError):
        Verifier(store, metrics=object())  # type: ignore[arg-type]


def test_a_failing_hook_never_changes_the_outcome(
    store: FailingStore, access_key: AccessKey, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(NoMetrics):
        def accepted(self, scheme: str, seconds: float) -> None:
            raise ValueError("boom")

        def refused(self, code: str, scheme: str, seconds: float) -> None:
            raise ValueError("boom")

    verifier = Verifier(store, clock=lambda: NOW, metrics=Broken())
    assert verifier.verify(_signed(access_key), source_ip=IP).action == "DescribeRegions"
    assert _refuse(verifier, _signed(AccessKey(UNKNOWN, "x" * 30))) == (
        "InvalidAccessKeyId.NotFound"
    )
    assert "metrics hook or request log failed: ValueError" in caplog.text


# -- the adapters -----------------------------------------------------------------------


def _exercise(verifier: Verifier, store: FailingStore, access_key: AccessKey) -> None:
    request = _signed(access_key)
    verifier.verify(request, source_ip=IP)
    verifier.verify(_signed(access_key, "ROA"), source_ip=IP)
    _refuse(verifier, request)
    _refuse(verifier, _signed(AccessKey(UNKNOWN, "x" * 30)))
    store.fail_claims = True
    _refuse(verifier, _signed(access_key))
    store.fail_claims = False


ALLOWED_LABELS = {
    "result": {"accepted", "refused", "hit", "miss"},
    "scheme": set(SCHEME_LABELS),
    "code": REFUSAL_CODES | {OTHER_CODE, ""},
    "operation": set(STORE_OPERATIONS),
}


def _check_labels(labels: dict[str, str], access_key: AccessKey) -> None:
    for name, value in labels.items():
        if name == "le":  # a histogram bucket's bound
            continue
        assert value in ALLOWED_LABELS[name], (name, value)
        assert value not in (access_key.access_key_id, UNKNOWN, ACCOUNT, IP)


def test_prometheus_counts_with_labels_from_fixed_sets_only(
    store: FailingStore, access_key: AccessKey
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    _exercise(Verifier(store, clock=lambda: NOW, metrics=metrics), store, access_key)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("aliak_verify_requests_total", result="accepted", scheme="ACS3", code="") == 1
    assert value("aliak_verify_requests_total", result="accepted", scheme="ROA", code="") == 1
    refused = {"result": "refused", "scheme": "ACS3"}
    assert value("aliak_verify_requests_total", **refused, code="SignatureNonceUsed") == 1
    assert value("aliak_verify_requests_total", **refused, code="InvalidAccessKeyId.NotFound") == 1
    assert value("aliak_verify_requests_total", **refused, code="InternalError") == 1
    assert value("aliak_verify_duration_seconds_count", result="accepted", scheme="ACS3") == 1
    assert value("aliak_verify_duration_seconds_count", result="refused", scheme="ACS3") == 3
    assert value("aliak_key_cache_lookups_total", result="miss") == 2
    assert value("aliak_key_cache_lookups_total", result="hit") == 3
    assert value("aliak_store_errors_total", operation="claim_nonce") == 1
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            _check_labels(sample.labels, access_key)
    for private in (access_key.access_key_id, UNKNOWN, ACCOUNT, IP):
        assert private not in text


def test_opentelemetry_records_through_the_sdk(store: FailingStore, access_key: AccessKey) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = OpenTelemetryMetrics(provider)
    _exercise(Verifier(store, clock=lambda: NOW, metrics=metrics), store, access_key)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "aliak"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    _check_labels(attributes, access_key)
                    points.setdefault(metric.name, []).append((attributes, point))

    def total(name: str, **attributes: str) -> float:
        return sum(
            point.value for seen, point in points[name] if seen.items() >= attributes.items()
        )

    assert total("aliak.verify.requests", result="accepted") == 2
    assert total("aliak.verify.requests", result="refused", code="InternalError") == 1
    assert total("aliak.verify.requests", result="refused") == 3
    assert total("aliak.key_cache.lookups", result="hit") == 3
    assert total("aliak.key_cache.lookups", result="miss") == 2
    assert total("aliak.store.errors", operation="claim_nonce") == 1
    durations = sum(point.count for _, point in points["aliak.verify.duration"])
    assert durations == 5
    provider.shutdown()


def test_sts_requests_are_counted_like_any_other(store: FailingStore) -> None:
    keys = KeyManager(store, clock=lambda: NOW)
    credential = keys.assume_role(RamRole(ACCOUNT, "Deployer"), session_name="ci")
    registry = CollectorRegistry()
    verifier = Verifier(store, clock=lambda: NOW, metrics=PrometheusMetrics(registry))
    verifier.verify(_signed(credential), source_ip=IP)  # type: ignore[arg-type]
    verifier.verify(_signed(credential), source_ip=IP)  # type: ignore[arg-type]
    assert registry.get_sample_value("aliak_key_cache_lookups_total", {"result": "miss"}) == 1
    assert registry.get_sample_value("aliak_key_cache_lookups_total", {"result": "hit"}) == 1
    assert credential.access_key_id not in generate_latest(registry).decode()


# -- aliak serve --metrics ----------------------------------------------------------------


def _environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALIAK_", "ALIBABA_CLOUD_"))
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], int, subprocess.Popen[str]]]:
    db = tmp_path / "aliak.db"
    created = subprocess.run(
        [sys.executable, "-m", "aliak", "--db", str(db), "keys", "create", "--account",
         ACCOUNT, "--user", "alice", "--json"],
        cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = json.loads(created.stdout)
    process = subprocess.Popen(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0", "--metrics"],
        cwd=tmp_path, env=_environment(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    threading.Thread(target=lambda: [lines.put(x) for x in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 30
        port = 0
        while not port:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "listening on" in line:
                port = int(line.strip().rpartition(":")[2])
        metrics_line = lines.get(timeout=10)
        assert metrics_line.strip() == (
            f"aliak serve: metrics at http://127.0.0.1:{port}/metrics (unauthenticated)"
        )
        yield key, port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _get(port: int, request: Request) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(request.method, request.path, headers=dict(request.headers.items()))
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def test_serve_metrics_answers_prometheus_text_before_verifying(
    served: tuple[dict[str, str], int, subprocess.Popen[str]],
) -> None:
    key, port, _ = served
    host = f"127.0.0.1:{port}"
    signer = Signer(AccessKey(key["AccessKeyId"], key["AccessKeySecret"]))
    signed = signer.sign(Request("GET", host=host, path="/a"), action="ListThings", version="1")
    assert _get(port, signed)[0] == 200
    assert _get(port, signed)[0] == 400  # a replay
    assert _get(port, Request("GET", host=host, path="/b"))[0] == 400  # unsigned: precheck
    status, content_type, body = _get(port, Request("GET", host=host, path="/metrics"))
    assert status == 200
    assert content_type.startswith("text/plain")
    text = body.decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def requests(result: str, scheme: str, code: str) -> float | None:
        labels = tuple(sorted({"result": result, "scheme": scheme, "code": code}.items()))
        return samples.get(("aliak_verify_requests_total", labels))

    assert requests("accepted", "ACS3", "") == 1
    assert requests("refused", "ACS3", "SignatureNonceUsed") == 1
    assert requests("refused", "none", "IncompleteSignature") == 1
    assert key["AccessKeyId"] not in text
    assert ACCOUNT not in text
    assert "127.0.0.1" not in text
    # /metrics itself is not verified, and is not a verify: it counts nothing.
    _, _, again = _get(port, Request("GET", host=host, path="/metrics"))
    assert b'result="accepted",scheme="ACS3"} 1.0' in again
    # Another method on /metrics goes to the verifier like any other request.
    assert _get(port, Request("POST", host=host, path="/metrics"))[0] == 400
