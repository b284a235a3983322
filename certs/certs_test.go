package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestGenerate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := Generate(dir, []string{"qim.example.test", "192.0.2.7", " 2001:db8::1 ", "", "LOCALHOST", "127.0.0.1"}); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	ca := readCert(t, filepath.Join(dir, CACertFile))
	srv := readCert(t, filepath.Join(dir, ServerCertFile))
	readKey(t, filepath.Join(dir, CAKeyFile), ca)
	readKey(t, filepath.Join(dir, ServerKeyFile), srv)

	t.Run("CA", func(t *testing.T) {
		if ca.Subject.CommonName != "qim development CA" {
			t.Errorf("CA CN = %q", ca.Subject.CommonName)
		}
		if !ca.IsCA || !ca.BasicConstraintsValid {
			t.Error("CA certificate is not a CA")
		}
		if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; ca.KeyUsage != want {
			t.Errorf("CA KeyUsage = %v, want %v", ca.KeyUsage, want)
		}
		if err := ca.CheckSignatureFrom(ca); err != nil {
			t.Errorf("CA is not self-signed: %v", err)
		}
		if got := ca.NotAfter.Sub(ca.NotBefore); got < 3650*24*time.Hour || got > 3653*24*time.Hour {
			t.Errorf("CA validity = %v, want 10 years", got)
		}
	})
	t.Run("server", func(t *testing.T) {
		if srv.IsCA {
			t.Error("server certificate is a CA")
		}
		if len(srv.ExtKeyUsage) != 1 || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
			t.Errorf("server ExtKeyUsage = %v, want [ServerAuth]", srv.ExtKeyUsage)
		}
		if got := srv.NotAfter.Sub(time.Now()); got > 398*24*time.Hour || got < 397*24*time.Hour {
			t.Errorf("server certificate expires in %v, want 398 days", got)
		}
		if got, want := srv.DNSNames, []string{"localhost", "qim.example.test"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("DNSNames = %q, want %q (duplicates removed)", got, want)
		}
		if got := len(srv.IPAddresses); got != 4 {
			t.Errorf("IPAddresses = %v, want 4 without duplicates", srv.IPAddresses)
		}
	})
	t.Run("serials", func(t *testing.T) {
		for _, c := range []*x509.Certificate{ca, srv} {
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
			}
			// A random 128-bit number is this short with probability 2^-32.
			if c.SerialNumber.BitLen() < 96 {
				t.Errorf("serial %v looks too short to be random", c.SerialNumber)
			}
		}
		if ca.SerialNumber.Cmp(srv.SerialNumber) == 0 {
			t.Error("CA and server share a serial number")
		}
	})

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tt := range []struct {
		name   string
		wantOK bool
	}{
		{"localhost", true},
		{"LocalHost", true},
		{"127.0.0.1", true},
		{"::1", true},
		{"qim.example.test", true},
		{"192.0.2.7", true},
		{"2001:db8::1", true},
		{"2001:db8:0::1", true},
		{"example.com", false},
		{"sub.qim.example.test", false},
		{"qim.example", false},
		{"10.0.0.1", false},
		{"192.0.2.8", false},
		{"::2", false},
	} {
		t.Run("verify "+tt.name, func(t *testing.T) {
			_, err := srv.Verify(x509.VerifyOptions{
				DNSName:   tt.name,
				Roots:     roots,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if tt.wantOK && err != nil {
				t.Fatalf("Verify(%q): %v", tt.name, err)
			}
			if !tt.wantOK {
				var herr x509.HostnameError
				if !errors.As(err, &herr) {
					t.Fatalf("Verify(%q) = %v, want a HostnameError", tt.name, err)
				}
			}
		})
	}
}

func TestGenerateFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permissions")
	}
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := Generate(dir, nil); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	for _, tt := range []struct {
		name string
		want os.FileMode
	}{
		{".", 0o700 | os.ModeDir},
		{CACertFile, 0o644},
		{CAKeyFile, 0o600},
		{ServerCertFile, 0o644},
		{ServerKeyFile, 0o600},
	} {
		fi, err := os.Stat(filepath.Join(dir, tt.name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != tt.want {
			t.Errorf("mode of %s = %v, want %v", tt.name, got, tt.want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only the four files", names)
	}
}

func TestGenerateKeepsCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := Generate(dir, nil); err != nil {
		t.Fatal(err)
	}
	caPEM := readFile(t, filepath.Join(dir, CACertFile))
	caKeyPEM := readFile(t, filepath.Join(dir, CAKeyFile))
	oldSrv := readFile(t, filepath.Join(dir, ServerCertFile))
	oldKey := readFile(t, filepath.Join(dir, ServerKeyFile))

	if err := Generate(dir, []string{"new.example.test"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caPEM, readFile(t, filepath.Join(dir, CACertFile))) ||
		!bytes.Equal(caKeyPEM, readFile(t, filepath.Join(dir, CAKeyFile))) {
		t.Fatal("second Generate replaced the CA")
	}
	if bytes.Equal(oldSrv, readFile(t, filepath.Join(dir, ServerCertFile))) ||
		bytes.Equal(oldKey, readFile(t, filepath.Join(dir, ServerKeyFile))) {
		t.Fatal("second Generate kept the old server certificate or key")
	}

	ca := readCert(t, filepath.Join(dir, CACertFile))
	srv := readCert(t, filepath.Join(dir, ServerCertFile))
	readKey(t, filepath.Join(dir, ServerKeyFile), srv)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "new.example.test", Roots: roots}); err != nil {
		t.Fatalf("new server certificate does not chain to the kept CA: %v", err)
	}
	if !bytes.Equal(srv.AuthorityKeyId, ca.SubjectKeyId) {
		t.Error("server AuthorityKeyId does not name the CA")
	}
}

func TestGenerateErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		hosts []string
		setup func(t *testing.T, dir string) // prepares dir, which exists
		want  string                         // substring of the error
	}{
		{name: "host with port", hosts: []string{"example.com:4433"}, want: "neither an IP"},
		{name: "URL", hosts: []string{"https://example.com"}, want: "neither an IP"},
		{name: "bracketed IPv6", hosts: []string{"[::1]"}, want: "neither an IP"},
		{name: "space in name", hosts: []string{"a b"}, want: "neither an IP"},
		{name: "empty label", hosts: []string{"a..b"}, want: "neither an IP"},
		{
			name:  "CA cert without key",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, CACertFile), "x") },
			want:  "exists without",
		},
		{
			name:  "CA key without cert",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, CAKeyFile), "x") },
			want:  "exists without",
		},
		{
			name: "CA cert garbage",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, CACertFile), "not PEM")
				writeFile(t, filepath.Join(dir, CAKeyFile), "not PEM")
			},
			want: "no PEM certificate",
		},
		{
			name: "CA is a server certificate",
			setup: func(t *testing.T, dir string) {
				other := t.TempDir()
				if err := Generate(other, nil); err != nil {
					t.Fatal(err)
				}
				copyFile(t, filepath.Join(other, ServerCertFile), filepath.Join(dir, CACertFile))
				copyFile(t, filepath.Join(other, ServerKeyFile), filepath.Join(dir, CAKeyFile))
			},
			want: "not a CA",
		},
		{
			name: "CA key from another CA",
			setup: func(t *testing.T, dir string) {
				a, b := t.TempDir(), t.TempDir()
				if err := Generate(a, nil); err != nil {
					t.Fatal(err)
				}
				if err := Generate(b, nil); err != nil {
					t.Fatal(err)
				}
				copyFile(t, filepath.Join(a, CACertFile), filepath.Join(dir, CACertFile))
				copyFile(t, filepath.Join(b, CAKeyFile), filepath.Join(dir, CAKeyFile))
			},
			want: "does not match",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			before := dirContents(t, dir)
			err := Generate(dir, tt.hosts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("Generate = %v, want an error containing %q", err, tt.want)
			}
			if after := dirContents(t, dir); after != before {
				t.Errorf("failed Generate changed the directory:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestEnsureServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, created, err := EnsureServer(dir, []string{"h.example.test"})
	if err != nil {
		t.Fatalf("first EnsureServer: %v", err)
	}
	if !created {
		t.Fatal("first EnsureServer did not create")
	}
	if certFile != filepath.Join(dir, ServerCertFile) || keyFile != filepath.Join(dir, ServerKeyFile) {
		t.Fatalf("EnsureServer returned %q, %q", certFile, keyFile)
	}
	cert, key := readFile(t, certFile), readFile(t, keyFile)

	certFile2, keyFile2, created, err := EnsureServer(dir, []string{"other.example.test"})
	if err != nil {
		t.Fatalf("second EnsureServer: %v", err)
	}
	if created || certFile2 != certFile || keyFile2 != keyFile {
		t.Fatalf("second EnsureServer = %q, %q, created %v", certFile2, keyFile2, created)
	}
	if !bytes.Equal(cert, readFile(t, certFile)) || !bytes.Equal(key, readFile(t, keyFile)) {
		t.Fatal("second EnsureServer regenerated the files")
	}

	// With the key gone, EnsureServer generates a new pair under the same CA.
	caPEM := readFile(t, filepath.Join(dir, CACertFile))
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, _, created, err = EnsureServer(dir, nil); err != nil || !created {
		t.Fatalf("EnsureServer after removing the key: created %v, err %v", created, err)
	}
	if bytes.Equal(cert, readFile(t, certFile)) {
		t.Error("EnsureServer kept a certificate whose key was gone")
	}
	if !bytes.Equal(caPEM, readFile(t, filepath.Join(dir, CACertFile))) {
		t.Error("EnsureServer replaced the CA")
	}
	if _, err := LoadServerTLS(certFile, keyFile); err != nil {
		t.Errorf("regenerated pair does not load: %v", err)
	}
}

func TestLoadServerTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, _, err := EnsureServer(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServerTLS(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadServerTLS: %v", err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || len(cfg.Certificates) != 1 ||
		len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPN {
		t.Fatalf("unexpected config: MinVersion %x, %d certificates, NextProtos %q",
			cfg.MinVersion, len(cfg.Certificates), cfg.NextProtos)
	}

	for _, tt := range []struct {
		name              string
		certFile, keyFile string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), keyFile},
		{"missing key", certFile, filepath.Join(dir, "nope.key")},
		{"mismatched key", certFile, filepath.Join(dir, CAKeyFile)},
		{"swapped", keyFile, certFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadServerTLS(tt.certFile, tt.keyFile); err == nil {
				t.Fatal("LoadServerTLS succeeded")
			}
		})
	}
}

func TestClientTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := Generate(dir, nil); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, CACertFile)
	noCerts := filepath.Join(dir, "empty.pem")
	writeFile(t, noCerts, "no certificates here\n")

	for _, tt := range []struct {
		name       string
		caFile     string
		insecure   bool
		serverName string
		wantErr    bool
		wantRoots  bool
	}{
		{name: "CA", caFile: caFile, wantRoots: true},
		{name: "CA and server name", caFile: caFile, serverName: "qim.example.test", wantRoots: true},
		{name: "insecure", insecure: true},
		{name: "insecure ignores CA file", caFile: filepath.Join(dir, "missing.pem"), insecure: true},
		{name: "neither", wantErr: true},
		{name: "neither with server name", serverName: "localhost", wantErr: true},
		{name: "missing CA file", caFile: filepath.Join(dir, "missing.pem"), wantErr: true},
		{name: "CA file without certificates", caFile: noCerts, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ClientTLS(tt.caFile, tt.insecure, tt.serverName)
			if tt.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), "certs: ") {
					t.Fatalf("ClientTLS = %v, want a certs: error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ClientTLS: %v", err)
			}
			if cfg.MinVersion != tls.VersionTLS13 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != ALPN {
				t.Errorf("MinVersion %x, NextProtos %q", cfg.MinVersion, cfg.NextProtos)
			}
			if cfg.ServerName != tt.serverName {
				t.Errorf("ServerName = %q, want %q", cfg.ServerName, tt.serverName)
			}
			if cfg.InsecureSkipVerify != tt.insecure {
				t.Errorf("InsecureSkipVerify = %v, want %v", cfg.InsecureSkipVerify, tt.insecure)
			}
			if (cfg.RootCAs != nil) != tt.wantRoots {
				t.Errorf("RootCAs set = %v, want %v", cfg.RootCAs != nil, tt.wantRoots)
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	dir, otherDir := t.TempDir(), t.TempDir()
	certFile, keyFile, _, err := EnsureServer(dir, []string{"qim.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Generate(otherDir, nil); err != nil {
		t.Fatal(err)
	}
	serverCfg, err := LoadServerTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, CACertFile)
	otherCA := filepath.Join(otherDir, CACertFile)

	for _, tt := range []struct {
		name       string
		caFile     string
		insecure   bool
		serverName string
		tweak      func(*tls.Config) // adjusts the client config, if set
		wantErr    string            // part of the client's error; "" for success
	}{
		{name: "CA localhost", caFile: caFile, serverName: "localhost"},
		{name: "CA extra host", caFile: caFile, serverName: "qim.example.test"},
		{name: "CA loopback IP", caFile: caFile, serverName: "127.0.0.1"},
		{name: "insecure", insecure: true},
		{name: "insecure wrong name", insecure: true, serverName: "wrong.example.test"},
		{name: "other CA", caFile: otherCA, serverName: "localhost", wantErr: "certificate signed by unknown authority"},
		{name: "wrong name", caFile: caFile, serverName: "wrong.example.test", wantErr: "certificate is valid for localhost"},
		{
			name: "client limited to TLS 1.2", caFile: caFile, serverName: "localhost",
			tweak:   func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 },
			wantErr: "protocol version not supported",
		},
		{
			name: "client without ALPN", caFile: caFile, serverName: "localhost",
			tweak:   func(c *tls.Config) { c.NextProtos = []string{"h3"} },
			wantErr: "no application protocol",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clientCfg, err := ClientTLS(tt.caFile, tt.insecure, tt.serverName)
			if err != nil {
				t.Fatal(err)
			}
			if tt.tweak != nil {
				tt.tweak(clientCfg)
			}
			client, server := handshake(t, clientCfg, serverCfg)
			if tt.wantErr != "" {
				if server.err == nil {
					t.Error("server handshake succeeded")
				}
				if client.err == nil || !strings.Contains(client.err.Error(), tt.wantErr) {
					t.Fatalf("client handshake error %v, want one containing %q", client.err, tt.wantErr)
				}
				return
			}
			if client.err != nil || server.err != nil {
				t.Fatalf("handshake failed: client %v, server %v", client.err, server.err)
			}
			for side, st := range map[string]tls.ConnectionState{"client": client.state, "server": server.state} {
				if st.Version != tls.VersionTLS13 {
					t.Errorf("%s negotiated version %x, want TLS 1.3", side, st.Version)
				}
				if st.NegotiatedProtocol != ALPN {
					t.Errorf("%s negotiated protocol %q, want %q", side, st.NegotiatedProtocol, ALPN)
				}
			}
		})
	}
}

