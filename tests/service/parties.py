"""Signing parties for access-event tests: keys, JWKs, signed events in the spec's form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_verifier.access_event import public_jwk, sign_event, thumbprint

SUBJECT = "did:example:patient-7f3a91c2"


class Party:
    """A key holder: Ed25519 by default, ECDSA P-256 (ES256) with ``ec=True``."""

    def __init__(self, ec_key: bool = False) -> None:
        self.key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if ec_key else Ed25519PrivateKey.generate()
        )

    @property
    def jwk(self) -> dict[str, str]:
        return public_jwk(self.key.public_key())

    @property
    def key_id(self) -> str:
        return thumbprint(self.key.public_key())

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with this party's key id and signature."""
        return sign_event(self.key, doc)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    action: str,
    owner: str,
    receiver: str,
    domain: str,
    *,
    expires_in: timedelta | None = None,
    recordhash: str | None = None,
    at: datetime | None = None,
    location: str | None = None,
) -> dict[str, Any]:
    """An unsigned event (``Party.sign`` adds key_id and signature)."""
    now = at or datetime.now(UTC)
    return {
        "type": "AccessEvent",
        "action": action,
        "domain": domain,
        "recordhash": recordhash,
        "owner": owner,
        "receiver": receiver,
        "time": stamp(now),
        "location": location,
        "expirydate": None if expires_in is None else stamp(now + expires_in),
        "key_id": "",
        "signature": "",
    }
