package main

// HTTP Signature authentication as CloudAPI performs it: the
// draft-cavage "Signature" scheme over the Date header, keys identified by
// /<account>[/users/<user>]/keys/<md5 fingerprint or key name>.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PublicKey is one registered key of an account or sub-user.
type PublicKey struct {
	Name        string
	Fingerprint string // md5, colon-separated lower-case hex of the SSH wire blob
	Key         crypto.PublicKey
}

// LoadPublicKey reads an OpenSSH public key line (ssh-rsa, ssh-ed25519,
// ecdsa-sha2-nistp*), a PEM public key (PKIX "PUBLIC KEY" or PKCS#1 "RSA
// PUBLIC KEY") or a PEM private key (PKCS#1, PKCS#8, SEC 1), whose public
// half is used.
func LoadPublicKey(path string) (*PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return newPublicKey(name, key)
}

func newPublicKey(name string, key crypto.PublicKey) (*PublicKey, error) {
	blob, err := SSHWireBlob(key)
	if err != nil {
		return nil, err
	}
	return &PublicKey{Name: name, Fingerprint: MD5Fingerprint(blob), Key: key}, nil
}

// ParsePublicKey decodes the formats LoadPublicKey accepts.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	trimmed := bytes.TrimSpace(data)
	if block, _ := pem.Decode(trimmed); block != nil {
		switch block.Type {
		case "PUBLIC KEY":
			return x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			return x509.ParsePKCS1PublicKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			return &k.PublicKey, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			return &k.PublicKey, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			if s, ok := k.(crypto.Signer); ok {
				return s.Public(), nil
			}
			return nil, errors.New("unsupported PKCS#8 key")
		default:
			return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
		}
	}
	fields := strings.Fields(string(trimmed))
	if len(fields) < 2 {
		return nil, errors.New("not a PEM key or an OpenSSH public key line")
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, fmt.Errorf("OpenSSH key: %v", err)
	}
	return parseSSHWireBlob(blob)
}

// MD5Fingerprint is the colon-hex MD5 of an SSH public key blob, the form
// CloudAPI puts in keyId.
func MD5Fingerprint(blob []byte) string {
	sum := md5.Sum(blob)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(parts, ":")
}

func sshString(b []byte) []byte {
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	return out
}

func sshMpint(n *big.Int) []byte {
	b := n.Bytes()
	if len(b) > 0 && b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return sshString(b)
}

var curveNames = map[string]elliptic.Curve{
	"nistp256": elliptic.P256(),
	"nistp384": elliptic.P384(),
	"nistp521": elliptic.P521(),
}

func curveName(c elliptic.Curve) (string, error) {
	switch c {
	case elliptic.P256():
		return "nistp256", nil
	case elliptic.P384():
		return "nistp384", nil
	case elliptic.P521():
		return "nistp521", nil
	}
	return "", errors.New("unsupported curve")
}

// SSHWireBlob encodes a public key the way OpenSSH does (RFC 4253 6.6,
// RFC 5656, RFC 8709); its MD5 is the key's fingerprint.
func SSHWireBlob(key crypto.PublicKey) ([]byte, error) {
	var buf bytes.Buffer
	switch k := key.(type) {
	case *rsa.PublicKey:
		buf.Write(sshString([]byte("ssh-rsa")))
		buf.Write(sshMpint(big.NewInt(int64(k.E))))
		buf.Write(sshMpint(k.N))
	case ed25519.PublicKey:
		buf.Write(sshString([]byte("ssh-ed25519")))
		buf.Write(sshString(k))
	case *ecdsa.PublicKey:
		name, err := curveName(k.Curve)
		if err != nil {
			return nil, err
		}
		buf.Write(sshString([]byte("ecdsa-sha2-" + name)))
		buf.Write(sshString([]byte(name)))
		buf.Write(sshString(elliptic.Marshal(k.Curve, k.X, k.Y)))
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return buf.Bytes(), nil
}

type wireReader struct{ b []byte }

func (r *wireReader) next() ([]byte, error) {
	if len(r.b) < 4 {
		return nil, errors.New("truncated SSH key blob")
	}
	n := binary.BigEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		return nil, errors.New("truncated SSH key blob")
	}
	v := r.b[4 : 4+n]
	r.b = r.b[4+n:]
	return v, nil
}

