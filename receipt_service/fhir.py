"""Access events as FHIR: a Bundle of AuditEvent resources, and a Consent for each grant.

Built with the ``fhir.resources`` models (R4B, whose AuditEvent and Consent are R4's), so every
resource is validated as it is made. Identifiers point back to the anchored event: the proof id
of its receipt and the SHA-256 of its canonical form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent

SYSTEM = "https://w3id.org/health-receipt"
_ACTION_CODE = {"request": "E", "grant": "U", "deny": "U", "revoke": "U", "access": "R"}  # FHIR AuditEvent.action
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"


def _party(value: str, kind: str) -> dict[str, Any]:
    return {"identifier": {"system": f"{SYSTEM}/{kind}", "value": value}}


def audit_event(item: Mapping[str, Any]) -> AuditEvent:
    """One access event as an AuditEvent (agents: the owner and the receiver; entity: the anchored event)."""
    event = item["event"]
    owner_acts = event["action"] in ("grant", "deny", "revoke")
    entity_detail = [{"type": "event-hash", "valueString": item["event_hash"]}]
    if event.get("recordhash"):
        entity_detail.append({"type": "recordhash", "valueString": event["recordhash"]})
    doc: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": _DICOM,
            "code": "110106" if event["action"] == "access" else "110137",
            "display": ("Export" if event["action"] == "access" else "User Security Attributes Changed"),
        },
        "subtype": [{"system": f"{SYSTEM}/access-action", "code": event["action"]}],
        "action": _ACTION_CODE[event["action"]],
        "recorded": event["time"],
        "outcome": "0",
        "agent": [
            {"who": _party(event["owner"], "subject"), "requestor": owner_acts, "type": {"text": "data owner"}},
            {"who": _party(event["receiver"], "party"), "requestor": not owner_acts, "type": {"text": "receiver"}},
        ],
        "source": {"observer": {"display": "health-receipt-service"}, "site": event["domain"]},
        "entity": [
            {
                "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{item['proof_id']}"}},
                "name": f"{event['action']} event, {event['domain']}",
                "detail": entity_detail,
            }
        ],
    }
    if event.get("location"):
        doc["agent"][1]["network"] = {"address": event["location"][:256], "type": "5"}  # 5: URI
    return AuditEvent.model_validate(doc)


def consent(item: Mapping[str, Any], revoked: bool, now: str) -> Consent:
    """A grant as a Consent: active until revoked, denied or expired."""
    event = item["event"]
    expiry = event.get("expirydate")
    active = not revoked and (expiry is None or expiry > now)
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [
            {
                "role": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]
                },
                "reference": _party(event["receiver"], "party"),
            }
        ],
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
        "class": [{"system": f"{SYSTEM}/domain", "code": event["domain"]}],
    }
    if expiry is not None:
        provision["period"] = {"start": event["time"], "end": expiry}
    return Consent.model_validate(
        {
            "resourceType": "Consent",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{item['proof_id']}"}],
            "status": "active" if active else "inactive",
            "scope": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": _party(event["owner"], "subject"),
            "dateTime": event["time"],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": provision,
        }
    )


def access_bundle(subject: str, items: Sequence[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """A ``collection`` Bundle: an AuditEvent per event, a Consent per grant (inactive once superseded)."""
    entries: list[dict[str, Any]] = []
    superseded: set[int] = set()
    for i, item in enumerate(items):
        e = item["event"]
        if e["action"] in ("deny", "revoke", "grant"):
            for j in range(i):
                p = items[j]["event"]
                if p["action"] == "grant" and (p["receiver"], p["domain"]) == (e["receiver"], e["domain"]):
                    superseded.add(j)
    for i, item in enumerate(items):
        entries.append({"fullUrl": f"urn:uuid:{item['proof_id']}", "resource": audit_event(item)})
        if item["event"]["action"] == "grant":
            entries.append({"resource": consent(item, i in superseded, now)})
    bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": now,
            "identifier": {"system": f"{SYSTEM}/subject", "value": subject},
            "entry": entries,
        }
    )
    out: dict[str, Any] = bundle.model_dump(mode="json", exclude_none=True)
    return out
