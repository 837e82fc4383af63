"""Fabric policies in the trust file's JSON form, and their evaluation over checked signers.

A signature policy is ``{"type": "signature", "rule": R, "principals": [P, ...]}``, each principal
``{"msp_id", "role"}`` or, for one identity (a BFT consenter), ``{"msp_id", "identity_sha256"}`` (the
SHA-256 of its certificate, DER), with
``R`` either ``{"signed_by": i}`` or ``{"n_out_of": {"n": n, "rules": [R, ...]}}``; an implicit-meta
policy is stored resolved: ``{"type": "implicit_meta", "rule": "ANY|ALL|MAJORITY", "sub_policy": name,
"policies": [each organisation's policy of that name]}``. Evaluation follows Fabric's: a signer
satisfies at most one principal of a signature policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import policies_pb2
from fabric_protos.msp import identities_pb2, msp_principal_pb2

from ..errors import TrustFileError
from .msp import ROLES, Identity

Policy = dict[str, Any]

_ROLE_NAMES = {0: "member", 1: "admin", 2: "client", 3: "peer", 4: "orderer"}


def from_signature_envelope(data: bytes) -> Policy:
    """A ``SignaturePolicyEnvelope`` (protobuf bytes) in JSON form."""
    env = policies_pb2.SignaturePolicyEnvelope.FromString(data)
    principals: list[dict[str, str]] = []
    for p in env.identities:
        kind = p.principal_classification
        if kind == msp_principal_pb2.MSPPrincipal.Classification.IDENTITY:  # BFT: SignedBy(consenter_i)
            sid = identities_pb2.SerializedIdentity.FromString(p.principal)
            principals.append({"msp_id": str(sid.mspid), "identity_sha256": cert_sha256(bytes(sid.id_bytes))})
            continue
        if kind != msp_principal_pb2.MSPPrincipal.Classification.ROLE:
            raise TrustFileError("only role and identity principals are supported")
        role = msp_principal_pb2.MSPRole.FromString(p.principal)
        principals.append({"msp_id": str(role.msp_identifier), "role": _ROLE_NAMES[int(role.role)]})

    def rule(r: Any) -> dict[str, Any]:
        if r.HasField("n_out_of"):
            return {"n_out_of": {"n": int(r.n_out_of.n), "rules": [rule(x) for x in r.n_out_of.rules]}}
        return {"signed_by": int(r.signed_by)}

    return {"type": "signature", "rule": rule(env.rule), "principals": principals}


def check(policy: Policy, where: str) -> None:
    """Reject a malformed policy (from a trust file) naming where it is."""
    kind = policy.get("type") if isinstance(policy, dict) else None
    if kind == "signature":
        principals = policy.get("principals")
        if not isinstance(principals, list) or not all(
            isinstance(p, dict)
            and isinstance(p.get("msp_id"), str)
            and (p.get("role") in ROLES or isinstance(p.get("identity_sha256"), str))
            for p in principals
        ):
            raise TrustFileError(
                f"{where}: principals must be a list of {{msp_id, role}} or {{msp_id, identity_sha256}}"
            )

        def rule(r: Any) -> None:
            if isinstance(r, dict) and isinstance(r.get("signed_by"), int) and 0 <= r["signed_by"] < len(principals):
                return
            n_out = r.get("n_out_of") if isinstance(r, dict) else None
            if (
                not isinstance(n_out, dict)
                or not isinstance(n_out.get("n"), int)
                or not isinstance(n_out.get("rules"), list)
            ):
                raise TrustFileError(f"{where}: a rule is signed_by <index> or n_out_of {{n, rules}}")
            for x in n_out["rules"]:
                rule(x)

        rule(policy.get("rule"))
    elif kind == "implicit_meta":
        if policy.get("rule") not in ("ANY", "ALL", "MAJORITY") or not isinstance(policy.get("policies"), list):
            raise TrustFileError(f"{where}: an implicit_meta policy has rule ANY|ALL|MAJORITY and policies")
        for i, sub in enumerate(policy["policies"]):
            check(sub, f"{where}.policies[{i}]")
    else:
        raise TrustFileError(f"{where}: policy type must be 'signature' or 'implicit_meta'")


def satisfied(policy: Policy, signers: Sequence[Identity]) -> bool:
    """Whether these (already verified) signers satisfy the policy."""
    if policy["type"] == "implicit_meta":
        subs = policy["policies"]
        ok = sum(satisfied(p, signers) for p in subs)
        rule = policy["rule"]
        if rule == "ANY":
            return ok >= 1
        if rule == "ALL":
            return ok == len(subs)
        return ok > len(subs) // 2
    principals = policy["principals"]
    used = [False] * len(signers)

    def evaluate(rule: dict[str, Any], used: list[bool]) -> bool:
        if "signed_by" in rule:
            want = principals[rule["signed_by"]]
            for j, s in enumerate(signers):
                if not used[j] and s.msp_id == want["msp_id"] and _holds(s, want):
                    used[j] = True
                    return True
            return False
        n_out = rule["n_out_of"]
        trial = list(used)
        count = 0
        for sub in n_out["rules"]:
            if evaluate(sub, trial):
                count += 1
                if count >= n_out["n"]:
                    used[:] = trial
                    return True
        return bool(n_out["n"] <= 0)

    return evaluate(policy["rule"], used)


def cert_sha256(pem: bytes) -> str:
    """SHA-256 (hex) of a PEM certificate's DER: how an identity principal names its certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise TrustFileError("an identity principal carries no valid PEM certificate") from None
    return der_sha256(cert)


def der_sha256(cert: x509.Certificate) -> str:
    """SHA-256 (hex) of a certificate's DER: one identity, however its PEM was written."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _holds(signer: Identity, principal: dict[str, Any]) -> bool:
    """Whether a signer (of the principal's MSP) is the principal: its role, or its very certificate."""
    if "identity_sha256" in principal:
        return bool(der_sha256(signer.cert) == principal["identity_sha256"])
    return bool(principal["role"] in signer.roles)


def describe(policy: Policy) -> str:
    """Readable form: ``AND('A.peer','B.peer')``, ``ANY of Writers(...)``."""
    if policy["type"] == "implicit_meta":
        inner = ", ".join(describe(p) for p in policy["policies"])
        return f"{policy['rule']} {policy.get('sub_policy', '')} of [{inner}]"
    principals = policy["principals"]

    def rule(r: dict[str, Any]) -> str:
        if "signed_by" in r:
            p = principals[r["signed_by"]]
            if "identity_sha256" in p:
                return f"'{p['msp_id']}:{p['identity_sha256'][:16]}'"
            return f"'{p['msp_id']}.{p['role']}'"
        n, rules = r["n_out_of"]["n"], r["n_out_of"]["rules"]
        name = "OR" if n == 1 else "AND" if n == len(rules) else f"OutOf({n},"
        return (
            f"{name}({', '.join(rule(x) for x in rules)})"
            if not name.startswith("OutOf")
            else (f"{name} {', '.join(rule(x) for x in rules)})")
        )

    return rule(policy["rule"])
