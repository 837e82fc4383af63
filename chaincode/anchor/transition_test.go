package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// scenario: 12 subjects; leaves 3, 7 and 10 grow; four subjects are new, one of them with a key below
// every other (so the sentinel is a low leaf and changes).
func scenario() (old, next *heads) {
	var entries []subject
	for i := 0; i < 12; i++ {
		entries = append(entries, logged(testKey(fmt.Sprint("s", i)), testLog(fmt.Sprint("log", i), 20), 1+i%5))
	}
	old = newHeads(nil).grow(nil, entries) // by key: the heads one window can create from the sentinel
	grown := func(i, by int) subject {
		s := old.subjects[i]
		return logged(s.key, s.log, int(s.size)+by)
	}
	low := [32]byte{31: 1}
	inserts := []subject{logged(low, testLog("low", 3), 3)}
	for i := 0; i < 3; i++ {
		inserts = append(inserts, logged(testKey(fmt.Sprint("n", i)), testLog(fmt.Sprint("new", i), 5), 1+i))
	}
	return old, old.grow(map[int]subject{3: grown(3, 2), 7: grown(7, 5), 10: grown(10, 1)}, inserts)
}

type claim struct {
	oldRoot, newRoot [32]byte
	oldSize, newSize uint64
}

func check(c claim, p *TransitionProof) error {
	return CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, mustJSON(p))
}

// changedPos is the position in p.Changed of leaf index (-1: none).
func changedPos(p *TransitionProof, index uint64) int {
	for i, c := range p.Changed {
		if c.Index.V == index {
			return i
		}
	}
	return -1
}

