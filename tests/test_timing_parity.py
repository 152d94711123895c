"""Unknown ids take the same path as known ones: the same work, step by step.

Timing is measured in ``benchmarks/`` (a statistical row), never asserted here. What a
test can pin exactly is the *work*: which sealed secrets are opened, which verifying
keys are built, which stored rows are parsed. For a cold cache, a wrong signature for a
known id and any unknown id must do the same list of operations, in both profiles, on
Memory and on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aliak import (
    AccessKey,
    AliakError,
    KeyManager,
    MemoryStore,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
    Verifier,
)
from aliak import algorithms as algorithms_module
from aliak import keyring as keyring_module
from aliak import verifier as verifier_module
from aliak.legacy import (
    format_http_date,
    legacy_signing_key,
    roa_canonical_headers,
    roa_canonical_resource,
    roa_string_to_sign,
    rpc_string_to_sign,
)
from aliak.storage import memory as memory_module
from aliak.storage import sqlite as sqlite_module
from aliak.timestamps import format_acs_date

NOW = 1_700_000_000
OWNER = RamUser("1234567890123456", "parity")
WRONG = "a-wrong-secret-of-the-usual-size"


class Work:
    """Records the expensive steps of one verify, by kind (no values, no secrets)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.done: list[str] = []
        opening = keyring_module.MasterKeyring.open_secret

        def open_secret(keyring: Any, access_key_id: str, sealed: bytes) -> Any:
            self.done.append("open sealed secret")
            return opening(keyring, access_key_id, sealed)

        monkeypatch.setattr(keyring_module.MasterKeyring, "open_secret", open_secret)
        for name, algorithm in algorithms_module._ALGORITHMS.items():
            building = type(algorithm).verifying_key

            def verifying_key(
                self_: Any, material: str, name: str = name, b: Any = building
            ) -> Any:
                self.done.append(f"build {name} key")
                return b(self_, material)

            monkeypatch.setattr(type(algorithm), "verifying_key", verifying_key)
        parsing = sqlite_module.record_from_row

        def record_from_row(row: Any, owner_from_columns: Any) -> Any:
            self.done.append("parse a row")
            return parsing(row, owner_from_columns)

        monkeypatch.setattr(sqlite_module, "record_from_row", record_from_row)
        evolving = memory_module.attrs.evolve

        def evolve(instance: Any, **changes: Any) -> Any:
            self.done.append("build a record")
            return evolving(instance, **changes)

        monkeypatch.setattr(memory_module.attrs, "evolve", evolve)
        legacy_key = verifier_module.legacy_verifying_key

        def legacy_verifying_key(kind: str, material: str) -> Any:
            self.done.append(f"build {kind} key")
            return legacy_key(kind, material)  # type: ignore[arg-type]

        monkeypatch.setattr(verifier_module, "legacy_verifying_key", legacy_verifying_key)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "a.db")
    yield opened
    opened.close()


def cold_work(store: Any, work: Work, access_key: AccessKey, profile: str) -> list[str]:
    verifier = Verifier(store, clock=lambda: NOW, error_profile=profile)  # a cold cache
    signed = Signer(access_key, clock=lambda: NOW).sign(
        Request("GET", host="api.example.com"), action="A", version="V"
    )
    work.done.clear()
    with pytest.raises(AliakError):
        verifier.verify(signed)
    return list(work.done)


@pytest.mark.parametrize("profile", ["alibaba", "opaque"])
@pytest.mark.parametrize("used", [False, True], ids=["never-used", "used"])
def test_a_wrong_signature_and_an_unknown_id_do_the_same_work(
    store: Any, monkeypatch: pytest.MonkeyPatch, profile: str, used: bool
) -> None:
    keys = KeyManager(store, clock=lambda: NOW)
    new = keys.create_access_key(OWNER)
    if used:  # a key with last-use history is stored differently from a fresh one
        with Verifier(store, clock=lambda: NOW) as verifier:
            verifier.verify(
                Signer(new.access_key, clock=lambda: NOW).sign(
                    Request("GET", host="api.example.com"), action="A", version="V"
                )
            )
    work = Work(monkeypatch)
    known = cold_work(store, work, AccessKey(new.access_key_id, WRONG), profile)
    unknown = cold_work(store, work, AccessKey("LTAI" + "7" * 20, WRONG), profile)
    assert known == unknown
    assert "open sealed secret" in known
    assert "build ACS3-HMAC-SHA256 key" in known


