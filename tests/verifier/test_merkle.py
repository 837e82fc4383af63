"""The tree against RFC 6962 known answers and against pymerkle (an independent implementation)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from receipt_verifier.merkle import MerkleTree, Side, all_audit_paths, climb_hex, path_shape, root_from_path

# certificate-transparency merkle_tree_test: leaf inputs and roots of the first 1..8 leaves.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
CT_PATH_LEAF0_OF_8 = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
]


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_rfc6962_known_roots(size: int) -> None:
    tree = MerkleTree.from_commitments([bytes.fromhex(x) for x in CT_LEAVES[:size]])
    assert tree.root.hex() == CT_ROOTS[size]


def test_rfc6962_known_path() -> None:
    tree = MerkleTree.from_commitments([bytes.fromhex(x) for x in CT_LEAVES])
    assert [h.hex() for _, h in tree.audit_path(0)] == CT_PATH_LEAF0_OF_8


def test_spec_vectors_hold_the_known_answers(vectors_dir: object) -> None:
    from tests.conftest import load_vector

    kat = load_vector("rfc6962.json")
    assert kat["leaves"] == CT_LEAVES
    assert {int(k): v for k, v in kat["roots"].items()} == CT_ROOTS
    assert kat["paths"]["8"][0] == CT_PATH_LEAF0_OF_8


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 13, 64, 100, 257])
def test_matches_pymerkle_roots_and_paths(size: int) -> None:
    rng = random.Random(size)
    data = [rng.randbytes(32) for _ in range(size)]
    ours = MerkleTree.from_commitments(data)
    theirs = InmemoryTree(algorithm="sha256")
    for d in data:
        theirs.append_entry(d)
    assert theirs.get_root().hex() == ours.root.hex()
    paths = all_audit_paths(ours)
    for index in range(size):
        proof = theirs.prove_inclusion(index + 1).serialize()
        # pymerkle's path starts with the leaf hash itself; the rest is the RFC 9162 audit path.
        assert proof["path"][0] == ours.levels[0][index].hex()
        assert [h.hex() for _, h in paths[index]] == proof["path"][1:]
        assert [h.hex() for _, h in ours.audit_path(index)] == proof["path"][1:]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=600), st.data())
def test_paths_recompute_root(size: int, data: st.DataObject) -> None:
    tree = MerkleTree.from_commitments([i.to_bytes(4, "big") for i in range(size)])
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = tree.audit_path(index)
    assert [s for s in path_shape(index, size) if s is not None] == [s for s, _ in path]
    assert root_from_path(tree.levels[0][index], index, size, [h for _, h in path]) == tree.root


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=600), st.data())
def test_climbing_a_hex_path_gives_the_root(size: int, data: st.DataObject) -> None:
    tree = MerkleTree.from_commitments([i.to_bytes(4, "big") for i in range(size)])
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = tree.audit_path(index)
    sides, hexes = [s.value for s, _ in path], [h.hex() for _, h in path]
    assert climb_hex(tree.levels[0][index], sides, hexes) == tree.root
    assert climb_hex(tree.levels[0][index], [*sides, "l"], hexes) is None  # a side without its sibling
    if hexes:  # one sibling changed or not lowercase hex of its length: another root, or none
        at = data.draw(st.integers(0, len(hexes) - 1))
        bad = data.draw(st.sampled_from(["upper", "short", "long", "other"]))
        hexes[at] = {
            "upper": hexes[at].upper(),
            "short": hexes[at][:-1],
            "long": hexes[at] + "0",
            "other": ("1" if hexes[at][0] == "0" else "0") + hexes[at][1:],
        }[bad]
        got = climb_hex(tree.levels[0][index], sides, hexes)
        if bad == "other" or (bad == "upper" and hexes[at] == hexes[at].lower()):
            assert got is not None and (got != tree.root) is (bad == "other")
        else:
            assert got is None


def test_root_from_path_rejects_wrong_length() -> None:
    tree = MerkleTree.from_commitments([b"a", b"b", b"c"])
    with pytest.raises(ValueError, match="audit path has 1 hashes"):
        root_from_path(tree.levels[0][0], 0, 3, [tree.levels[0][1]])


def test_path_shape_promotes_the_odd_node() -> None:
    assert path_shape(2, 3) == [None, Side.LEFT]
    assert path_shape(0, 1) == []
    with pytest.raises(ValueError, match="outside a tree"):
        path_shape(3, 3)


def test_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        MerkleTree.from_leaf_hashes([])


def test_sibling_kinds_is_path_shape_without_promoted_levels() -> None:
    from receipt_verifier.merkle import path_shape, sibling_kinds

    for size in range(1, 130):
        for index in range(size):
            assert sibling_kinds(index, size) == [s.value for s in path_shape(index, size) if s is not None]


def test_an_index_past_the_tree_is_named() -> None:
    tree = MerkleTree.from_commitments([bytes([i]) * 32 for i in range(5)])
    with pytest.raises(IndexError, match="outside a tree of 5"):
        tree.audit_path(5)


def test_all_audit_paths_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    tree = MerkleTree.from_commitments([bytes([i]) * 32 for i in range(9)])
    assert gc.isenabled()
    all_audit_paths(tree)
    assert gc.isenabled()
    gc.disable()
    try:
        all_audit_paths(tree)
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Huge(Sequence[bytes]):
    """A sequence that claims a size without holding it; reading it raises ``LookupError``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        raise LookupError("read")

    def __iter__(self) -> Iterator[bytes]:
        raise LookupError("read")  # before anything sizes a copy by len()


def test_tree_size_limits_are_exact() -> None:
    from receipt_verifier.merkle import MAX_TREE_SIZE

    with pytest.raises(ValueError) as err:
        MerkleTree.from_leaf_hashes([])
    assert str(err.value) == "a Merkle tree needs at least one leaf"
    with pytest.raises(ValueError) as err:
        MerkleTree.from_leaf_hashes(_Huge(MAX_TREE_SIZE + 1))
    assert str(err.value) == f"a tree holds at most {MAX_TREE_SIZE} leaves"
    with pytest.raises(LookupError):  # the largest size is allowed: it gets as far as reading the leaves
        MerkleTree.from_leaf_hashes(_Huge(MAX_TREE_SIZE))


@pytest.mark.parametrize("size", [2, 4, 6, 8, 12])
def test_even_levels_promote_nothing(size: int) -> None:
    tree = MerkleTree.from_leaf_hashes([bytes([i]) * 32 for i in range(size)])
    assert len(tree.levels[1]) == size // 2
