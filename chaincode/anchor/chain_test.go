package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/statebased"
	"github.com/hyperledger/fabric-protos-go-apiv2/msp"
	"google.golang.org/protobuf/proto"
)

// testID is a serialized identity (the stub's creator) and its certificate's fingerprint.
type testID struct {
	creator []byte
	fp      string
}

func newID(mspID, name string, ous ...string) testID {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name, Organization: []string{mspID}, OrganizationalUnit: ous},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	creator, err := proto.Marshal(&msp.SerializedIdentity{Mspid: mspID, IdBytes: pemBytes})
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(der)
	return testID{creator, hex.EncodeToString(sum[:])}
}

var (
	writerID      = newID("HospitalsMSP", "service", "client")
	hospAdmin     = newID("HospitalsMSP", "Admin@hospitals", "admin")
	insAdmin      = newID("InsurersMSP", "Admin@insurers", "admin")
	hospClient    = newID("HospitalsMSP", "User2@hospitals", "client")
	outsiderAdmin = newID("OutsidersMSP", "Admin@outsiders", "admin")
)

// setClock makes the peer's clock read t for the test.
func setClock(t *testing.T, at time.Time) {
	saved := now
	now = func() time.Time { return at }
	t.Cleanup(func() { now = saved })
}

const (
	w0Start = "2026-11-21T09:59:00Z"
	w0End   = "2026-11-21T09:59:50Z"
	w1End   = "2026-11-21T10:00:00Z"
	zeros   = "0000000000000000000000000000000000000000000000000000000000000000"
)

// appendArgs is one AppendWindow's arguments.
type appendArgs struct {
	lane, seq, prev, id, start, end, trees, headsRoot, headsSize, proof string
}

func (c appendArgs) run(l Ledger) ([]byte, error) {
	return AppendWindow(l, c.lane, c.seq, c.prev, c.id, c.start, c.end, c.trees, c.headsRoot, c.headsSize, c.proof)
}

func treesJSON(roots ...string) string {
	var trees []TreeRoot
	for i, r := range roots {
		trees = append(trees, TreeRoot{Index: uint64(i), Root: r, Size: uint64(10 + i)})
	}
	if trees == nil {
		return "[]"
	}
	return string(mustJSON(trees))
}

// chainScenario: window 0 takes the genesis heads to old, window 1 takes old to next.
func chainScenario() (first, second appendArgs) {
	old, next := scenario()
	genesis := newHeads(nil)
	oldRoot, nextRoot := old.root(), next.root()
	first = appendArgs{"medical-history", "0", zeros, "w0", w0Start, w0End, treesJSON(root1, root2),
		hex.EncodeToString(oldRoot[:]), fmt.Sprint(old.size()), string(mustJSON(prove(genesis, old)))}
	second = appendArgs{"medical-history", "1", "", "w1", w0End, w1End, treesJSON(root2),
		hex.EncodeToString(nextRoot[:]), fmt.Sprint(next.size()), string(mustJSON(prove(old, next)))}
	return first, second
}

func prevOf(tip []byte) string {
	sum := sha256.Sum256(tip)
	return hex.EncodeToString(sum[:])
}

