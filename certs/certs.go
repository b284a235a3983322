// Package certs creates and loads the TLS material for qim: a development
// certificate authority, server certificates signed by it, and the
// tls.Config values that servers and clients use.
//
// Generate writes four PEM files into a directory:
//
//	ca.pem      the CA certificate, which clients trust (mode 0644)
//	ca.key      the CA private key (mode 0600)
//	server.pem  the server certificate, signed by the CA (mode 0644)
//	server.key  the server private key (mode 0600)
//
// Keys are ECDSA P-256 in PKCS #8 "PRIVATE KEY" blocks. The CA is kept
// across runs, so clients that trust ca.pem keep working when the server
// certificate is replaced.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ALPN is the application protocol that qim clients and servers negotiate.
const ALPN = "qim/1"

// Names of the files that Generate writes into its directory.
const (
	CACertFile     = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

const (
	caCommonName     = "qim development CA"
	serverCommonName = "qim server"
	caYears          = 10
	// serverValidity stays under the 398-day limit that browsers and
	// Apple platforms enforce, well inside the CA/B Forum's 825 days.
	serverValidity = 398 * 24 * time.Hour
	// backdate tolerates clocks that run slightly behind ours.
	backdate = time.Hour
)

// Generate writes a server certificate and key into dir, signed by the CA in
// dir, creating dir with mode 0700 if it does not exist.
//
// If dir already holds ca.pem and ca.key, that CA is reused and only
// server.pem and server.key are replaced, so clients that trust ca.pem keep
// working. Otherwise a new CA is created first. Generate refuses to go on
// when only one of ca.pem and ca.key exists, when they do not match, or when
// the CA has expired: remove both files to start a new CA.
//
// The server certificate names localhost, 127.0.0.1 and ::1, plus each of
// hosts: an entry that parses as an IP address becomes an IP SAN, any other
// a DNS name. Empty entries are ignored. Its validity ends after 398 days or
// with the CA, whichever is first.
//
// Each file is written to a temporary file in dir and renamed into place, so
// a reader never sees a partly written file.
func Generate(dir string, hosts []string) error {
	dnsNames, ips, err := subjectAltNames(hosts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: create directory: %w", err)
	}
	now := time.Now()
	ca, caKey, err := loadCA(dir)
	if errors.Is(err, fs.ErrNotExist) {
		ca, caKey, err = createCA(dir, now)
	}
	if err != nil {
		return err
	}
	if !now.Before(ca.NotAfter) {
		return fmt.Errorf("certs: CA in %s expired on %s; remove %s and %s to create a new one",
			dir, ca.NotAfter.Format(time.DateOnly), CACertFile, CAKeyFile)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: generate server key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(serverValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: serverCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certs: create server certificate: %w", err)
	}
	return writePair(dir, ServerCertFile, ServerKeyFile, der, key)
}

// EnsureServer returns the paths of dir/server.pem and dir/server.key,
// calling Generate first unless both files already exist. It reports whether
// it generated them. Existing files are returned as they are: EnsureServer
// checks neither their names nor their expiry; call Generate to replace them.
func EnsureServer(dir string, hosts []string) (certFile, keyFile string, created bool, err error) {
	certFile = filepath.Join(dir, ServerCertFile)
	keyFile = filepath.Join(dir, ServerKeyFile)
	certOK, err := exists(certFile)
	if err != nil {
		return "", "", false, err
	}
	keyOK, err := exists(keyFile)
	if err != nil {
		return "", "", false, err
	}
	if certOK && keyOK {
		return certFile, keyFile, false, nil
	}
	if err := Generate(dir, hosts); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, true, nil
}

// LoadServerTLS returns a server tls.Config that presents the certificate
// in certFile with the key in keyFile, requires TLS 1.3 and offers ALPN.
func LoadServerTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load server key pair: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
	}, nil
}

// ClientTLS returns a client tls.Config that requires TLS 1.3 and offers
// ALPN. It trusts the CA certificates in the PEM file caFile or, if insecure
// is true, skips verifying the server altogether and ignores caFile; one of
// the two is required. A non-empty serverName is the name the server
// certificate must carry; when it is empty the caller's dialer fills it in
// from the address it dials.
func ClientTLS(caFile string, insecure bool, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
	}
	switch {
	case insecure:
		cfg.InsecureSkipVerify = true
	case caFile == "":
		return nil, errors.New("certs: client TLS needs a CA file or insecure mode")
	default:
		data, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("certs: read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("certs: no PEM certificates in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// loadCA reads the CA certificate and key from dir. The error matches
// fs.ErrNotExist only when neither file exists.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fs.ErrNotExist
	case errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: %s exists without %s; remove it to create a new CA", keyPath, certPath)
	case errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: %s exists without %s; remove it to create a new CA", certPath, keyPath)
	case certErr != nil:
		return nil, nil, fmt.Errorf("certs: read CA certificate: %w", certErr)
	case keyErr != nil:
		return nil, nil, fmt.Errorf("certs: read CA key: %w", keyErr)
	}

	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("certs: %s holds no PEM certificate", certPath)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse CA certificate: %w", err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("certs: %s is not a CA certificate", certPath)
	}
	block, _ = pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("certs: %s holds no PEM PRIVATE KEY", keyPath)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse CA key: %w", err)
	}
	key, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("certs: CA key in %s cannot sign", keyPath)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("certs: %s does not match %s", keyPath, certPath)
	}
	return ca, key, nil
}

// createCA makes a new self-signed CA valid from now and writes it to dir.
func createCA(dir string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	notBefore := now.Add(-backdate)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(caYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse new CA certificate: %w", err)
	}
	if err := writePair(dir, CACertFile, CAKeyFile, der, key); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// writePair writes a certificate (mode 0644) and its private key (mode
// 0600) into dir, key first.
func writePair(dir, certName, keyName string, certDER []byte, key crypto.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: marshal %s: %w", keyName, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(filepath.Join(dir, keyName), keyPEM, 0o600); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	return writeFileAtomic(filepath.Join(dir, certName), certPEM, 0o644)
}

// writeFileAtomic replaces path with data: it writes a temporary file in the
// same directory, syncs it, and renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("certs: write %s: %w", path, err)
		}
	}()
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// not even before this Chmod.
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// subjectAltNames returns the server certificate's DNS names and IP
// addresses: the loopback names followed by hosts, without duplicates.
func subjectAltNames(hosts []string) ([]string, []net.IP, error) {
	dnsNames := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			if !containsIP(ips, ip) {
				ips = append(ips, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("certs: host %q is neither an IP address nor a DNS name", h)
		}
		if !containsFold(dnsNames, h) {
			dnsNames = append(dnsNames, h)
		}
	}
	return dnsNames, ips, nil
}

// validDNSName reports whether name looks like a host name or a wildcard
// ("*.example.com"): dot-separated labels of letters, digits, '-' and '_'.
// It rejects mistakes such as "host:port", URLs and bracketed addresses.
func validDNSName(name string) bool {
	if len(name) > 253 {
		return false
	}
	name = strings.TrimPrefix(name, "*.")
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			case c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

func containsFold(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// newSerial returns a random positive 128-bit certificate serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("certs: generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// exists reports whether path exists; errors other than absence are
// returned.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("certs: %w", err)
	}
}
