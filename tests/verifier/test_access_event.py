"""Access events offline: form, RFC 7638 key ids, RFC 8785 signed bytes, Ed25519 and ES256 signatures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from receipt_verifier._cli import main
from receipt_verifier.access_event import (
    jwk_public_key,
    parse_event,
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
