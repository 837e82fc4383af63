package main

// Chained windows (spec §14.7-§14.8): one chain of windows per lane, each window the successor of the
// lane's tip with a transition proof that the heads only grew, written only by the writer both
// consortium organisations approved.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/statebased"
)

const (
	// AppendEventName is the chaincode event emitted with the new tip record.
	AppendEventName = "AppendWindow"
	// BatchEventName is AppendWindows' event: the new records, one per line.
	BatchEventName = "AppendWindows"
	// MaxBatch is the most windows one AppendWindows transaction appends.
	MaxBatch = 64
	// WindowArgs is the number of arguments per window after the lane.
	WindowArgs = 9
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
	records, err := appendWindows(l, lane, [][]string{{seq, prev, windowID, windowStart, windowEnd, trees, headsRoot, headsSize, proof}}, AppendEventName)
	if err != nil {
		return nil, err
	}
	return records[0], nil
}

// AppendWindows appends several consecutive windows of a lane in one transaction (§14.8): args are the
// lane, then nine arguments per window, as AppendWindow's after the lane. Each window after the first
// takes an empty prev: it succeeds the record of the window before it in the transaction, which the
// chaincode hashes. It answers the new records, one per line (the event's payload too); a repeat of
// the tip's own last window answers the stored tip without writing.
func AppendWindows(l Ledger, args []string) ([]byte, error) {
	if len(args) < 1+WindowArgs || (len(args)-1)%WindowArgs != 0 {
		return nil, argErr("AppendWindows takes the lane and %d arguments per window (seq, prev, windowId, windowStart, "+
			"windowEnd, trees, headsRoot, headsSize, proof), got %d argument(s)", WindowArgs, len(args))
	}
	n := (len(args) - 1) / WindowArgs
	if n > MaxBatch {
		return nil, argErr("AppendWindows takes at most %d windows, got %d", MaxBatch, n)
	}
	windows := make([][]string, n)
	for i := range windows {
		windows[i] = args[1+i*WindowArgs : 1+(i+1)*WindowArgs]
	}
	records, err := appendWindows(l, args[0], windows, BatchEventName)
	if err != nil {
		return nil, err
	}
	return bytes.Join(records, []byte("\n")), nil
}

// appendWindows checks and writes windows (nine arguments each, after the lane) as successive tips of
// lane, and answers their records. A repeat of the tip's own (last) window answers the stored tip.
func appendWindows(l Ledger, lane string, windows [][]string, event string) ([][]byte, error) {
	if err := requireWriter(l); err != nil {
		return nil, err
	}
	stored, tip, err := readTip(l, lane)
	if err != nil {
		return nil, err
	}
	batch := len(windows) > 1
	parsed := make([]*window, len(windows))
	for i, a := range windows {
		prev := a[1]
		if batch && i > 0 {
			if prev != "" {
				return nil, inWindow(i, batch, argErr("prev %q must be empty: a window after the first succeeds the record "+
					"of the window before it in the transaction, which the chaincode hashes", prev))
			}
			prev = zeroPrev // replaced by the hash of the record before it, below
		}
		if parsed[i], err = parseWindow(lane, a[0], prev, a[2], a[3], a[4], a[5], a[6], a[7]); err != nil {
			return nil, inWindow(i, batch, err)
		}
		for j := 0; j < i; j++ {
			if parsed[j].id == parsed[i].id {
				return nil, inWindow(i, batch, argErr("windowId %s repeats window %d's", parsed[i].id, j))
			}
		}
	}
	if last := parsed[len(parsed)-1]; tip != nil && tip.WindowID == last.id && tip.HeadsRoot == last.headsRoot &&
		tip.HeadsSize == last.headsSize && slices.Equal(tip.Trees, last.trees) {
		return [][]byte{stored}, nil
	}
	ts, err := l.GetTxTimestamp()
	if err != nil {
		return nil, fmt.Errorf("reading the transaction time: %w", err)
	}
	txTime := ts.AsTime().UTC().Format(time.RFC3339Nano)
	records := make([][]byte, 0, len(windows))
	for i, w := range parsed { // every check first: a refused transaction writes nothing
		if batch && i > 0 {
			sum := sha256.Sum256(stored)
			w.prev = hex.EncodeToString(sum[:])
		}
		if err := checkWindow(l, w, stored, tip, windows[i][8]); err != nil {
			return nil, inWindow(i, batch, err)
		}
		doc, next, err := chainRecord(l, w, windows[i][8], txTime)
		if err != nil {
			return nil, inWindow(i, batch, err)
		}
		records = append(records, doc)
		stored, tip = doc, next
	}
	indexed := map[string]bool{} // roots whose index this transaction wrote (it does not read its own writes)
	for _, w := range parsed {
		if err := writeTrees(l, w, txTime, indexed); err != nil {
			return nil, err
		}
	}
	if err := putEndorsed(l, tipKey(lane), stored); err != nil { // both organisations, whatever the definition says
		return nil, err
	}
	if err := markChained(l); err != nil {
		return nil, err
	}
	if err := l.SetEvent(event, bytes.Join(records, []byte("\n"))); err != nil {
		return nil, fmt.Errorf("setting the event: %w", err)
	}
	return records, nil
}