func TestCheckTransitionRefusesEachFailure(t *testing.T) {
	old, next := scenario()
	grownAt := func(p *TransitionProof) int { return changedPos(p, 7) }
	unchanged := func(p *TransitionProof) uint64 { // an old leaf not in the proof
		for i := uint64(1); ; i++ {
			if changedPos(p, i) < 0 {
				return i
			}
		}
	}
	cases := []struct {
		name  string
		edit  func(p *TransitionProof, c *claim)
		check int
		want  string
	}{
		{"valid", func(*TransitionProof, *claim) {}, -1, ""},
		{"old_size 0", func(p *TransitionProof, c *claim) { p.OldSize.V, c.oldSize = 0, 0 }, 1, "old_size must be at least 1"},
		{"new_size not old plus inserted", func(p *TransitionProof, c *claim) { p.NewSize.V++; c.newSize++ }, 1,
			"new_size is not old_size plus the inserted count"},
		{"old_size not the tip's", func(p *TransitionProof, c *claim) { c.oldSize++ }, 1, "old_size is not the tip's heads size"},
		{"new_size not the claimed", func(p *TransitionProof, c *claim) { c.newSize-- }, 1, "new_size is not the window's heads size"},
		{"changed leaves repeat", func(p *TransitionProof, c *claim) {
			p.Changed = append(p.Changed[:2], p.Changed[1:]...)
		}, 2, "changed leaves repeat or are out of order"},
		{"changed leaves out of order", func(p *TransitionProof, c *claim) {
			p.Changed[1], p.Changed[2] = p.Changed[2], p.Changed[1]
		}, 2, "changed leaves repeat or are out of order"},
		{"changed leaf past the old tree", func(p *TransitionProof, c *claim) {
			p.Changed[len(p.Changed)-1].Index.V = p.OldSize.V
		}, 2, "is past the old tree"},
		{"inserted keys repeat", func(p *TransitionProof, c *claim) {
			p.Inserted = append(p.Inserted[:2], p.Inserted[1:]...)
			p.NewSize.V++
			c.newSize++
		}, 2, "inserted keys repeat or are out of order"},
		{"inserted keys out of order", func(p *TransitionProof, c *claim) {
			p.Inserted[1], p.Inserted[2] = p.Inserted[2], p.Inserted[1]
		}, 2, "inserted keys repeat or are out of order"},
		{"inserted zero key", func(p *TransitionProof, c *claim) { p.Inserted[0].Key.B = zeroKey }, 2, "the zero key is reserved"},
		{"nodes out of order", func(p *TransitionProof, c *claim) { p.Nodes[0], p.Nodes[1] = p.Nodes[1], p.Nodes[0] }, 2,
			"nodes repeat or are out of order"},
		{"wrong old root", func(p *TransitionProof, c *claim) { c.oldRoot[0] ^= 1 }, 3, "the old heads root is not the tip's"},
		{"forged low leaf", func(p *TransitionProof, c *claim) {
			l := &p.Changed[changedPos(p, p.Inserted[len(p.Inserted)-1].Low.V)]
			l.Next.B = [32]byte{0: 0xff} // would bracket any key
		}, 3, "the old heads root is not the tip's"},
		{"missing node", func(p *TransitionProof, c *claim) {
			p.Nodes = append(p.Nodes[:1], p.Nodes[2:]...)
		}, 3, fmt.Sprintf("the proof lacks node [%d, %d]", proveScenario().Nodes[1].Start.V, proveScenario().Nodes[1].Width.V)},
		{"unused node", func(p *TransitionProof, c *claim) {
			extra := ProofNode{Start: Uint{V: 7}, Width: Uint{V: 1}}
			at := 0
			for at < len(p.Nodes) && p.Nodes[at].Start.V < 7 {
				at++
			}
			p.Nodes = append(p.Nodes[:at], append([]ProofNode{extra}, p.Nodes[at:]...)...)
		}, 3, "node [7, 1] is not used"},
		{"shrunk log", func(p *TransitionProof, c *claim) { p.Changed[grownAt(p)].NewSize.V = 0 }, 4,
			fmt.Sprintf("the log of key %x shrank from %d to 0 records", old.subjects[7].key, old.subjects[7].size)},
		{"changed without growing", func(p *TransitionProof, c *claim) {
			l := &p.Changed[grownAt(p)]
			l.NewSize, l.Consistency = l.Size, []Hash{}
		}, 4, "changed without growing"},
		{"equal sizes with consistency hashes", func(p *TransitionProof, c *claim) {
			l := &p.Changed[grownAt(p)]
			l.NewSize, l.NewRoot = l.Size, l.Root
		}, 4, "changed without growing"},
		{"sentinel given a log", func(p *TransitionProof, c *claim) {
			p.Changed[0].NewSize.V = 1
			p.Changed[0].NewRoot.B[0] ^= 1
		}, 4, "the sentinel leaf cannot hold a log"},
		{"bad consistency proof", func(p *TransitionProof, c *claim) {
			p.Changed[grownAt(p)].Consistency[0].B[5] ^= 1
		}, 4, "the consistency proof of key " + hex.EncodeToString(old.subjects[7].key[:]) + " fails"},
		{"new root not the consistency proof's", func(p *TransitionProof, c *claim) {
			p.Changed[grownAt(p)].NewRoot.B[5] ^= 1
		}, 4, "does not lead to the new root"},
		{"low leaf not in the proof", func(p *TransitionProof, c *claim) { p.Inserted[1].Low.V = unchanged(p) }, 5,
			"is not in the proof"},
		{"low leaf a later insert", func(p *TransitionProof, c *claim) { p.Inserted[1].Low.V = p.OldSize.V + 1 }, 5,
			fmt.Sprintf("low leaf %d is not in the proof", old.size()+1)},
		{"a new subject that already existed", func(p *TransitionProof, c *claim) {
			for _, l := range p.Changed {
				if l.Index.V > 0 && l.Next.B != zeroKey {
					p.Inserted = []InsertedLeaf{{Key: l.Next, Low: l.Index, Size: Uint{V: 1}, Root: Hash{B: emptyRoot}}}
					p.NewSize.V, c.newSize = p.OldSize.V+1, p.OldSize.V+1
					return
				}
			}
			panic("no changed leaf with a successor")
		}, 5, "is not new: low leaf"},
		{"a new subject without a record", func(p *TransitionProof, c *claim) { p.Inserted[2].Size.V = 0 }, 5,
			"a new subject's log must hold a record"},
		{"wrong new root", func(p *TransitionProof, c *claim) { c.newRoot[0] ^= 1 }, 6, "the new heads root does not follow"},
		{"an insert's head changed", func(p *TransitionProof, c *claim) { p.Inserted[2].Size.V++ }, 6,
			"the new heads root does not follow"},
		{"old root wrong and a log shrunk: the root is named first", func(p *TransitionProof, c *claim) {
			c.oldRoot[0] ^= 1
			p.Changed[grownAt(p)].NewSize.V = 0
		}, 3, "the old heads root is not the tip's"},
	}
	for _, tc := range cases {
		p := prove(old, next)
		c := claim{old.root(), next.root(), old.size(), next.size()}
		tc.edit(p, &c)
		err := check(c, p)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var te *TransitionError
		if !errors.As(err, &te) || te.Check != tc.check || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want check %d naming %q", tc.name, err, tc.check, tc.want)
		}
	}
}

