"""Shared fixtures: the golden vectors (copied from shared/spec/vectors/acs3.json), and
``make_verifier``, which runs a verifier test against both shells (sync and async)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aliak import (
    AccessKey,
    AsyncVerifier,
    Request,
    Secret,
    Signer,
    Verified,
    Verifier,
    VerifierSettings,
)
from aliak.errors import InvalidSecurityTokenMalformed
from aliak.model import AssumedRole, RamRole
from aliak.sts import StsClaims
from aliak.timestamps import parse_acs_date

VECTORS_PATH = Path(__file__).with_name("vectors_acs3.json")
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text("utf-8"))["vectors"]
DEFAULT_SIGNED = ("host", "content-type")


def vector_by_name(name: str) -> dict[str, Any]:
    return next(vector for vector in VECTORS if vector["name"] == name)


def vector_key_material(vector: dict[str, Any]) -> str:
    return vector.get("secret") or vector["private_key_pem"]


def vector_signs_only_default_headers(vector: dict[str, Any]) -> bool:
    return all(
        name.lower().startswith("x-acs-") or name.lower() in DEFAULT_SIGNED
        for name in vector["headers"]
    )


def vector_request(vector: dict[str, Any]) -> Request:
    return Request(
        vector["method"],
        path=vector["path"],
        query=vector["query"],
        headers=list(vector["headers"].items()),
        body=base64.b64decode(vector["body_base64"]),
    )


def vector_signer(vector: dict[str, Any]) -> Signer:
    date = vector["headers"].get("x-acs-date", "2023-10-26T10:22:32Z")
    return Signer(
        AccessKey(vector["access_key_id"], vector_key_material(vector)),
        algorithm=vector["algorithm"],
        sign_all_headers=not vector_signs_only_default_headers(vector),
        clock=lambda: float(parse_acs_date(date)),
        nonce_factory=lambda: "unused-the-vectors-carry-their-nonce",
    )


@pytest.fixture(params=VECTORS, ids=[vector["name"] for vector in VECTORS])
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def vector_is_sts(vector: dict[str, Any]) -> bool:
    return str(vector["access_key_id"]).startswith("STS.")


def vector_expected_outcome(vector: dict[str, Any]) -> str:
    """What a verifier answers to an untouched vector: accepted, except the one that sends
    a security token with a permanent key id (refused after its signature checks out)."""
    if "x-acs-security-token" in vector["headers"] and not vector_is_sts(vector):
        return "InvalidSecurityToken.MismatchWithAccessKey"
    return "accepted"


class VectorStsValidator:
    """The vectors' STS tokens came from Alibaba's STS, which aliak cannot open; this
    validator knows each vector's (id, token) -> secret, as a deployment's own pluggable
    validator would know its STS."""

    def __init__(self, vectors: list[dict[str, Any]]) -> None:
        self._known = {
            v["access_key_id"]: (v["headers"]["x-acs-security-token"], v["secret"])
            for v in vectors
            if vector_is_sts(v)
        }

    def open(self, access_key_id: str, token: str) -> StsClaims:
        known = self._known.get(access_key_id)
        if known is None or known[0] != token:
            raise InvalidSecurityTokenMalformed(detail="not a vector token")
        return StsClaims(
            access_key_id=access_key_id,
            secret=Secret(known[1]),
            principal=AssumedRole(RamRole("1234567890123456", "vectors"), "vector-session"),
            issued_at=0,
            expiration=2**40,
        )


# -- both verifier shells -------------------------------------------------------------------

SHELLS = ("sync", "async")
T = TypeVar("T")


class AsyncShellFacade:
    """Test-only: the sync :class:`Verifier` interface over an :class:`AsyncVerifier` on
    ``store.as_async()``, each call run to completion on ``loop``. Nothing is translated:
    results and exceptions (code, message, ``__cause__``) come back exactly as the async
    shell produced them, so any drift between the shells shows up in the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Any, **options: Any) -> None:
        self._loop = loop
        self.shell = AsyncVerifier(store.as_async(), **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    @property
    def settings(self) -> VerifierSettings:
        return self.shell.settings

    def __repr__(self) -> str:
        return repr(self.shell)

    def verify(self, request: Request, **options: Any) -> Verified:
        return self._run(self.shell.verify(request, **options))

    def invalidate(self, access_key_id: str | None = None) -> None:
        self.shell.invalidate(access_key_id)

    def precheck(self, request: Request) -> None:
        self.shell.precheck(request)  # no I/O: a plain call on both shells

    def flush(self) -> None:
        self._run(self.shell.flush())

    def close(self) -> None:
        self._run(self.shell.aclose())

    def __enter__(self) -> AsyncShellFacade:
        entered = self._run(self.shell.__aenter__())
        assert entered is self.shell, "async with AsyncVerifier(...) must give the verifier"
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._run(self.shell.__aexit__(*exc_info))


# What a test holds, whichever the shell; and how it makes one: make(store, **options).
ShellVerifier = Verifier | AsyncShellFacade
MakeVerifier = Callable[..., ShellVerifier]


@contextlib.contextmanager
def verifier_factory(shell: str) -> Iterator[MakeVerifier]:
    """``make(store, **options)`` for one shell: the sync :class:`Verifier` itself, or an
    :class:`AsyncShellFacade` on an event loop of its own, closed on leaving."""
    if shell == "sync":
        yield Verifier
        return
    assert shell == "async", shell
    loop = asyncio.new_event_loop()
    try:
        yield functools.partial(AsyncShellFacade, loop)
    finally:
        # Let background usage writes started by a verify finish before the loop goes.
        # An AsyncPostgresStore's pool lives until its guard task is cancelled (as
        # asyncio.run does at its end), which closes the pool and ends its workers.
        pending = asyncio.all_tasks(loop)
        guards = {task for task in pending if task.get_name().endswith("-guard")}
        others = pending - guards
        if others:
            loop.run_until_complete(asyncio.wait(others, timeout=1 if guards else None))
        for task in guards:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> str:
    """The verifier shell under test: "sync" (Verifier) or "async" (AsyncVerifier)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_verifier(shell: str) -> Iterator[MakeVerifier]:
    """``make_verifier(store, **options)``: a verifier of the shell under test, with the
    sync :class:`Verifier`'s interface (``verify``, ``flush``, ``close``, ``with``,
    ``invalidate``, ``settings``)."""
    with verifier_factory(shell) as make:
        yield make