func parseSSHWireBlob(blob []byte) (crypto.PublicKey, error) {
	r := &wireReader{b: blob}
	kind, err := r.next()
	if err != nil {
		return nil, err
	}
	switch string(kind) {
	case "ssh-rsa":
		e, err := r.next()
		if err != nil {
			return nil, err
		}
		n, err := r.next()
		if err != nil {
			return nil, err
		}
		ei := new(big.Int).SetBytes(e)
		if !ei.IsInt64() || ei.Int64() > 1<<31 {
			return nil, errors.New("RSA exponent too large")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ei.Int64())}, nil
	case "ssh-ed25519":
		k, err := r.next()
		if err != nil {
			return nil, err
		}
		if len(k) != ed25519.PublicKeySize {
			return nil, errors.New("bad ed25519 key length")
		}
		return ed25519.PublicKey(append([]byte(nil), k...)), nil
	case "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
		name, err := r.next()
		if err != nil {
			return nil, err
		}
		curve, ok := curveNames[string(name)]
		if !ok {
			return nil, fmt.Errorf("unsupported curve %q", name)
		}
		point, err := r.next()
		if err != nil {
			return nil, err
		}
		x, y := elliptic.Unmarshal(curve, point)
		if x == nil {
			return nil, errors.New("bad ECDSA point")
		}
		return &ecdsa.PublicKey{Curve: curve, X: x, Y: y}, nil
	}
	return nil, fmt.Errorf("unsupported SSH key type %q", kind)
}

// AuthError is a CloudAPI-shaped authentication failure.
type AuthError struct {
	Status  int
	Code    string
	Message string
}

func (e *AuthError) Error() string { return e.Code + ": " + e.Message }

func invalidCreds(format string, args ...interface{}) *AuthError {
	return &AuthError{Status: http.StatusUnauthorized, Code: "InvalidCredentials", Message: fmt.Sprintf(format, args...)}
}

func invalidHeader(format string, args ...interface{}) *AuthError {
	return &AuthError{Status: http.StatusBadRequest, Code: "InvalidHeader",
		Message: "Authorization header invalid: " + fmt.Sprintf(format, args...)}
}

// SignatureParams are the parsed parameters of a Signature Authorization header.
type SignatureParams struct {
	KeyID     string   `json:"key_id"`
	Algorithm string   `json:"algorithm"`
	Headers   []string `json:"headers"`
	Signature string   `json:"-"`
}

// parseSignatureHeader parses `Signature k="v",k="v"`.
func parseSignatureHeader(value string) (*SignatureParams, *AuthError) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(value), " ")
	if !strings.EqualFold(scheme, "Signature") {
		return nil, invalidCreds("The authorization scheme you requested is not supported")
	}
	params := map[string]string{}
	s := strings.TrimSpace(rest)
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, invalidHeader("bad parameter list %q", rest)
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = s[eq+1:]
		if len(s) == 0 || s[0] != '"' {
			return nil, invalidHeader("value of %s is not quoted", name)
		}
		end := strings.IndexByte(s[1:], '"')
		if end < 0 {
			return nil, invalidHeader("unterminated value of %s", name)
		}
		params[name] = s[1 : 1+end]
		s = strings.TrimSpace(s[end+2:])
		s = strings.TrimPrefix(s, ",")
		s = strings.TrimSpace(s)
	}
	p := &SignatureParams{KeyID: params["keyid"], Algorithm: strings.ToLower(params["algorithm"]), Signature: params["signature"]}
	if p.KeyID == "" {
		return nil, invalidHeader("keyId was not specified")
	}
	if p.Algorithm == "" {
		return nil, invalidHeader("algorithm was not specified")
	}
	if p.Signature == "" {
		return nil, invalidHeader("signature was not specified")
	}
	if h, ok := params["headers"]; ok {
		p.Headers = strings.Fields(strings.ToLower(h))
	} else {
		p.Headers = []string{"date"}
	}
	return p, nil
}

// signingString builds the draft-cavage signing string for the listed headers.
func signingString(r *http.Request, headers []string) (string, *AuthError) {
	lines := make([]string, 0, len(headers))
	for _, h := range headers {
		if h == "(request-target)" {
			lines = append(lines, fmt.Sprintf("(request-target): %s %s", strings.ToLower(r.Method), r.URL.RequestURI()))
			continue
		}
		if h == "host" {
			lines = append(lines, "host: "+r.Host)
			continue
		}
		v, ok := r.Header[http.CanonicalHeaderKey(h)]
		if !ok {
			return "", invalidHeader("%s was not in the request", h)
		}
		lines = append(lines, h+": "+strings.Join(v, ", "))
	}
	return strings.Join(lines, "\n"), nil
}

var signAlgorithms = map[string]crypto.Hash{
	"rsa-sha1":       crypto.SHA1,
	"rsa-sha256":     crypto.SHA256,
	"rsa-sha384":     crypto.SHA384,
	"rsa-sha512":     crypto.SHA512,
	"ecdsa-sha256":   crypto.SHA256,
	"ecdsa-sha384":   crypto.SHA384,
	"ecdsa-sha512":   crypto.SHA512,
	"ed25519-sha512": crypto.SHA512,
}

