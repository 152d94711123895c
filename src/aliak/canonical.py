"""The canonical request and the string-to-sign, one function per spec step (§5, §6).

Signer and verifier share every function here (DESIGN "one canonicaliser"). Each takes
plain values and returns ``str``; none touches I/O except :func:`hash_stream`, which only
reads the stream it is handed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import IO

from aliak.algorithms import Algorithm, Hasher
from aliak.encoding import percent_encode
from aliak.errors import AliakError, InvalidParameter

__all__ = [
    "STREAM_CHUNK_SIZE",
    "canonical_headers",
    "canonical_method",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "hash_stream",
    "hashed_payload",
    "headers_to_sign",
    "signed_headers",
    "string_to_sign",
]

# §5.4 trim set (our choice): SP and HTAB, the HTTP whitespace characters.
_HTTP_WHITESPACE = " \t"
_ALWAYS_SIGNED = frozenset({"host", "content-type"})
STREAM_CHUNK_SIZE = 1 << 20  # 1 MiB: large enough to amortise calls, small enough to bound memory


def canonical_method(method: str) -> str:
    """§5.1: the method in upper case, as on the request line.

    :class:`~aliak.Request` upper-cases it once, when it is built, so it is not done again
    per signature.
    """
    return method


def canonical_uri(path: str) -> str:
    """§5.2: the path as on the request line (already encoded); empty becomes ``/``."""
    return path or "/"


def canonical_query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """§5.3: ``pct(name)=pct(value)`` sorted by code point, joined with ``&``.

    ``pairs`` are step 1's (name, value) strings, absent values already dropped.
    """
    # Step 2: by name, then by value (which only matters for the repeated names a verifier
    # may receive); Python compares str by code point, the spec's order.
    ordered = sorted(pairs)
    # Step 3: both sides encoded; an empty value gives "name=".
    encoded = [f"{percent_encode(name)}={percent_encode(value)}" for name, value in ordered]
    # Step 4: no parameters give the empty line.
    return "&".join(encoded)


def headers_to_sign(header_names: Iterable[str], *, sign_all: bool = False) -> list[str]:
    """§5.4 rule 1: ``host``, ``content-type`` and every ``x-acs-*`` (lower-cased names).

    With ``sign_all`` every header but ``authorization`` is signed, as the official
    Python SDK does. Returns the names sorted by code point.
    """
    if sign_all:
        return sorted([name for name in header_names if name != "authorization"])
    return sorted(
        [name for name in header_names if name.startswith("x-acs-") or name in _ALWAYS_SIGNED]
    )


def canonical_headers(values_by_name: Mapping[str, Sequence[str]], names: Sequence[str]) -> str:
    """§5.4 rules 2-4: ``name:value\\n`` per name, in the order of ``names``.

    A name with several values makes one entry: values trimmed, sorted, joined with ``,``.
    A name absent from ``values_by_name`` raises ``KeyError``; callers decide what it means.
    """
    entries = []
    for name in names:
        values = values_by_name[name]
        if len(values) == 1:  # the common case needs no sort and no join
            value = values[0].strip(_HTTP_WHITESPACE)
        else:
            value = ",".join(sorted([item.strip(_HTTP_WHITESPACE) for item in values]))
        entries.append(f"{name}:{value}\n")
    return "".join(entries)


def signed_headers(names: Sequence[str]) -> str:
    """§5.4 rule 5: the signed names joined with ``;``."""
    return ";".join(names)


def hashed_payload(body: bytes, algorithm: Algorithm) -> str:
    """§5.5: ``hex(H(body))`` -- SHA-256, or SM3 for ``ACS3-HMAC-SM3``."""
    return algorithm.hash_hex(body)


def hash_stream(
    stream: IO[bytes] | Iterable[bytes], hasher: Hasher, sink: IO[bytes] | None = None
) -> str:
    """§5.5 for a streamed body: hash it chunk by chunk, never holding it whole.

    File objects are read with ``readinto`` into one reusable buffer. Chunks are copied to
    ``sink`` when given (the signer spools one-shot iterables so they can still be sent).
    A read that fails raises :class:`InvalidParameter` naming the body.
    """
    try:
        readinto = getattr(stream, "readinto", None)
        if readinto is not None:
            buffer = bytearray(STREAM_CHUNK_SIZE)
            view = memoryview(buffer)
            while True:
                count = readinto(buffer)
                if not count:
                    break
                chunk = view[:count]
                hasher.update(chunk)
                if sink is not None:
                    sink.write(chunk)
        elif (read := getattr(stream, "read", None)) is not None:
            while chunk_bytes := read(STREAM_CHUNK_SIZE):
                _update(hasher, sink, chunk_bytes)
        else:
            for chunk_bytes in stream:  # no read(): an iterable of chunks
                _update(hasher, sink, chunk_bytes)
    except AliakError:
        raise  # a refusal from the sink (over the size limit) stands as it is
    except Exception as exc:
        raise InvalidParameter(
            "body", detail=f"reading the body stream failed: {type(exc).__name__}"
        ) from exc
    return hasher.hexdigest()


def _update(hasher: Hasher, sink: IO[bytes] | None, chunk: object) -> None:
    if not isinstance(chunk, bytes):
        raise InvalidParameter(
            "body", detail=f"a body stream yielded {type(chunk).__name__}, not bytes"
        )
    hasher.update(chunk)
    if sink is not None:
        sink.write(chunk)


def canonical_request(  # noqa: PLR0917 - the six fields of the spec, in its order
    method: str,
    uri: str,
    query: str,
    headers: str,
    signed: str,
    payload_hash: str,
) -> str:
    """§1: six fields joined by newlines; ``headers`` ends in ``\\n``, so a blank line follows."""
    return f"{method}\n{uri}\n{query}\n{headers}\n{signed}\n{payload_hash}"


def string_to_sign(algorithm: Algorithm, canonical: str) -> str:
    """§6: ``Algorithm \\n hex(H(UTF-8(CanonicalRequest)))`` -- two lines, no trailing newline."""
    return f"{algorithm.name}\n{algorithm.hash_hex(canonical.encode('utf-8', 'surrogateescape'))}"
