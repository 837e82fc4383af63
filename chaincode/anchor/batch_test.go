package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

const w2End = "2026-11-21T10:00:05Z"

// batchScenario: three consecutive windows of one lane (the third empty), as AppendWindow arguments.
func batchScenario() []appendArgs {
	first, second := chainScenario()
	_, next := scenario()
	root := next.root()
	third := appendArgs{"medical-history", "2", "", "w2", w1End, w2End, "[]",
		hex.EncodeToString(root[:]), fmt.Sprint(next.size()), string(mustJSON(prove(next, next)))}
	return []appendArgs{first, second, third}
}

// batchArgs is AppendWindows' argument list: the lane, then nine per window (prev empty after the first).
func batchArgs(ws []appendArgs) []string {
	args := []string{ws[0].lane}
	for i, w := range ws {
		prev := w.prev
		if i > 0 {
			prev = ""
		}
		args = append(args, w.seq, prev, w.id, w.start, w.end, w.trees, w.headsRoot, w.headsSize, w.proof)
	}
	return args
}

func TestAppendWindowsWritesWhatSuccessiveAppendsWould(t *testing.T) {
	setClock(t, txTime)
	ws := batchScenario()
	single := newLedger() // one AppendWindow per window, every one in a transaction with the same id and time
	var want [][]byte
	for i, w := range ws {
		if i > 0 {
			w.prev = prevOf(want[i-1])
		}
		doc, err := w.run(single)
		if err != nil {
			t.Fatalf("window %d alone: %v", i, err)
		}
		want = append(want, doc)
	}
	l := newLedger()
	answer, err := AppendWindows(l, batchArgs(ws))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(answer, bytes.Join(want, []byte("\n"))) {
		t.Fatalf("records\n got %s\nwant %s", answer, bytes.Join(want, []byte("\n")))
	}
	if !bytes.Equal(l.events[BatchEventName], answer) || l.events[AppendEventName] != nil {
		t.Fatalf("event %q", l.events)
	}
	for k, v := range single.state { // the same state: tip, tree records, root index, chained flag
		if !bytes.Equal(l.state[k], v) {
			t.Errorf("key %q: batch wrote %s, successive appends %s", k, l.state[k], v)
		}
	}
	if len(l.state) != len(single.state) {
		t.Errorf("the batch wrote %d keys, successive appends %d", len(l.state), len(single.state))
	}
	if l.paramSets != 1 {
		t.Errorf("the tip's key-level policy was written %d times", l.paramSets)
	}
	var tip Tip
	if err := json.Unmarshal(l.state[tipKey("medical-history")], &tip); err != nil || tip.Seq != 2 || tip.WindowID != "w2" {
		t.Fatalf("tip %+v %v", tip, err)
	}
	// a retry of the whole transaction answers the stored tip and writes nothing
	puts := l.puts
	again, err := AppendWindows(l, batchArgs(ws))
	if err != nil || !bytes.Equal(again, want[2]) || l.puts != puts {
		t.Fatalf("a repeat: %s %v (%d writes)", again, err, l.puts-puts)
	}
	// and a batch that continues the chain takes the tip's hash as its first prev
	w3 := appendArgs{"medical-history", "3", prevOf(want[2]), "w3", w2End, "2026-11-21T10:00:06Z", "[]",
		ws[2].headsRoot, ws[2].headsSize, ws[2].proof}
	if _, err := AppendWindows(l, batchArgs([]appendArgs{w3})); err != nil {
		t.Fatalf("a batch of one after the tip: %v", err)
	}
}

func TestAppendWindowsRefusesNamingTheWindowAndTheCheck(t *testing.T) {
	setClock(t, txTime)
	cases := []struct {
		name string
		edit func(ws []appendArgs, args []string) []string
		want string
	}{
		{"a prev after the first", func(ws []appendArgs, a []string) []string { a[1+9+1] = zeros; return a },
			"window 1 of the transaction: prev"},
		{"a skipped seq", func(ws []appendArgs, a []string) []string { a[1+18] = "3"; return a },
			"window 2 of the transaction: sequence: seq 3 does not follow"},
		{"a gap in time", func(ws []appendArgs, a []string) []string { a[1+9+3] = "2026-11-21T09:59:51Z"; return a },
			"window 1 of the transaction: gap in time"},
		{"a log that shrinks", func(ws []appendArgs, a []string) []string {
			a[1+9+8] = ws[0].proof // the first window's proof does not take the first heads to the second
			return a
		}, "window 1 of the transaction: transition check"},
		{"an end in the future", func(ws []appendArgs, a []string) []string { a[1+18+4] = "2026-11-21T10:00:11Z"; return a },
			"window 2 of the transaction: windowEnd 2026-11-21T10:00:11Z ends in the future"},
		{"a repeated window id", func(ws []appendArgs, a []string) []string { a[1+18+2] = "w0"; return a },
			"window 2 of the transaction: windowId w0 repeats window 0's"},
		{"a bad first prev", func(ws []appendArgs, a []string) []string { a[2] = prevOf([]byte("x")); return a },
			"window 0 of the transaction: previous hash"},
		{"a torn argument list", func(ws []appendArgs, a []string) []string { return a[:len(a)-1] },
			"AppendWindows takes the lane and 9 arguments per window"},
		{"too many windows", func(ws []appendArgs, a []string) []string {
			for len(a) < 1+9*(MaxBatch+1) {
				a = append(a, a[1:10]...)
			}
			return a
		}, "AppendWindows takes at most 64 windows, got 65"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLedger()
			ws := batchScenario()
			_, err := AppendWindows(l, c.edit(ws, batchArgs(ws)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want a refusal containing %q, got %v", c.want, err)
			}
			if l.puts != 0 || l.state[tipKey("medical-history")] != nil {
				t.Fatal("a refused batch wrote")
			}
		})
	}
	l := newLedger()
	l.creator = hospClient.creator
	ws := batchScenario()
	if _, err := AppendWindows(l, batchArgs(ws)); err == nil || !strings.Contains(err.Error(), "only the anchoring service's identity may write") {
		t.Fatalf("another client: %v", err)
	}
}
