// Command x509check parses PEM certificates with Go's crypto/x509 and path-validates a leaf.
//
// It is the Go verifier of agentca's interop tests (tests/integration/test_go_x509.py). It
// uses the standard library only and prints one JSON object on stdout:
//
//	x509check -roots root.pem [-intermediates issuing.pem] -leaf agent.pem
//	          [-eku client|any] [-time 2026-12-04T12:00:00Z] [-bundle bundle.json]
//
// With -bundle, the roots are read from a SPIFFE trust bundle (JWKS): the first x5c
// certificate of every key whose "use" is "x509-svid", as SPIFFE verifiers do. Every file
// is parsed on its own first, so a parse error names the file that caused it. The exit
// status is 0 when the output was written, whatever the verdict; 2 on bad usage.
package main

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// parsed is what Go saw in one certificate.
type parsed struct {
	File              string   `json:"file"`
	Error             string   `json:"error,omitempty"`
	Subject           string   `json:"subject,omitempty"`
	IsCA              bool     `json:"is_ca"`
	URIs              []string `json:"uris"`
	EKUs              []string `json:"ekus"`
	UnknownEKUs       []string `json:"unknown_ekus"`
	ExtensionOIDs     []string `json:"extension_oids"`
	UnhandledCritical []string `json:"unhandled_critical"`
	KeyUsage          int      `json:"key_usage"`
	PolicyOIDs        []string `json:"policy_oids"`
}

type result struct {
	Certificates []parsed   `json:"certificates"`
	BundleRoots  int        `json:"bundle_roots"`
	Verified     bool       `json:"verified"`
	VerifyError  string     `json:"verify_error,omitempty"`
	Chains       [][]string `json:"chains"`
}

var ekuNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:         "any",
	x509.ExtKeyUsageServerAuth:  "serverAuth",
	x509.ExtKeyUsageClientAuth:  "clientAuth",
	x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	x509.ExtKeyUsageCodeSigning: "codeSigning",
}

func describe(file string, c *x509.Certificate) parsed {
	p := parsed{File: file, Subject: c.Subject.String(), IsCA: c.IsCA, KeyUsage: int(c.KeyUsage),
		URIs: []string{}, EKUs: []string{}, UnknownEKUs: []string{}, ExtensionOIDs: []string{},
		UnhandledCritical: []string{}, PolicyOIDs: []string{}}
	for _, u := range c.URIs {
		p.URIs = append(p.URIs, u.String())
	}
	for _, e := range c.ExtKeyUsage {
		name, ok := ekuNames[e]
		if !ok {
			name = fmt.Sprintf("eku-%d", e)
		}
		p.EKUs = append(p.EKUs, name)
	}
	for _, o := range c.UnknownExtKeyUsage {
		p.UnknownEKUs = append(p.UnknownEKUs, o.String())
	}
	for _, ext := range c.Extensions {
		p.ExtensionOIDs = append(p.ExtensionOIDs, ext.Id.String())
	}
	for _, o := range c.UnhandledCriticalExtensions {
		p.UnhandledCritical = append(p.UnhandledCritical, o.String())
	}
	for _, o := range c.PolicyIdentifiers {
		p.PolicyOIDs = append(p.PolicyOIDs, o.String())
	}
	return p
}

// readPEM parses every CERTIFICATE block of one file.
func readPEM(file string, out *result) []*x509.Certificate {
	data, err := os.ReadFile(file)
	if err != nil {
		out.Certificates = append(out.Certificates, parsed{File: file, Error: err.Error()})
		return nil
	}
	var certs []*x509.Certificate
	seen := len(out.Certificates)
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			out.Certificates = append(out.Certificates, parsed{File: file, Error: err.Error()})
			continue
		}
		out.Certificates = append(out.Certificates, describe(file, c))
		certs = append(certs, c)
	}
	if len(out.Certificates) == seen {
		out.Certificates = append(out.Certificates, parsed{File: file, Error: "no certificate"})
	}
	return certs
}

// bundleRoots reads the X.509 authorities of a SPIFFE bundle (SPIFFE X509-SVID section 6.2).
func bundleRoots(file string, out *result) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Keys []struct {
			Use string   `json:"use"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, k := range doc.Keys {
		if k.Use != "x509-svid" || len(k.X5c) == 0 {
			continue
		}
		der, err := base64.StdEncoding.DecodeString(k.X5c[0])
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out.Certificates = append(out.Certificates, describe(file, c))
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, errors.New("the bundle has no x509-svid authority")
	}
	return roots, nil
}

func main() {
	rootsFile := flag.String("roots", "", "PEM file of the trust anchors")
	bundleFile := flag.String("bundle", "", "SPIFFE trust bundle (JWKS) holding the trust anchors")
	intermediates := flag.String("intermediates", "", "PEM file of intermediate CA certificates")
	leafFile := flag.String("leaf", "", "PEM file of the leaf certificate")
	eku := flag.String("eku", "client", "required extended key usage: client or any")
	at := flag.String("time", "", "RFC 3339 verification time (default: now)")
	flag.Parse()
	if (*rootsFile == "") == (*bundleFile == "") || *leafFile == "" {
		fmt.Fprintln(os.Stderr, "usage: x509check (-roots PEM | -bundle JSON) [-intermediates PEM] -leaf PEM")
		os.Exit(2)
	}
	out := result{Certificates: []parsed{}, Chains: [][]string{}}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	switch *eku {
	case "client":
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case "any":
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	default:
		fmt.Fprintln(os.Stderr, "-eku must be client or any")
		os.Exit(2)
	}
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			fmt.Fprintln(os.Stderr, "-time:", err)
			os.Exit(2)
		}
		opts.CurrentTime = t
	}
	var roots []*x509.Certificate
	if *bundleFile != "" {
		var err error
		roots, err = bundleRoots(*bundleFile, &out)
		if err != nil {
			out.Certificates = append(out.Certificates, parsed{File: *bundleFile, Error: err.Error()})
		}
		out.BundleRoots = len(roots)
	} else {
		roots = readPEM(*rootsFile, &out)
	}
	for _, c := range roots {
		opts.Roots.AddCert(c)
	}
	if *intermediates != "" {
		for _, c := range readPEM(*intermediates, &out) {
			opts.Intermediates.AddCert(c)
		}
	}
	leaves := readPEM(*leafFile, &out)
	if len(leaves) == 0 {
		out.VerifyError = "the leaf did not parse"
	} else {
		chains, err := leaves[0].Verify(opts)
		if err != nil {
			out.VerifyError = err.Error()
		} else {
			out.Verified = true
			for _, chain := range chains {
				names := []string{}
				for _, c := range chain {
					names = append(names, c.Subject.String())
				}
				out.Chains = append(out.Chains, names)
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
