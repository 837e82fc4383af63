package main

// The indexed heads tree (spec §14.5) and its transition proofs (§14.6): a proof that every subject
// log of the lane tip's heads only grew, every new subject was absent, and every other leaf is unchanged.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// Uint is an integer member of a transition proof.
type Uint struct {
	V        uint64
	set, bad bool
}

// UnmarshalJSON takes a JSON integer; anything else is remembered as bad (refused with its position).
func (u *Uint) UnmarshalJSON(b []byte) error {
	u.set = true
	u.V, u.bad = parseDigits(b)
	return nil
}

// MarshalJSON writes the integer.
func (u Uint) MarshalJSON() ([]byte, error) { return strconv.AppendUint(nil, u.V, 10), nil }

func parseDigits(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, true
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, true
		}
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	return n, err != nil
}

// Hash is a SHA-256 digest member of a transition proof: 64 lowercase hex characters.
type Hash struct {
	B        [hashSize]byte
	set, bad bool
}

// UnmarshalJSON takes a JSON string of 64 lowercase hex characters; anything else is remembered as bad.
func (h *Hash) UnmarshalJSON(b []byte) error {
	h.set = true
	if bytes.IndexByte(b, '\\') >= 0 { // an escaped string: rare, take the slow path
		var s string
		if json.Unmarshal(b, &s) != nil {
			h.bad = true
			return nil
		}
		b = []byte(strconv.Quote(s))
	}
	h.bad = len(b) != 2+2*hashSize || b[0] != '"' || !decodeLowerHex(h.B[:], b[1:len(b)-1])
	return nil
}

// MarshalJSON writes the digest as hex.
func (h Hash) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2+2*hashSize)
	out = append(out, '"')
	out = hex.AppendEncode(out, h.B[:])
	return append(out, '"'), nil
}

// hexDigit maps a lowercase hex digit to its value, anything else to 0xff.
var hexDigit = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

func decodeLowerHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	bad := byte(0)
	for i := range dst {
		hi, lo := hexDigit[src[2*i]], hexDigit[src[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// ProofNode is a subtree of the old tree holding no changed leaf: [start, width, hash].
type ProofNode struct {
	Start, Width Uint
	Hash         Hash
	set, bad     bool
}

// UnmarshalJSON takes [start, width, hash]; another shape is remembered as bad.
func (n *ProofNode) UnmarshalJSON(b []byte) error {
	n.set = true
	rest, ok := bytes.CutPrefix(bytes.TrimSpace(b), []byte("["))
	var parts [3][]byte
	for k := 0; ok && k < 3; k++ {
		parts[k], rest, ok = nextScalar(rest, k == 2)
	}
	if !ok || len(bytes.TrimSpace(rest)) != 0 {
		n.bad = true
		return nil
	}
	_ = n.Start.UnmarshalJSON(parts[0])
	_ = n.Width.UnmarshalJSON(parts[1])
	return n.Hash.UnmarshalJSON(parts[2])
}

// MarshalJSON writes [start, width, hash].
func (n ProofNode) MarshalJSON() ([]byte, error) {
	h, _ := n.Hash.MarshalJSON()
	return fmt.Appendf(nil, "[%d,%d,%s]", n.Start.V, n.Width.V, h), nil
}

// nextScalar takes one scalar element of a valid JSON array and its separator (']' after the last),
// answering the element and the rest; false: the array is not of that shape.
func nextScalar(b []byte, last bool) ([]byte, []byte, bool) {
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			return nil, nil, false
		case c == ',' || c == ']':
			if (c == ']') != last {
				return nil, nil, false
			}
			return bytes.TrimSpace(b[:i]), b[i+1:], i > 0
		}
	}
	return nil, nil, false
}

// ChangedLeaf is a leaf of the old tree that changes: its old value and its log's new head.
type ChangedLeaf struct {
	Index       Uint   `json:"index"`
	Key         Hash   `json:"key"`
	Next        Hash   `json:"next"`
	Size        Uint   `json:"size"`
	Root        Hash   `json:"root"`
	NewSize     Uint   `json:"new_size"`
	NewRoot     Hash   `json:"new_root"`
	Consistency []Hash `json:"consistency"`
}

// InsertedLeaf is a new subject: its key, the index of its low leaf and its log's head.
type InsertedLeaf struct {
	Key  Hash `json:"key"`
	Low  Uint `json:"low"`
	Size Uint `json:"size"`
	Root Hash `json:"root"`
}

// TransitionProof is the JSON transition proof of §14.6.
type TransitionProof struct {
	OldSize  Uint           `json:"old_size"`
	NewSize  Uint           `json:"new_size"`
	Changed  []ChangedLeaf  `json:"changed"`
	Inserted []InsertedLeaf `json:"inserted"`
	Nodes    []ProofNode    `json:"nodes"`
}

var memberNames = map[string]bool{
	"old_size": true, "new_size": true, "changed": true, "inserted": true, "nodes": true, "index": true,
	"key": true, "next": true, "size": true, "root": true, "new_root": true, "consistency": true, "low": true,
}

const (
	proofMembers    = "changed, inserted, new_size, nodes, old_size"
	changedMembers  = "consistency, index, key, new_root, new_size, next, root, size"
	insertedMembers = "key, low, root, size"
)

// ParseTransitionProof decodes a transition proof, refusing unknown or missing members and bad values.
func ParseTransitionProof(data []byte) (*TransitionProof, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p TransitionProof
	if err := dec.Decode(&p); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF) || !json.Valid(data):
			return nil, refuse(0, "transition proof: not JSON (%v)", err)
		case errors.As(err, &typeErr):
			return nil, refuse(0, "transition proof: %s is of the wrong type: expected exactly the form of §14.6 (%v)",
				typeErr.Field, err)
		}
		return nil, refuse(0, "transition proof: expected exactly the members of §14.6 (%v)", err)
	}
	if !atEOF(dec) {
		return nil, refuse(0, "transition proof: data after the JSON object")
	}
	if err := checkMemberNames(data); err != nil {
		return nil, err
	}
	return &p, p.validate()
}

// checkMemberNames refuses member names that are not §14.6's exactly (the decoder ignores case).
func checkMemberNames(data []byte) error {
	for i := 0; i < len(data); {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return nil
		}
		s := i + q + 1
		e := s
		for {
			r := bytes.IndexByte(data[e:], '"')
			if r < 0 {
				return nil
			}
			e += r
			if !escaped(data, s, e) {
				break
			}
			e++
		}
		k := e + 1
		for k < len(data) && (data[k] == ' ' || data[k] == '\t' || data[k] == '\n' || data[k] == '\r') {
			k++
		}
		if k < len(data) && data[k] == ':' && !memberNames[string(data[s:e])] {
			return refuse(0, "transition proof: member %q: expected exactly the members of §14.6", data[s:e])
		}
		i = e + 1
	}
	return nil
}