func TestAppendWindowChainsTwoWindows(t *testing.T) {
	setClock(t, txTime)
	l := newLedger()
	first, second := chainScenario()
	tip0, err := first.run(l)
	if err != nil {
		t.Fatal(err)
	}
	key := tipKey("medical-history")
	if string(l.state[key]) != string(tip0) || string(l.events[AppendEventName]) != string(tip0) {
		t.Fatalf("tip not stored or not the event: %s", tip0)
	}
	want := `{"v":1,"lane":"medical-history","seq":0,"prev":"` + zeros + `","window_id":"w0","trees":[{"index":0,"root":"` +
		root1 + `","size":10},{"index":1,"root":"` + root2 + `","size":11}],"heads_root":"` + first.headsRoot +
		`","heads_size":13,"window_start":"` + w0Start + `","window_end":"` + w0End + `","proof_hash":"` +
		prevOf([]byte(first.proof)) + `","tx_id":"tx1","tx_time":"2026-11-21T10:00:00Z"}`
	if string(tip0) != want {
		t.Fatalf("tip record\n got %s\nwant %s", tip0, want)
	}
	ep, err := statebased.NewStateEP(l.params[key]) // both organisations, whatever the chaincode definition says
	if err != nil || !slices.Equal(sortedOrgs(ep), Consortium) {
		t.Fatalf("key-level endorsement of the tip: %v %v", l.params[key], err)
	}
	sets := l.paramSets
	if l.state[chainedKey] == nil {
		t.Fatal("the chained flag was not written")
	}
	a, err := GetAnchor(l, "w0/1")
	if err != nil || a.Root != root2 || a.Lane != "medical-history" || a.ChainSeq == nil || *a.ChainSeq != 0 ||
		a.HeadsRoot != first.headsRoot || *a.HeadsSize != 13 || a.WindowEnd != w0End || a.TxID != "tx1" {
		t.Fatalf("tree anchor %+v %v", a, err)
	}
	if string(l.state[rootIndexKey(root1)]) != "w0/0" {
		t.Fatal("root index not written")
	}
	if got, err := GetTip(l, "medical-history"); err != nil || string(got) != string(tip0) {
		t.Fatalf("GetTip: %s %v", got, err)
	}

	l.txID = "tx2"
	second.prev = prevOf(tip0)
	tip1, err := second.run(l)
	if err != nil {
		t.Fatal(err)
	}
	var tip Tip
	if err := json.Unmarshal(tip1, &tip); err != nil || tip.Seq != 1 || tip.Prev != prevOf(tip0) || tip.TxID != "tx2" {
		t.Fatalf("second tip %s %v", tip1, err)
	}
	if l.paramSets != sets { // Fabric keeps the policy: only the lane's first window writes it (§14.8)
		t.Fatalf("the second window wrote the tip's key-level policy again (%d writes)", l.paramSets-sets)
	}
	if a, _ := GetAnchor(l, "w1/0"); a == nil || *a.ChainSeq != 1 {
		t.Fatalf("second window's anchor %+v", a)
	}
	if string(l.state[rootIndexKey(root2)]) != "w0/1" {
		t.Fatal("the root index must keep naming the first key")
	}
}

func TestAppendWindowIdempotentRepeat(t *testing.T) {
	setClock(t, txTime)
	l := newLedger()
	first, _ := chainScenario()
	tip0, err := first.run(l)
	if err != nil {
		t.Fatal(err)
	}
	puts := l.puts
	l.txID, l.events = "tx9", map[string][]byte{}
	l.txTime = txTime.Add(time.Hour) // a late retry: no clock check applies to a repeat
	setClock(t, l.txTime)
	again, err := first.run(l)
	if err != nil || string(again) != string(tip0) || l.puts != puts || len(l.events) != 0 {
		t.Fatalf("repeat: %s %v, puts %d->%d, events %v", again, err, puts, l.puts, l.events)
	}
	other := first
	other.trees = treesJSON(root2)
	if _, err := other.run(l); err == nil {
		t.Fatal("the tip's window id with other trees accepted")
	}
}