def test_an_rsa_key_opens_a_sealed_secret_too(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # An RSA key holds no sealed secret; its lookup opens the dummy's, so an id's kind
    # does not show in the time a wrong HMAC signature takes to refuse.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rsa_key = KeyManager(store, clock=lambda: NOW).register_public_key(OWNER, public.decode())
    work = Work(monkeypatch)
    as_hmac = cold_work(store, work, AccessKey(rsa_key.access_key_id, WRONG), "opaque")
    unknown = cold_work(store, work, AccessKey("LTAI" + "7" * 20, WRONG), "opaque")
    assert as_hmac == unknown


def legacy_request(scheme: str, access_key_id: str, secret: str) -> Request:
    """An RPC or ROA request signed (with ``secret``) the way the official SDKs sign."""
    if scheme == "RPC":
        params = {
            "AccessKeyId": access_key_id,
            "Action": "A",
            "Format": "JSON",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": "parity-nonce",
            "SignatureVersion": "1.0",
            "Timestamp": format_acs_date(NOW),
            "Version": "V",
        }
        to_sign = rpc_string_to_sign("GET", params.items())
        params["Signature"] = legacy_signing_key("RPC-HMAC-SHA1", secret).sign(to_sign.encode())
        return Request("GET", host="api.example.com", query=params)
    headers = {
        "date": format_http_date(NOW),
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-nonce": "parity-nonce",
        "x-acs-signature-version": "1.0",
        "x-acs-version": "V",
    }
    to_sign = roa_string_to_sign(
        "GET",
        accept="",
        content_md5="",
        content_type="",
        date=headers["date"],
        canonical_headers=roa_canonical_headers(headers.items()),
        canonical_resource=roa_canonical_resource("/", []),
    )
    signature = legacy_signing_key("ROA-HMAC-SHA1", secret).sign(to_sign.encode())
    headers["authorization"] = f"acs {access_key_id}:{signature}"
    return Request("GET", host="api.example.com", headers=headers)


@pytest.mark.parametrize("scheme", ["RPC", "ROA"])
@pytest.mark.parametrize("profile", ["alibaba", "opaque"])
def test_legacy_schemes_do_the_same_work_for_unknown_ids(
    store: Any, monkeypatch: pytest.MonkeyPatch, scheme: str, profile: str
) -> None:
    new = KeyManager(store, clock=lambda: NOW).create_access_key(OWNER)
    work = Work(monkeypatch)
    done = []
    for access_key_id in (new.access_key_id, "LTAI" + "7" * 20):
        verifier = Verifier(store, clock=lambda: NOW, error_profile=profile)
        work.done.clear()
        with pytest.raises(AliakError):
            verifier.verify(legacy_request(scheme, access_key_id, WRONG))
        done.append(list(work.done))
    known, unknown = done
    assert known == unknown
    assert "open sealed secret" in known
    assert f"build {scheme}-HMAC-SHA1 key" in known


def calls_of(verify: Any, request: Request) -> list[str]:
    """Every Python and C function one refused verify calls, in order (names only)."""
    import sys

    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}")
        elif event == "c_call":
            calls.append(f"C:{getattr(arg, '__qualname__', type(arg).__name__)}")

    import gc

    collecting = gc.isenabled()
    gc.disable()  # a collection's callbacks (hypothesis installs one) are not the verify's
    sys.setprofile(profile)
    try:
        verify(request)
    except AliakError:
        pass
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()
    return calls


@pytest.mark.parametrize("scheme", ["ACS3", "RPC", "ROA"])
@pytest.mark.parametrize("profile", ["alibaba", "opaque"])
def test_an_id_the_verifier_has_seen_costs_what_a_new_one_does(
    store: Any, scheme: str, profile: str
) -> None:
    # A flood of fresh ids evicts a known key from the cache between its requests. Whatever
    # the verifier remembers of requests it has seen (the Authorization head it parsed,
    # the layout it checked) must not make an id in use quicker to present than an id
    # never seen: the attacker's probe is either, and the two must run the same code.
    # A used key: the shape of SQLite's decoy row (a key worth probing is one in use; a
    # never-used key's row parses one datetime fewer than the decoy, a known residual).
    # Its times differ from the decoy's and from each other, as a real key's do.
    new = KeyManager(store, clock=lambda: NOW - 7200).create_access_key(OWNER)
    known_id = new.access_key_id
    with Verifier(store, clock=lambda: NOW - 600) as first:
        first.verify(
            Signer(new.access_key, clock=lambda: NOW - 600).sign(
                Request("GET", host="api.example.com"), action="A", version="V"
            )
        )
    verifier = Verifier(store, clock=lambda: NOW, error_profile=profile, cache_size=4)
    counter = iter(range(10_000))

    def forged(access_key_id: str) -> Request:
        if scheme != "ACS3":
            return legacy_request(scheme, access_key_id, WRONG)
        return Signer(AccessKey(access_key_id, WRONG), clock=lambda: NOW).sign(
            Request("GET", host="api.example.com"), action="A", version="V"
        )

    def fresh_id() -> str:
        return f"LTAI{next(counter):020d}"  # as long as the known id, never stored

    def flood() -> None:
        for _ in range(8):
            calls_of(verifier.verify, forged(fresh_id()))

    try:
        for _ in range(3):  # the known id's head is seen again and again
            calls_of(verifier.verify, forged(known_id))
            flood()
        known = calls_of(verifier.verify, forged(known_id))
        flood()
        unknown = calls_of(verifier.verify, forged(fresh_id()))
    finally:
        verifier.close()
    assert len(known) > 50  # the trace saw the verify
    assert known == unknown