// checkWindow runs the succession, clock, transition and write-once checks of w against the tip.
func checkWindow(l Ledger, w *window, stored []byte, tip *Tip, proof string) error {
	if err := succeeds(w, stored, tip); err != nil {
		return err
	}
	if err := checkClock(l, w); err != nil {
		return err
	}
	oldRoot, oldSize := EmptyHeadsRoot(), uint64(1)
	if tip != nil {
		if !rootPattern.MatchString(tip.HeadsRoot) {
			return fmt.Errorf("the stored tip of lane %s has a bad heads_root", w.lane)
		}
		_, _ = hex.Decode(oldRoot[:], []byte(tip.HeadsRoot))
		oldSize = tip.HeadsSize
	}
	newRoot, _ := hex.DecodeString(w.headsRoot)
	if err := CheckTransition(oldRoot[:], oldSize, newRoot, w.headsSize, []byte(proof)); err != nil {
		return err
	}
	for _, t := range w.trees {
		key := treeKey(w.id, t.Index)
		if doc, err := l.GetState(key); err != nil {
			return fmt.Errorf("reading key %s: %w", key, err)
		} else if doc != nil {
			return &ConflictError{fmt.Sprintf("key %s is already anchored: a window's tree keys are written once", key)}
		}
	}
	return nil
}

// inWindow prefixes err's message with the window's place in a batch (errors.As still finds its kind).
func inWindow(i int, batch bool, err error) error {
	if !batch {
		return err
	}
	return fmt.Errorf("window %d of the transaction: %w", i, err)
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

// chainRecord is w's chain record (§14.7): its bytes, as the tip key would hold them, and parsed.
func chainRecord(l Ledger, w *window, proof, txTime string) ([]byte, *Tip, error) {
	proofHash := sha256.Sum256([]byte(proof))
	tip := Tip{
		V: TipVersion, Lane: w.lane, Seq: w.seq, Prev: w.prev, WindowID: w.id, Trees: w.trees,
		HeadsRoot: w.headsRoot, HeadsSize: w.headsSize, WindowStart: w.startText, WindowEnd: w.endText,
		ProofHash: hex.EncodeToString(proofHash[:]), TxID: l.GetTxID(), TxTime: txTime,
	}
	doc, err := json.Marshal(tip)
	if err != nil {
		return nil, nil, err
	}
	return doc, &tip, nil
}

// writeTrees writes each tree's anchor record (with its chain position) and root index.
func writeTrees(l Ledger, w *window, txTime string, indexed map[string]bool) error {
	for _, t := range w.trees {
		seq, heads := w.seq, w.headsSize
		a := &Anchor{
			Key: treeKey(w.id, t.Index), Root: t.Root, TreeSize: t.Size, WindowStart: w.startText, WindowEnd: w.endText,
			HeadsRoot: w.headsRoot, HeadsSize: &heads, Channel: l.GetChannelID(), TxID: l.GetTxID(), TxTime: txTime,
			Lane: w.lane, ChainSeq: &seq,
		}
		if _, err := putAnchor(l, a, !indexed[t.Root]); err != nil {
			return err
		}
		indexed[t.Root] = true
	}
	return nil
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
