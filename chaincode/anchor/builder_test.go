package main

// A test-only builder of indexed heads trees and their transition proofs (the service builds them in
// Python; these build the same from full leaf lists, to test the checker).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"sort"
)

// subject is a heads entry: its key and its log's head; log (optional) holds the log's leaf hashes.
type subject struct {
	key  [32]byte
	size uint64
	root [32]byte
	log  [][32]byte
}

// logged is a subject whose log holds the first size of the given leaf hashes.
func logged(key [32]byte, log [][32]byte, size int) subject {
	return subject{key: key, size: uint64(size), root: mth(log[:size]), log: log}
}

func testKey(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// testLog is n deterministic leaf hashes.
func testLog(seed string, n int) [][32]byte {
	out := make([][32]byte, n)
	for i := range out {
		out[i] = LeafHash(binary.BigEndian.AppendUint64([]byte(seed), uint64(i)))
	}
	return out
}

// mth is RFC 6962 MTH over leaf hashes (the empty tree: H("")).
func mth(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return emptyRoot
	case 1:
		return leaves[0]
	}
	k := splitPoint(uint64(len(leaves)))
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return NodeHash(&l, &r)
}

// consistencyProof is RFC 9162 §2.1.4.1 PROOF(m, D[n]).
func consistencyProof(m int, leaves [][32]byte) [][32]byte { return subproof(m, leaves, true) }

func subproof(m int, d [][32]byte, whole bool) [][32]byte {
	n := len(d)
	if m == n {
		if whole {
			return nil
		}
		return [][32]byte{mth(d)}
	}
	k := int(splitPoint(uint64(n)))
	if m <= k {
		return append(subproof(m, d[:k], whole), mth(d[k:]))
	}
	return append(subproof(m-k, d[k:], false), mth(d[:k]))
}

// heads is an indexed heads tree: the sentinel, then the subjects in insertion order.
type heads struct {
	subjects []subject // index 0: the sentinel
	nexts    [][32]byte
	hashes   [][32]byte
}

func newHeads(entries []subject) *heads {
	h := &heads{subjects: append([]subject{{root: emptyRoot}}, entries...)}
	order := make([]int, len(h.subjects))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		return bytes.Compare(h.subjects[order[a]].key[:], h.subjects[order[b]].key[:]) < 0
	})
	h.nexts = make([][32]byte, len(h.subjects))
	for i := 0; i+1 < len(order); i++ {
		h.nexts[order[i]] = h.subjects[order[i+1]].key
	}
	h.hashes = make([][32]byte, len(h.subjects))
	for i, s := range h.subjects {
		h.hashes[i] = indexedLeafHash(&s.key, &h.nexts[i], s.size, &s.root)
	}
	return h
}

func (h *heads) root() [32]byte { return mth(h.hashes) }
func (h *heads) size() uint64   { return uint64(len(h.hashes)) }

// grow is the heads after updates (index -> new head) and inserts (appended by key ascending).
func (h *heads) grow(updates map[int]subject, inserts []subject) *heads {
	entries := append([]subject(nil), h.subjects[1:]...)
	for i, s := range updates {
		entries[i-1] = s
	}
	ins := append([]subject(nil), inserts...)
	sort.Slice(ins, func(a, b int) bool { return bytes.Compare(ins[a].key[:], ins[b].key[:]) < 0 })
	return newHeads(append(entries, ins...))
}

// prove builds the transition proof from old to next (next = old.grow(...)).
func prove(old, next *heads) *TransitionProof {
	p := &TransitionProof{
		OldSize: Uint{V: old.size()}, NewSize: Uint{V: next.size()},
		Changed: []ChangedLeaf{}, Inserted: []InsertedLeaf{}, Nodes: []ProofNode{},
	}
	var changed []uint64
	for i := range old.subjects {
		if old.hashes[i] == next.hashes[i] {
			continue
		}
		o, n := old.subjects[i], next.subjects[i]
		c := ChangedLeaf{
			Index: Uint{V: uint64(i)}, Key: Hash{B: o.key}, Next: Hash{B: old.nexts[i]}, Size: Uint{V: o.size},
			Root: Hash{B: o.root}, NewSize: Uint{V: n.size}, NewRoot: Hash{B: n.root}, Consistency: []Hash{},
		}
		if o.size >= 1 && n.size > o.size {
			for _, x := range consistencyProof(int(o.size), n.log[:n.size]) {
				c.Consistency = append(c.Consistency, Hash{B: x})
			}
		}
		p.Changed = append(p.Changed, c)
		changed = append(changed, uint64(i))
	}
	for j := old.size(); j < next.size(); j++ {
		x := next.subjects[j]
		p.Inserted = append(p.Inserted, InsertedLeaf{
			Key: Hash{B: x.key}, Low: Uint{V: lowIndex(next, int(j))}, Size: Uint{V: x.size}, Root: Hash{B: x.root},
		})
	}
	collectNodes(old, 0, old.size(), changed, &p.Nodes)
	return p
}

// lowIndex is the leaf, among leaves [0, j), with the largest key below leaf j's.
func lowIndex(h *heads, j int) uint64 {
	best := 0
	for i := 1; i < j; i++ {
		k := h.subjects[i].key
		if bytes.Compare(k[:], h.subjects[j].key[:]) < 0 && bytes.Compare(k[:], h.subjects[best].key[:]) > 0 {
			best = i
		}
	}
	return uint64(best)
}

// collectNodes appends the maximal subtrees of [lo, hi) that hold no changed index.
func collectNodes(h *heads, lo, hi uint64, changed []uint64, out *[]ProofNode) {
	w := hi - lo
	has := false
	for _, c := range changed {
		has = has || (c >= lo && c < hi)
	}
	if !has && isPowerOfTwo(w) {
		*out = append(*out, ProofNode{Start: Uint{V: lo}, Width: Uint{V: w}, Hash: Hash{B: mth(h.hashes[lo:hi])}})
		return
	}
	if w == 1 {
		return
	}
	k := lo + splitPoint(w)
	collectNodes(h, lo, k, changed, out)
	collectNodes(h, k, hi, changed, out)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
