"""Shared fixtures: the golden vectors (copied from shared/spec/vectors/acs3.json)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from aliak import AccessKey, Request, Secret, Signer
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