// handshakeResult is one side's view of a TLS handshake.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// handshake runs a TLS handshake over a loopback TCP connection and returns
// both sides' results. (net.Pipe does not do: it has no buffer, so a client
// that rejects the certificate blocks writing its alert while the server
// blocks writing the rest of its flight.) The server side runs in its own
// goroutine, which has ended when handshake returns.
func handshake(t *testing.T, clientCfg, serverCfg *tls.Config) (client, server handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)

	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- handshakeResult{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		conn := tls.Server(c, serverCfg)
		err = conn.Handshake()
		done <- handshakeResult{conn.ConnectionState(), err}
	}()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		ln.Close()
		<-done
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	conn := tls.Client(c, clientCfg)
	err = conn.Handshake()
	client = handshakeResult{conn.ConnectionState(), err}
	c.Close()
	return client, <-done
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	writeFile(t, to, string(readFile(t, from)))
}

// dirContents describes the names and contents of the files in dir.
func dirContents(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Name() + "=" + string(readFile(t, filepath.Join(dir, e.Name()))) + ";")
	}
	return b.String()
}

// readCert parses the single PEM certificate in path.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(readFile(t, path))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not a single PEM CERTIFICATE", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("%s has a %T public key, want ECDSA", path, cert.PublicKey)
	}
	return cert
}

// readKey checks that path holds a PKCS #8 ECDSA P-256 key matching cert.
func readKey(t *testing.T, path string, cert *x509.Certificate) {
	t.Helper()
	block, rest := pem.Decode(readFile(t, path))
	if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s is not a single PEM PRIVATE KEY", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("%s holds a %T, want an ECDSA P-256 key", path, parsed)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("%s does not match its certificate", path)
	}
}
