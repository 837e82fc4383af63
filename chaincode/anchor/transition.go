package main

// The indexed heads tree (spec §14.5) and its transition proofs (§14.6): a proof that every subject
// log of the lane tip's heads only grew, every new subject was absent, and every other leaf is unchanged.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	// MaxProofEntries bounds each list of a transition proof.
	MaxProofEntries = 1_000_000
	// MaxConsistency bounds the hashes of one consistency proof.
	MaxConsistency = 128
	// LeafSize is the size of an indexed heads leaf value: key ‖ next ‖ u64be(size) ‖ root.
	LeafSize = 3*hashSize + 8
)

var (
	zeroKey   [hashSize]byte       // Z, the sentinel's key (reserved)
	emptyRoot = sha256.Sum256(nil) // the root of an empty log
	checkName = [...]string{"form", "shape", "order", "old root", "each log only grew", "inserts are new", "new root"}
)

// IndexedLeaf is the 104-byte value of a heads tree leaf.
func IndexedLeaf(key, next *[hashSize]byte, size uint64, root *[hashSize]byte) [LeafSize]byte {
	var v [LeafSize]byte
	copy(v[:], key[:])
	copy(v[hashSize:], next[:])
	binary.BigEndian.PutUint64(v[2*hashSize:], size)
	copy(v[2*hashSize+8:], root[:])
	return v
}

// indexedLeafHash is LeafHash(IndexedLeaf(...)) without allocating.
func indexedLeafHash(key, next *[hashSize]byte, size uint64, root *[hashSize]byte) [hashSize]byte {
	var buf [1 + LeafSize]byte
	v := IndexedLeaf(key, next, size, root)
	copy(buf[1:], v[:])
	return sha256.Sum256(buf[:])
}

// SentinelLeaf is leaf 0 of a heads tree without subjects: key Z, next Z, size 0, root H("").
func SentinelLeaf() [LeafSize]byte { return IndexedLeaf(&zeroKey, &zeroKey, 0, &emptyRoot) }

// EmptyHeadsRoot is the heads root of a lane without subjects (the sentinel alone, heads size 1).
func EmptyHeadsRoot() [hashSize]byte { v := SentinelLeaf(); return LeafHash(v[:]) }

// TransitionError is a transition proof refused; the message names the check (0: the proof's form).
type TransitionError struct {
	Check int
	Msg   string
}

func (e *TransitionError) Error() string {
	if e.Check == 0 {
		return e.Msg
	}
	return fmt.Sprintf("transition check %d (%s): %s", e.Check, checkName[e.Check], e.Msg)
}

func refuse(check int, format string, a ...any) error {
	return &TransitionError{Check: check, Msg: fmt.Sprintf(format, a...)}
}