func proveScenario() *TransitionProof { return prove(scenario()) }

func TestCheckTransitionRefusesMalformedProofs(t *testing.T) {
	old, next := scenario()
	c := claim{old.root(), next.root(), old.size(), next.size()}
	good := string(mustJSON(prove(old, next)))
	key := hex.EncodeToString(next.subjects[next.size()-1].key[:])
	cases := []struct{ name, proof, want string }{
		{"not JSON", "{", "not JSON"},
		{"empty", "", "not JSON"},
		{"null", "null", "expected exactly the members"},
		{"a list", "[]", "wrong type"},
		{"unknown member", strings.Replace(good, `"nodes":`, `"extra":1,"nodes":`, 1), "expected exactly the members"},
		{"unknown member in an insert", strings.Replace(good, `"low":`, `"next":"`+key+`","low":`, 1), "expected exactly the members"},
		{"member in another case", strings.Replace(good, `"old_size":`, `"Old_size":`, 1), "expected exactly the members"},
		{"missing member", strings.Replace(good, `"old_size":`, `"x_size":`, 1), "expected exactly the members"},
		{"missing list", `{"old_size":1,"new_size":1,"changed":[],"inserted":[]}`, "expected exactly the members"},
		{"missing member of a changed leaf", strings.Replace(good, `"new_root":`, `"root":`, 1), "changed[0]: expected exactly"},
		{"trailing data", good + " {}", "data after"},
		{"uppercase hex", strings.Replace(good, key, strings.ToUpper(key), 1), "must be 64 lowercase hex characters"},
		{"short hex", strings.Replace(good, key, key[:62], 1), "must be 64 lowercase hex characters"},
		{"a fractional index", strings.Replace(good, `"index":0`, `"index":0.5`, 1), "changed[0].index must be an integer"},
		{"a negative size", strings.Replace(good, `"old_size":13`, `"old_size":-13`, 1), "old_size must be an integer"},
		{"a string size", strings.Replace(good, `"old_size":13`, `"old_size":"13"`, 1), "old_size must be an integer"},
		{"a node of two members", strings.Replace(good, `"nodes":[[`, `"nodes":[[1],[`, 1), "nodes[0] must be [start, width, hash]"},
		{"a node holding a list", strings.Replace(good, `"nodes":[[`, `"nodes":[[[1],`, 1), "nodes[0] must be [start, width, hash]"},
		{"an index beyond 2^32", strings.Replace(good, `"index":0`, `"index":4294967297`, 1), "must be an integer from 0 to 4294967296"},
		{"a long consistency proof", strings.Replace(good, `"consistency":[]`, `"consistency":["`+strings.Repeat(key+`","`, 128)+key+`"]`, 1),
			"holds more than 128 entries"},
	}
	for _, tc := range cases {
		err := CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, []byte(tc.proof))
		var te *TransitionError
		if !errors.As(err, &te) || te.Check != 0 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a form error naming %q", tc.name, err, tc.want)
		}
	}
	// Each list holds at most MaxProofEntries (§14.6): one more is refused by its count, before any entry
	// is read; at the limit the count passes and the first malformed node is named instead.
	nodes := len(prove(old, next).Nodes)
	for extra, want := range map[int]string{
		MaxProofEntries - nodes + 1: "transition proof: nodes holds more than 1,000,000 entries",
		MaxProofEntries - nodes:     "nodes[0] must be [start, width, hash]",
	} {
		long := strings.Replace(good, `"nodes":[`, `"nodes":[`+strings.Repeat("[],", extra), 1)
		err := CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, []byte(long))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%d nodes: got %v, want %q", nodes+extra, err, want)
		}
	}
	escaped := strings.Replace(good, key, `\u00`+fmt.Sprintf("%x", key[0])+key[1:], 1)
	if err := CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, []byte(escaped)); err != nil {
		t.Errorf("a hash with an escaped character: %v", err)
	}
	if err := CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, []byte(" \n"+good+"\n")); err != nil {
		t.Errorf("whitespace around the proof: %v", err)
	}
}