// escaped: the quote at e is preceded by an odd number of backslashes (after s).
func escaped(data []byte, s, e int) bool {
	n := 0
	for j := e - 1; j >= s && data[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

func checkUint(u Uint, where string, top uint64) error {
	if u.bad || u.V > top {
		return refuse(0, "%s must be an integer from 0 to %d", where, top)
	}
	return nil
}

func checkLen(n int, where string, limit int) error {
	if n > limit {
		return refuse(0, "%s holds more than %s entries", where, withCommas(limit))
	}
	return nil
}

func withCommas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func (p *TransitionProof) validate() error {
	if !p.OldSize.set || !p.NewSize.set || p.Changed == nil || p.Inserted == nil || p.Nodes == nil {
		return refuse(0, "transition proof: expected exactly the members %s", proofMembers)
	}
	if err := checkUint(p.OldSize, "transition proof: old_size", MaxTreeSize); err != nil {
		return err
	}
	if err := checkUint(p.NewSize, "transition proof: new_size", MaxTreeSize); err != nil {
		return err
	}
	for _, l := range []struct {
		n    int
		name string
	}{{len(p.Changed), "changed"}, {len(p.Inserted), "inserted"}, {len(p.Nodes), "nodes"}} {
		if err := checkLen(l.n, "transition proof: "+l.name, MaxProofEntries); err != nil {
			return err
		}
	}
	for i := range p.Changed {
		if err := p.Changed[i].validate(i); err != nil {
			return err
		}
	}
	for i := range p.Inserted {
		if err := p.Inserted[i].validate(i); err != nil {
			return err
		}
	}
	for i := range p.Nodes {
		if err := p.Nodes[i].validate(i); err != nil {
			return err
		}
	}
	return nil
}

// badUint and badHash name a bad member of element i of a list (messages are built only on failure).
func badUint(list string, i int, member string, top uint64) error {
	return refuse(0, "transition proof: %s[%d]%s must be an integer from 0 to %d", list, i, member, top)
}

func badHash(list string, i int, member string) error {
	return refuse(0, "transition proof: %s[%d]%s must be 64 lowercase hex characters", list, i, member)
}

const maxLogSize = 1<<64 - 1

func (c *ChangedLeaf) validate(i int) error {
	switch {
	case !c.Index.set || !c.Key.set || !c.Next.set || !c.Size.set || !c.Root.set || !c.NewSize.set ||
		!c.NewRoot.set || c.Consistency == nil:
		return refuse(0, "transition proof: changed[%d]: expected exactly the members %s", i, changedMembers)
	case len(c.Consistency) > MaxConsistency:
		return checkLen(len(c.Consistency), fmt.Sprintf("transition proof: changed[%d].consistency", i), MaxConsistency)
	case c.Index.bad || c.Index.V > MaxTreeSize:
		return badUint("changed", i, ".index", MaxTreeSize)
	case c.Key.bad:
		return badHash("changed", i, ".key")
	case c.Next.bad:
		return badHash("changed", i, ".next")
	case c.Size.bad:
		return badUint("changed", i, ".size", maxLogSize)
	case c.Root.bad:
		return badHash("changed", i, ".root")
	case c.NewSize.bad:
		return badUint("changed", i, ".new_size", maxLogSize)
	case c.NewRoot.bad:
		return badHash("changed", i, ".new_root")
	}
	for j, h := range c.Consistency {
		if !h.set || h.bad {
			return badHash("changed", i, fmt.Sprintf(".consistency[%d]", j))
		}
	}
	return nil
}

func (x *InsertedLeaf) validate(i int) error {
	switch {
	case !x.Key.set || !x.Low.set || !x.Size.set || !x.Root.set:
		return refuse(0, "transition proof: inserted[%d]: expected exactly the members %s", i, insertedMembers)
	case x.Key.bad:
		return badHash("inserted", i, ".key")
	case x.Low.bad || x.Low.V > MaxTreeSize:
		return badUint("inserted", i, ".low", MaxTreeSize)
	case x.Size.bad:
		return badUint("inserted", i, ".size", maxLogSize)
	case x.Root.bad:
		return badHash("inserted", i, ".root")
	}
	return nil
}

func (n *ProofNode) validate(i int) error {
	switch {
	case !n.set || n.bad:
		return refuse(0, "transition proof: nodes[%d] must be [start, width, hash]", i)
	case n.Start.bad || n.Start.V > MaxTreeSize:
		return badUint("nodes", i, " start", MaxTreeSize)
	case n.Width.bad || n.Width.V > MaxTreeSize:
		return badUint("nodes", i, " width", MaxTreeSize)
	case n.Hash.bad:
		return badHash("nodes", i, " hash")
	}
	return nil
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
