"""Access events offline: form, RFC 7638 key ids, RFC 8785 signed bytes, Ed25519 and ES256 signatures."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from receipt_verifier._cli import main
from receipt_verifier.access_event import (
    b64url,
    b64url_decode,
    jwk_public_key,
    parse_event,
    public_jwk,
    signing_input,
    thumbprint,
    verify_signature,
)
from receipt_verifier.errors import EventSignatureError, MalformedEventError
from tests.service.parties import Party, event

SUBJECT = "did:example:patient-7f3a91c2"


def test_rfc_8037_thumbprint_known_answer() -> None:
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk_public_key(jwk)) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_signed_bytes_are_the_jcs_form_without_the_signature() -> None:
    doc = {"b": 1, "a": "é", "signature": "x", "c": None}
    assert signing_input(doc) == '{"a":"é","b":1,"c":null}'.encode()


@pytest.mark.parametrize("ec_key", [False, True])
def test_signatures_verify_and_any_change_breaks_them(ec_key: bool) -> None:
    party = Party(ec_key=ec_key)
    doc = party.sign(event("grant", SUBJECT, "insure-y", "insurance"))
    ev = parse_event(doc)
    verify_signature(ev, jwk_public_key(party.jwk))
    for field, value in [("receiver", "clinic-x"), ("domain", "medical-history"), ("location", "x")]:
        with pytest.raises(EventSignatureError, match="does not verify"):
            verify_signature(parse_event(dict(doc, **{field: value})), jwk_public_key(party.jwk))
    with pytest.raises(EventSignatureError, match="not the pinned key"):
        verify_signature(ev, jwk_public_key(Party().jwk))
    assert ev.event_hash() != ev.replay_id()


@pytest.mark.parametrize(
    ("jwk", "words"),
    [
        ({"kty": "RSA", "n": "AQAB", "e": "AQAB"}, "Ed25519 key"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "32 bytes"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "x"}, "private"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "32 bytes"),
        ("not an object", "JSON object"),
    ],
)
def test_bad_jwks_are_refused_clearly(jwk: Any, words: str) -> None:
    with pytest.raises(MalformedEventError, match=words):
        jwk_public_key(jwk)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"action": "share"}, "action"),
        ({"owner": "Jane Doe"}, "owner"),
        ({"time": "yesterday"}, "time"),
        ({"expirydate": "2000-01-01T00:00:00Z"}, "after time"),
        ({"recordhash": "ABC"}, "recordhash"),
        ({"type": "Event"}, "type"),
    ],
)
def test_bad_events_name_the_field(change: dict[str, Any], words: str) -> None:
    doc = Party().sign(event("grant", SUBJECT, "insure-y", "insurance"))
    with pytest.raises(MalformedEventError, match=words):
        parse_event(dict(doc, **change))


def test_receipt_verify_event_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    party = Party(ec_key=True)
    doc = party.sign(event("request", SUBJECT, "insure-y", "insurance"))
    (tmp_path / "e.json").write_text(json.dumps(doc))
    (tmp_path / "k.json").write_text(json.dumps(party.jwk))
    (tmp_path / "other.json").write_text(json.dumps({"key_id": "x", "party": "p", "jwk": Party().jwk}))
    assert main(["event", str(tmp_path / "e.json"), "--key", str(tmp_path / "k.json")]) == 0
    out = capsys.readouterr()
    assert "request" in out.out and "ok" in out.out and "not checked" in out.err
    assert main(["event", str(tmp_path / "e.json"), "--key", str(tmp_path / "other.json")]) == 1
    assert "no --key pins" in capsys.readouterr().err
    (tmp_path / "e.json").write_text(json.dumps(dict(doc, receiver="clinic-x")))
    assert main(["event", str(tmp_path / "e.json"), "--key", str(tmp_path / "k.json")]) == 1
    assert "does not verify" in capsys.readouterr().err


EVENTS = Path(__file__).resolve().parents[2] / "proof_spec" / "vectors" / "events"


@pytest.mark.parametrize(
    "entry", json.loads((EVENTS / "manifest.json").read_text())["vectors"], ids=lambda e: e["file"]
)
def test_event_vectors(entry: dict[str, Any]) -> None:
    key = jwk_public_key(json.loads((EVENTS / "owner.jwk.json").read_text()))
    doc = json.loads((EVENTS / entry["file"]).read_text())
    if entry["valid"]:
        ev = parse_event(doc)
        verify_signature(ev, key)
        assert hashlib.sha256(ev.signed_bytes()).hexdigest() == entry["signed_bytes_sha256"]
        assert ev.event_hash() == entry["event_hash"]
        return
    with pytest.raises(Exception) as info:
        verify_signature(parse_event(doc), key)
    assert type(info.value).__name__ == entry["error"]


def test_every_field_is_checked_to_its_bounds() -> None:
    base = Party().sign(event("grant", SUBJECT, "insure-y", "insurance"))
    for name in ("domain", "owner", "receiver", "key_id", "time"):
        with pytest.raises(MalformedEventError, match=name):
            parse_event(dict(base, **{name: None}))  # only recordhash, location and expirydate may be null
    assert parse_event(dict(base, location="x" * 256)).location == "x" * 256
    for bad in ("x" * 257, "", 5):
        with pytest.raises(MalformedEventError, match="location"):
            parse_event(dict(base, location=bad))
    assert len(parse_event(dict(base, signature="A" * 200)).signature) == 200
    with pytest.raises(MalformedEventError, match="signature"):
        parse_event(dict(base, signature="A" * 201))
    with pytest.raises(MalformedEventError, match="after time"):
        parse_event(dict(base, expirydate=base["time"]))  # expiring the moment it is made


FIELD_LIST = (
    "(the fields are type, action, domain, recordhash, owner, receiver, time, location, expirydate, key_id,"
    " signature; null where not applicable)"
)


def _base() -> dict[str, Any]:
    at = datetime(2026, 1, 31, 12, tzinfo=UTC)
    return Party().sign(event("grant", SUBJECT, "insure-y", "insurance", at=at, expires_in=timedelta(days=30)))


def _without(name: str) -> dict[str, Any]:
    doc = _base()
    del doc[name]
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (["x"], "an access event is a JSON object"),
        (_without("location"), f"access event: missing field(s) location {FIELD_LIST}"),
        ({**_base(), "zeta": 1, "alpha": 2}, f"access event: unknown field(s) alpha, zeta {FIELD_LIST}"),
        (
            {**_without("owner"), "scope": "all"},
            f"access event: missing field(s) owner; unknown field(s) scope {FIELD_LIST}",
        ),
        ({**_base(), "type": "Event"}, "access event: type: must be 'AccessEvent'"),
        (
            {**_base(), "action": "share"},
            "access event: action: must be one of request, grant, deny, revoke, access, got 'share'",
        ),
        ({**_base(), "location": ""}, "access event: location: must be a string of 1-256 characters or null"),
        ({**_base(), "signature": "a=b"}, "access event: signature: must be the base64url signature (no padding)"),
        ({**_base(), "signature": 5}, "access event: signature: must be the base64url signature (no padding)"),
        ({**_base(), "domain": "Insurance"}, "access event: domain: must be a domain name, got 'Insurance'"),
        (
            {**_base(), "recordhash": "ABC"},
            "access event: recordhash: must be a SHA-256 hash in lowercase hex or null, got 'ABC'",
        ),
        (
            {**_base(), "owner": "Jane Doe"},
            "access event: owner: must be the owner's pseudonymous subject id, got 'Jane Doe'",
        ),
        (
            {**_base(), "owner": "x" * 200},
            "access event: owner: must be the owner's pseudonymous subject id, got '" + "x" * 59,
        ),
        (
            {**_base(), "receiver": "a b"},
            "access event: receiver: must be the receiving party (1-64 characters of A-Z a-z 0-9 . _ -), got 'a b'",
        ),
        (
            {**_base(), "time": "yesterday"},
            "access event: time: must be a UTC time like 2026-01-31T12:00:00Z, got 'yesterday'",
        ),
        ({**_base(), "time": "2026-02-30T00:00:00Z"}, "access event: time: '2026-02-30T00:00:00Z' is not a real time"),
        ({**_base(), "expirydate": 5}, "access event: expirydate: must be a UTC time like 2026-01-31T12:00:00Z, got 5"),
        ({**_base(), "expirydate": "2026-01-31T12:00:00Z"}, "access event: expirydate: must be after time"),
        (
            {**_base(), "key_id": "x"},
            "access event: key_id: must be an RFC 7638 JWK thumbprint (43 base64url characters), got 'x'",
        ),
    ],
    ids=range(19),
)
def test_malformed_events_get_their_exact_message(doc: Any, message: str) -> None:
    with pytest.raises(MalformedEventError) as err:
        parse_event(doc)
    assert str(err.value) == message


def test_a_parsed_event_keeps_every_field() -> None:
    doc = {**_base(), "recordhash": "ab" * 32, "location": "ward 7", "expirydate": "2026-01-31T12:00:00.000001Z"}
    ev = parse_event(doc)
    assert (ev.action, ev.domain, ev.recordhash, ev.owner, ev.receiver, ev.location, ev.key_id, ev.signature) == (
        "grant",
        "insurance",
        "ab" * 32,
        SUBJECT,
        "insure-y",
        "ward 7",
        doc["key_id"],
        doc["signature"],
    )
    assert ev.time == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert ev.expirydate == datetime(2026, 1, 31, 12, 0, 0, 1, tzinfo=UTC)  # a microsecond after is after
    assert ev.doc == doc and ev.doc is not doc
    assert ev.event_hash() == hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
    assert ev.replay_id() == hashlib.sha256(signing_input(doc)).hexdigest()
    assert parse_event({**doc, "expirydate": None, "recordhash": None, "location": None}).expirydate is None
    signers = {a: parse_event({**doc, "action": a}).signer for a in ("request", "grant", "deny", "revoke", "access")}
    assert signers == {
        "request": "receiver",
        "grant": "owner",
        "deny": "owner",
        "revoke": "owner",
        "access": "receiver",
    }


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ("x", "a JWK is a JSON object"),
        (
            {"kty": "OKP", "crv": "Ed25519", "x": "", "d": "x"},
            "this JWK holds a private key ('d'); send only the public key",
        ),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "the JWK is not a valid public key: x must be 32 bytes"),
        ({"kty": "OKP", "crv": "Ed25519"}, "the JWK is not a valid public key: 'x'"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AB"}, "the JWK is not a valid public key: not canonical base64url"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "AA=="}, "the JWK is not a valid public key: not base64url"),
        (
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
            "the JWK is not a valid public key: x and y must be 32 bytes each",
        ),
        ({"kty": "EC", "crv": "P-256", "x": "A" * 43}, "the JWK is not a valid public key: 'y'"),
        (
            {"kty": "OKP", "crv": "X25519", "x": "A" * 43},
            "a JWK must be an Ed25519 key (kty OKP, crv Ed25519) or a P-256 key (kty EC, crv P-256)",
        ),
        (
            {"kty": "EC", "crv": "P-384", "x": "A", "y": "A"},
            "a JWK must be an Ed25519 key (kty OKP, crv Ed25519) or a P-256 key (kty EC, crv P-256)",
        ),
    ],
    ids=range(10),
)
def test_bad_jwks_get_their_exact_message(jwk: Any, message: str) -> None:
    with pytest.raises(MalformedEventError) as err:
        jwk_public_key(jwk)
    assert str(err.value) == message


@pytest.mark.parametrize("ec_key", [False, True])
def test_public_jwks_round_trip_and_sign(ec_key: bool) -> None:
    party = Party(ec_key=ec_key)
    key = jwk_public_key(party.jwk)
    assert public_jwk(key) == party.jwk and thumbprint(key) == party.key_id
    assert sorted(party.jwk) == (["crv", "kty", "x", "y"] if ec_key else ["crv", "kty", "x"])
    doc = party.sign(event("request", SUBJECT, "insure-y", "insurance"))
    assert len(b64url_decode(doc["signature"])) == 64 and doc["key_id"] == party.key_id
    verify_signature(parse_event(doc), key)


def test_signature_failures_name_the_key_or_the_action() -> None:
    party = Party(ec_key=True)
    ev = parse_event(party.sign(event("deny", SUBJECT, "insure-y", "insurance")))
    other = jwk_public_key(Party().jwk)
    with pytest.raises(EventSignatureError) as err:
        verify_signature(ev, other)
    assert str(err.value) == f"the event names key {ev.key_id}, not the pinned key {thumbprint(other)}"
    key = jwk_public_key(party.jwk)
    with pytest.raises(EventSignatureError) as err:
        verify_signature(parse_event({**ev.doc, "signature": "AB"}), key)
    assert str(err.value) == "the signature is not canonical base64url"
    with pytest.raises(EventSignatureError) as err:
        verify_signature(parse_event({**ev.doc, "signature": b64url(bytes(63))}), key)
    assert str(err.value) == f"the signature of this deny event does not verify with key {ev.key_id}"


def test_b64url_is_unpadded_and_canonical() -> None:
    assert b64url(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"
    for bad in ("-_9", "-_8=", "a b", ""):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_b64url_keeps_a_trailing_x_and_two_missing_fields_are_both_named() -> None:
    assert b64url(b"\x00\x00\x17") == "AAAX" and b64url_decode("AAAX") == b"\x00\x00\x17"
    doc = _without("location")
    del doc["owner"]
    with pytest.raises(MalformedEventError) as err:
        parse_event(doc)
    assert str(err.value) == f"access event: missing field(s) owner, location {FIELD_LIST}"


def test_a_p256_jwk_with_a_short_y_is_named() -> None:
    jwk = dict(Party(ec_key=True).jwk, y="AA")
    with pytest.raises(MalformedEventError) as err:
        jwk_public_key(jwk)
    assert str(err.value) == "the JWK is not a valid public key: x and y must be 32 bytes each"