func TestAppendWindowRefusals(t *testing.T) {
	first, second := chainScenario()
	empty := EmptyHeadsRoot()
	blank := appendArgs{"_", "0", zeros, "v1w", w0Start, w0End, "[]", hex.EncodeToString(empty[:]), "1",
		`{"old_size":1,"new_size":1,"changed":[],"inserted":[],"nodes":[]}`}
	cases := []struct {
		name string
		edit func(l *memLedger, c *appendArgs)
		want string
	}{
		{"genesis with seq 1", func(l *memLedger, c *appendArgs) { *c = first; c.seq = "1" }, "sequence"},
		{"genesis with a prev", func(l *memLedger, c *appendArgs) { *c = first; c.prev = root1 }, "previous hash"},
		{"seq skipped", func(l *memLedger, c *appendArgs) { c.seq = "2" }, "sequence"},
		{"seq repeated", func(l *memLedger, c *appendArgs) { c.seq = "0" }, "sequence"},
		{"prev mismatch", func(l *memLedger, c *appendArgs) { c.prev = root1 }, "previous hash"},
		{"gap in time", func(l *memLedger, c *appendArgs) { c.start = "2026-11-21T09:59:51Z" }, "gap in time"},
		{"overlap in time", func(l *memLedger, c *appendArgs) { c.start = "2026-11-21T09:59:49Z" }, "gap in time"},
		{"end in the future", func(l *memLedger, c *appendArgs) { c.end = "2026-11-21T10:00:11Z" }, "ends in the future"},
		{"end in the future of the transaction", func(l *memLedger, c *appendArgs) {
			l.txTime = txTime.Add(-5 * time.Second)
			c.end = "2026-11-21T10:00:08Z"
		}, "ends in the future"},
		{"end in the future of the peer's clock alone", func(l *memLedger, c *appendArgs) {
			l.txTime = txTime.Add(9 * time.Second) // within the skew of the peer's clock, which decides
			c.end = "2026-11-21T10:00:15Z"
		}, "ends in the future"},
		{"transaction time skew", func(l *memLedger, c *appendArgs) { l.txTime = txTime.Add(11 * time.Second) },
			"is too far from the peer's clock"},
		{"transaction time behind", func(l *memLedger, c *appendArgs) { l.txTime = txTime.Add(-11 * time.Second); c.end = w0End },
			"is too far from the peer's clock"},
		{"tree key written before", func(l *memLedger, c *appendArgs) { l.state["w1/0"] = []byte("{}") }, "w1/0 is already anchored"},
		{"wrong heads root", func(l *memLedger, c *appendArgs) { c.headsRoot = root1 }, "the new heads root does not follow"},
		{"heads size not the proof's", func(l *memLedger, c *appendArgs) { c.headsSize = "99" }, "new_size is not the window's heads size"},
		{"a proof from other heads", func(l *memLedger, c *appendArgs) { c.proof = first.proof }, "old_size is not the tip's heads size"},
		{"lane without a domain, other heads root", func(l *memLedger, c *appendArgs) { *c = blank; c.headsRoot = root1 },
			"keeps the root"},
		{"bad lane", func(l *memLedger, c *appendArgs) { c.lane = "a\x00b" }, "lane"},
		{"bad seq", func(l *memLedger, c *appendArgs) { c.seq = "01" }, "seq"},
		{"bad prev", func(l *memLedger, c *appendArgs) { c.prev = "ab" }, "prev"},
		{"bad window id", func(l *memLedger, c *appendArgs) { c.id = "a b" }, "windowId"},
		{"end before start", func(l *memLedger, c *appendArgs) { c.end = w0Start }, "before windowStart"},
		{"trees not a list", func(l *memLedger, c *appendArgs) { c.trees = "{}" }, "trees must be a JSON list"},
		{"trees null", func(l *memLedger, c *appendArgs) { c.trees = "null" }, "trees must be a JSON list"},
		{"trees with trailing data", func(l *memLedger, c *appendArgs) { c.trees = "[]]" }, "trees must be a JSON list"},
		{"trees with an unknown member", func(l *memLedger, c *appendArgs) {
			c.trees = `[{"index":0,"root":"` + root1 + `","size":1,"x":1}]`
		}, "trees must be a JSON list"},
		{"trees not indexed in order", func(l *memLedger, c *appendArgs) {
			c.trees = `[{"index":1,"root":"` + root1 + `","size":1}]`
		}, "trees are indexed 0..n-1"},
		{"a tree without a size", func(l *memLedger, c *appendArgs) { c.trees = `[{"index":0,"root":"` + root1 + `"}]` },
			"must hold index, root and size"},
		{"a tree of size 0", func(l *memLedger, c *appendArgs) { c.trees = `[{"index":0,"root":"` + root1 + `","size":0}]` },
			"trees[0].size"},
		{"65 trees", func(l *memLedger, c *appendArgs) {
			roots := make([]string, 65)
			for i := range roots {
				roots[i] = root1
			}
			c.trees = treesJSON(roots...)
		}, "at most 64"},
		{"bad heads root", func(l *memLedger, c *appendArgs) { c.headsRoot = "xyz" }, "headsRoot"},
		{"heads size 0", func(l *memLedger, c *appendArgs) { c.headsSize = "0" }, "headsSize"},
	}
	for _, tc := range cases {
		setClock(t, txTime)
		l := newLedger()
		tip0, err := first.run(l)
		if err != nil {
			t.Fatal(err)
		}
		c := second
		c.prev = prevOf(tip0)
		if strings.HasPrefix(tc.name, "genesis") || strings.HasPrefix(tc.name, "lane without") {
			l = newLedger()
		}
		tc.edit(l, &c)
		puts := l.puts
		_, err = c.run(l)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
		if l.puts != puts {
			t.Errorf("%s: state written despite the error", tc.name)
		}
	}
	setClock(t, txTime)
	if _, err := blank.run(newLedger()); err != nil {
		t.Errorf("an empty window of the lane without a domain: %v", err)
	}
}

