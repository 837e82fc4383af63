package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// memLedger is an in-memory Ledger for unit tests; the real peer is exercised by the
// Python network tests.
type memLedger struct {
	state     map[string][]byte
	events    map[string][]byte
	params    map[string][]byte // key-level endorsement policies
	txID      string
	txTime    time.Time
	creator   []byte
	puts      int
	paramSets int // SetStateValidationParameter calls
}

var txTime = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// newLedger is a channel whose writer both organisations approved, invoked by that writer.
func newLedger() *memLedger {
	l := &memLedger{
		state: map[string][]byte{}, events: map[string][]byte{}, params: map[string][]byte{}, txID: "tx1",
		txTime: txTime, creator: writerID.creator,
	}
	l.state[writerKey] = []byte(`{"approvals":{"HospitalsMSP":"` + writerID.fp + `","InsurersMSP":"` + writerID.fp + `"}}`)
	return l
}

func (m *memLedger) GetState(k string) ([]byte, error) { return m.state[k], nil }
func (m *memLedger) PutState(k string, v []byte) error {
	m.state[k] = v
	m.puts++
	return nil
}
func (m *memLedger) SetEvent(n string, p []byte) error { m.events[n] = p; return nil }
func (m *memLedger) GetTxID() string                   { return m.txID }
func (m *memLedger) GetChannelID() string              { return "insurance" }
func (m *memLedger) GetTxTimestamp() (*timestamppb.Timestamp, error) {
	return timestamppb.New(m.txTime), nil
}
func (m *memLedger) GetCreator() ([]byte, error) { return m.creator, nil }
func (m *memLedger) SetStateValidationParameter(k string, ep []byte) error {
	m.params[k] = ep
	m.paramSets++
	return nil
}
func (m *memLedger) GetStateValidationParameter(k string) ([]byte, error) { return m.params[k], nil }

const (
	root1 = "1111111111111111111111111111111111111111111111111111111111111111"
	root2 = "2222222222222222222222222222222222222222222222222222222222222222"
	start = "2026-11-21T10:00:00.000000Z"
	end   = "2026-11-21T10:00:01.000000Z"
)

func TestAnchorRootWritesOnceAndEmitsEvent(t *testing.T) {
	l := newLedger()
	a, err := AnchorRoot(l, "w1-0/0", root1, "3", start, end)
	if err != nil {
		t.Fatal(err)
	}
	if a.Root != root1 || a.TreeSize != 3 || a.TxID != "tx1" || a.Channel != "insurance" || a.TxTime != "2026-11-21T10:00:00Z" {
		t.Fatalf("unexpected record %+v", a)
	}
	var stored Anchor
	if err := json.Unmarshal(l.state["w1-0/0"], &stored); err != nil || stored != *a {
		t.Fatalf("stored %s, err %v", l.state["w1-0/0"], err)
	}
	if string(l.state[rootIndexKey(root1)]) != "w1-0/0" {
		t.Fatalf("root index not written")
	}
	if string(l.events[EventName]) != string(l.state["w1-0/0"]) {
		t.Fatalf("event payload %q", l.events[EventName])
	}
}

func TestSameRootAgainIsIdempotent(t *testing.T) {
	l := newLedger()
	if _, err := AnchorRoot(l, "k", root1, "1", start, end); err != nil {
		t.Fatal(err)
	}
	puts := l.puts
	l.txID, l.events = "tx2", map[string][]byte{}
	a, err := AnchorRoot(l, "k", root1, "1", start, end)
	if err != nil {
		t.Fatal(err)
	}
	if a.TxID != "tx1" || l.puts != puts || len(l.events) != 0 {
		t.Fatalf("repeat wrote or changed the record: %+v, puts %d->%d, events %v", a, puts, l.puts, l.events)
	}
}

func TestConflictingRootIsRefused(t *testing.T) {
	l := newLedger()
	if _, err := AnchorRoot(l, "k", root1, "1", start, end); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{root2, "1"}, {root1, "2"}} {
		_, err := AnchorRoot(l, "k", c[0], c[1], start, end)
		var conflict *ConflictError
		if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "already anchored") {
			t.Fatalf("root %s size %s: got %v", c[0][:4], c[1], err)
		}
	}
	a, _ := GetAnchor(l, "k")
	if a.Root != root1 {
		t.Fatalf("record changed to %s", a.Root)
	}
}

