"""No replay at the edge of the window, on every backend (issue: the boundaries met).

A request dated ``t`` passes the date check while ``|now - t| <= W``. Claimed at the
earliest instant (``now = t - W``), its nonce must still be held at the latest one
(``now = t + W``), with whole-second and fractional clocks, whatever the backend does
with fractions and expiry.
"""

from __future__ import annotations

import pytest

from aliak import AliakError, KeyManager, RamUser, Request, Signer, Verifier

from .conftest import BackendStore

W = 900
DATED = 1_700_000_000
OWNER = RamUser("1234567890123456", "edge")


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
def test_a_nonce_outlives_every_instant_its_date_is_accepted(
    store: BackendStore, fraction: float
) -> None:
    key = KeyManager(store, clock=lambda: DATED).create_access_key(OWNER).access_key
    signer = Signer(key, clock=lambda: DATED, nonce_factory=lambda: f"edge-{fraction}")
    request = signer.sign(Request("GET", host="api.example.com"), action="A", version="V")
    now = [DATED - W + fraction]
    verifier = Verifier(store, clock=lambda: now[0])
    verifier.verify(request)
    for instant in (DATED, DATED + W - 1 + fraction, float(DATED + W)):
        now[0] = instant
        with pytest.raises(AliakError) as replay:
            verifier.verify(request)
        assert replay.value.code == "SignatureNonceUsed", instant
    now[0] = DATED + W + 0.001
    with pytest.raises(AliakError) as late:
        verifier.verify(request)
    assert late.value.code == "InvalidTimeStamp.Expired"
    verifier.close()
