"""Access events (spec section 13): the paper's tuple, signed over its RFC 8785 canonical form.

``{recordhash, owner, receiver, time, location, expirydate, signature}`` plus ``type``, ``action``,
``domain`` and ``key_id``. The signed bytes are the JCS form of the event without ``signature``;
the event's hash (what gets anchored) is SHA-256 of the JCS form of the whole event. Keys are JWKs
(Ed25519 or ECDSA P-256) named by their RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .errors import EventSignatureError, MalformedEventError

EVENT_TYPE = "AccessEvent"
Action = Literal["request", "grant", "deny", "revoke", "access"]
ACTIONS: tuple[Action, ...] = ("request", "grant", "deny", "revoke", "access")
OWNER_ACTIONS = frozenset({"grant", "deny", "revoke"})  # signed by the owner; request, access by the receiver
FIELDS = (
    "type",
    "action",
    "domain",
    "recordhash",
    "owner",
    "receiver",
    "time",
    "location",
    "expirydate",
    "key_id",
    "signature",
)
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_DOMAIN_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9._:%-]{16,128}$")
_PARTY_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_KID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class AccessEvent:
    """One access event as submitted (``doc`` keeps the exact JSON object)."""

    action: Action
    domain: str
    recordhash: str | None
    owner: str
    receiver: str
    time: datetime
    location: str | None
    expirydate: datetime | None
    key_id: str
    signature: str
    doc: Mapping[str, Any]

    @property
    def signer(self) -> Literal["owner", "receiver"]:
        """Whose key signs this action (the service may sign ``access`` events it records itself)."""
        return "owner" if self.action in OWNER_ACTIONS else "receiver"

    def signed_bytes(self) -> bytes:
        """RFC 8785 form of the event without ``signature``: what the signature covers."""
        return signing_input(self.doc)

    def event_hash(self) -> str:
        """SHA-256 of the RFC 8785 form of the whole event: the hash that is anchored."""
        return hashlib.sha256(rfc8785.dumps(dict(self.doc))).hexdigest()

    def replay_id(self) -> str:
        """SHA-256 of the signed bytes: the same statement re-signed still has the same id."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()


def signing_input(doc: Mapping[str, Any]) -> bytes:
    """The bytes a signer signs: JCS of the event object without its ``signature`` member."""
    return rfc8785.dumps({k: v for k, v in doc.items() if k != "signature"})


def _fail(where: str, what: str) -> MalformedEventError:
    return MalformedEventError(f"access event: {where}: {what}")


def parse_time(value: Any, where: str) -> datetime:
    """An RFC 3339 UTC time (``Z``, up to microseconds)."""
    if type(value) is not str or not _TIME_RE.fullmatch(value):
        raise _fail(where, f"must be a UTC time like 2026-01-31T12:00:00Z, got {value!r:.60}")
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        raise _fail(where, f"{value!r} is not a real time") from None


def parse_event(doc: Any) -> AccessEvent:
    """Check an event's form (not its signature); raise ``MalformedEventError`` naming the field."""
    if not isinstance(doc, Mapping):
        raise MalformedEventError("an access event is a JSON object")
    missing = [f for f in FIELDS if f not in doc]
    extra = sorted(set(doc) - set(FIELDS))
    if missing or extra:
        raise MalformedEventError(
            "access event: "
            + "; ".join(
                ([f"missing field(s) {', '.join(missing)}"] if missing else [])
                + ([f"unknown field(s) {', '.join(extra)}"] if extra else [])
            )
            + f" (the fields are {', '.join(FIELDS)}; null where not applicable)"
        )
    if doc["type"] != EVENT_TYPE:
        raise _fail("type", f"must be {EVENT_TYPE!r}")
    action = doc["action"]
    if action not in ACTIONS:
        raise _fail("action", f"must be one of {', '.join(ACTIONS)}, got {action!r:.40}")

    def text(name: str, pattern: re.Pattern[str], what: str, optional: bool = False) -> str | None:
        value = doc[name]
        if value is None and optional:
            return None
        if type(value) is not str or not pattern.fullmatch(value):
            raise _fail(name, f"must be {what}{' or null' if optional else ''}, got {value!r:.60}")
        return value

    location = doc["location"]
    if location is not None and (type(location) is not str or not 1 <= len(location) <= 256):
        raise _fail("location", "must be a string of 1-256 characters or null")
    signature = doc["signature"]
    if type(signature) is not str or not _B64URL_RE.fullmatch(signature) or len(signature) > 200:
        raise _fail("signature", "must be the base64url signature (no padding)")
    expiry = doc["expirydate"]
    event = AccessEvent(
        action=action,
        domain=str(text("domain", _DOMAIN_RE, "a domain name")),
        recordhash=text("recordhash", _HASH_RE, "a SHA-256 hash in lowercase hex", optional=True),
        owner=str(text("owner", _SUBJECT_RE, "the owner's pseudonymous subject id")),
        receiver=str(text("receiver", _PARTY_RE, "the receiving party (1-64 characters of A-Z a-z 0-9 . _ -)")),
        time=parse_time(doc["time"], "time"),
        location=location,
        expirydate=None if expiry is None else parse_time(expiry, "expirydate"),
        key_id=str(text("key_id", _KID_RE, "an RFC 7638 JWK thumbprint (43 base64url characters)")),
        signature=signature,
        doc=dict(doc),
    )
    if event.expirydate is not None and event.expirydate <= event.time:
        raise _fail("expirydate", "must be after time")
    return event


