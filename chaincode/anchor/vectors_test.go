package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// transitionVectors is the shared file of transition proof cases (valid ones and refused ones with the
// reason a checker must name), written by the spec's vector generator.
const transitionVectors = "../../proof_spec/vectors/transition.json"

func TestSharedTransitionVectors(t *testing.T) {
	data, err := os.ReadFile(transitionVectors)
	if err != nil {
		t.Fatalf("the shared transition vectors are missing (%v): generate %s with the spec's vector tools", err, transitionVectors)
	}
	var file struct {
		Cases []struct {
			Name      string          `json:"name"`
			OldRoot   string          `json:"old_root"`
			OldSize   uint64          `json:"old_size"`
			HeadsRoot string          `json:"heads_root"`
			HeadsSize uint64          `json:"heads_size"`
			Proof     json.RawMessage `json:"proof"`
			Valid     bool            `json:"valid"`
			Reason    string          `json:"reason"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("%s: %v", transitionVectors, err)
	}
	if len(file.Cases) == 0 {
		t.Fatalf("%s holds no cases", transitionVectors)
	}
	for _, c := range file.Cases {
		oldRoot, err1 := hex.DecodeString(c.OldRoot)
		newRoot, err2 := hex.DecodeString(c.HeadsRoot)
		if err1 != nil || err2 != nil || len(oldRoot) != 32 || len(newRoot) != 32 {
			t.Errorf("%s: old_root and heads_root must be 64 hex characters", c.Name)
			continue
		}
		err := CheckTransition(oldRoot, c.OldSize, newRoot, c.HeadsSize, c.Proof)
		switch {
		case c.Valid && err != nil:
			t.Errorf("%s: a valid proof refused: %v", c.Name, err)
		case !c.Valid && err == nil:
			t.Errorf("%s: an invalid proof accepted (want %q)", c.Name, c.Reason)
		case !c.Valid && !strings.Contains(err.Error(), c.Reason):
			t.Errorf("%s: refused with %q, want the reason %q", c.Name, err, c.Reason)
		}
	}
}
