package main

// Chained windows (spec §14.7-§14.8): one chain of windows per lane, each window the successor of the
// lane's tip with a transition proof that the heads only grew, written only by the writer both
// consortium organisations approved.

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/statebased"
	"github.com/hyperledger/fabric-protos-go-apiv2/msp"
	"google.golang.org/protobuf/proto"
)

const (
	// AppendEventName is the chaincode event emitted with the new tip record.
	AppendEventName = "AppendWindow"
	// MaxSkew is how far a window's end and the transaction time may be from the peer's clock.
	MaxSkew = 10 * time.Second
	// MaxTrees is the most trees a window may hold.
	MaxTrees = 64
	// TipVersion is the tip record's "v".
	TipVersion = 1

	writerKey  = "\x00writer\x00"
	chainedKey = "\x00chained\x00" // present once the channel holds a chained window
	zeroPrev   = "0000000000000000000000000000000000000000000000000000000000000000"
)

// Consortium lists the organisations (MSP ids) that approve the writer and endorse each tip.
var Consortium = []string{"HospitalsMSP", "InsurersMSP"}

// now is the endorsing peer's clock (replaced in tests).
var now = time.Now

var lanePattern = regexp.MustCompile(`^(_|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$`)

// Tip is the record of a lane's newest chained window (§14.7).
type Tip struct {
	V           int        `json:"v"`
	Lane        string     `json:"lane"`
	Seq         uint64     `json:"seq"`
	Prev        string     `json:"prev"`
	WindowID    string     `json:"window_id"`
	Trees       []TreeRoot `json:"trees"`
	HeadsRoot   string     `json:"heads_root"`
	HeadsSize   uint64     `json:"heads_size"`
	WindowStart string     `json:"window_start"`
	WindowEnd   string     `json:"window_end"`
	ProofHash   string     `json:"proof_hash"`
	TxID        string     `json:"tx_id"`
	TxTime      string     `json:"tx_time"`
}

// TreeRoot is one tree of a chained window.
type TreeRoot struct {
	Index uint64 `json:"index"`
	Root  string `json:"root"`
	Size  uint64 `json:"size"`
}

// WriterError is a write or an approval by an identity the writer rule does not allow.
type WriterError struct{ msg string }

func (e *WriterError) Error() string { return e.msg }

// ChainError is a window that does not succeed the lane's tip, or a write the chain forbids.
type ChainError struct{ msg string }

func (e *ChainError) Error() string { return e.msg }

func chainErr(format string, a ...any) error { return &ChainError{fmt.Sprintf(format, a...)} }

func tipKey(lane string) string { return "\x00tip\x00" + lane + "\x00" }

// CheckLane validates a lane: a domain's name, or "_" for the lane without a domain.
func CheckLane(lane string) error {
	if !lanePattern.MatchString(lane) {
		return argErr("lane %q must be \"_\" or a domain name of 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit", lane)
	}
	return nil
}

// window is AppendWindow's arguments, checked.
type window struct {
	lane, prev, id, startText, endText, headsRoot string
	seq, headsSize                                uint64
	start, end                                    time.Time
	trees                                         []TreeRoot
}

func parseWindow(lane, seq, prev, windowID, windowStart, windowEnd, trees, headsRoot, headsSize string) (*window, error) {
	w := &window{lane: lane, prev: prev, id: windowID, startText: windowStart, endText: windowEnd, headsRoot: headsRoot}
	var err error
	if err = CheckLane(lane); err != nil {
		return nil, err
	}
	if w.seq, err = strconv.ParseUint(seq, 10, 64); err != nil || strconv.FormatUint(w.seq, 10) != seq {
		return nil, argErr("seq %q must be a decimal integer", seq)
	}
	if !rootPattern.MatchString(prev) {
		return nil, argErr("prev %q must be 64 lowercase hex characters (the SHA-256 of the tip record)", prev)
	}
	if CheckKey(windowID) != nil || len(windowID) > 125 {
		return nil, argErr("windowId %q must be 1-125 characters of A-Z a-z 0-9 . _ : / - starting with a letter or digit", windowID)
	}
	if w.start, err = parseTime("windowStart", windowStart); err != nil {
		return nil, err
	}
	if w.end, err = parseTime("windowEnd", windowEnd); err != nil {
		return nil, err
	}
	if w.end.Before(w.start) {
		return nil, argErr("windowEnd %s is before windowStart %s", windowEnd, windowStart)
	}
	if w.trees, err = parseTrees(trees); err != nil {
		return nil, err
	}
	if !rootPattern.MatchString(headsRoot) {
		return nil, argErr("headsRoot %q must be 64 lowercase hex characters", headsRoot)
	}
	w.headsSize, err = strconv.ParseUint(headsSize, 10, 64)
	if err != nil || w.headsSize < 1 || w.headsSize > MaxTreeSize || strconv.FormatUint(w.headsSize, 10) != headsSize {
		return nil, argErr("headsSize %q must be a decimal integer from 1 to %d", headsSize, uint64(MaxTreeSize))
	}
	return w, nil
}

