package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMTHMatchesTheRFC6962Vectors(t *testing.T) {
	data, err := os.ReadFile("../../proof_spec/vectors/rfc6962.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Leaves []string          `json:"leaves"`
		Roots  map[string]string `json:"roots"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var leaves [][32]byte
	for _, l := range v.Leaves {
		b, _ := hex.DecodeString(l)
		leaves = append(leaves, LeafHash(b))
	}
	for n, want := range v.Roots {
		size, _ := strconv.Atoi(n)
		if got := mth(leaves[:size]); hex.EncodeToString(got[:]) != want {
			t.Errorf("MTH of %d leaves: %x, want %s", size, got, want)
		}
	}
}

func slices32(hs [][32]byte) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func TestVerifyConsistencyAcceptsEveryHonestProof(t *testing.T) {
	leaves := testLog("c", 40)
	for n := 1; n <= 40; n++ {
		for m := 1; m <= n; m++ {
			r1, r2 := mth(leaves[:m]), mth(leaves[:n])
			proof := consistencyProof(m, leaves[:n])
			if err := VerifyConsistency(uint64(m), uint64(n), r1[:], r2[:], slices32(proof)); err != nil {
				t.Fatalf("%d -> %d: %v", m, n, err)
			}
		}
	}
}

func TestVerifyConsistencyRefusesTampering(t *testing.T) {
	leaves := testLog("c", 20)
	for n := 2; n <= 20; n++ {
		for m := 1; m < n; m++ {
			r1, r2 := mth(leaves[:m]), mth(leaves[:n])
			proof := consistencyProof(m, leaves[:n])
			for i := range proof {
				bad := slices32(append([][32]byte(nil), proof...))
				bad[i] = append([]byte(nil), bad[i]...)
				bad[i][0] ^= 1
				if VerifyConsistency(uint64(m), uint64(n), r1[:], r2[:], bad) == nil {
					t.Fatalf("%d -> %d: hash %d flipped and accepted", m, n, i)
				}
			}
			p := slices32(proof)
			other := mth(leaves[1 : m+1])
			cases := map[string]error{
				"wrong old root": VerifyConsistency(uint64(m), uint64(n), other[:], r2[:], p),
				"wrong new root": VerifyConsistency(uint64(m), uint64(n), r1[:], other[:], p),
				"short":          VerifyConsistency(uint64(m), uint64(n), r1[:], r2[:], p[:len(p)-1]),
				"long":           VerifyConsistency(uint64(m), uint64(n), r1[:], r2[:], append(p, r1[:])),
			}
			for name, err := range cases {
				if err == nil {
					t.Fatalf("%d -> %d: %s accepted", m, n, name)
				}
			}
		}
	}
}

func TestVerifyConsistencyEdges(t *testing.T) {
	leaves := testLog("e", 4)
	r1, r4 := mth(leaves[:1]), mth(leaves)
	cases := []struct {
		name         string
		size1, size2 uint64
		root1, root2 []byte
		proof        [][]byte
		want         string
	}{
		{"equal sizes, equal roots", 4, 4, r4[:], r4[:], nil, ""},
		{"equal sizes, a hash given", 4, 4, r4[:], r4[:], [][]byte{r1[:]}, "empty consistency proof"},
		{"equal sizes, other roots", 4, 4, r4[:], r1[:], nil, "different roots"},
		{"size 0", 0, 4, r1[:], r4[:], nil, "no consistency proof"},
		{"shrinking", 4, 1, r4[:], r1[:], nil, "no consistency proof"},
		{"empty proof", 1, 4, r1[:], r4[:], nil, "is empty"},
		{"short hash", 1, 4, r1[:], r4[:], [][]byte{r1[:31]}, "32 bytes"},
	}
	for _, c := range cases {
		err := VerifyConsistency(c.size1, c.size2, c.root1, c.root2, c.proof)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}
