"""Regenerate proof_spec/vectors/transition.json: transition proofs of the indexed heads tree (spec §14.6).

    python proof_spec/tools/make_transition_vectors.py [OUT_FILE]

Deterministic (a seeded generator, no clock). Each case gives the tip's heads (``old_root``,
``old_size``), a window's claimed heads (``heads_root``, ``heads_size``) and a proof; a valid case
must be accepted, an invalid one refused with an error whose message contains ``reason``. The
invalid cases are one broken copy per check of §14.6. The test suite regenerates the file in memory
and requires equal output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receipt_service.transition import build_transition, successor_heads, transition_nodes
from receipt_verifier.hashing import leaf_hash
from receipt_verifier.heads import EMPTY_ROOT, IndexedHeads, empty_heads, subject_key
from receipt_verifier.merkle import MerkleTree, consistency_proof

OUT = Path(__file__).resolve().parent.parent / "vectors" / "transition.json"
SEED = 146
Logs = dict[bytes, list[bytes]]  # subject key -> the log's entries (leaf values)


def _root(log: list[bytes]) -> bytes:
    return MerkleTree.from_commitments(log).root if log else EMPTY_ROOT


def _key(i: int) -> bytes:
    return subject_key(f"did:example:patient-{i:04d}")


def _heads(order: list[bytes], logs: Logs) -> IndexedHeads:
    return IndexedHeads([(k, len(logs[k]), _root(logs[k])) for k in order])


def _grow(old: IndexedHeads, old_logs: Logs, new_logs: Logs) -> tuple[IndexedHeads, dict[str, Any]]:
    """The successor of ``old`` holding ``new_logs`` and its transition proof."""
    changed = {k: v for k, v in new_logs.items() if old_logs.get(k) != v}
    new = successor_heads(old, {k: (len(v), _root(v)) for k, v in changed.items()})
    consistency = {
        k: consistency_proof([leaf_hash(x) for x in v], len(old_logs[k])) for k, v in changed.items() if k in old_logs
    }
    return new, build_transition(old, new, consistency)


def _case(name: str, old: IndexedHeads, new: IndexedHeads, proof: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "old_root": old.root.hex(),
        "old_size": old.size,
        "heads_root": new.root.hex(),
        "heads_size": new.size,
        "proof": proof,
        "valid": reason is None,
        "reason": reason,
    }


def _scenario(rng: random.Random) -> tuple[IndexedHeads, Logs, Logs, list[bytes]]:
    """Old heads of 12 subjects (two windows' inserts), and new logs: 4 grown, 4 new subjects.

    Among the new subjects, one sorts below every old key (its low leaf is the sentinel) and two
    share a gap between old keys (the second's low leaf is the first).
    """
    old_keys = [_key(i) for i in range(12)]
    order = sorted(old_keys[:7]) + sorted(old_keys[7:])
    logs: Logs = {k: [rng.randbytes(32) for _ in range(rng.randint(1, 6))] for k in old_keys}
    ordered = sorted(old_keys)
    candidates = [_key(i) for i in range(100, 2000)]
    below = next(k for k in candidates if k < ordered[0])
    gaps: dict[int, list[bytes]] = {}
    for k in candidates:
        gaps.setdefault(sum(1 for o in ordered if o < k), []).append(k)
    pair = next(v[:2] for g, v in sorted(gaps.items()) if 0 < g < len(ordered) and len(v) >= 2)
    single = next(k for k in candidates if k not in (below, *pair) and sum(1 for o in ordered if o < k) > 0)
    new_logs = {k: list(v) for k, v in logs.items()}
    for k in (ordered[2], ordered[5], order[8], order[11]):
        new_logs[k] += [rng.randbytes(32) for _ in range(rng.randint(1, 5))]
    for k in (below, *pair, single):
        new_logs[k] = [rng.randbytes(32) for _ in range(rng.randint(1, 3))]
    return _heads(order, logs), logs, new_logs, order


Mutation = Callable[[dict[str, Any]], None]


def _broken(base: dict[str, Any], name: str, reason: str, mutate: Mutation) -> dict[str, Any]:
    case = copy.deepcopy(base)
    case["name"], case["valid"], case["reason"] = name, False, reason
    mutate(case)
    return case


def _flip(hex_hash: str) -> str:
    return f"{int(hex_hash[0], 16) ^ 1:x}{hex_hash[1:]}"


def cases() -> list[dict[str, Any]]:
    """Every case, in file order."""
    rng = random.Random(SEED)
    old, logs, new_logs, order = _scenario(rng)
    new, proof = _grow(old, logs, new_logs)
    assert any(x["low"] >= old.size for x in proof["inserted"]), "an insert's low leaf is an earlier insert"
    assert any(x["low"] == 0 for x in proof["inserted"]), "an insert's low leaf is the sentinel"
    base = _case("updates-and-inserts", old, new, proof, None)

    genesis_logs = {_key(i): [rng.randbytes(32) for _ in range(i + 1)] for i in range(200, 203)}
    g_new, g_proof = _grow(empty_heads(), {}, genesis_logs)
    genesis = _case("genesis", empty_heads(), g_new, g_proof, None)

    out = [
        base,
        genesis,
        _case("no-change", old, old, build_transition(old, old, {}), None),
        _case(
            "no-change-sentinel", empty_heads(), empty_heads(), build_transition(empty_heads(), empty_heads(), {}), None
        ),
        _case(
            "no-change-with-nodes",
            old,
            old,
            {
                "old_size": old.size,
                "new_size": old.size,
                "changed": [],
                "inserted": [],
                "nodes": transition_nodes(old, []),
            },
            None,
        ),
    ]

    changed = proof["changed"]
    grown = [i for i, c in enumerate(changed) if c["new_size"] > c["size"]]
    low_only = next(i for i, c in enumerate(changed) if c["new_size"] == c["size"] and c["index"] > 0)
    unchanged = next(i for i in range(1, old.size) if i not in {c["index"] for c in changed})
    g0 = changed[grown[0]]
    g0_key = bytes.fromhex(g0["key"])
    g0_log = logs[g0_key]

    def p(case: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = case["proof"]
        return result

    def shrink(case: dict[str, Any]) -> None:  # a dropped record: the log replaced by its shorter prefix
        c = p(case)["changed"][grown[0]]
        c["new_size"], c["new_root"], c["consistency"] = len(g0_log) - 1, _root(g0_log[:-1]).hex(), []

    def replace(case: dict[str, Any]) -> None:  # a record replaced: same size, another root
        c = p(case)["changed"][grown[0]]
        c["new_size"], c["new_root"], c["consistency"] = len(g0_log), _root([b"x" * 32, *g0_log[1:]]).hex(), []

    def rewrite(case: dict[str, Any]) -> None:  # grown, but from a log whose first record was replaced
        forged = [b"x" * 32, *new_logs[g0_key][1:]]
        c = p(case)["changed"][grown[0]]
        c["new_root"] = _root(forged).hex()
        c["consistency"] = [h.hex() for h in consistency_proof([leaf_hash(x) for x in forged], len(g0_log))]

    def repeat_insert(case: dict[str, Any]) -> None:
        ins = p(case)["inserted"]
        ins.insert(1, copy.deepcopy(ins[1]))
        p(case)["new_size"] += 1
        case["heads_size"] += 1

    def swap(member: str, i: int, j: int) -> Mutation:
        def go(case: dict[str, Any]) -> None:
            items = p(case)[member]
            items[i], items[j] = items[j], items[i]

        return go

    def set_in(member: str, i: int, field: str, value: Any) -> Mutation:
        def go(case: dict[str, Any]) -> None:
            p(case)[member][i][field] = value

        return go

    def set_case(field: str, value: Any) -> Mutation:
        def go(case: dict[str, Any]) -> None:
            case[field] = value

        return go

    def add_node(case: dict[str, Any]) -> None:
        i = changed[low_only]["index"]
        nodes = p(case)["nodes"]
        nodes.append([i, 1, old.node(i, 1).hex()])
        nodes.sort(key=lambda n: n[0])

    n0 = proof["nodes"][0]
    other_low = next(i for i, c in enumerate(changed) if c["index"] != proof["inserted"][-1]["low"] and c["index"] > 0)
    k3 = proof["inserted"][3]["key"]
    out += [
        _broken(base, "new-size-not-old-plus-inserts", "new_size is not old_size plus the inserted count", _bump_new),
        _broken(base, "old-size-not-tip", "old_size is not the tip's heads size", set_case("old_size", old.size + 1)),
        _broken(base, "new-size-not-window", "new_size is not the window's heads size", set_case("heads_size", 99)),
        _broken(base, "changed-out-of-order", "changed leaves repeat or are out of order", swap("changed", 0, 1)),
        _broken(
            base,
            "changed-index-past-old",
            "changed leaves repeat or are out of order",
            set_in("changed", len(changed) - 1, "index", old.size),
        ),
        _broken(base, "inserted-repeated", "inserted keys repeat or are out of order", repeat_insert),
        _broken(base, "inserted-out-of-order", "inserted keys repeat or are out of order", swap("inserted", 1, 2)),
        _broken(base, "nodes-out-of-order", "nodes repeat or are out of order", swap("nodes", 0, 1)),
        _broken(base, "old-root-not-tip", "the old heads root is not the tip's", set_case("old_root", "00" * 32)),
        _broken(
            base,
            "forged-old-next",
            "the old heads root is not the tip's",
            set_in("changed", grown[0], "next", _flip(g0["next"])),
        ),
        _broken(base, "forged-node", "the old heads root is not the tip's", _flip_node),
        _broken(base, "missing-node", f"the proof lacks node [{n0[0]}, {n0[1]}]", _drop_first_node),
        _broken(base, "unused-node", f"node [{changed[low_only]['index']}, 1] is not used", add_node),
        _broken(base, "log-shrank", f"the log of key {g0['key']} shrank", shrink),
        _broken(base, "log-replaced", f"the log of key {g0['key']} changed without growing", replace),
        _broken(base, "log-rewritten", f"the consistency proof of key {g0['key']} fails", rewrite),
        _broken(
            base,
            "consistency-flipped",
            f"the consistency proof of key {g0['key']} fails",
            set_in("changed", grown[0], "consistency", [_flip(g0["consistency"][0]), *g0["consistency"][1:]]),
        ),
        _broken(genesis, "sentinel-log", "the sentinel leaf cannot hold a log", _sentinel_log),
        _broken(
            base,
            "low-not-in-proof",
            f"low leaf {unchanged} is not in the proof",
            set_in("inserted", 0, "low", unchanged),
        ),
        _broken(
            base,
            "forged-low-leaf",
            f"key {k3} is not new: low leaf {changed[other_low]['index']} does not bracket it",
            set_in("inserted", 3, "low", changed[other_low]["index"]),
        ),
        _existing_subject(old, order),
        _broken(
            base,
            "new-log-empty",
            "a new subject's log must hold a record",
            _empty_insert,
        ),
        _broken(
            base, "new-root-not-following", "the new heads root does not follow", set_case("heads_root", "00" * 32)
        ),
        _broken(
            base,
            "forged-inserted-root",
            "the new heads root does not follow",
            set_in("inserted", 0, "root", _flip(proof["inserted"][0]["root"])),
        ),
        _broken(
            out[2],
            "no-change-root-changed",
            "the new heads root does not follow",
            set_case("heads_root", new.root.hex()),
        ),
    ]
    return out


def _bump_new(case: dict[str, Any]) -> None:
    case["proof"]["new_size"] += 1
    case["heads_size"] += 1


def _drop_first_node(case: dict[str, Any]) -> None:
    del case["proof"]["nodes"][0]


def _flip_node(case: dict[str, Any]) -> None:
    node = case["proof"]["nodes"][-1]
    node[2] = _flip(node[2])


def _sentinel_log(case: dict[str, Any]) -> None:
    sentinel = case["proof"]["changed"][0]
    assert sentinel["index"] == 0
    sentinel["new_size"], sentinel["new_root"] = 1, leaf_hash(b"\x00" * 32).hex()


def _empty_insert(case: dict[str, Any]) -> None:
    case["proof"]["inserted"][0]["size"] = 0
    case["proof"]["inserted"][0]["root"] = EMPTY_ROOT.hex()


def _existing_subject(old: IndexedHeads, order: list[bytes]) -> dict[str, Any]:
    """A proof that inserts an existing subject again, listing that key's true low leaf (whose next is the key)."""
    key = order[4]
    low = old.low_index(key)
    k, nxt, size, root = old.leaf(low)
    changed = [
        {
            "index": low,
            "key": k.hex(),
            "next": nxt.hex(),
            "size": size,
            "root": root.hex(),
            "new_size": size,
            "new_root": root.hex(),
            "consistency": [],
        }
    ]
    inserted = [{"key": key.hex(), "low": low, "size": 1, "root": leaf_hash(b"fresh").hex()}]
    proof = {
        "old_size": old.size,
        "new_size": old.size + 1,
        "changed": changed,
        "inserted": inserted,
        "nodes": transition_nodes(old, [low]),
    }
    case = _case(
        "existing-subject-inserted", old, old, proof, f"key {key.hex()} is not new: low leaf {low} does not bracket it"
    )
    case["heads_size"] = old.size + 1
    return case


def document() -> dict[str, Any]:
    """The whole vector file."""
    return {
        "description": (
            "Transition proofs of the indexed heads tree (proof_spec/chain.md §14.6). Each case: the tip's heads"
            " (old_root, old_size), the window's claimed heads (heads_root, heads_size) and the proof. A valid case"
            " must be accepted; an invalid one refused with an error whose message contains reason."
        ),
        "cases": cases(),
    }


def render() -> str:
    """The file's text."""
    return json.dumps(document(), indent=1) + "\n"


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else OUT
    out.write_text(render())
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    print(f"wrote {out} ({len(document()['cases'])} cases, sha256 {digest}…)")


if __name__ == "__main__":
    main(sys.argv[1:])