// treeArg is one entry of the trees argument; nil members are missing.
type treeArg struct {
	Index *uint64 `json:"index"`
	Root  *string `json:"root"`
	Size  *uint64 `json:"size"`
}

// parseTrees reads the trees argument: a JSON list of {"index", "root", "size"} indexed 0..n-1.
func parseTrees(s string) ([]TreeRoot, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var args []treeArg
	if err := dec.Decode(&args); err != nil || args == nil || !atEOF(dec) {
		return nil, argErr("trees must be a JSON list of {\"index\", \"root\", \"size\"} (%.80q)", s)
	}
	var names []map[string]json.RawMessage // the decoder matches names in any case: require them exactly
	if err := json.Unmarshal([]byte(s), &names); err != nil {
		return nil, argErr("trees must be a JSON list of {\"index\", \"root\", \"size\"} (%.80q)", s)
	}
	for i, m := range names {
		for name := range m {
			if name != "index" && name != "root" && name != "size" {
				return nil, argErr("trees[%d] has member %q: a tree has exactly index, root and size", i, name)
			}
		}
	}
	if len(args) > MaxTrees {
		return nil, argErr("trees holds %d trees; a window holds at most %d", len(args), MaxTrees)
	}
	trees := make([]TreeRoot, len(args))
	for i, t := range args {
		switch {
		case t.Index == nil || t.Root == nil || t.Size == nil:
			return nil, argErr("trees[%d] must hold index, root and size", i)
		case *t.Index != uint64(i):
			return nil, argErr("trees[%d].index is %d: trees are indexed 0..n-1 in order", i, *t.Index)
		case !rootPattern.MatchString(*t.Root):
			return nil, argErr("trees[%d].root %q must be 64 lowercase hex characters", i, *t.Root)
		case *t.Size < 1 || *t.Size > MaxTreeSize:
			return nil, argErr("trees[%d].size %d must be from 1 to %d", i, *t.Size, uint64(MaxTreeSize))
		}
		trees[i] = TreeRoot{Index: *t.Index, Root: *t.Root, Size: *t.Size}
	}
	return trees, nil
}

func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}

func treeKey(windowID string, index uint64) string {
	return windowID + "/" + strconv.FormatUint(index, 10)
}

// AppendWindow appends a window to its lane's chain as the successor of the tip (§14.8) and answers
// the new tip record; a repeat of the tip's own window answers the stored tip without writing.
func AppendWindow(l Ledger, lane, seq, prev, windowID, windowStart, windowEnd, trees, headsRoot, headsSize, proof string) ([]byte, error) {
	if err := requireWriter(l); err != nil {
		return nil, err
	}
	w, err := parseWindow(lane, seq, prev, windowID, windowStart, windowEnd, trees, headsRoot, headsSize)
	if err != nil {
		return nil, err
	}
	stored, tip, err := readTip(l, lane)
	if err != nil {
		return nil, err
	}
	if tip != nil && tip.WindowID == w.id && tip.HeadsRoot == w.headsRoot && tip.HeadsSize == w.headsSize &&
		slices.Equal(tip.Trees, w.trees) {
		return stored, nil
	}
	if err := succeeds(w, stored, tip); err != nil {
		return nil, err
	}
	if err := checkClock(l, w); err != nil {
		return nil, err
	}
	oldRoot, oldSize := EmptyHeadsRoot(), uint64(1)
	if tip != nil {
		if !rootPattern.MatchString(tip.HeadsRoot) {
			return nil, fmt.Errorf("the stored tip of lane %s has a bad heads_root", lane)
		}
		_, _ = hex.Decode(oldRoot[:], []byte(tip.HeadsRoot))
		oldSize = tip.HeadsSize
	}
	newRoot, _ := hex.DecodeString(w.headsRoot)
	if err := CheckTransition(oldRoot[:], oldSize, newRoot, w.headsSize, []byte(proof)); err != nil {
		return nil, err
	}
	for _, t := range w.trees {
		key := treeKey(w.id, t.Index)
		if doc, err := l.GetState(key); err != nil {
			return nil, fmt.Errorf("reading key %s: %w", key, err)
		} else if doc != nil {
			return nil, &ConflictError{fmt.Sprintf("key %s is already anchored: a window's tree keys are written once", key)}
		}
	}
	return writeWindow(l, w, proof)
}