func TestArgumentsAreValidated(t *testing.T) {
	cases := []struct {
		name, key, root, size, start, end, want string
	}{
		{"empty key", "", root1, "1", start, end, "key"},
		{"key with NUL", "a\x00b", root1, "1", start, end, "key"},
		{"key with space", "a b", root1, "1", start, end, "key"},
		{"key too long", strings.Repeat("a", 129), root1, "1", start, end, "key"},
		{"short root", "k", root1[:63], "1", start, end, "root"},
		{"uppercase root", "k", "A" + root1[1:], "1", start, end, "root"},
		{"zero size", "k", root1, "0", start, end, "treeSize"},
		{"negative size", "k", root1, "-1", start, end, "treeSize"},
		{"size too big", "k", root1, "4294967297", start, end, "treeSize"},
		{"size with plus", "k", root1, "+1", start, end, "treeSize"},
		{"size with leading zero", "k", root1, "01", start, end, "treeSize"},
		{"bad start", "k", root1, "1", "yesterday", end, "windowStart"},
		{"bad end", "k", root1, "1", start, "2026-13-01T00:00:00Z", "windowEnd"},
		{"end before start", "k", root1, "1", end, start, "before"},
	}
	for _, c := range cases {
		l := newLedger()
		_, err := AnchorRoot(l, c.key, c.root, c.size, c.start, c.end)
		var arg *ArgumentError
		if !errors.As(err, &arg) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an ArgumentError naming %q", c.name, err, c.want)
		}
		if l.puts != 0 {
			t.Errorf("%s: state written despite the error", c.name)
		}
	}
	if _, err := AnchorRoot(newLedger(), "k", root1, "4294967296", start, end); err != nil {
		t.Errorf("2^32 leaves must be accepted: %v", err)
	}
}

func TestGetAnchorByRoot(t *testing.T) {
	l := newLedger()
	if a, err := GetAnchorByRoot(l, root1); a != nil || err != nil {
		t.Fatalf("empty ledger: %v %v", a, err)
	}
	if _, err := AnchorRoot(l, "first", root1, "1", start, end); err != nil {
		t.Fatal(err)
	}
	if _, err := AnchorRoot(l, "second", root1, "1", start, end); err != nil {
		t.Fatal(err)
	}
	a, err := GetAnchorByRoot(l, root1)
	if err != nil || a.Key != "first" {
		t.Fatalf("got %+v %v", a, err)
	}
	if _, err := GetAnchorByRoot(l, "zz"); err == nil {
		t.Fatal("bad root accepted")
	}
}

func TestDispatch(t *testing.T) {
	l := newLedger()
	cases := []struct {
		fn     string
		args   []string
		status int32
		want   string
	}{
		{"Nope", nil, 500, "unknown function"},
		{"AnchorRoot", []string{"k"}, 500, "takes 5 arguments (or 7 with the heads), got 1"},
		{"GetAnchor", []string{"k"}, 500, "not anchored"},
		{"AnchorRoot", []string{"k", root1, "2", start, end}, 200, root1},
		{"GetAnchor", []string{"k"}, 200, `"tree_size":2`},
		{"GetAnchorByRoot", []string{root1}, 200, `"key":"k"`},
		{"GetAnchorByRoot", []string{root2}, 500, "not anchored"},
		{"AnchorRoot", []string{"k", root2, "2", start, end}, 500, "already anchored"},
	}
	for _, c := range cases {
		r := Dispatch(l, c.fn, c.args)
		text := r.Message + string(r.Payload)
		if r.Status != c.status || !strings.Contains(text, c.want) {
			t.Errorf("%s%v: status %d %q, want %d containing %q", c.fn, c.args, r.Status, text, c.status, c.want)
		}
	}
}

func TestAnchorWindowStoresTheHeadsCommitment(t *testing.T) {
	l := newLedger()
	a, err := AnchorWindow(l, "w1-0/0", root1, "3", start, end, root2, "0")
	if err != nil {
		t.Fatal(err)
	}
	if a.HeadsRoot != root2 || a.HeadsSize == nil || *a.HeadsSize != 0 {
		t.Fatalf("unexpected record %+v", a)
	}
	var doc map[string]any
	if err := json.Unmarshal(l.state["w1-0/0"], &doc); err != nil || doc["heads_root"] != root2 || doc["heads_size"] != 0.0 {
		t.Fatalf("stored %s, err %v", l.state["w1-0/0"], err)
	}
	if _, err := AnchorWindow(l, "w1-0/0", root1, "3", start, end, root2, "0"); err != nil {
		t.Fatalf("the same window again: %v", err)
	}
	if _, err := AnchorWindow(l, "w1-0/0", root1, "3", start, end, root1, "0"); err == nil {
		t.Fatal("other heads for an anchored key were accepted")
	}
	for _, c := range [][2]string{{"xyz", "1"}, {root2, "-1"}, {root2, "01"}, {"", "1"}} {
		if _, err := AnchorWindow(newLedger(), "k", root1, "1", start, end, c[0], c[1]); err == nil {
			t.Fatalf("heads %q %q accepted", c[0], c[1])
		}
	}
	if plain, _ := AnchorRoot(newLedger(), "k", root1, "1", start, end); plain.HeadsSize != nil || plain.HeadsRoot != "" {
		t.Fatal("a plain anchor carries heads")
	}
	if r := Dispatch(newLedger(), "AnchorRoot", []string{"k", root1, "1", start, end, root2, "4"}); r.Status != 200 {
		t.Fatalf("seven arguments: %s", r.Message)
	}
	if r := Dispatch(newLedger(), "AnchorRoot", []string{"k", root1, "1", start, end, root2}); r.Status == 200 {
		t.Fatal("six arguments accepted")
	}
}
