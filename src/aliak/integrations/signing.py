"""What the client integrations share: one signer, default action and version."""

from __future__ import annotations

from aliak import AccessKey, CredentialsProvider, Signer, StsCredential

__all__ = ["SigningAuth"]


class SigningAuth:
    """Holds the :class:`~aliak.Signer` an HTTP client's auth hook signs with.

    ``signer`` is a :class:`~aliak.Signer`, or a credential (an :class:`~aliak.AccessKey`,
    an :class:`~aliak.StsCredential` or a :class:`~aliak.CredentialsProvider`) to make one
    with the default algorithm; ``sign_all_headers`` applies to that new signer only.
    ``action``/``version`` fill ``x-acs-action``/``x-acs-version`` when a request has none.
    """

    def __init__(
        self,
        signer: Signer | AccessKey | StsCredential | CredentialsProvider,
        *,
        action: str | None = None,
        version: str | None = None,
        sign_all_headers: bool = False,
    ) -> None:
        if isinstance(signer, Signer):
            if sign_all_headers:
                raise TypeError(
                    "sign_all_headers configures a new Signer; set it on the Signer given"
                )
            self.signer = signer
        else:
            self.signer = Signer(signer, sign_all_headers=sign_all_headers)
        self.action = action
        self.version = version

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.signer!r}, action={self.action!r}, "
            f"version={self.version!r})"
        )