// CheckTransition checks §14.6 (checks 1-6, in order): the heads tree (newRoot, newSize) only grew
// from the tip's (oldRoot, oldSize) by the JSON transition proof.
func CheckTransition(oldRoot []byte, oldSize uint64, newRoot []byte, newSize uint64, proof []byte) error {
	if len(oldRoot) != hashSize || len(newRoot) != hashSize {
		return errors.New("the old and new heads roots must be 32 bytes")
	}
	p, err := ParseTransitionProof(proof)
	if err != nil {
		return err
	}
	c := &transition{p: p, oldSize: p.OldSize.V, newSize: p.NewSize.V}
	steps := []func() error{
		func() error { return c.shape(oldSize, newSize) },
		c.order,
		func() error { return c.oldRoot((*[hashSize]byte)(oldRoot)) },
		c.logsGrew,
		c.insertsNew,
		func() error { return c.newRoot((*[hashSize]byte)(oldRoot), (*[hashSize]byte)(newRoot)) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// transition is the state of one check: the leaves' next pointers as updated by the inserts.
type transition struct {
	p                *TransitionProof
	oldSize, newSize uint64
	used             []bool           // nodes used for the old root
	changedNext      [][hashSize]byte // next of each changed leaf, updated by the inserts
	insertedNext     [][hashSize]byte // next of each inserted leaf, updated by later inserts
}

// nothing: a proof without changes claims the heads did not change.
func (c *transition) nothing() bool {
	return len(c.p.Changed) == 0 && len(c.p.Inserted) == 0 && len(c.p.Nodes) == 0
}

func (c *transition) shape(tipSize, claimedSize uint64) error {
	p := c.p
	switch {
	case c.oldSize < 1:
		return refuse(1, "old_size must be at least 1 (the sentinel)")
	case c.newSize != c.oldSize+uint64(len(p.Inserted)):
		return refuse(1, "new_size is not old_size plus the inserted count (%d != %d + %d)", c.newSize, c.oldSize, len(p.Inserted))
	case c.oldSize != tipSize:
		return refuse(1, "old_size is not the tip's heads size (%d, the tip has %d)", c.oldSize, tipSize)
	case c.newSize != claimedSize:
		return refuse(1, "new_size is not the window's heads size (%d, the window has %d)", c.newSize, claimedSize)
	}
	return nil
}

func (c *transition) order() error {
	p := c.p
	for i := 1; i < len(p.Changed); i++ {
		if p.Changed[i].Index.V <= p.Changed[i-1].Index.V {
			return refuse(2, "changed leaves repeat or are out of order")
		}
	}
	if n := len(p.Changed); n > 0 && p.Changed[n-1].Index.V >= c.oldSize {
		return refuse(2, "changed leaves repeat or are out of order: index %d is past the old tree", p.Changed[n-1].Index.V)
	}
	for i := 1; i < len(p.Inserted); i++ {
		if bytes.Compare(p.Inserted[i].Key.B[:], p.Inserted[i-1].Key.B[:]) <= 0 {
			return refuse(2, "inserted keys repeat or are out of order")
		}
	}
	if len(p.Inserted) > 0 && p.Inserted[0].Key.B == zeroKey {
		return refuse(2, "inserted keys repeat or are out of order: the zero key is reserved")
	}
	for i := 1; i < len(p.Nodes); i++ {
		if p.Nodes[i].Start.V <= p.Nodes[i-1].Start.V {
			return refuse(2, "nodes repeat or are out of order")
		}
	}
	return nil
}

func (c *transition) oldRoot(want *[hashSize]byte) error {
	if c.nothing() {
		return nil // checked by newRoot: the root must not change
	}
	p := c.p
	known := make([]uint64, len(p.Changed))
	leaves := make([][hashSize]byte, len(p.Changed))
	for i := range p.Changed {
		l := &p.Changed[i]
		known[i] = l.Index.V
		leaves[i] = indexedLeafHash(&l.Key.B, &l.Next.B, l.Size.V, &l.Root.B)
	}
	c.used = make([]bool, len(p.Nodes))
	t := &partialTree{known: known, leaves: leaves, nodes: p.Nodes, used: c.used}
	got, err := t.mth(0, c.oldSize, 0, len(known))
	if err != nil {
		return err
	}
	if got != *want {
		return refuse(3, "the old heads root is not the tip's")
	}
	for i, u := range c.used {
		if !u {
			return refuse(3, "node [%d, %d] is not used", p.Nodes[i].Start.V, p.Nodes[i].Width.V)
		}
	}
	return nil
}

func (c *transition) logsGrew() error {
	for i := range c.p.Changed {
		if err := logGrew(&c.p.Changed[i]); err != nil {
			return err
		}
	}
	return nil
}

func logGrew(l *ChangedLeaf) error {
	key := hex.EncodeToString(l.Key.B[:])
	switch {
	case l.NewSize.V < l.Size.V:
		return refuse(4, "the log of key %s shrank from %d to %d records", key, l.Size.V, l.NewSize.V)
	case l.NewSize.V == l.Size.V && (l.NewRoot.B != l.Root.B || len(l.Consistency) > 0):
		return refuse(4, "the log of key %s changed without growing", key)
	case l.Index.V == 0 && l.NewSize.V != 0:
		return refuse(4, "the sentinel leaf cannot hold a log")
	case l.NewSize.V == l.Size.V:
		return nil
	case l.Size.V == 0:
		if len(l.Consistency) > 0 {
			return refuse(4, "the consistency proof of key %s fails: a log of size 0 takes an empty proof", key)
		}
		return nil
	}
	proof := make([][]byte, len(l.Consistency))
	for j := range l.Consistency {
		proof[j] = l.Consistency[j].B[:]
	}
	if err := VerifyConsistency(l.Size.V, l.NewSize.V, l.Root.B[:], l.NewRoot.B[:], proof); err != nil {
		return refuse(4, "the consistency proof of key %s fails: %v", key, err)
	}
	return nil
}

// changedAt is the position in changed of the leaf at index (false: not changed).
func (c *transition) changedAt(index uint64) (int, bool) {
	ch := c.p.Changed
	lo, hi := 0, len(ch)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ch[m].Index.V < index {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(ch) && ch[lo].Index.V == index
}

func (c *transition) insertsNew() error {
	p := c.p
	c.changedNext = make([][hashSize]byte, len(p.Changed))
	for i := range p.Changed {
		c.changedNext[i] = p.Changed[i].Next.B
	}
	c.insertedNext = make([][hashSize]byte, len(p.Inserted))
	for j := range p.Inserted {
		x := &p.Inserted[j]
		lowKey, lowNext, err := c.low(j)
		if err != nil {
			return err
		}
		key := &x.Key.B
		if bytes.Compare(lowKey[:], key[:]) >= 0 || (*lowNext != zeroKey && bytes.Compare(key[:], lowNext[:]) >= 0) {
			return refuse(5, "key %x is not new: low leaf %d does not bracket it", key[:], x.Low.V)
		}
		if x.Size.V < 1 {
			return refuse(5, "a new subject's log must hold a record (key %x)", key[:])
		}
		c.insertedNext[j] = *lowNext // the new leaf's next, until a later insert takes it as its low
		*lowNext = *key
	}
	return nil
}

// low is the key and (updatable) next pointer of the j-th insert's low leaf.
func (c *transition) low(j int) (*[hashSize]byte, *[hashSize]byte, error) {
	low := c.p.Inserted[j].Low.V
	if low >= c.oldSize {
		if k := low - c.oldSize; k < uint64(j) {
			return &c.p.Inserted[k].Key.B, &c.insertedNext[k], nil
		}
	} else if i, ok := c.changedAt(low); ok {
		return &c.p.Changed[i].Key.B, &c.changedNext[i], nil
	}
	return nil, nil, refuse(5, "low leaf %d is not in the proof", low)
}

func (c *transition) newRoot(oldRoot, want *[hashSize]byte) error {
	if c.nothing() {
		if *want != *oldRoot {
			return refuse(6, "the new heads root does not follow: a proof without changes keeps the root")
		}
		return nil
	}
	p := c.p
	n := len(p.Changed) + len(p.Inserted)
	known := make([]uint64, 0, n)
	leaves := make([][hashSize]byte, 0, n)
	for i := range p.Changed {
		l := &p.Changed[i]
		known = append(known, l.Index.V)
		leaves = append(leaves, indexedLeafHash(&l.Key.B, &c.changedNext[i], l.NewSize.V, &l.NewRoot.B))
	}
	for j := range p.Inserted {
		x := &p.Inserted[j]
		known = append(known, c.oldSize+uint64(j))
		leaves = append(leaves, indexedLeafHash(&x.Key.B, &c.insertedNext[j], x.Size.V, &x.Root.B))
	}
	t := &partialTree{known: known, leaves: leaves, nodes: p.Nodes, used: c.used, reuse: true}
	got, err := t.mth(0, c.newSize, 0, n)
	if err != nil {
		return err
	}
	if got != *want {
		return refuse(6, "the new heads root does not follow")
	}
	return nil
}

// partialTree computes MTH over a range from its known leaves and, for every range without one,
// subtrees taken from the proof's nodes.
type partialTree struct {
	known  []uint64         // indexes of the known leaves, ascending
	leaves [][hashSize]byte // their leaf hashes
	nodes  []ProofNode      // by start, ascending
	used   []bool
	reuse  bool // only nodes already used may be taken (step 6)
}

// mth is MTH over [lo, hi), whose known leaves are known[a:b].
func (t *partialTree) mth(lo, hi uint64, a, b int) ([hashSize]byte, error) {
	w := hi - lo
	if a == b && isPowerOfTwo(w) {
		return t.node(lo, w)
	}
	if w == 1 {
		return t.leaves[a], nil
	}
	split := lo + splitPoint(w)
	m, j := a, b // m: the first known leaf at or after split
	for m < j {
		mid := int(uint(m+j) >> 1)
		if t.known[mid] < split {
			m = mid + 1
		} else {
			j = mid
		}
	}
	left, err := t.mth(lo, split, a, m)
	if err != nil {
		return left, err
	}
	right, err := t.mth(split, hi, m, b)
	if err != nil {
		return right, err
	}
	return NodeHash(&left, &right), nil
}

func (t *partialTree) node(start, width uint64) ([hashSize]byte, error) {
	lo, hi := 0, len(t.nodes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.nodes[m].Start.V < start {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(t.nodes) || t.nodes[lo].Start.V != start || t.nodes[lo].Width.V != width {
		check := 3
		if t.reuse {
			check = 6
		}
		return [hashSize]byte{}, refuse(check, "the proof lacks node [%d, %d]", start, width)
	}
	if t.reuse && !t.used[lo] {
		return [hashSize]byte{}, refuse(6, "node [%d, %d] was not used for the old root", start, width)
	}
	t.used[lo] = true
	return t.nodes[lo].Hash.B, nil
}
