"""The ``Authorization`` header: format it strictly, parse it without surprises (spec §7).

``ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<h1;h2>,Signature=<hex>``

The default parser is strict: exactly the emitted grammar (the signature hex may be in
either case). ``lenient=True`` applies the spec's tolerant reading for verifiers facing
old clients: spaces around fields, any field order. Both refuse a missing, repeated or
unknown field, an empty or malformed signed-header list, a bad key id and non-hex
signature with :class:`IncompleteSignature`, and an algorithm outside the allow-list
with :class:`InvalidSignatureMethod`.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import attrs

from aliak.algorithms import ALGORITHM_NAMES
from aliak.credentials import ACCESS_KEY_ID_PATTERN, is_valid_access_key_id
from aliak.errors import IncompleteSignature, InvalidSignatureMethod

__all__ = [
    "MAX_AUTHORIZATION_LENGTH",
    "Authorization",
    "format_authorization",
    "parse_authorization",
]

# Longer than any honest header (an RSA-8192 signature is 2048 hex); refusing early keeps
# a 100 kB header from costing more than a length check.
MAX_AUTHORIZATION_LENGTH = 8192

_FIELDS = ("Credential", "SignedHeaders", "Signature")
_strict = re.compile(r"(\S+) Credential=([^,]*),SignedHeaders=([^,]*),Signature=([^,]*)").fullmatch
_NAME = r"[!#$%&'*+\-.^_`|~0-9a-z]+"
_is_header_list = re.compile(rf"{_NAME}(?:;{_NAME})*").fullmatch
_is_hex = re.compile(r"(?:[0-9a-fA-F]{2})+").fullmatch
# The emitted grammar in one pass: what every current SDK sends, so the common case costs
# one regex match (flat character classes, no nested repetition, so no backtracking).
# Anything else takes the field-by-field path for a precise reason.
_well_formed = re.compile(
    rf"([A-Z0-9-]+) Credential=({ACCESS_KEY_ID_PATTERN}),"
    r"SignedHeaders=([!#$%&'*+\-.^_`|~0-9a-z;]+),"
    r"Signature=([0-9a-f]+)"
).fullmatch


def _lower_hex(value: str) -> str:
    return value.lower()


@attrs.frozen
class Authorization:
    """A parsed ``Authorization`` header. Holds no secret: the signature is public."""

    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str = attrs.field(converter=_lower_hex)

    @classmethod
    def _trusted(
        cls, algorithm: str, access_key_id: str, names: tuple[str, ...], signature: str
    ) -> Authorization:
        """Build from parts the parser already checked (the signature is lower-case)."""
        new = object.__new__(cls)
        _set_algorithm(new, algorithm)
        _set_access_key_id(new, access_key_id)
        _set_signed_headers(new, names)
        _set_signature(new, signature)
        return new

    @property
    def signed_headers_line(self) -> str:
        """The SignedHeaders value as it goes in the canonical request."""
        return ";".join(self.signed_headers)

    def format(self) -> str:
        return format_authorization(
            self.algorithm, self.access_key_id, self.signed_headers_line, self.signature
        )


def format_authorization(
    algorithm: str, access_key_id: str, signed_headers: str, signature: str
) -> str:
    """§7: one space after the algorithm, then the three fields, no spaces."""
    return (
        f"{algorithm} Credential={access_key_id},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


def _incomplete(detail: str) -> IncompleteSignature:
    return IncompleteSignature(detail=f"Authorization: {detail}")


def _split_strict(value: str) -> tuple[str, str, str, str]:
    match = _strict(value)
    if match is None:
        raise _incomplete("not 'ALGORITHM Credential=..,SignedHeaders=..,Signature=..'")
    algorithm, credential, headers, signature = match.groups()
    return algorithm, credential, headers, signature


def _split_lenient(value: str) -> tuple[str, str, str, str]:
    algorithm, _, rest = value.strip(" ").partition(" ")
    fields: dict[str, str] = {}
    for piece in rest.split(","):
        key, equals, field_value = piece.strip(" ").partition("=")
        if not equals or key not in _FIELDS:
            raise _incomplete(f"unexpected field {key[:32]!r}")
        if key in fields:
            raise _incomplete(f"{key} appears twice")
        fields[key] = field_value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise _incomplete(f"missing {', '.join(missing)}")
    return algorithm, fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def parse_authorization(
    value: str | None,
    *,
    allowed_algorithms: Collection[str] = ALGORITHM_NAMES,
    lenient: bool = False,
) -> Authorization:
    """Parse an ``Authorization`` header value, or raise the matching :class:`AliakError`."""
    if not value:
        raise _incomplete("missing")
    if not isinstance(value, str):
        raise TypeError(f"Authorization must be str, not {type(value).__name__}")
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise _incomplete(f"longer than {MAX_AUTHORIZATION_LENGTH} characters")
    match = _well_formed(value)
    if (
        match is not None
        and not len(match.group(4)) % 2
        and ";;" not in (headers := match.group(3))
        and headers[0] != ";"
        and headers[-1] != ";"
    ):
        algorithm, credential, _, signature = match.groups()
        if algorithm not in allowed_algorithms:
            raise InvalidSignatureMethod(detail=f"algorithm {algorithm[:40]!r} is not allowed")
        names = tuple(headers.split(";"))
        if len(set(names)) != len(names):
            raise _incomplete("SignedHeaders lists a name twice")
        return Authorization._trusted(algorithm, credential, names, signature)
    algorithm, _, rest = value.strip(" ").partition(" ") if lenient else value.partition(" ")
    if not rest:
        raise _incomplete("no space after the algorithm")
    if algorithm not in allowed_algorithms:
        raise InvalidSignatureMethod(detail=f"algorithm {algorithm[:40]!r} is not allowed")
    _, credential, headers, signature = _split_lenient(value) if lenient else _split_strict(value)
    if not is_valid_access_key_id(credential):
        raise _incomplete("Credential is not an AccessKey id")
    if _is_header_list(headers) is None:
        raise _incomplete("SignedHeaders must be non-empty lower-case header names")
    names = tuple(headers.split(";"))
    if len(set(names)) != len(names):
        raise _incomplete("SignedHeaders lists a name twice")
    if _is_hex(signature) is None:
        raise _incomplete("Signature is not hex")
    return Authorization(algorithm, credential, names, signature)


# Slot descriptors of the frozen class, for Authorization._trusted only.
_set_algorithm, _set_access_key_id, _set_signed_headers, _set_signature = (
    Authorization.__dict__[field.name].__set__ for field in attrs.fields(Authorization)
)
