"""Regenerate proof_spec/vectors/ deterministically (fixed key, nonces and times).

    python proof_spec/tools/make_vectors.py [OUT_DIR]

The test suite regenerates into a temporary directory and requires byte-identical output,
so the committed vectors always match the code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receipt_service.ids import ProofIdIssuer
from receipt_service.ledger import LocalLedger, TreeRoot, to_anchor
from receipt_service.receipts import Submission, build_window, render, render_tree
from receipt_verifier.access_event import b64url, public_jwk, signing_input, thumbprint
from receipt_verifier.chainpoint import chainpoint_anchor_id, to_chainpoint_v4
from receipt_verifier.codec import anchor_to_dict, receipt_to_dict
from receipt_verifier.history import HISTORY_CONTEXT, HISTORY_TYPE, pack
from receipt_verifier.logs import log_root
from receipt_verifier.merkle import MerkleTree, all_audit_paths
from receipt_verifier.model import Binding, FabricAnchor, PendingAnchor, Receipt, UnknownAnchor
from receipt_verifier.sorted_heads import HeadsTree

BASE_NS = 1_763_712_000_000_000_000  # 2025-11-21T08:00:00Z
RECORDS = [
    b'{"type":"heart_rate","bpm":72,"device":"wrist-01","at":"2025-11-21T07:59:58Z"}',
    b'{"type":"steps","count":1043,"device":"wrist-01","at":"2025-11-21T07:59:59Z"}',
    b'{"type":"spo2","percent":97,"device":"ring-07","at":"2025-11-21T07:59:59Z"}',
    b'{"type":"treatment_note","clinic":"north","text":"amoxicillin 500 mg, 7 days"}',
    b'{"type":"insurance_claim","insurer":"acme","claim":"C-2025-1107","amount_eur":180}',
    b'{"type":"blood_pressure","sys":121,"dia":79,"device":"cuff-02"}',
    b'{"type":"glucose","mmol_l":5.4,"device":"cgm-11"}',
]
RFC6962_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"health-receipt v1 test-vector ledger key").digest())


def _submissions(n: int) -> list[Submission]:
    issuer = ProofIdIssuer(clock_seq=0x2A5)
    subs = []
    for i in range(n):
        h = hashlib.sha256(RECORDS[i % len(RECORDS)]).hexdigest()
        issued = issuer.issue(h, BASE_NS + i * 1_000_000)
        nonce = hashlib.sha256(b"nonce" + i.to_bytes(4, "big")).digest()[:16]
        subs.append(Submission(issued.proof_id, h, issued.hash_received, nonce))
    return subs


def _write(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def generate(out: Path) -> None:
    """Write every vector, the Chainpoint exports and the manifest under ``out``."""
    key = _key()
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger-key.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    manifest: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ledger = LocalLedger(Path(tmp), key)
        subs = _submissions(7)
        trees = build_window("w1763712000000", subs, max_leaves=3)  # three trees: 3, 3 and 1 leaves
        receipts: list[Receipt] = []
        for wt in trees:
            signed = ledger.append(
                TreeRoot(
                    wt.window_id,
                    wt.tree_index,
                    wt.tree.size,
                    wt.root_hex,
                    "2025-11-21T08:00:00Z",
                    "2025-11-21T08:00:01Z",
                ),
                "2025-11-21T08:00:01.2Z",
            )
            receipts += render_tree(wt, [to_anchor(ledger.key_id, signed)])
        # v2: leaves bound to a domain, a subject and the subject's log position (spec section 2.2)
        subject = "hmac-sha256:4f1c2a9be07d35a1"
        bindings = [
            Binding("medical-history", subject, 0),
            Binding("medical-history", subject, 1),
            Binding("medical-history"),
        ]
        subs2 = [replace(s, binding=b) for s, b in zip(_submissions(10)[7:], bindings, strict=True)]
        (wt2,) = build_window("w1763712060000", subs2)
        signed = ledger.append(
            TreeRoot(wt2.window_id, 0, wt2.tree.size, wt2.root_hex, "2025-11-21T08:01:00Z", "2025-11-21T08:01:01Z"),
            "2025-11-21T08:01:01.2Z",
        )
        receipts2 = render_tree(wt2, [to_anchor(ledger.key_id, signed)])

    def valid(
        name: str,
        r: Receipt,
        note: str,
        policy: str = "all",
        statuses: dict[str, str] | None = None,
        export: bool = True,
    ) -> dict[str, Any]:
        doc = receipt_to_dict(r)
        _write(out / "valid" / f"{name}.json", doc)
        anchors = {}
        from receipt_verifier.verify import recompute_root

        if r.branches:
            root, found = recompute_root(r)
            for a in found:
                anchors[a.anchor_id] = {
                    "type": a.type,
                    "expected_value": root.hex(),
                    "status": (statuses or {}).get(a.anchor_id, "verified"),
                }
        entry: dict[str, Any] = {
            "file": f"valid/{name}.json",
            "valid": True,
            "note": note,
            "record_hash": r.hash,
            "state": r.state,
            "policy": policy,
            "anchors": anchors,
        }
        if export and anchors:
            cp = to_chainpoint_v4(r)
            _write(out / "chainpoint-v4" / f"{name}.chp.json", cp)
            entry["chainpoint_v4"] = {
                "file": f"chainpoint-v4/{name}.chp.json",
                "expected": {
                    cid: v["expected_value"]
                    for a in r.anchors()
                    if (cid := chainpoint_anchor_id(a))
                    for v in [anchors[a.anchor_id]]
                },
            }
        manifest.append(entry)
        return doc

    base = valid("leaf0-of-3", receipts[0], "first leaf of a 3-leaf tree (sibling on the right, then a right subtree)")
    valid("leaf2-of-3", receipts[2], "last leaf of a 3-leaf tree: promoted at level 0, sibling on the left above")
    valid("leaf1-of-3", receipts[4], "second tree of the window (tree_index 1)")
    valid("single-leaf", receipts[6], "a tree of one leaf: no siblings, root = leaf hash")
    sub = subs[1]
    wt = trees[0]
    paths = all_audit_paths(wt.tree)
    from receipt_verifier.model import TreeInfo

    info = TreeInfo(wt.window_id, 0, 1, wt.tree.size)
    valid("pending", render(sub), "accepted, not yet in a tree", policy="0")
    valid(
        "aggregated",
        render(sub, tree=info, path=paths[1], pending=[PendingAnchor("local", "ledger")]),
        "branch known, anchor pending",
        policy="0",
    )
    local = receipts[1].anchors()[0]
    fabric = FabricAnchor(
        anchor_id="hospital-consortium:" + hashlib.sha256(b"tx").hexdigest()[:16],
        channel="hospital-consortium",
        tx_id=hashlib.sha256(b"tx").hexdigest(),
        block_number=42,
        key="window:w1763712000000:0",
        chaincode="anchor",
        uris=("https://receipts.example/evidence/hospital-consortium/42",),
    )
    mixed = render(sub, tree=info, path=paths[1], anchors=[local, fabric])
    valid(
        "local-and-fabric",
        mixed,
        "local anchor verifies; the Fabric anchor has no evidence yet (not verified)",
        policy="any",
        statuses={fabric.anchor_id: "not_verified"},
    )
    unknown = UnknownAnchor("tsa", "rfc3161:abc", {"type": "tsa", "anchor_id": "rfc3161:abc", "token": "MIIB"})
    valid(
        "unknown-anchor-type",
        render(sub, tree=info, path=paths[1], anchors=[local, unknown]),
        "an anchor type from the future: kept, reported, never counted as verified",
        policy="1",
        statuses={"rfc3161:abc": "not_verified"},
        export=True,
    )

    def invalid(name: str, doc: dict[str, Any], error: str, note: str, policy: str = "all") -> None:
        _write(out / "invalid" / f"{name}.json", doc)
        manifest.append(
            {"file": f"invalid/{name}.json", "valid": False, "error": error, "note": note, "policy": policy}
        )

    def mutate(fn: Any) -> dict[str, Any]:
        d = copy.deepcopy(base)
        fn(d)
        return d

    ops = base["branches"][0]["ops"]
    sib_index = next(i for i, op in enumerate(ops) if i >= 4 and ("l" in op or "r" in op) and op != {"l": "01"})
    other_hash = hashlib.sha256(b"some other record").hexdigest()

    def flip_sibling(d: dict[str, Any]) -> None:
        op = d["branches"][0]["ops"][sib_index]
        side = next(iter(op))
        op[side] = ("0" if op[side][0] != "0" else "1") + op[side][1:]

    def swap_side(d: dict[str, Any]) -> None:
        op = d["branches"][0]["ops"][sib_index]
        side = next(iter(op))
        d["branches"][0]["ops"][sib_index] = {("l" if side == "r" else "r"): op[side]}

    def bad_sig(d: dict[str, Any]) -> None:
        a = d["branches"][0]["ops"][-1]["anchors"][0]
        a["signature"] = ("f" if a["signature"][0] != "f" else "e") + a["signature"][1:]

    def entry_root(d: dict[str, Any]) -> None:
        e = d["branches"][0]["ops"][-1]["anchors"][0]["entry"]
        e["root"] = hashlib.sha256(b"x").hexdigest()

    invalid(
        "sibling-flipped",
        mutate(flip_sibling),
        "AnchorPolicyError",
        "one sibling hash changed: the computed root no longer matches the signed ledger entry",
    )
    invalid(
        "sibling-wrong-side",
        mutate(swap_side),
        "BranchError",
        "a sibling moved to the other side: the leaf index says otherwise",
    )
    invalid(
        "other-hash",
        mutate(lambda d: d.update(hash=other_hash)),
        "ProofIdMismatchError",
        "hash replaced: proof_id was issued for another hash",
    )
    invalid(
        "received-shifted",
        mutate(lambda d: d.update(hash_received="2025-11-21T08:00:05.0000000Z")),
        "ProofIdMismatchError",
        "hash_received moved: it no longer matches the time inside proof_id",
    )
    invalid("signature-flipped", mutate(bad_sig), "AnchorPolicyError", "the ledger entry's signature is invalid")
    invalid(
        "entry-root-changed",
        mutate(entry_root),
        "AnchorPolicyError",
        "the ledger entry names another root (and its signature breaks)",
    )
    invalid(
        "unknown-context",
        mutate(lambda d: d.update({"@context": "https://w3id.org/chainpoint/v4"})),
        "UnknownContextError",
        "a context this verifier does not ship",
    )
    invalid(
        "extra-field",
        mutate(lambda d: d.update(note="trust me")),
        "MalformedReceiptError",
        "an unknown top-level field",
    )
    invalid(
        "state-lies",
        mutate(lambda d: d.update(state="pending")),
        "MalformedReceiptError",
        "state says pending but the receipt holds a branch and anchors",
    )
    invalid(
        "salt-not-bound",
        mutate(lambda d: d["branches"][0]["ops"][0].update(l=ops[0]["l"][:32] + "0" * 32)),
        "BranchError",
        "the leaf salt does not commit to this receipt's proof_id",
    )
    invalid(
        "leaf-index-moved",
        mutate(lambda d: d["tree"].update(leaf_index=1)),
        "BranchError",
        "leaf_index changed: the sibling sides no longer fit",
    )
    invalid(
        "too-many-ops",
        mutate(
            lambda d: (
                d["branches"][0]["ops"][:0].extend([])
                or d["branches"][0]["ops"].__setitem__(slice(4, 4), [{"l": "01"}] * 600)
            )
        ),
        "LimitExceededError",
        "more ops than the verifier accepts",
    )
    invalid(
        "uppercase-hash",
        mutate(lambda d: d.update(hash=d["hash"].upper())),
        "MalformedReceiptError",
        "hashes are lowercase hex",
    )

    def repeat_anchor(d: dict[str, Any]) -> None:
        listed = d["branches"][0]["ops"][-1]["anchors"]
        listed.append(copy.deepcopy(listed[0]))

    invalid(
        "anchor-repeated",
        mutate(repeat_anchor),
        "MalformedReceiptError",
        "the same anchor listed twice (it must not count twice towards --require-anchors 2)",
        policy="2",
    )
    invalid(
        "tree-window-moved",
        mutate(lambda d: d["tree"].update(window_id="w-other")),
        "AnchorPolicyError",
        "the receipt claims another window than its correctly signed ledger entry (section 5.1)",
    )
    invalid(
        "tree-index-moved",
        mutate(lambda d: d["tree"].update(tree_index=d["tree"]["tree_index"] + 1)),
        "AnchorPolicyError",
        "the receipt claims another tree of the window than its correctly signed ledger entry (section 5.1)",
    )
    base2 = valid("v2-subject", receipts2[1], "v2: a record of a subject's medical-history log, position 1")
    valid("v2-domain-only", receipts2[2], "v2: a record bound to a domain, no subject")
    valid("v2-pending", render(subs2[0]), "v2: accepted, not yet in a tree; the binding is already shown", policy="0")

    def mutate2(fn: Any) -> dict[str, Any]:
        d = copy.deepcopy(base2)
        fn(d)
        return d

    invalid(
        "v2-subject-moved",
        mutate2(lambda d: d.update(subject="hmac-sha256:00000000deadbeef")),
        "BranchError",
        "v2: the record claimed for another subject (the binding op no longer matches)",
    )
    invalid(
        "v2-seq-moved",
        mutate2(lambda d: d.update(subject_seq=0)),
        "BranchError",
        "v2: the record moved to another position of the subject's log",
    )
    invalid(
        "v2-domain-moved",
        mutate2(lambda d: d.update(domain="insurance")),
        "BranchError",
        "v2: the record claimed for another data-sharing domain",
    )
    invalid(
        "v2-binding-op-dropped",
        mutate2(lambda d: d["branches"][0]["ops"].pop(1)),
        "BranchError",
        "v2: the binding op removed (the leaf would commit to the hash alone)",
    )
    invalid(
        "v2-seq-without-subject",
        mutate2(lambda d: d.pop("subject")),
        "MalformedReceiptError",
        "v2: subject_seq without subject",
    )
    invalid(
        "v2-no-domain",
        mutate2(lambda d: d.pop("domain")),
        "MalformedReceiptError",
        "v2: the domain is required",
    )
    invalid(
        "v1-with-subject",
        mutate(lambda d: d.update(subject="hmac-sha256:4f1c2a9be07d35a1", subject_seq=0)),
        "MalformedReceiptError",
        "a v1 receipt has no subject (a new field means a new version)",
    )
    # a repeated key: Python's json keeps the last value, other readers the first
    text = json.dumps(base, indent=2)
    fake = json.dumps(other_hash)
    twice = text.replace('  "hash": ', f'  "hash": {fake},\n  "hash": ', 1)
    (out / "invalid" / "key-repeated.json").write_text(twice + "\n")
    manifest.append(
        {
            "file": "invalid/key-repeated.json",
            "valid": False,
            "error": "MalformedReceiptError",
            "note": "the key hash appears twice, a fake value first (a reader taking the first would be misled)",
            "policy": "all",
        }
    )

    _event_vectors(out / "events")
    _history_vectors(out / "history", key)

    # RFC 6962 known answers (leaf inputs and roots as in certificate-transparency's merkle tests).
    kat: dict[str, Any] = {"leaves": RFC6962_LEAVES, "roots": {}, "paths": {}}
    data = [bytes.fromhex(x) for x in RFC6962_LEAVES]
    for size in range(1, 9):
        tree = MerkleTree.from_commitments(data[:size])
        kat["roots"][str(size)] = tree.root.hex()
        kat["paths"][str(size)] = [[h.hex() for _, h in p] for p in all_audit_paths(tree)]
    _write(out / "rfc6962.json", kat)
    _write(out / "manifest.json", {"version": 1, "ledger_key": "ledger-key.pem", "vectors": manifest})


def _event_vectors(out: Path) -> None:
    """Access events (section 13): signed by a fixed Ed25519 owner key, with the hashes to expect."""
    owner = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"health-receipt v2 test-vector owner key").digest())
    jwk = public_jwk(owner.public_key())
    unsigned = {
        "type": "AccessEvent",
        "action": "grant",
        "domain": "medical-history",
        "recordhash": None,
        "owner": "hmac-sha256:4f1c2a9be07d35a1",
        "receiver": "insure-y",
        "time": "2025-11-21T08:02:00.000000Z",
        "location": None,
        "expirydate": "2025-12-21T08:02:00.000000Z",
        "key_id": thumbprint(owner.public_key()),
    }
    grant = {**unsigned, "signature": b64url(owner.sign(signing_input(unsigned)))}
    _write(out / "owner.jwk.json", jwk)
    entries: list[dict[str, Any]] = []

    def vector(name: str, doc: dict[str, Any], error: str | None, note: str) -> None:
        _write(out / f"{name}.json", doc)
        entry: dict[str, Any] = {"file": f"{name}.json", "valid": error is None, "note": note}
        if error is None:
            entry["signed_bytes_sha256"] = hashlib.sha256(signing_input(doc)).hexdigest()
            entry["event_hash"] = hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
        else:
            entry["error"] = error
        entries.append(entry)

    vector("grant", grant, None, "an owner's grant to an insurer, Ed25519")
    vector(
        "grant-receiver-moved",
        dict(grant, receiver="clinic-x"),
        "EventSignatureError",
        "receiver changed after signing",
    )
    vector(
        "grant-expiry-moved",
        dict(grant, expirydate="2026-12-21T08:02:00.000000Z"),
        "EventSignatureError",
        "expiry extended after signing",
    )
    vector(
        "grant-unsigned",
        {k: v for k, v in grant.items() if k != "signature"},
        "MalformedEventError",
        "no signature member",
    )
    vector("grant-extra-field", dict(grant, scope="all"), "MalformedEventError", "a field outside the tuple")
    _write(out / "manifest.json", {"key": "owner.jwk.json", "vectors": entries})


def _history_vectors(out: Path, key: Ed25519PrivateKey) -> None:
    """History bundles (section 14) over one window of medical-history: a complete one, an absence proof,
    and broken copies, each with the problem a verifier must name."""
    domain, subject, other = "medical-history", "hmac-sha256:4f1c2a9be07d35a1", "hmac-sha256:99aa0c7e12d4b6f3"
    issuer = ProofIdIssuer(clock_seq=0x1B3)
    items = []  # (subject, seq, submission)
    for i, (who, seq) in enumerate([(subject, 0), (other, 0), (subject, 1), (subject, 2), (other, 1)]):
        h = hashlib.sha256(f"treatment record {i}".encode()).hexdigest()
        issued = issuer.issue(h, BASE_NS + 120_000_000_000 + i * 1_000_000)
        nonce = hashlib.sha256(b"history nonce" + i.to_bytes(4, "big")).digest()[:16]
        items.append((who, seq, Submission(issued.proof_id, h, issued.hash_received, nonce, Binding(domain, who, seq))))
    (wt,) = build_window("w1763712120000", [sub for _, _, sub in items])
    logs: dict[str, list[Submission]] = {}
    for who, _, sub in items:
        logs.setdefault(who, []).append(sub)
    heads = HeadsTree({who: (len(subs), log_root([sub.commitment() for sub in subs])) for who, subs in logs.items()})
    with tempfile.TemporaryDirectory() as tmp:
        ledger = LocalLedger(Path(tmp), key)
        signed = ledger.append(
            TreeRoot(
                wt.window_id,
                0,
                wt.tree.size,
                wt.root_hex,
                "2025-11-21T08:02:00Z",
                "2025-11-21T08:02:01Z",
                domain,
                heads.root.hex(),
                heads.size,
            ),
            "2025-11-21T08:02:01.2Z",
        )
    window = {
        "window_id": wt.window_id,
        "tree_index": 0,
        "tree_size": wt.tree.size,
        "root": wt.root_hex,
        "window_end": "2025-11-21T08:02:01Z",
        "heads_root": heads.root.hex(),
        "heads_size": heads.size,
        "anchors": [anchor_to_dict(to_anchor(ledger.key_id, signed))],
    }

    def bundle(who: str, subs: list[Submission]) -> dict[str, Any]:
        return {
            "@context": HISTORY_CONTEXT,
            "type": HISTORY_TYPE,
            "subject": who,
            "domain": domain,
            "as_of": "2025-11-21T08:03:00.000000Z",
            "log": {
                "size": len(subs),
                "root": log_root([x.commitment() for x in subs]).hex(),
                "hashes": pack([bytes.fromhex(x.hash) for x in subs]),
                "proof_ids": pack([bytes.fromhex(x.proof_id.replace("-", "")) for x in subs]),
                "nonces": pack([x.nonce for x in subs]),
                "leaves": pack([x.commitment() for x in subs]),
            },
            "head_proof": heads.prove(who),
            "window": window,
        }

    mine = logs[subject]
    entries: list[dict[str, Any]] = []

    def vector(name: str, doc: dict[str, Any], problem: str | None, note: str) -> None:
        _write(out / f"{name}.json", doc)
        entries.append({"file": f"{name}.json", "complete": problem is None, "problem": problem, "note": note})

    vector(
        "complete", bundle(subject, mine), None, "three records of one subject, the window's heads hold two subjects"
    )
    vector("absent", bundle("hmac-sha256:0000absent000000", []), None, "a subject with no record: an absence proof")
    broken = bundle(subject, [mine[0], mine[2]])
    broken["log"]["size"] = 3
    vector("gap", broken, "gap at sequence 1", "the middle record left out")
    newest = bundle(subject, mine[:2])
    newest["log"]["size"], newest["log"]["root"] = 3, bundle(subject, mine)["log"]["root"]
    vector("newest-missing", newest, "newest record(s) missing", "the newest record left out")
    swapped = bundle(subject, [mine[1], mine[0], mine[2]])
    swapped["log"]["root"] = bundle(subject, mine)["log"]["root"]
    vector("swapped", swapped, "records out of order", "two records swapped")
    foreign = bundle(subject, [mine[0], logs[other][0], mine[2]])
    foreign["log"]["root"] = bundle(subject, mine)["log"]["root"]
    vector("foreign", foreign, "is not a record of", "a record of another subject in the middle")
    tampered = bundle(subject, mine)
    tampered["head_proof"]["member"]["size"] = 2
    vector("head-proof-tampered", tampered, "tampered head proof", "the head proof claims a shorter log")
    _write(out / "manifest.json", {"ledger_key": "../ledger-key.pem", "vectors": entries})


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "vectors")
