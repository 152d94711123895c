"""Errors are data: every refusal carries the Alibaba-compatible code, message and status.

One class per row of the error table in ``spec/verification.md`` §3. The message of each
class is fixed by that table; what went wrong in detail goes to ``detail``, which is for
logs and never reaches the client in the opaque profile. Neither ever holds a secret.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessDenied",
    "AccessKeyAlreadyExists",
    "AccessKeyLimitExceeded",
    "AccessKeyNotFound",
    "AccessKeyNotInRecycleBin",
    "AccessKeyNotInactive",
    "AliakError",
    "ContentMD5NotMatched",
    "EntityAlreadyExistsRole",
    "EntityNotExistRole",
    "Forbidden",
    "IncompleteBody",
    "IncompleteSignature",
    "InternalError",
    "InvalidAccessKeyIdAccessPolicyDenied",
    "InvalidAccessKeyIdInactive",
    "InvalidAccessKeyIdNotFound",
    "InvalidDurationSeconds",
    "InvalidParameter",
    "InvalidRoleArn",
    "InvalidRoleSessionName",
    "InvalidSecurityTokenExpired",
    "InvalidSecurityTokenMalformed",
    "InvalidSecurityTokenMismatch",
    "InvalidSignatureMethod",
    "InvalidTimeStampExpired",
    "InvalidTimeStampFormat",
    "LengthRequired",
    "LimitExceeded",
    "MissingParameter",
    "MissingSecurityToken",
    "NoPermission",
    "OwnerNotFound",
    "PayloadTooLarge",
    "RolesNotSupported",
    "RootAccessKeyForbidden",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SignatureNonceUsed",
]


class AliakError(Exception):
    """Base of every error aliak raises on purpose.

    ``code``, ``message`` and ``http_status`` are what a client sees; ``detail`` is the
    precise reason, for the server's own logs.
    """

    code: ClassVar[str] = "InternalError"
    default_message: ClassVar[str] = "The request processing has failed due to some unknown error."
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message: str = self.default_message if message is None else message
        self.detail: str | None = detail
        super().__init__(self.message)

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return text if self.detail is None else f"{text} ({self.detail})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def to_dict(
        self,
        *,
        request_id: str | None = None,
        host_id: str | None = None,
        recommend: str | None = None,
    ) -> dict[str, Any]:
        """The JSON error body, keys in Alibaba's order; absent optional fields are left out."""
        body: dict[str, Any] = {}
        if request_id is not None:
            body["RequestId"] = request_id
        if host_id is not None:
            body["HostId"] = host_id
        body["Code"] = self.code
        body["Message"] = self.message
        if recommend is not None:
            body["Recommend"] = recommend
        return body


class IncompleteSignature(AliakError):
    """``Authorization`` missing or malformed, or a header that must be signed is not."""

    code = "IncompleteSignature"
    default_message = "The request signature does not conform to Aliyun standards."
    http_status = 400


class InvalidSignatureMethod(AliakError):
    """The algorithm in ``Authorization`` is unknown or not allowed here."""

    code = "InvalidSignatureMethod"
    default_message = "Specified signature method is not supported."
    http_status = 400