// readTip answers the lane's stored tip record and its bytes (nil: no chained window yet).
func readTip(l Ledger, lane string) ([]byte, *Tip, error) {
	doc, err := l.GetState(tipKey(lane))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the tip of lane %s: %w", lane, err)
	}
	if doc == nil {
		return nil, nil, nil
	}
	var tip Tip
	if err := json.Unmarshal(doc, &tip); err != nil {
		return nil, nil, fmt.Errorf("the stored tip of lane %s is not a chain record: %w", lane, err)
	}
	return doc, &tip, nil
}

// succeeds checks the window's succession: sequence, previous hash and no gap in time.
func succeeds(w *window, stored []byte, tip *Tip) error {
	if tip == nil {
		if w.seq != 0 {
			return chainErr("sequence: lane %s has no chained window, so its first window takes seq 0, not %d", w.lane, w.seq)
		}
		if w.prev != zeroPrev {
			return chainErr("previous hash: the first window of lane %s takes prev = 64 zeros, not %s", w.lane, w.prev)
		}
		return nil
	}
	if w.seq != tip.Seq+1 {
		return chainErr("sequence: seq %d does not follow the tip of lane %s (seq %d, so %d is next)", w.seq, w.lane, tip.Seq, tip.Seq+1)
	}
	if sum := sha256.Sum256(stored); w.prev != hex.EncodeToString(sum[:]) {
		return chainErr("previous hash: prev %s is not the hash of lane %s's tip (%x)", w.prev, w.lane, sum)
	}
	tipEnd, err := time.Parse(time.RFC3339Nano, tip.WindowEnd)
	if err != nil {
		return fmt.Errorf("the stored tip of lane %s has a bad window_end %q", w.lane, tip.WindowEnd)
	}
	if !w.start.Equal(tipEnd) {
		return chainErr("gap in time: windowStart %s is not the window_end %s of lane %s's tip", w.startText, tip.WindowEnd, w.lane)
	}
	return nil
}

// checkClock: the window has ended by the peer's clock and the transaction time, within MaxSkew,
// and the transaction time is within MaxSkew of the peer's clock.
func checkClock(l Ledger, w *window) error {
	ts, err := l.GetTxTimestamp()
	if err != nil {
		return fmt.Errorf("reading the transaction time: %w", err)
	}
	tx, peer := ts.AsTime(), now()
	if w.end.After(peer.Add(MaxSkew)) || w.end.After(tx.Add(MaxSkew)) {
		return chainErr("windowEnd %s ends in the future: more than %s after the peer's clock (%s) or the transaction time (%s)",
			w.endText, MaxSkew, peer.UTC().Format(time.RFC3339Nano), tx.UTC().Format(time.RFC3339Nano))
	}
	if d := tx.Sub(peer); d > MaxSkew || d < -MaxSkew {
		return chainErr("transaction time %s is too far from the peer's clock %s (more than %s)",
			tx.UTC().Format(time.RFC3339Nano), peer.UTC().Format(time.RFC3339Nano), MaxSkew)
	}
	return nil
}

