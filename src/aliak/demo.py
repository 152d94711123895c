"""``aliak demo``: the documented worked example, signed and shown stage by stage.

Exits non-zero if any stage differs from the documented value.
"""

from __future__ import annotations

from typing import TextIO

from aliak.credentials import AccessKey
from aliak.request import Request
from aliak.signer import Signer
from aliak.timestamps import parse_acs_date

__all__ = ["run_demo"]

# The documented worked example: fixed inputs and the signature the docs give for them.
_EXAMPLE_ACCESS_KEY_ID = "YourAccessKeyId"
_EXAMPLE_SECRET = "YourAccessKeySecret"  # noqa: S105 - the docs' placeholder, not a credential
_EXAMPLE_DATE = "2023-10-26T10:22:32Z"
_EXAMPLE_NONCE = "3156853299f313e23d1673dc12e1703d"
_EXAMPLE_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"


def run_demo(out: TextIO) -> int:
    request = Request(
        "POST",
        host="ecs.cn-shanghai.aliyuncs.com",
        path="/",
        query={
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        },
    )
    signer = Signer(
        AccessKey(_EXAMPLE_ACCESS_KEY_ID, _EXAMPLE_SECRET),
        clock=lambda: float(parse_acs_date(_EXAMPLE_DATE)),
        nonce_factory=lambda: _EXAMPLE_NONCE,
    )
    result = signer.sign_detailed(request, action="RunInstances", version="2014-05-26")
    out.write("aliak demo: the documented V3 worked example (ACS3-HMAC-SHA256)\n\n")
    out.write("== Canonical request ==\n")
    out.write(result.canonical_request + "\n\n")
    out.write("== String to sign ==\n")
    out.write(result.string_to_sign + "\n\n")
    out.write("== Authorization ==\n")
    out.write(result.authorization + "\n\n")
    if result.signature != _EXAMPLE_SIGNATURE:
        out.write(f"MISMATCH: the documented signature is {_EXAMPLE_SIGNATURE}\n")
        return 1
    out.write("OK: the signature equals the one in Alibaba Cloud's documentation.\n")
    return 0