func TestNoDowngrade(t *testing.T) {
	setClock(t, txTime)
	l := newLedger()
	if _, err := AnchorRoot(l, "before", root1, "1", start, end); err != nil {
		t.Fatalf("AnchorRoot before any chained window: %v", err)
	}
	first, _ := chainScenario()
	if _, err := first.run(l); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"k", root1, "1", start, end}, {"k", root1, "1", start, end, root2, "1"}} {
		r := Dispatch(l, "AnchorRoot", args)
		if r.Status != 500 || !strings.Contains(r.Message, "windows on this channel are chained: AnchorRoot is closed") {
			t.Errorf("AnchorRoot after a chained window: %d %s", r.Status, r.Message)
		}
	}
	var chained *ChainError
	if _, err := AnchorRoot(l, "before", root1, "1", start, end); !errors.As(err, &chained) {
		t.Errorf("even a repeat is refused once chained: %v", err)
	}
}

func TestWriterRule(t *testing.T) {
	setClock(t, txTime)
	first, _ := chainScenario()
	unapproved := func() *memLedger { l := newLedger(); delete(l.state, writerKey); return l }
	cases := []struct {
		name  string
		setup func(l *memLedger)
		want  string
	}{
		{"no writer approved", func(l *memLedger) { delete(l.state, writerKey) },
			"no writer is approved yet: an admin of each of HospitalsMSP, InsurersMSP must call ApproveWriter"},
		{"one organisation approved", func(l *memLedger) {
			l.state[writerKey] = []byte(`{"approvals":{"HospitalsMSP":"` + writerID.fp + `"}}`)
		}, "no writer is approved yet"},
		{"the organisations approved different writers", func(l *memLedger) {
			l.state[writerKey] = []byte(`{"approvals":{"HospitalsMSP":"` + writerID.fp + `","InsurersMSP":"` + hospClient.fp + `"}}`)
		}, "no writer is approved yet"},
		{"another creator", func(l *memLedger) { l.creator = hospClient.creator },
			"only the anchoring service's identity may write: the creator (MSP HospitalsMSP, certificate sha256 " + hospClient.fp[:16]},
		{"an admin is not the writer", func(l *memLedger) { l.creator = insAdmin.creator },
			"only the anchoring service's identity may write: the creator (MSP InsurersMSP"},
	}
	for _, tc := range cases {
		for _, fn := range []string{"AppendWindow", "AnchorRoot"} {
			l := newLedger()
			tc.setup(l)
			var err error
			if fn == "AppendWindow" {
				_, err = first.run(l)
			} else {
				_, err = AnchorRoot(l, "k", root1, "1", start, end)
			}
			var we *WriterError
			if !errors.As(err, &we) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s, %s: got %v, want %q", tc.name, fn, err, tc.want)
			}
			if l.puts != 0 {
				t.Errorf("%s, %s: state written", tc.name, fn)
			}
		}
	}

	// approvals: admins of both consortium organisations, then the writer may write
	l := unapproved()
	refusals := []struct {
		who  testID
		want string
	}{
		{hospClient, "may approve the writer: the creator (MSP HospitalsMSP, certificate sha256 " + hospClient.fp[:16] + "…) has no OU admin"},
		{outsiderAdmin, "may approve the writer: the creator's MSP OutsidersMSP is not one"},
	}
	for _, r := range refusals {
		l.creator = r.who.creator
		if _, err := ApproveWriter(l, writerID.fp); err == nil || !strings.Contains(err.Error(), r.want) {
			t.Errorf("approval by %s: got %v, want %q", r.who.fp[:8], err, r.want)
		}
	}
	l.creator = hospAdmin.creator
	if _, err := ApproveWriter(l, "ABC"); err == nil || !strings.Contains(err.Error(), "certSha256") {
		t.Errorf("a bad fingerprint: %v", err)
	}
	answer, err := ApproveWriter(l, writerID.fp)
	if err != nil || strings.Contains(string(answer), `"writer"`) {
		t.Fatalf("one approval: %s %v", answer, err)
	}
	ep, err := statebased.NewStateEP(l.params[writerKey])
	if err != nil || !slices.Equal(sortedOrgs(ep), Consortium) {
		t.Fatalf("key-level endorsement of the writer key: %v", err)
	}
	l.creator = writerID.creator
	if _, err := first.run(l); err == nil || !strings.Contains(err.Error(), "no writer is approved yet") {
		t.Fatalf("a write with one approval: %v", err)
	}
	l.creator = insAdmin.creator
	answer, err = ApproveWriter(l, writerID.fp)
	want := `{"approvals":{"HospitalsMSP":"` + writerID.fp + `","InsurersMSP":"` + writerID.fp + `"},"writer":"` + writerID.fp + `"}`
	if err != nil || string(answer) != want {
		t.Fatalf("second approval: %s %v", answer, err)
	}
	if got, _ := GetWriter(l); string(got) != want {
		t.Fatalf("GetWriter: %s", got)
	}
	l.creator = writerID.creator
	if _, err := first.run(l); err != nil {
		t.Fatalf("the approved writer: %v", err)
	}
	// a new writer takes a new approval from each
	l.creator = hospAdmin.creator
	if _, err := ApproveWriter(l, hospClient.fp); err != nil {
		t.Fatal(err)
	}
	l.creator = writerID.creator
	if _, err := AnchorRoot(l, "k", root1, "1", start, end); err == nil || !strings.Contains(err.Error(), "no writer is approved yet") {
		t.Fatalf("a write while the organisations disagree: %v", err)
	}
	if got, _ := GetWriter(unapproved()); string(got) != `{"approvals":{}}` {
		t.Fatalf("GetWriter without approvals: %s", got)
	}
}