// writeWindow writes the tip (endorsed by every consortium organisation), the chained flag, each
// tree's anchor record and root index, and emits the event.
func writeWindow(l Ledger, w *window, proof string) ([]byte, error) {
	ts, err := l.GetTxTimestamp()
	if err != nil {
		return nil, fmt.Errorf("reading the transaction time: %w", err)
	}
	txTime := ts.AsTime().UTC().Format(time.RFC3339Nano)
	proofHash := sha256.Sum256([]byte(proof))
	tip := Tip{
		V: TipVersion, Lane: w.lane, Seq: w.seq, Prev: w.prev, WindowID: w.id, Trees: w.trees,
		HeadsRoot: w.headsRoot, HeadsSize: w.headsSize, WindowStart: w.startText, WindowEnd: w.endText,
		ProofHash: hex.EncodeToString(proofHash[:]), TxID: l.GetTxID(), TxTime: txTime,
	}
	doc, err := json.Marshal(tip)
	if err != nil {
		return nil, err
	}
	if err := putEndorsed(l, tipKey(w.lane), doc); err != nil { // both organisations, whatever the definition says
		return nil, err
	}
	if err := markChained(l); err != nil {
		return nil, err
	}
	indexed := map[string]bool{} // roots whose index this transaction wrote (it does not read its own writes)
	for _, t := range w.trees {
		seq, heads := w.seq, w.headsSize
		a := &Anchor{
			Key: treeKey(w.id, t.Index), Root: t.Root, TreeSize: t.Size, WindowStart: w.startText, WindowEnd: w.endText,
			HeadsRoot: w.headsRoot, HeadsSize: &heads, Channel: l.GetChannelID(), TxID: tip.TxID, TxTime: txTime,
			Lane: w.lane, ChainSeq: &seq,
		}
		if _, err := putAnchor(l, a, !indexed[t.Root]); err != nil {
			return nil, err
		}
		indexed[t.Root] = true
	}
	if err := l.SetEvent(AppendEventName, doc); err != nil {
		return nil, fmt.Errorf("setting the event: %w", err)
	}
	return doc, nil
}

func markChained(l Ledger) error {
	flag, err := l.GetState(chainedKey)
	if err != nil {
		return fmt.Errorf("reading the chained flag: %w", err)
	}
	if flag == nil {
		if err := l.PutState(chainedKey, []byte("1")); err != nil {
			return fmt.Errorf("writing the chained flag: %w", err)
		}
	}
	return nil
}

// refuseIfChained is the no-downgrade rule: once a window is chained, AnchorRoot is closed.
func refuseIfChained(l Ledger) error {
	flag, err := l.GetState(chainedKey)
	if err != nil {
		return fmt.Errorf("reading the chained flag: %w", err)
	}
	if flag != nil {
		return chainErr("windows on this channel are chained: AnchorRoot is closed, use AppendWindow")
	}
	return nil
}

// putEndorsed writes key and makes sure it carries the consortium's key-level endorsement policy.
func putEndorsed(l Ledger, key string, value []byte) error {
	if err := l.PutState(key, value); err != nil {
		return fmt.Errorf("writing key %q: %w", key, err)
	}
	return endorseOnce(l, key)
}

// endorseOnce sets key's key-level endorsement policy (a peer of each consortium organisation) unless
// it already carries exactly that policy. Fabric keeps a key's policy when only its value changes, so
// a lane's tip gets it with its first window and no later window writes it again: a block in which a
// transaction that writes a key-level policy is invalidated before validation (a replayed
// transaction) would stall Fabric 3.1.5's validation of later writes of that key (§14.8).
func endorseOnce(l Ledger, key string) error {
	policy, err := consortiumPolicy()
	if err != nil {
		return err
	}
	current, err := l.GetStateValidationParameter(key)
	if err != nil {
		return fmt.Errorf("reading the endorsement policy of key %q: %w", key, err)
	}
	if bytes.Equal(current, policy) {
		return nil
	}
	if err := l.SetStateValidationParameter(key, policy); err != nil {
		return fmt.Errorf("setting the endorsement policy of key %q: %w", key, err)
	}
	return nil
}

// consortiumPolicy is the key-level endorsement policy: a peer of each consortium organisation.
func consortiumPolicy() ([]byte, error) {
	ep, err := statebased.NewStateEP(nil)
	if err != nil {
		return nil, err
	}
	if err := ep.AddOrgs(statebased.RoleTypePeer, Consortium...); err != nil {
		return nil, err
	}
	return ep.Policy()
}

// GetTip answers the stored tip record of lane, exactly as stored.
func GetTip(l Ledger, lane string) ([]byte, error) {
	if err := CheckLane(lane); err != nil {
		return nil, err
	}
	doc, _, err := readTip(l, lane)
	if err != nil {
		return nil, err
	}
	if doc == nil {
		return nil, fmt.Errorf("lane %s has no chained window", lane)
	}
	return doc, nil
}

// identity is the transaction creator: MSP id, certificate fingerprint (hex SHA-256 of the DER) and
// whether the certificate's OU names an admin.
type identity struct {
	msp, fp string
	admin   bool
}