func TestCheckTransitionWithoutChanges(t *testing.T) {
	empty := EmptyHeadsRoot()
	none := []byte(`{"old_size":1,"new_size":1,"changed":[],"inserted":[],"nodes":[]}`)
	if err := CheckTransition(empty[:], 1, empty[:], 1, none); err != nil {
		t.Fatalf("the lane without a domain: %v", err)
	}
	other := testKey("other")
	if err := CheckTransition(empty[:], 1, other[:], 1, none); err == nil || !strings.Contains(err.Error(), "keeps the root") {
		t.Fatalf("a changed root without a change: %v", err)
	}
	old, _ := scenario()
	p := prove(old, old.grow(nil, nil))
	if len(p.Nodes) == 0 || len(p.Changed) != 0 {
		t.Fatalf("expected nodes only: %+v", p)
	}
	r := old.root()
	if err := CheckTransition(r[:], old.size(), r[:], old.size(), mustJSON(p)); err != nil {
		t.Fatalf("unchanged heads given as nodes: %v", err)
	}
	if err := CheckTransition(r[:], old.size(), other[:], old.size(), mustJSON(p)); err == nil {
		t.Fatal("another root accepted for unchanged heads")
	}
}

func TestCheckTransitionFromGenesis(t *testing.T) {
	genesis := newHeads(nil)
	if genesis.root() != EmptyHeadsRoot() || genesis.size() != 1 {
		t.Fatal("the builder's sentinel is not the chaincode's")
	}
	var inserts []subject
	for i := 0; i < 5; i++ {
		inserts = append(inserts, logged(testKey(fmt.Sprint("g", i)), testLog(fmt.Sprint("g", i), 4), 1+i%4))
	}
	next := genesis.grow(nil, inserts)
	c := claim{genesis.root(), next.root(), 1, next.size()}
	if err := check(c, prove(genesis, next)); err != nil {
		t.Fatal(err)
	}
}

// TestCheckTransitionRandom: honest proofs between random heads pass; any hash changed fails.
func TestCheckTransitionRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 120; round++ {
		var entries []subject
		for i := rng.Intn(40); i > 0; i-- {
			entries = append(entries, logged(testKey(fmt.Sprint(round, "s", i)), testLog(fmt.Sprint(round, i), 16), 1+rng.Intn(8)))
		}
		old := newHeads(entries)
		updates := map[int]subject{}
		for i := 1; i < len(old.subjects); i++ {
			if s := old.subjects[i]; rng.Intn(3) == 0 {
				updates[i] = logged(s.key, s.log, int(s.size)+rng.Intn(int(16-s.size)+1))
			}
		}
		var inserts []subject
		for i := rng.Intn(6); i > 0; i-- {
			inserts = append(inserts, logged(testKey(fmt.Sprint(round, "n", i)), testLog(fmt.Sprint(round, "n", i), 4), 1+rng.Intn(4)))
		}
		next := old.grow(updates, inserts)
		c := claim{old.root(), next.root(), old.size(), next.size()}
		proof := mustJSON(prove(old, next))
		if err := CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, proof); err != nil {
			t.Fatalf("round %d: honest proof refused: %v", round, err)
		}
		for try := 0; try < 10; try++ {
			bad := tamperHash(rng, proof)
			if bad == nil {
				break
			}
			if CheckTransition(c.oldRoot[:], c.oldSize, c.newRoot[:], c.newSize, bad) == nil {
				t.Fatalf("round %d: tampered proof accepted: %s", round, bad)
			}
		}
	}
}

// tamperHash changes one hex digit of one hash in the proof (nil: the proof holds none).
func tamperHash(rng *rand.Rand, proof []byte) []byte {
	var starts []int
	for i := 0; i+66 <= len(proof); i++ {
		if proof[i] == '"' && proof[i+65] == '"' && isHex(proof[i+1:i+65]) {
			starts = append(starts, i+1)
		}
	}
	if len(starts) == 0 {
		return nil
	}
	bad := bytes.Clone(proof)
	at := starts[rng.Intn(len(starts))] + rng.Intn(64)
	if bad[at] == '0' {
		bad[at] = '1'
	} else {
		bad[at] = '0'
	}
	return bad
}

func isHex(b []byte) bool {
	for _, c := range b {
		if hexDigit[c] == 0xff {
			return false
		}
	}
	return true
}