func TestGetTipWithoutAWindow(t *testing.T) {
	if _, err := GetTip(newLedger(), "medical-history"); err == nil || err.Error() != "lane medical-history has no chained window" {
		t.Fatalf("got %v", err)
	}
	if _, err := GetTip(newLedger(), ""); err == nil || !strings.Contains(err.Error(), "lane") {
		t.Fatalf("empty lane: %v", err)
	}
}

func TestDispatchChainFunctions(t *testing.T) {
	setClock(t, txTime)
	l := newLedger()
	first, _ := chainScenario()
	args := []string{first.lane, first.seq, first.prev, first.id, first.start, first.end, first.trees, first.headsRoot,
		first.headsSize, first.proof}
	cases := []struct {
		fn     string
		args   []string
		status int32
		want   string
	}{
		{"Nope", nil, 500, "known: AnchorRoot, AppendWindow, AppendWindows, ApproveWriter, GetAnchor, GetAnchorByRoot, GetTip, GetWriter"},
		{"AppendWindow", args[:9], 500, "AppendWindow takes 10 argument(s), got 9"},
		{"GetTip", nil, 500, "GetTip takes 1 argument(s), got 0"},
		{"GetWriter", []string{"x"}, 500, "GetWriter takes 0 argument(s), got 1"},
		{"ApproveWriter", nil, 500, "ApproveWriter takes 1 argument(s), got 0"},
		{"GetTip", []string{"medical-history"}, 500, "has no chained window"},
		{"AppendWindow", args, 200, `"seq":0`},
		{"GetTip", []string{"medical-history"}, 200, `"window_id":"w0"`},
		{"GetWriter", nil, 200, `"writer":"` + writerID.fp},
		{"ApproveWriter", []string{writerID.fp}, 500, "has no OU admin"},
	}
	for _, c := range cases {
		r := Dispatch(l, c.fn, c.args)
		text := r.Message + string(r.Payload)
		if r.Status != c.status || !strings.Contains(text, c.want) {
			t.Errorf("%s%v: status %d %q, want %d containing %q", c.fn, c.args, r.Status, text, c.status, c.want)
		}
	}
}

// sortedOrgs lists a policy's organisations in order (the policy keeps them in a map).
func sortedOrgs(ep statebased.KeyEndorsementPolicy) []string {
	orgs := ep.ListOrgs()
	slices.Sort(orgs)
	return orgs
}

// Go's parsers are looser than a verifier's: the chaincode refuses what a monitor would refuse.
func TestTimesAndTreesTakeOnlyTheFormsVerifiersParse(t *testing.T) {
	for _, s := range []string{"2026-01-02T03:04:05,5Z", "2026-01-02T03:04:05+24:00", "2026-01-02T03:04:05"} {
		if _, err := parseTime("windowEnd", s); err == nil || !strings.Contains(err.Error(), "windowEnd") {
			t.Errorf("time %q: want a refusal naming windowEnd, got %v", s, err)
		}
	}
	for _, s := range []string{"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05+23:59"} {
		if _, err := parseTime("windowEnd", s); err != nil {
			t.Errorf("time %q: %v", s, err)
		}
	}
	root := strings.Repeat("a", 64)
	_, err := parseTrees(`[{"INDEX":0,"root":"` + root + `","size":1}]`)
	if err == nil || !strings.Contains(err.Error(), `trees[0] has member "INDEX"`) {
		t.Errorf("a member name in another case: want a refusal naming it, got %v", err)
	}
	if trees, err := parseTrees(`[{"index":0,"root":"` + root + `","size":1}]`); err != nil || len(trees) != 1 {
		t.Errorf("exact names: %v %v", trees, err)
	}
}