func creator(l Ledger) (*identity, error) {
	raw, err := l.GetCreator()
	if err != nil {
		return nil, fmt.Errorf("reading the creator: %w", err)
	}
	var sid msp.SerializedIdentity
	if err := proto.Unmarshal(raw, &sid); err != nil {
		return nil, fmt.Errorf("the creator is not a serialized identity: %w", err)
	}
	block, _ := pem.Decode(sid.GetIdBytes())
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("the creator of MSP %s holds no PEM certificate", sid.GetMspid())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the creator's certificate (MSP %s) does not parse: %w", sid.GetMspid(), err)
	}
	sum := sha256.Sum256(block.Bytes)
	return &identity{
		msp: sid.GetMspid(), fp: hex.EncodeToString(sum[:]),
		admin: slices.Contains(cert.Subject.OrganizationalUnit, "admin"),
	}, nil
}

// writerState is the stored approvals: consortium MSP id -> approved certificate fingerprint.
type writerState struct {
	Approvals map[string]string `json:"approvals"`
}

func readWriter(l Ledger) (*writerState, error) {
	doc, err := l.GetState(writerKey)
	if err != nil {
		return nil, fmt.Errorf("reading the writer approvals: %w", err)
	}
	w := &writerState{}
	if doc != nil {
		if err := json.Unmarshal(doc, w); err != nil {
			return nil, fmt.Errorf("the stored writer approvals do not parse: %w", err)
		}
	}
	if w.Approvals == nil {
		w.Approvals = map[string]string{}
	}
	return w, nil
}

// active is the writer: the fingerprint every consortium organisation's approval names ("" if none).
func (w *writerState) active() string {
	first := w.Approvals[Consortium[0]]
	for _, org := range Consortium {
		if fp := w.Approvals[org]; fp == "" || fp != first {
			return ""
		}
	}
	return first
}

func (w *writerState) summary() string {
	parts := make([]string, len(Consortium))
	for i, org := range Consortium {
		fp := w.Approvals[org]
		if fp == "" {
			fp = "none"
		} else {
			fp = fp[:16] + "…"
		}
		parts[i] = org + " " + fp
	}
	return strings.Join(parts, ", ")
}

// requireWriter refuses a creator who is not the approved writer.
func requireWriter(l Ledger) error {
	w, err := readWriter(l)
	if err != nil {
		return err
	}
	active := w.active()
	if active == "" {
		return &WriterError{fmt.Sprintf("no writer is approved yet: an admin of each of %s must call ApproveWriter "+
			"with the same certificate (approved so far: %s)", strings.Join(Consortium, ", "), w.summary())}
	}
	id, err := creator(l)
	if err != nil {
		return err
	}
	if id.fp != active {
		return &WriterError{fmt.Sprintf("only the anchoring service's identity may write: the creator (MSP %s, "+
			"certificate sha256 %s…) is not the writer %s… that %s approved", id.msp, id.fp[:16], active[:16],
			strings.Join(Consortium, " and "))}
	}
	return nil
}

// ApproveWriter records the creator's organisation's approval of the writer certificate certSha256
// (hex SHA-256 of its DER); the creator must be an admin of a consortium organisation.
func ApproveWriter(l Ledger, certSha256 string) ([]byte, error) {
	id, err := creator(l)
	if err != nil {
		return nil, err
	}
	rule := "only an admin of a consortium organisation (" + strings.Join(Consortium, ", ") + ") may approve the writer"
	if !slices.Contains(Consortium, id.msp) {
		return nil, &WriterError{fmt.Sprintf("%s: the creator's MSP %s is not one", rule, id.msp)}
	}
	if !id.admin {
		return nil, &WriterError{fmt.Sprintf("%s: the creator (MSP %s, certificate sha256 %s…) has no OU admin", rule, id.msp, id.fp[:16])}
	}
	if !rootPattern.MatchString(certSha256) {
		return nil, argErr("certSha256 %q must be 64 lowercase hex characters (the SHA-256 of the writer's DER certificate)", certSha256)
	}
	w, err := readWriter(l)
	if err != nil {
		return nil, err
	}
	w.Approvals[id.msp] = certSha256
	doc, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	if err := putEndorsed(l, writerKey, doc); err != nil {
		return nil, err
	}
	return w.answer() // not GetWriter: a transaction does not read its own writes
}

// GetWriter answers the approvals and, when every consortium organisation approved the same
// certificate, the writer.
func GetWriter(l Ledger) ([]byte, error) {
	w, err := readWriter(l)
	if err != nil {
		return nil, err
	}
	return w.answer()
}

func (w *writerState) answer() ([]byte, error) {
	return json.Marshal(struct {
		Approvals map[string]string `json:"approvals"`
		Writer    string            `json:"writer,omitempty"`
	}{w.Approvals, w.active()})
}
