package main

// The wire format of a transition proof (spec §14.6): its JSON parsed strictly (lowercase hex, plain
// digits, no repeated or unknown members) and each list checked against its bounds before any hashing.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

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
