"""How a credential source fails: absent, malformed, or unreachable.

Each is a subclass of an existing refusal, so it keeps that class's Alibaba code and
status; the message names the source (a file, a variable, an endpoint) and the field,
``detail`` says how to fix it. Neither ever holds a secret: the values read from a
source are never quoted, only the names of the fields that hold them.
"""

from __future__ import annotations

from aliak.errors import InvalidParameter, MissingParameter, ServiceUnavailable

__all__ = ["CredentialsNotFound", "CredentialsSourceError", "CredentialsUnavailable"]


class CredentialsNotFound(MissingParameter):
    """A source is not there: a variable unset, a file absent, a profile not in its file.

    A chain moves on to its next source; used alone, it is the caller's error.
    ``parameter`` names what is missing (``ALIBABA_CLOUD_ACCESS_KEY_ID``,
    ``~/.aliyun/config.json``, ``profiles[name="dev"]``).
    """


class CredentialsSourceError(InvalidParameter):
    """A source is there but unusable: a file that does not parse, a field missing or of
    the wrong type, a mode aliak does not support.

    A chain stops here rather than fall through to another source: signing as a different
    identity than the one configured would be worse than failing. ``parameter`` is
    ``"<file>: <field>"``; ``detail`` the fix.
    """

    def __init__(self, source: str, field: str, *, fix: str) -> None:
        self.source = source
        self.field = field
        super().__init__(f"{source}: {field}" if field else source, detail=fix)


class CredentialsUnavailable(ServiceUnavailable):
    """A network source (STS, the instance metadata service, a credentials URI) did not
    give a credential, and no earlier one that has not expired is left to serve."""

    def __init__(self, source: str, *, detail: str | None = None) -> None:
        self.source = source
        super().__init__(f"No credential could be obtained from {source}.", detail=detail)
