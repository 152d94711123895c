"""A credentials URI (``ALIBABA_CLOUD_CREDENTIALS_URI``; profile mode ``CredentialsURI``):
a local endpoint, often a sidecar, answering ``GET`` with ``{"Code": "Success",
"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}``, all required
(the official ``provider/uri.py``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aliak.credentials._environment import ENV_CREDENTIALS_URI
from aliak.credentials._errors import CredentialsNotFound, CredentialsUnavailable
from aliak.credentials._http import fetch, json_object
from aliak.credentials._refresh import RefreshingCredentialsProvider
from aliak.credentials._sts import credential_from_answer
from aliak.credentials._values import Credential
from aliak.timestamps import Clock, system_clock

__all__ = ["CredentialsURIProvider"]


class CredentialsURIProvider(RefreshingCredentialsProvider):
    """Temporary credentials from ``uri``, refreshed 15 minutes before they expire."""

    def __init__(self, uri: str, *, clock: Clock = system_clock, timeout: float = 5.0) -> None:
        super().__init__(clock=clock)
        parts = urlsplit(uri)
        # The source's name leaves out the query: it may carry a token of its own.
        self.source = f"the credentials URI {parts.scheme}://{parts.netloc}{parts.path}"
        self._uri = uri
        self._timeout = timeout

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: Any
    ) -> CredentialsURIProvider:
        env = os.environ if environ is None else environ
        uri = env.get(ENV_CREDENTIALS_URI, "")
        if not uri:
            raise CredentialsNotFound(
                ENV_CREDENTIALS_URI, detail=f"export {ENV_CREDENTIALS_URI}=http://..."
            )
        return cls(uri, **options)

    def fetch(self) -> Credential:
        response = fetch("GET", self._uri, source=self.source, timeout=self._timeout)
        answer = json_object(response, source=self.source)
        if response.status != 200 or answer.get("Code") != "Success":
            raise CredentialsUnavailable(
                self.source, detail=f"HTTP {response.status}, Code {answer.get('Code')!r}"
            )
        return credential_from_answer(answer, source=self.source)
