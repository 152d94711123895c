"""The three ACS3 signature algorithms behind one small interface (spec §2).

An :class:`Algorithm` hashes (the payload and the canonical request) and turns key
material into keys. A key signs a string-to-sign into lower-case hex, and verifies a
hex signature, raising :class:`~aliak.errors.SignatureDoesNotMatch` on mismatch.

=====================  ===========  =====================================
name                   hash         signature
=====================  ===========  =====================================
``ACS3-HMAC-SHA256``   SHA-256      HMAC-SHA256 keyed by the UTF-8 secret
``ACS3-HMAC-SM3``      SM3          HMAC-SM3 keyed by the UTF-8 secret
``ACS3-RSA-SHA256``    SHA-256      RSASSA-PKCS1-v1_5 / SHA-256, hex
=====================  ===========  =====================================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Literal, Protocol, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aliak.errors import InvalidParameter, InvalidSignatureMethod, SignatureDoesNotMatch

__all__ = [
    "ALGORITHM_NAMES",
    "Algorithm",
    "AlgorithmName",
    "Hasher",
    "SigningKey",
    "VerifyingKey",
    "get_algorithm",
]

AlgorithmName = Literal["ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", "ACS3-RSA-SHA256"]
ALGORITHM_NAMES: tuple[AlgorithmName, ...] = (
    "ACS3-HMAC-SHA256",
    "ACS3-HMAC-SM3",
    "ACS3-RSA-SHA256",
)

# RSA keys below this size are refused: 1024-bit RSA is within reach of a determined
# attacker, and no Alibaba SDK generates them.
_MIN_RSA_BITS = 2048


class Hasher(Protocol):
    """An incremental hash: ``update`` as data streams in, ``hexdigest`` at the end."""

    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


class SigningKey(Protocol):
    """Key state prepared once per credential; ``sign`` is the hot path."""

    def sign(self, string_to_sign: bytes) -> str:
        """Signature of the UTF-8 string-to-sign, lower-case hex."""
        ...

    def verify(self, string_to_sign: bytes, signature: str) -> None:
        """Raise :class:`SignatureDoesNotMatch` unless ``signature`` (hex) is valid."""
        ...


class VerifyingKey(Protocol):
    def verify(self, string_to_sign: bytes, signature: str) -> None:
        """Raise :class:`SignatureDoesNotMatch` unless ``signature`` (hex) is valid."""
        ...


class Algorithm(Protocol):
    name: AlgorithmName

    def hash_hex(self, data: bytes) -> str:
        """``hex(H(data))``: the payload hash and the canonical-request hash."""
        ...

    def hasher(self) -> Hasher:
        """A fresh incremental ``H`` for streamed bodies."""
        ...

    def signing_key(self, key_material: str) -> SigningKey:
        """HMAC: the AccessKey secret. RSA: the private key (PKCS#8/PKCS#1 PEM, bare base64)."""
        ...

    def verifying_key(self, key_material: str) -> VerifyingKey:
        """HMAC: the AccessKey secret. RSA: the public key (PEM or bare base64 DER)."""
        ...


class _HmacKey:
    """HMAC state keyed once; each signature copies it (cheaper than re-keying)."""

    __slots__ = ("_state",)

    def __init__(self, state: hmac.HMAC) -> None:
        # CPython's hmac.HMAC wraps OpenSSL's HMAC object; copying that object directly
        # skips a Python-level copy (about 0.3 us per signature). Fall back to the
        # wrapper where the interpreter has no such object.
        self._state: hmac.HMAC = getattr(state, "_hmac", None) or state

    def __repr__(self) -> str:
        return "<HMAC key>"

    def sign(self, string_to_sign: bytes) -> str:
        mac = self._state.copy()
        mac.update(string_to_sign)
        return mac.hexdigest()

    def verify(self, string_to_sign: bytes, signature: str) -> None:
        mac = self._state.copy()  # sign() inline: one call fewer on every verify
        mac.update(string_to_sign)
        # Constant-time: a fast mismatch would reveal how long a prefix of a forged
        # signature was right.
        if not hmac.compare_digest(mac.hexdigest(), signature.lower()):
            raise SignatureDoesNotMatch


class _HmacSha256:
    name: AlgorithmName = "ACS3-HMAC-SHA256"

    def hash_hex(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def hasher(self) -> Hasher:
        return hashlib.sha256()

    def signing_key(self, key_material: str) -> SigningKey:
        return _HmacKey(hmac.new(_secret_bytes(key_material), digestmod=hashlib.sha256))

    def verifying_key(self, key_material: str) -> VerifyingKey:
        return self.signing_key(key_material)


class _Sm3Hasher:
    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = _new_sm3()

    def update(self, data: bytes | memoryview, /) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.finalize().hex()


class _HmacSm3Key:
    __slots__ = ("_state",)

    def __init__(self, secret: bytes) -> None:
        self._state = crypto_hmac.HMAC(secret, hashes.SM3())

    def __repr__(self) -> str:
        return "<HMAC-SM3 key>"

    def sign(self, string_to_sign: bytes) -> str:
        mac = self._state.copy()
        mac.update(string_to_sign)
        return mac.finalize().hex()

    def verify(self, string_to_sign: bytes, signature: str) -> None:
        if not hmac.compare_digest(self.sign(string_to_sign), signature.lower()):
            raise SignatureDoesNotMatch


def _new_sm3() -> hashes.Hash:
    return hashes.Hash(hashes.SM3())


class _HmacSm3:
    name: AlgorithmName = "ACS3-HMAC-SM3"

    def hash_hex(self, data: bytes) -> str:
        digest = _new_sm3()
        digest.update(data)
        return digest.finalize().hex()

    def hasher(self) -> Hasher:
        return _Sm3Hasher()

    def signing_key(self, key_material: str) -> SigningKey:
        return _HmacSm3Key(_secret_bytes(key_material))

    def verifying_key(self, key_material: str) -> VerifyingKey:
        return self.signing_key(key_material)


class _RsaPublicKey:
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"<RSA-{self._key.key_size} public key>"

    def verify(self, string_to_sign: bytes, signature: str) -> None:
        try:
            raw = bytes.fromhex(signature)
            self._key.verify(raw, string_to_sign, padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            raise SignatureDoesNotMatch from None


class _RsaPrivateKey(_RsaPublicKey):
    __slots__ = ("_private",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        super().__init__(key.public_key())
        self._private = key

    def __repr__(self) -> str:
        return f"<RSA-{self._private.key_size} private key>"

    def sign(self, string_to_sign: bytes) -> str:
        return self._private.sign(string_to_sign, padding.PKCS1v15(), hashes.SHA256()).hex()


class _RsaSha256:
    name: AlgorithmName = "ACS3-RSA-SHA256"

    def hash_hex(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def hasher(self) -> Hasher:
        return hashlib.sha256()

    def signing_key(self, key_material: str) -> SigningKey:
        return _RsaPrivateKey(load_rsa_private_key(key_material))

    def verifying_key(self, key_material: str) -> VerifyingKey:
        return _RsaPublicKey(load_rsa_public_key(key_material))


def _secret_bytes(key_material: str) -> bytes:
    if not isinstance(key_material, str) or not key_material:
        raise InvalidParameter("AccessKeySecret", detail="the secret must be a non-empty str")
    return key_material.encode("utf-8")


def _pem_or_der(key_material: str, kind: str) -> tuple[bytes, bool]:
    """Return (data, is_pem); bare base64 is decoded to DER."""
    if not isinstance(key_material, str):
        raise InvalidParameter(kind, detail=f"the {kind} must be a str")
    text = key_material.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii", "replace"), True
    try:
        return base64.b64decode("".join(text.split()), validate=True), False
    except (binascii.Error, ValueError):
        raise InvalidParameter(
            kind, detail=f"the {kind} is neither PEM nor base64-encoded DER"
        ) from None


def _checked_rsa(key: object, kind: str) -> None:
    size = getattr(key, "key_size", 0)
    if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        raise InvalidParameter(kind, detail=f"the {kind} is not an RSA key")
    if size < _MIN_RSA_BITS:
        raise InvalidParameter(kind, detail=f"RSA keys must be at least {_MIN_RSA_BITS} bits")


def load_rsa_private_key(key_material: str) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PKCS#8 PEM, PKCS#1 PEM, or bare base64 DER.

    Any failure is an :class:`InvalidParameter` naming the key, never quoting it.
    """
    kind = "PrivateKey"
    data, is_pem = _pem_or_der(key_material, kind)
    candidates = [data]
    if is_pem and b"RSA PRIVATE KEY" in data:
        # Some SDKs label a PKCS#8 body "RSA PRIVATE KEY"; try the PKCS#8 label as well.
        candidates.append(data.replace(b"RSA PRIVATE KEY", b"PRIVATE KEY"))
    load = serialization.load_pem_private_key if is_pem else serialization.load_der_private_key
    for candidate in candidates:
        try:
            key = load(candidate, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        _checked_rsa(key, kind)
        return cast(rsa.RSAPrivateKey, key)
    raise InvalidParameter(
        kind, detail="the private key does not parse (PKCS#8 or PKCS#1, unencrypted)"
    )


def load_rsa_public_key(key_material: str) -> rsa.RSAPublicKey:
    """Load an RSA public key: SubjectPublicKeyInfo or PKCS#1 PEM, or bare base64 DER."""
    kind = "PublicKey"
    data, is_pem = _pem_or_der(key_material, kind)
    load = serialization.load_pem_public_key if is_pem else serialization.load_der_public_key
    try:
        key = load(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidParameter(kind, detail="the public key does not parse") from None
    _checked_rsa(key, kind)
    return cast(rsa.RSAPublicKey, key)


_ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm for algorithm in (_HmacSha256(), _HmacSm3(), _RsaSha256())
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; anything else is :class:`InvalidSignatureMethod`."""
    try:
        return _ALGORITHMS[name]
    except (KeyError, TypeError):
        raise InvalidSignatureMethod(
            detail=f"algorithm {name!r} is not one of {', '.join(ALGORITHM_NAMES)}"
        ) from None
