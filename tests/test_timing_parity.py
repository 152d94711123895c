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
from aliak.storage import memory as memory_module
from aliak.storage import sqlite as sqlite_module

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
