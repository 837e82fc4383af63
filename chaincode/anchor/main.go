package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-protos-go-apiv2/peer"
)

// Registry dispatches invocations to the anchor functions.
type Registry struct{}

// Init does nothing: the registry needs no initialisation.
func (Registry) Init(shim.ChaincodeStubInterface) *peer.Response { return shim.Success(nil) }

// Invoke runs one function and answers its result as JSON, or an error naming the problem.
func (Registry) Invoke(stub shim.ChaincodeStubInterface) *peer.Response {
	fn, args := stub.GetFunctionAndParameters()
	return Dispatch(stub, fn, args)
}

// arity is the argument count of each function (AnchorRoot also takes 7: with the heads; AppendWindows
// checks its own).
var arity = map[string]int{
	"AnchorRoot": 5, "AppendWindow": 10, "AppendWindows": -1, "ApproveWriter": 1, "GetAnchor": 1, "GetAnchorByRoot": 1, "GetTip": 1,
	"GetWriter": 0,
}

// Dispatch calls fn with args; errors become error responses (status 500 with the message).
func Dispatch(l Ledger, fn string, args []string) *peer.Response {
	doc, err := call(l, fn, args)
	if err != nil {
		return shim.Error(err.Error())
	}
	return shim.Success(doc)
}

func call(l Ledger, fn string, args []string) ([]byte, error) {
	n, known := arity[fn]
	switch {
	case !known:
		return nil, fmt.Errorf("unknown function %q; known: AnchorRoot, AppendWindow, AppendWindows, ApproveWriter, GetAnchor, "+
			"GetAnchorByRoot, GetTip, GetWriter", fn)
	case fn == "AppendWindows":
		return AppendWindows(l, args)
	case fn == "AnchorRoot" && len(args) == 7:
		return anchorJSON(AnchorWindow(l, args[0], args[1], args[2], args[3], args[4], args[5], args[6]))
	case len(args) != n:
		if fn == "AnchorRoot" {
			return nil, fmt.Errorf("AnchorRoot takes 5 arguments (or 7 with the heads), got %d", len(args))
		}
		return nil, fmt.Errorf("%s takes %d argument(s), got %d", fn, n, len(args))
	}
	switch fn {
	case "AnchorRoot":
		return anchorJSON(AnchorRoot(l, args[0], args[1], args[2], args[3], args[4]))
	case "AppendWindow":
		return AppendWindow(l, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9])
	case "ApproveWriter":
		return ApproveWriter(l, args[0])
	case "GetTip":
		return GetTip(l, args[0])
	case "GetWriter":
		return GetWriter(l)
	case "GetAnchor":
		a, err := GetAnchor(l, args[0])
		if err == nil && a == nil {
			err = fmt.Errorf("key %s is not anchored", args[0])
		}
		return anchorJSON(a, err)
	}
	a, err := GetAnchorByRoot(l, args[0])
	if err == nil && a == nil {
		err = fmt.Errorf("root %s is not anchored", args[0])
	}
	return anchorJSON(a, err)
}

func anchorJSON(a *Anchor, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return json.Marshal(a)
}

func main() {
	id, addr := os.Getenv("CHAINCODE_ID"), os.Getenv("CHAINCODE_SERVER_ADDRESS")
	if id == "" || addr == "" {
		log.Fatal("set CHAINCODE_ID (the installed package id) and CHAINCODE_SERVER_ADDRESS (host:port)")
	}
	tls, err := tlsProperties(os.Getenv("CHAINCODE_TLS_KEY_FILE"), os.Getenv("CHAINCODE_TLS_CERT_FILE"),
		os.Getenv("CHAINCODE_TLS_CLIENT_CA_FILE"))
	if err != nil {
		log.Fatal(err)
	}
	server := &shim.ChaincodeServer{CCID: id, Address: addr, CC: Registry{}, TLSProps: tls}
	log.Printf("anchor chaincode %s listening on %s (TLS %v)", id, addr, !tls.Disabled)
	if err := server.Start(); err != nil {
		log.Fatalf("chaincode server: %v", err)
	}
}

// tlsProperties: mutual TLS when the three files are given (peers must present a certificate the
// client CA issued), plaintext when none is, an error for anything in between.
func tlsProperties(keyFile, certFile, clientCAFile string) (shim.TLSProperties, error) {
	if keyFile == "" && certFile == "" && clientCAFile == "" {
		return shim.TLSProperties{Disabled: true}, nil
	}
	if keyFile == "" || certFile == "" || clientCAFile == "" {
		return shim.TLSProperties{}, fmt.Errorf(
			"set all of CHAINCODE_TLS_KEY_FILE, CHAINCODE_TLS_CERT_FILE, CHAINCODE_TLS_CLIENT_CA_FILE, or none")
	}
	var files [3][]byte
	for i, name := range []string{keyFile, certFile, clientCAFile} {
		data, err := os.ReadFile(name)
		if err != nil {
			return shim.TLSProperties{}, fmt.Errorf("reading %s: %w", name, err)
		}
		files[i] = data
	}
	return shim.TLSProperties{Key: files[0], Cert: files[1], ClientCACerts: files[2]}, nil
}
