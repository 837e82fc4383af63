package main

import (
	"fmt"
	"math/rand"
	"testing"
)

// BenchmarkCheckTransition: a window that changes 1,000 of 100,000 subjects (950 logs grow, 50
// subjects are new), and one that changes 10,000 of 1,000,000 (9,500 and 500; the service splits such
// a window into transactions of at most 4,000 subjects, so this is the total over them).
func BenchmarkCheckTransition(b *testing.B) {
	for _, c := range []struct{ subjects, updates, inserts int }{{100_000, 950, 50}, {1_000_000, 9_500, 500}} {
		b.Run(fmt.Sprintf("%d-of-%d", c.updates+c.inserts, c.subjects), func(b *testing.B) {
			benchTransition(b, c.subjects, c.updates, c.inserts)
		})
	}
}

func benchTransition(b *testing.B, subjects, updates, inserts int) {
	rng := rand.New(rand.NewSource(7))
	entries := make([]subject, subjects)
	for i := range entries {
		var root [32]byte
		rng.Read(root[:])
		entries[i] = subject{key: testKey(fmt.Sprint("subject-", i)), size: uint64(1 + rng.Intn(500)), root: root}
	}
	grown := map[int]subject{}
	for len(grown) < updates {
		i := 1 + rng.Intn(subjects)
		if _, ok := grown[i]; ok {
			continue
		}
		n := 1 + rng.Intn(200)
		log := testLog(fmt.Sprint("log-", i), n+1+rng.Intn(20))
		entries[i-1] = logged(entries[i-1].key, log, n)
		grown[i] = logged(entries[i-1].key, log, len(log))
	}
	var fresh []subject
	for j := 0; j < inserts; j++ {
		fresh = append(fresh, logged(testKey(fmt.Sprint("new-", j)), testLog(fmt.Sprint("new-", j), 3), 3))
	}
	old := newHeads(entries)
	next := old.grow(grown, fresh)
	proof := mustJSON(prove(old, next))
	oldRoot, newRoot := old.root(), next.root()
	if err := CheckTransition(oldRoot[:], old.size(), newRoot[:], next.size(), proof); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := CheckTransition(oldRoot[:], old.size(), newRoot[:], next.size(), proof); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(proof)), "proof-bytes")
}
