// Package main is the "anchor" chaincode: a write-once registry of Merkle tree roots.
//
// AnchorRoot(key, root, treeSize, windowStart, windowEnd[, headsRoot, headsSize]) writes the anchor
// record under key exactly once (the two optional arguments: the window's commitment to the heads of
// its subject logs, anchored in the same transaction as the tree root): the same root again succeeds without writing (idempotent, so a client may retry
// after a crash or a timeout); a different root for an existing key is refused. GetAnchor(key)
// and GetAnchorByRoot(root) read records back. Every argument is validated and rejected with a
// message naming it.
//
// Chained windows (spec §14.5-§14.8, chain.go): AppendWindow appends a lane's window as the successor
// of the lane's tip with a transition proof that the heads only grew (transition.go, transition_wire.go); GetTip reads the
// tip. ApproveWriter and GetWriter keep the one writer both consortium organisations approved; every
// write needs it, and once a window is chained AnchorRoot is closed.
package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// EventName is the chaincode event emitted when a root is first anchored.
const EventName = "AnchorRoot"

// MaxTreeSize is the largest tree a receipt may describe (receipt v1 limit).
const MaxTreeSize = 1 << 32

var (
	keyPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)
	rootPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// the RFC 3339 form verifiers parse too: Go's parser alone also takes a comma before the fraction
	// and a +24:00 offset, which would let a window through that a monitor then refuses
	timePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$`)
)

// Anchor is the record stored under its key (JSON); it holds the root it anchors.
type Anchor struct {
	Key         string  `json:"key"`
	Root        string  `json:"root"`
	TreeSize    uint64  `json:"tree_size"`
	WindowStart string  `json:"window_start"`
	WindowEnd   string  `json:"window_end"`
	HeadsRoot   string  `json:"heads_root,omitempty"`
	HeadsSize   *uint64 `json:"heads_size,omitempty"`
	Channel     string  `json:"channel"`
	TxID        string  `json:"tx_id"`
	TxTime      string  `json:"tx_time"`
	Lane        string  `json:"lane,omitempty"`      // chained windows only (§14.8)
	ChainSeq    *uint64 `json:"chain_seq,omitempty"` // the window's position in its lane's chain
}

// Ledger is the part of the chaincode stub the registry uses.
type Ledger interface {
	GetState(key string) ([]byte, error)
	PutState(key string, value []byte) error
	SetEvent(name string, payload []byte) error
	GetTxID() string
	GetChannelID() string
	GetTxTimestamp() (*timestamppb.Timestamp, error)
	GetCreator() ([]byte, error)
	SetStateValidationParameter(key string, ep []byte) error
	GetStateValidationParameter(key string) ([]byte, error)
}

// ArgumentError is a bad argument; its message names the argument and what was wrong.
type ArgumentError struct{ msg string }

func (e *ArgumentError) Error() string { return e.msg }

// ConflictError means a key is already anchored with another root.
type ConflictError struct{ msg string }

func (e *ConflictError) Error() string { return e.msg }

func argErr(format string, a ...any) error { return &ArgumentError{fmt.Sprintf(format, a...)} }

// rootIndexKey is the composite-key form ("\x00root\x00<root>\x00"), outside the key namespace.
func rootIndexKey(root string) string { return "\x00root\x00" + root + "\x00" }

// CheckKey validates an anchor key.
func CheckKey(key string) error {
	if !keyPattern.MatchString(key) {
		return argErr("key %q must be 1-128 characters of A-Z a-z 0-9 . _ : / - starting with a letter or digit", key)
	}
	return nil
}

// CheckRoot validates a root: 64 lowercase hex characters (SHA-256).
func CheckRoot(root string) error {
	if !rootPattern.MatchString(root) {
		return argErr("root %q must be 64 lowercase hex characters (a SHA-256 digest)", root)
	}
	return nil
}

func parseTreeSize(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 1 || n > MaxTreeSize || strconv.FormatUint(n, 10) != s {
		return 0, argErr("treeSize %q must be a decimal integer from 1 to %d", s, uint64(MaxTreeSize))
	}
	return n, nil
}

func parseTime(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || len(s) > 40 || !timePattern.MatchString(s) {
		return time.Time{}, argErr("%s %q must be an RFC 3339 time such as 2026-01-02T03:04:05.123456Z", name, s)
	}
	return t, nil
}

// AnchorRoot writes the anchor once and returns the stored record (the existing one on a repeat).
func AnchorRoot(l Ledger, key, root, treeSize, windowStart, windowEnd string) (*Anchor, error) {
	return AnchorWindow(l, key, root, treeSize, windowStart, windowEnd, "", "")
}

// AnchorWindow is AnchorRoot with the window's subject-heads commitment ("" and "": none). Only the
// approved writer may call it, and only while the channel holds no chained window.
func AnchorWindow(l Ledger, key, root, treeSize, windowStart, windowEnd, headsRoot, headsSize string) (*Anchor, error) {
	if err := requireWriter(l); err != nil {
		return nil, err
	}
	if err := refuseIfChained(l); err != nil {
		return nil, err
	}
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	var heads *uint64
	if headsRoot != "" || headsSize != "" {
		if err := CheckRoot(headsRoot); err != nil {
			return nil, argErr("headsRoot %q must be 64 lowercase hex characters", headsRoot)
		}
		n, err := strconv.ParseUint(headsSize, 10, 64)
		if err != nil || strconv.FormatUint(n, 10) != headsSize {
			return nil, argErr("headsSize %q must be a decimal integer", headsSize)
		}
		heads = &n
	}
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	size, err := parseTreeSize(treeSize)
	if err != nil {
		return nil, err
	}
	start, err := parseTime("windowStart", windowStart)
	if err != nil {
		return nil, err
	}
	end, err := parseTime("windowEnd", windowEnd)
	if err != nil {
		return nil, err
	}
	if end.Before(start) {
		return nil, argErr("windowEnd %s is before windowStart %s", windowEnd, windowStart)
	}
	existing, err := GetAnchor(l, key)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		if existing.Root != root || existing.TreeSize != size || existing.HeadsRoot != headsRoot {
			return nil, &ConflictError{fmt.Sprintf(
				"key %s is already anchored with root %s (tree size %d) in tx %s; refusing root %s (tree size %d)",
				key, existing.Root, existing.TreeSize, existing.TxID, root, size)}
		}
		return existing, nil
	}
	ts, err := l.GetTxTimestamp()
	if err != nil {
		return nil, fmt.Errorf("reading the transaction time: %w", err)
	}
	a := &Anchor{
		Key: key, Root: root, TreeSize: size, WindowStart: windowStart, WindowEnd: windowEnd,
		HeadsRoot: headsRoot, HeadsSize: heads, Channel: l.GetChannelID(), TxID: l.GetTxID(), TxTime: ts.AsTime().UTC().Format(time.RFC3339Nano),
	}
	doc, err := putAnchor(l, a, true)
	if err != nil {
		return nil, err
	}
	if err := l.SetEvent(EventName, doc); err != nil {
		return nil, fmt.Errorf("setting the event: %w", err)
	}
	return a, nil
}

// putAnchor writes the record and (if index) the root index, unless it names an earlier key already.
func putAnchor(l Ledger, a *Anchor, index bool) ([]byte, error) {
	doc, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	if err := l.PutState(a.Key, doc); err != nil {
		return nil, fmt.Errorf("writing key %s: %w", a.Key, err)
	}
	if !index {
		return doc, nil
	}
	ik := rootIndexKey(a.Root)
	first, err := l.GetState(ik)
	if err != nil {
		return nil, fmt.Errorf("reading the root index: %w", err)
	}
	if first == nil { // the index names the first key anchored with a root
		if err := l.PutState(ik, []byte(a.Key)); err != nil {
			return nil, fmt.Errorf("writing the root index: %w", err)
		}
	}
	return doc, nil
}

// GetAnchor returns the record under key, or nil when the key was never anchored.
func GetAnchor(l Ledger, key string) (*Anchor, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	doc, err := l.GetState(key)
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", key, err)
	}
	if doc == nil {
		return nil, nil
	}
	var a Anchor
	if err := json.Unmarshal(doc, &a); err != nil {
		return nil, fmt.Errorf("stored record for key %s is not an anchor: %w", key, err)
	}
	return &a, nil
}

// GetAnchorByRoot returns the first record anchored with root, or nil.
func GetAnchorByRoot(l Ledger, root string) (*Anchor, error) {
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	key, err := l.GetState(rootIndexKey(root))
	if err != nil {
		return nil, fmt.Errorf("reading the root index: %w", err)
	}
	if key == nil {
		return nil, nil
	}
	return GetAnchor(l, string(key))
}
