"""verify() after precheck() of the same head does not read the head twice.

A server prechecks the head, reads the body, then verifies the head with its body. Steps
1-3 depend on the head alone, so verify() takes precheck's reading of that very head --
once -- and judges again only what may have changed while the body arrived: the date
window (the clock moved) and where the request comes from (precheck is told no source).
A request that merely shares the head's Headers object is read in full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from aliak import (
    AliakError,
    KeyManager,
    MemoryStore,
    NetworkPolicy,
    RamUser,
    Request,
    Signer,
)
from conftest import MakeVerifier, ShellVerifier

NOW = 1_700_000_000.0
OWNER = RamUser("1234567890123456", "prechecked")
BODY = b'{"n":1}'


def flow_of(verifier: ShellVerifier) -> Any:
    shell = getattr(verifier, "shell", verifier)  # the async facade holds its shell
    return shell._flow


class World:
    def __init__(self, make_verifier: MakeVerifier) -> None:
        self.now = NOW
        self.store = MemoryStore()
        self.keys = KeyManager(self.store, clock=lambda: NOW)
        self.new = self.keys.create_access_key(OWNER)
        self.verifier = make_verifier(self.store, clock=lambda: self.now)
        self.count = 0

    def head(self, **query: str) -> Request:
        """A signed request without its body, as a server builds it from the head."""
        self.count += 1
        signer = Signer(
            self.new.access_key, clock=lambda: NOW, nonce_factory=lambda: f"n-{self.count}"
        )
        signed = signer.sign(
            Request("POST", host="api.example.com", path="/v1/items", query=query, body=BODY),
            action="CreateItem",
            version="2024-01-01",
        )
        return signed.with_body(b"")

    def refusal(self, call: Callable[[], object]) -> AliakError:
        with pytest.raises(AliakError) as caught:
            call()
        return caught.value


@pytest.fixture
def world(make_verifier: MakeVerifier) -> World:
    return World(make_verifier)


def counting_prepare(flow: Any) -> list[Request]:
    """Every reading of a head: prepare(), or the warm path's read_warm()."""
    calls: list[Request] = []
    real = flow.prepare

    def prepare(request: Request, *args: Any, **kwargs: Any) -> Any:
        calls.append(request)
        return real(request, *args, **kwargs)

    flow.prepare = prepare
    # The warm path reads a head in a layout seen before with its scheme's read_warm.
    warm = flow._acs3
    if warm is not None:
        real_warm = warm.read_warm

        def read_warm(request: Request, head_only: bool = False) -> Any:
            reading = real_warm(request, head_only)
            if reading is not None:  # None: not a layout read before, nothing read
                calls.append(request)
            return reading

        warm.read_warm = read_warm
    return calls


def test_verify_takes_the_heads_reading_from_precheck_once(world: World) -> None:
    flow = flow_of(world.verifier)
    calls = counting_prepare(flow)
    head = world.head()
    world.verifier.precheck(head)
    assert len(flow._prechecked) == 1
    verified = world.verifier.verify(head.with_body(BODY), source_ip="203.0.113.7")
    assert verified.access_key_id == world.new.access_key_id
    assert verified.source_ip == "203.0.113.7"
    assert verified.body == BODY
    assert calls == [head]  # read by precheck only
    assert flow._prechecked == {}  # taken: a second verify reads the head again
    again = world.refusal(lambda: world.verifier.verify(head.with_body(BODY)))
    assert again.code == "SignatureNonceUsed"
    assert len(calls) == 2


def test_the_date_window_is_judged_again_when_the_body_is_in(world: World) -> None:
    head = world.head()
    world.verifier.precheck(head)
    world.now = NOW + 901  # the body took longer than the window allows
    late = world.refusal(lambda: world.verifier.verify(head.with_body(BODY)))
    assert late.code == "InvalidTimeStamp.Expired"


def test_the_source_given_to_verify_is_the_one_the_acl_judges(world: World) -> None:
    world.keys.set_network_policy(
        NetworkPolicy(public=["10.0.0.0/8"]), access_key_id=world.new.access_key_id
    )
    denied = world.head()
    world.verifier.precheck(denied)
    refused = world.refusal(
        lambda: world.verifier.verify(denied.with_body(BODY), source_ip="203.0.113.7")
    )
    assert refused.code == "InvalidAccessKeyId.AccessPolicyDenied"
    allowed = world.head()
    world.verifier.precheck(allowed)
    verified = world.verifier.verify(allowed.with_body(BODY), source_ip="::ffff:10.1.2.3")
    assert verified.source_ip == "10.1.2.3"
    assert verified.acl_rule == "public:10.0.0.0/8"


@pytest.mark.parametrize(
    "change",
    [
        {"query": [("Id", "1"), ("Id", "2")]},  # what precheck would have refused
        {"query": [("Id", "2")]},
        {"path": "/v1/other"},
        {"host": "other.example.com"},
        {"method": "PUT"},
    ],
)
def test_a_request_sharing_only_the_heads_headers_is_read_in_full(
    make_verifier: MakeVerifier, change: dict[str, Any]
) -> None:
    # The same Headers object under another query, path, host or method: judged as a
    # verifier that never saw the precheck judges it.
    prechecking, fresh = World(make_verifier), World(make_verifier)
    outcomes = []
    for one in (prechecking, fresh):
        head = one.head(Id="1")
        if one is prechecking:
            one.verifier.precheck(head)
        other = attrs.evolve(head, body=BODY, **change)
        assert other.headers is head.headers
        try:
            one.verifier.verify(other)
        except AliakError as error:
            outcomes.append((error.code, error.detail))
        else:
            outcomes.append(("accepted", None))
    assert outcomes[0] == outcomes[1]


def test_heads_prechecked_but_never_verified_are_forgotten_past_a_bound(
    world: World,
) -> None:
    flow = flow_of(world.verifier)
    for _ in range(300):
        world.verifier.precheck(world.head())
    assert len(flow._prechecked) <= 256
    head = world.head()
    world.verifier.precheck(head)
    assert world.verifier.verify(head.with_body(BODY)).access_key_id == world.new.access_key_id


class KeptEvents:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


def test_a_refusal_after_the_reused_reading_is_logged_with_what_the_head_presents(
    make_verifier: MakeVerifier,
) -> None:
    world = World(make_verifier)
    log = KeptEvents()
    verifier = make_verifier(world.store, clock=lambda: world.now, request_log=log)
    head = world.head()
    verifier.precheck(head)
    world.now = NOW + 901
    with pytest.raises(AliakError):
        verifier.verify(head.with_body(BODY), source_ip="203.0.113.7", request_id="REQ-9")
    [event] = log.events
    assert event["errorCode"] == "InvalidTimeStamp.Expired"
    assert event["requestId"] == "REQ-9"
    assert event["sourceIpAddress"] == "203.0.113.7"
    assert event["userIdentity"] == {"accessKeyId": world.new.access_key_id}
    assert event["eventName"] == "CreateItem"