class MissingParameter(AliakError):
    """A mandatory input (a required header, a credential variable) is absent."""

    code = "MissingParameter"
    http_status = 400

    def __init__(self, parameter: str, *, detail: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(
            f'The input parameter "{parameter}" that is mandatory for processing this request '
            "is not supplied.",
            detail=detail,
        )


class InvalidParameter(AliakError):
    """A caller-supplied value is unusable (bad header name, unparseable key, ...).

    Raised for bad input on the signing and administration side; the message names the
    parameter, never its value, since the value may be a credential.
    """

    code = "InvalidParameter"
    http_status = 400

    def __init__(self, parameter: str, *, detail: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(f'The specified parameter "{parameter}" is not valid.', detail=detail)


class ContentMD5NotMatched(AliakError):
    """ROA: the signed ``Content-MD5`` is not the MD5 of the body received (the ROA
    signature covers the body only through that header)."""

    code = "ContentMD5NotMatched"
    default_message = "The Content-MD5 you specified does not match the body received."
    http_status = 400


class InvalidTimeStampFormat(AliakError):
    code = "InvalidTimeStamp.Format"
    default_message = "Specified time stamp or date value is not well formatted."
    http_status = 400


class InvalidTimeStampExpired(AliakError):
    code = "InvalidTimeStamp.Expired"
    default_message = "Specified time stamp or date value is expired."
    http_status = 400


class _SignatureCheckRefusal(AliakError):
    """The two refusals of the signature check (step 5), built by one constructor: a
    wrong signature for a known id and an unknown id cost the same to refuse. Only
    ``SignatureDoesNotMatch`` echoes the string to sign; the other builds the same text
    and drops it, so that echoing costs nothing a timer could see."""

    echoes: ClassVar[bool] = True

    def __init__(self, string_to_sign: str | None = None, *, detail: str | None = None) -> None:
        message = self.default_message
        if string_to_sign is not None:
            echoed = f"{message} server string to sign is:{string_to_sign}"
            message = echoed if self.echoes else message
        self.string_to_sign = string_to_sign if self.echoes else None
        super().__init__(message, detail=detail)


class SignatureDoesNotMatch(_SignatureCheckRefusal):
    """The signature differs from the server's; optionally echoes the server's string-to-sign.

    Alibaba echoes it (its Go SDK tells a wrong secret from a wrong canonicalisation by
    it); the string-to-sign is a hash of public request data, never the secret.
    """

    code = "SignatureDoesNotMatch"
    default_message = "Specified signature is not matched with our calculation."
    http_status = 400


class InvalidAccessKeyIdNotFound(_SignatureCheckRefusal):
    """No key has this id. Never echoes a string to sign (there is no key to sign with)."""

    echoes = False

    code = "InvalidAccessKeyId.NotFound"
    default_message = "Specified access key is not found."
    http_status = 404


class InvalidAccessKeyIdInactive(AliakError):
    code = "InvalidAccessKeyId.Inactive"
    default_message = "Specified access key is disabled."
    http_status = 400


class Forbidden(AliakError):
    """A leak-restricted key asked for a high-risk action."""

    code = "Forbidden"
    default_message = "There is a risk of leakage of this AccessKey."
    http_status = 403


class InvalidAccessKeyIdAccessPolicyDenied(AliakError):
    code = "InvalidAccessKeyId.AccessPolicyDenied"
    default_message = "Specified access key denied due to access policy."
    http_status = 400


class MissingSecurityToken(AliakError):
    code = "MissingSecurityToken"
    default_message = (
        'The input parameter "SecurityToken" that is mandatory for processing this request '
        "is not supplied."
    )
    http_status = 400


class InvalidSecurityTokenMalformed(AliakError):
    code = "InvalidSecurityToken.Malformed"
    default_message = "Specified SecurityToken is malformed."
    http_status = 400


class InvalidSecurityTokenMismatch(AliakError):
    code = "InvalidSecurityToken.MismatchWithAccessKey"
    default_message = "Specified SecurityToken mismatch with the AccessKey."
    http_status = 400


class InvalidSecurityTokenExpired(AliakError):
    code = "InvalidSecurityToken.Expired"
    default_message = "Specified SecurityToken is expired."
    http_status = 400


class SignatureNonceUsed(AliakError):
    code = "SignatureNonceUsed"
    default_message = "Specified signature nonce was used already."
    http_status = 400


class InternalError(AliakError):
    """A store or internal failure; verification fails closed."""

    code = "InternalError"
    default_message = "The request processing has failed due to some unknown error."
    http_status = 500


class ServiceUnavailable(InternalError):
    """A storage server (PostgreSQL, Redis) cannot be reached or is restarting.

    Verification fails closed: nothing is accepted without its checks. Retry later; the
    stores reconnect by themselves when the server is back.
    """

    code = "ServiceUnavailable"
    default_message = "The request has failed due to a temporary failure of the server."
    http_status = 503


# Administration errors (key management, not request verification). Codes follow the
# RAM API where it has one.


class AccessKeyNotFound(AliakError):
    """An administrative call named a key id the store does not hold."""

    code = "EntityNotExist.User.AccessKey"
    default_message = "The specified access key does not exist."
    http_status = 404


class AccessKeyAlreadyExists(AliakError):
    code = "EntityAlreadyExists.User.AccessKey"
    default_message = "The specified access key already exists."
    http_status = 409


class AccessKeyLimitExceeded(AliakError):
    """§7.1: at most 2 AccessKey pairs per RAM user (keys in the recycle bin not counted)."""

    code = "LimitExceeded.User.AccessKey"
    default_message = "The count of access keys of the user exceeds the limit."
    http_status = 409


class LimitExceeded(AliakError):
    """A documented limit (network-policy size, ...) would be exceeded."""

    code = "LimitExceeded"
    http_status = 400

    def __init__(self, what: str, *, detail: str | None = None) -> None:
        self.what = what
        super().__init__(f'The specified "{what}" exceeds its limit.', detail=detail)


class AccessDenied(AliakError):
    """The opaque profile's one refusal: the client learns only that it was refused.

    ``reason`` holds the precise :class:`AliakError` for the server's logs and metrics.
    """

    code = "AccessDenied"
    default_message = "The request was refused."
    http_status = 403

    def __init__(self, reason: AliakError) -> None:
        self.reason = reason
        detail = reason.code if reason.detail is None else f"{reason.code}: {reason.detail}"
        super().__init__(detail=detail)


class AccessKeyNotInactive(AliakError):
    """§7.2: a key must be disabled before it can be deleted."""

    code = "EntityNotAllowed.AccessKey.Active"
    default_message = "The access key must be disabled before it can be deleted."
    http_status = 409


class AccessKeyNotInRecycleBin(AliakError):
    """Restore or purge named a key that is not (or no longer) in the recycle bin."""

    code = "EntityNotExist.RecycleBin.AccessKey"
    default_message = "The specified access key is not in the recycle bin."
    http_status = 404


class OwnerNotFound(AliakError):
    """An owner the store holds nothing of (no key, live or in the recycle bin)."""

    code = "EntityNotExist.User"
    default_message = "The specified user does not exist."
    http_status = 404


class RootAccessKeyForbidden(AliakError):
    """The store is set to refuse AccessKeys for accounts themselves (root keys)."""

    code = "NotSupported.RootAccessKey"
    default_message = "Creating an AccessKey for the account itself is not allowed."
    http_status = 403


# Transport errors raised by the server integrations before verification can start.


class PayloadTooLarge(AliakError):
    """The body is longer than the server's configured limit; nothing past it was read."""

    code = "PayloadTooLarge"
    default_message = "The request body exceeds the allowed size."
    http_status = 413


class LengthRequired(AliakError):
    """A chunked body under a server that does not decode chunked framing: answered at
    once, rather than read until the client gives up."""

    code = "MissingContentLength"
    default_message = (
        "This server cannot read a chunked request body: send it with a Content-Length."
    )
    http_status = 411


class IncompleteBody(AliakError):
    """The client stopped sending before the body it announced was complete."""

    code = "IncompleteBody"
    default_message = "The request body was not received in full."
    http_status = 400


# STS AssumeRole and RAM roles (aliak.roles). Codes and messages as Alibaba's STS.


class RolesNotSupported(AliakError):
    """The store in use does not implement :class:`~aliak.storage.protocols.RoleStore`."""

    code = "NotSupported.Role"
    http_status = 400

    def __init__(self, store: str) -> None:
        super().__init__(
            f"This store ({store}) does not hold RAM roles: use a MemoryStore, SQLiteStore or "
            "PostgresStore (or a CompositeStore over one) for roles and AssumeRole."
        )


class EntityAlreadyExistsRole(AliakError):
    code = "EntityAlreadyExists.Role"
    default_message = "The role already exists."
    http_status = 409


class EntityNotExistRole(AliakError):
    """``AssumeRole`` or an administrative call named a role the store does not hold."""

    code = "EntityNotExist.Role"
    default_message = "The specified Role not exists."
    http_status = 404


class NoPermission(AliakError):
    """STS refused to let this caller assume the role (root keys, or the trust)."""

    code = "NoPermission"
    default_message = (
        "No permission perform sts:AssumeRole on this Role. Maybe you should check the role's "
        "trust policy, or the user's permission."
    )
    http_status = 403

    @classmethod
    def root(cls) -> NoPermission:
        return cls("Roles may not be assumed by root accounts.", detail="an account (root) key")


class InvalidRoleArn(AliakError):
    code = "InvalidParameter.RoleArn"
    default_message = "The parameter RoleArn is wrongly formed."
    http_status = 400


class InvalidRoleSessionName(AliakError):
    code = "InvalidParameter.RoleSessionName"
    default_message = "The parameter RoleSessionName is wrongly formed."
    http_status = 400


class InvalidDurationSeconds(AliakError):
    code = "InvalidParameter.DurationSeconds"
    http_status = 400

    def __init__(self, maximum: int, *, detail: str | None = None) -> None:
        self.maximum = maximum
        hours = f"{maximum // 3600}hr" if maximum % 3600 == 0 else f"{maximum}s"
        super().__init__(f"The Min/Max value of DurationSeconds is 15min/{hours}.", detail=detail)
