package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
)

// hashSize is the size of a SHA-256 digest.
const hashSize = sha256.Size

// LeafHash is the RFC 6962 leaf hash H(0x00 || value).
func LeafHash(value []byte) [hashSize]byte {
	buf := make([]byte, 1+len(value))
	copy(buf[1:], value)
	return sha256.Sum256(buf)
}

// NodeHash is the RFC 6962 interior node hash H(0x01 || left || right).
func NodeHash(left, right *[hashSize]byte) [hashSize]byte {
	var buf [1 + 2*hashSize]byte
	buf[0] = 1
	copy(buf[1:], left[:])
	copy(buf[1+hashSize:], right[:])
	return sha256.Sum256(buf[:])
}

// splitPoint is the largest power of two smaller than n (n ≥ 2), where MTH splits n leaves.
func splitPoint(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

func isPowerOfTwo(n uint64) bool { return n != 0 && n&(n-1) == 0 }

// VerifyConsistency checks an RFC 6962 consistency proof (RFC 9162 §2.1.4.2) that the tree of size2
// leaves with root2 extends the tree of size1 leaves with root1 (size1 ≥ 1; equal sizes take an empty
// proof and equal roots).
func VerifyConsistency(size1, size2 uint64, root1, root2 []byte, proof [][]byte) error {
	if size1 < 1 || size2 < size1 {
		return fmt.Errorf("no consistency proof goes from size %d to size %d", size1, size2)
	}
	if len(root1) != hashSize || len(root2) != hashSize {
		return errors.New("a root must be 32 bytes")
	}
	for i, h := range proof {
		if len(h) != hashSize {
			return fmt.Errorf("consistency hash %d must be 32 bytes", i)
		}
	}
	if size1 == size2 {
		if len(proof) != 0 {
			return errors.New("equal sizes need an empty consistency proof")
		}
		if string(root1) != string(root2) {
			return errors.New("equal sizes but different roots")
		}
		return nil
	}
	if len(proof) == 0 {
		return errors.New("the consistency proof is empty")
	}
	path := proof
	if isPowerOfTwo(size1) {
		path = append([][]byte{root1}, proof...)
	}
	fn, sn := size1-1, size2-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	var fr, sr [hashSize]byte
	copy(fr[:], path[0])
	sr = fr
	for _, h := range path[1:] {
		if sn == 0 {
			return errors.New("the consistency proof is too long")
		}
		c := (*[hashSize]byte)(h)
		if fn&1 == 1 || fn == sn {
			fr = NodeHash(c, &fr)
			sr = NodeHash(c, &sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = NodeHash(&sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return errors.New("the consistency proof is too short")
	}
	if string(fr[:]) != string(root1) {
		return errors.New("the consistency proof does not lead to the old root")
	}
	if string(sr[:]) != string(root2) {
		return errors.New("the consistency proof does not lead to the new root")
	}
	return nil
}