# ---------------------------------------------------------------------- JWK


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of ``b64url`` (rejects anything that is not canonical base64url)."""
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "==")  # the decoder ignores padding beyond what it needs
    if b64url(data) != text:
        raise ValueError("not canonical base64url")
    return data


def jwk_public_key(jwk: Any) -> PublicKey:
    """An Ed25519 (``OKP``/``Ed25519``) or P-256 (``EC``/``P-256``) public JWK; private members are refused."""
    if not isinstance(jwk, Mapping):
        raise MalformedEventError("a JWK is a JSON object")
    if "d" in jwk:
        raise MalformedEventError("this JWK holds a private key ('d'); send only the public key")
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = b64url_decode(str(jwk["x"]))
            if len(raw) != 32:
                raise ValueError("x must be 32 bytes")
            return Ed25519PublicKey.from_public_bytes(raw)
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x, y = b64url_decode(str(jwk["x"])), b64url_decode(str(jwk["y"]))
            if len(x) != 32 or len(y) != 32:
                raise ValueError("x and y must be 32 bytes each")
            numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1())
            return numbers.public_key()
    except (KeyError, ValueError) as exc:
        raise MalformedEventError(f"the JWK is not a valid public key: {exc}") from None
    raise MalformedEventError("a JWK must be an Ed25519 key (kty OKP, crv Ed25519) or a P-256 key (kty EC, crv P-256)")


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK of a key (only the RFC 7638 required members)."""
    if isinstance(key, Ed25519PublicKey):
        from cryptography.hazmat.primitives import serialization

        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    n = key.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url): the ``key_id`` events name."""
    return b64url(hashlib.sha256(rfc8785.dumps(public_jwk(key))).digest())


PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def sign_event(key: PrivateKey, doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with the key's ``key_id`` and its ``signature`` (Ed25519, or ES256 ``r || s``): what
    owners' apps and receivers send, and what the service signs for the reads it records."""
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    unsigned["key_id"] = thumbprint(key.public_key())
    data = signing_input(unsigned)
    if isinstance(key, Ed25519PrivateKey):
        sig = key.sign(data)
    else:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return {**unsigned, "signature": b64url(sig)}


def verify_signature(event: AccessEvent, key: PublicKey) -> None:
    """Raise ``EventSignatureError`` unless ``key`` is the event's key and its signature verifies.

    Ed25519: the 64-byte signature; P-256: JOSE ES256 (r || s, 32 bytes each) over SHA-256.
    """
    if thumbprint(key) != event.key_id:
        raise EventSignatureError(f"the event names key {event.key_id}, not the pinned key {thumbprint(key)}")
    try:
        sig = b64url_decode(event.signature)
    except ValueError:
        raise EventSignatureError("the signature is not canonical base64url") from None
    data = event.signed_bytes()
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(sig, data)
        else:
            if len(sig) != 64:
                raise InvalidSignature
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EventSignatureError(
            f"the signature of this {event.action} event does not verify with key {event.key_id}"
        ) from None
