package main

// The writer rule (§14.8): only the certificate every consortium organisation's admin approved may
// append windows.

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	"github.com/hyperledger/fabric-protos-go-apiv2/msp"
	"google.golang.org/protobuf/proto"
)

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
