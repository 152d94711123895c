"""The one HTTP exchange the network sources make: a request, a status and a body.

Standard library only (:mod:`http.client`), with a timeout on every socket operation,
and no proxy: the instance metadata service and a local credentials URI must be reached
directly, and STS speaks HTTPS to a fixed host.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aliak.credentials._errors import CredentialsSourceError, CredentialsUnavailable

__all__ = ["MAX_RESPONSE", "Response", "fetch", "json_object"]

MAX_RESPONSE = 1 << 20  # a credential answer is a few kilobytes; more is not one


class Response:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def fetch(
    method: str,
    url: str,
    *,
    source: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float,
) -> Response:
    """One request to ``url`` (``http`` or ``https``); a socket error, a timeout or an
    oversized answer is :class:`CredentialsUnavailable` naming ``source``."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CredentialsSourceError(
            source, "url", fix=f"use an http:// or https:// URL, not {parts.scheme or 'none'}"
        )
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read(MAX_RESPONSE + 1)
    except (OSError, http.client.HTTPException) as error:
        raise CredentialsUnavailable(
            source, detail=f"{method} {parts.scheme}://{parts.netloc}{parts.path}: {error!r}"
        ) from error
    finally:
        connection.close()
    if len(data) > MAX_RESPONSE:
        raise CredentialsUnavailable(source, detail=f"the answer exceeds {MAX_RESPONSE} bytes")
    return Response(response.status, data)


def json_object(response: Response, *, source: str) -> dict[str, Any]:
    """The answer's JSON object; anything else is :class:`CredentialsUnavailable`."""
    try:
        value = json.loads(response.body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CredentialsUnavailable(
            source, detail=f"HTTP {response.status}: the answer is not a JSON object"
        )
    return value