// VerifySignature checks sig over data with key under algorithm.
func VerifySignature(key crypto.PublicKey, algorithm string, data, sig []byte) bool {
	h, ok := signAlgorithms[algorithm]
	if !ok {
		return false
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if !strings.HasPrefix(algorithm, "rsa-") {
			return false
		}
		d := h.New()
		d.Write(data)
		return rsa.VerifyPKCS1v15(k, h, d.Sum(nil), sig) == nil
	case *ecdsa.PublicKey:
		if !strings.HasPrefix(algorithm, "ecdsa-") {
			return false
		}
		d := h.New()
		d.Write(data)
		return ecdsa.VerifyASN1(k, d.Sum(nil), sig)
	case ed25519.PublicKey:
		if !strings.HasPrefix(algorithm, "ed25519") {
			return false
		}
		// Ed25519 signs the message itself (it hashes with SHA-512 inside).
		return ed25519.Verify(k, data, sig)
	}
	return false
}

// Principal is who a verified request was signed by.
type Principal struct {
	Account string
	User    string
	Key     *PublicKey
}

// Authenticator verifies requests against the registered keys.
type Authenticator struct {
	Account   string
	AcctKeys  []*PublicKey
	UserKeys  map[string][]*PublicKey
	ClockSkew time.Duration
	Now       func() time.Time
}

func findKey(keys []*PublicKey, id string) *PublicKey {
	for _, k := range keys {
		if k.Fingerprint == strings.ToLower(id) || k.Name == id {
			return k
		}
	}
	return nil
}

// Authenticate verifies r the way CloudAPI does and returns the signer.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, *SignatureParams, *AuthError) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil, nil, invalidCreds("You must make authenticated requests to use CloudAPI")
	}
	p, aerr := parseSignatureHeader(authz)
	if aerr != nil {
		return nil, nil, aerr
	}
	// The date (or x-date) header must be present, signed and fresh.
	dateHeader := "date"
	if r.Header.Get("Date") == "" && r.Header.Get("X-Date") != "" {
		dateHeader = "x-date"
	}
	dateValue := r.Header.Get(dateHeader)
	if dateValue == "" {
		return nil, p, invalidHeader("date was not in the request")
	}
	signed := false
	for _, h := range p.Headers {
		if h == dateHeader {
			signed = true
		}
	}
	if !signed {
		return nil, p, invalidHeader("%s was not a signed header", dateHeader)
	}
	when, err := http.ParseTime(dateValue)
	if err != nil {
		return nil, p, invalidHeader("%s header %q is not an HTTP date", dateHeader, dateValue)
	}
	skew := a.Now().Sub(when)
	if skew < 0 {
		skew = -skew
	}
	if skew > a.ClockSkew {
		return nil, p, invalidHeader("clock skew of %d s was greater than %d s",
			int64(skew/time.Second), int64(a.ClockSkew/time.Second))
	}
	// node's http-signature (CloudAPI's parser) knows the hashes sha1,
	// sha256 and sha512 only: anything else fails while parsing the header.
	if strings.HasSuffix(p.Algorithm, "-sha384") {
		return nil, p, invalidHeader("%s is not supported", p.Algorithm)
	}
	if _, ok := signAlgorithms[p.Algorithm]; !ok {
		return nil, p, invalidCreds("%s is not a supported signing algorithm", p.Algorithm)
	}
	parts := strings.Split(p.KeyID, "/")
	var login, user, keyName string
	switch {
	case len(parts) == 4 && parts[0] == "" && parts[2] == "keys":
		login, keyName = parts[1], parts[3]
	case len(parts) == 6 && parts[0] == "" && parts[2] == "users" && parts[4] == "keys":
		login, user, keyName = parts[1], parts[3], parts[5]
	default:
		return nil, p, invalidCreds("Invalid KeyId %s in authorization header", p.KeyID)
	}
	if login != a.Account {
		return nil, p, invalidCreds("Invalid account %s", login)
	}
	keys := a.AcctKeys
	if user != "" {
		uk, ok := a.UserKeys[user]
		if !ok {
			return nil, p, invalidCreds("Invalid account %s", user)
		}
		keys = uk
	}
	key := findKey(keys, keyName)
	if key == nil {
		return nil, p, invalidCreds("Invalid key %s", keyName)
	}
	data, aerr := signingString(r, p.Headers)
	if aerr != nil {
		return nil, p, aerr
	}
	sig, err := base64.StdEncoding.DecodeString(p.Signature)
	if err != nil || !VerifySignature(key.Key, p.Algorithm, []byte(data), sig) {
		return nil, p, invalidCreds("The signature we calculated does not match the one you sent")
	}
	return &Principal{Account: login, User: user, Key: key}, p, nil
}
