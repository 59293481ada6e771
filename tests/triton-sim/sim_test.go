package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testAccount = "sim-user"

type signer struct {
	keyID string
	alg   string
	priv  crypto.Signer
}

// sign signs the request's date header the way CloudAPI clients do.
func (s signer) sign(t *testing.T, req *http.Request) {
	t.Helper()
	if req.Header.Get("Date") == "" {
		req.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	data := []byte("date: " + req.Header.Get("Date"))
	var sig []byte
	var err error
	switch k := s.priv.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, data)
	default:
		h, ok := signAlgorithms[s.alg]
		if !ok {
			h = crypto.SHA256 // an algorithm the server must refuse by name
		}
		d := h.New()
		d.Write(data)
		sig, err = s.priv.Sign(rand.Reader, d.Sum(nil), h)
		if err != nil {
			t.Fatal(err)
		}
	}
	req.Header.Set("Authorization", fmt.Sprintf(`Signature keyId="%s",algorithm="%s",headers="date",signature="%s"`,
		s.keyID, s.alg, base64.StdEncoding.EncodeToString(sig)))
}

type fixture struct {
	t      *testing.T
	sim    *Sim
	srv    *httptest.Server
	rsa    signer
	ec     signer
	ed     signer
	sub    signer
	rogue  signer // a key the simulator does not know, under a known key's id
	closed bool
}

func mustKey(t *testing.T, name string, priv crypto.Signer) *PublicKey {
	t.Helper()
	pk, err := newPublicKey(name, priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subKey, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogueKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPK, ecPK, edPK, subPK := mustKey(t, "id_rsa", rsaKey), mustKey(t, "id_ecdsa", ecKey), mustKey(t, "id_ed25519", edKey), mustKey(t, "bob", subKey)
	auth := &Authenticator{Account: testAccount, AcctKeys: []*PublicKey{rsaPK, ecPK, edPK},
		UserKeys: map[string][]*PublicKey{"bob": {subPK}}, ClockSkew: 300 * time.Second, Now: time.Now}
	sim := NewSim(Config{Account: testAccount, Datacenter: "sim-1", TransitionDelay: 30 * time.Millisecond}, auth)
	sim.dockerImgs["busybox:latest"] = true
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &fixture{t: t, sim: sim, srv: srv,
		rsa:   signer{"/" + testAccount + "/keys/" + rsaPK.Fingerprint, "rsa-sha256", rsaKey},
		ec:    signer{"/" + testAccount + "/keys/" + ecPK.Fingerprint, "ecdsa-sha256", ecKey},
		ed:    signer{"/" + testAccount + "/keys/" + edPK.Fingerprint, "ed25519-sha512", edKey},
		sub:   signer{"/" + testAccount + "/users/bob/keys/" + subPK.Fingerprint, "ecdsa-sha512", subKey},
		rogue: signer{"/" + testAccount + "/keys/" + rsaPK.Fingerprint, "rsa-sha256", rogueKey},
	}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v interface{}) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

func (r resp) errCode(t *testing.T) (string, string) {
	t.Helper()
	var e struct{ Code, Message string }
	r.json(t, &e)
	return e.Code, e.Message
}

func (f *fixture) do(s *signer, method, path string, body interface{}, edit ...func(*http.Request)) resp {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept-Version", "~9||~8")
	for _, e := range edit {
		e(req)
	}
	if s != nil {
		s.sign(f.t, req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func TestSignatureAlgorithmsAccepted(t *testing.T) {
	f := newFixture(t)
	for _, s := range []signer{f.rsa, f.ec, f.ed} {
		r := f.do(&s, "GET", "/my/packages", nil)
		if r.status != 200 {
			t.Fatalf("%s (%s): status %d %s", s.keyID, s.alg, r.status, r.body)
		}
	}
	if r := f.do(&f.sub, "GET", "/my/packages", nil); r.status != 200 {
		t.Fatalf("sub-user: status %d %s", r.status, r.body)
	}
	alt := f.rsa
	alt.alg = "rsa-sha512"
	if r := f.do(&alt, "GET", "/"+testAccount+"/images", nil); r.status != 200 {
		t.Fatalf("rsa-sha512: %d %s", r.status, r.body)
	}
	// A key named by its file name instead of its fingerprint.
	byName := f.ed
	byName.keyID = "/" + testAccount + "/keys/id_ed25519"
	if r := f.do(&byName, "GET", "/my/networks", nil); r.status != 200 {
		t.Fatalf("key by name: %d %s", r.status, r.body)
	}
}

func TestSignatureRejections(t *testing.T) {
	f := newFixture(t)
	stale := func(r *http.Request) {
		r.Header.Set("Date", time.Now().Add(-301*time.Second).UTC().Format(http.TimeFormat))
	}
	future := func(r *http.Request) {
		r.Header.Set("Date", time.Now().Add(10*time.Minute+2*time.Second).UTC().Format(http.TimeFormat))
	}
	wrongAlg := f.rsa
	wrongAlg.alg = "ecdsa-sha256" // RSA key, ECDSA label
	unknownFP := f.rsa
	unknownFP.keyID = "/" + testAccount + "/keys/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
	otherAccount := f.rsa
	otherAccount.keyID = "/someone-else/keys/" + strings.TrimPrefix(f.rsa.keyID, "/"+testAccount+"/keys/")
	badKeyID := f.rsa
	badKeyID.keyID = "my/keys/x"
	unknownUser := f.sub
	unknownUser.keyID = strings.Replace(f.sub.keyID, "/bob/", "/alice/", 1)
	userKeyAsAccount := f.sub
	userKeyAsAccount.keyID = strings.Replace(f.sub.keyID, "/users/bob", "", 1)
	md5Alg := f.rsa
	md5Alg.alg = "rsa-md5"
	sha384 := f.ec
	sha384.alg = "ecdsa-sha384"

	cases := []struct {
		name   string
		s      *signer
		edit   []func(*http.Request)
		status int
		code   string
		msg    string
	}{
		{"no authorization", nil, nil, 401, "InvalidCredentials", "You must make authenticated requests"},
		{"wrong key", &f.rogue, nil, 401, "InvalidCredentials", "signature we calculated does not match"},
		{"unknown fingerprint", &unknownFP, nil, 401, "InvalidCredentials", "Invalid key 00:11"},
		{"other account", &otherAccount, nil, 401, "InvalidCredentials", "Invalid account someone-else"},
		{"malformed keyId", &badKeyID, nil, 401, "InvalidCredentials", "Invalid KeyId my/keys/x"},
		{"unknown sub-user", &unknownUser, nil, 401, "InvalidCredentials", "Invalid account alice"},
		{"sub-user key used as account key", &userKeyAsAccount, nil, 401, "InvalidCredentials", "Invalid key"},
		{"algorithm does not fit the key", &wrongAlg, nil, 401, "InvalidCredentials", "does not match"},
		{"unsupported algorithm", &md5Alg, nil, 401, "InvalidCredentials", "rsa-md5 is not a supported signing algorithm"},
		{"sha384 (unknown to node http-signature)", &sha384, nil, 400, "InvalidHeader", "ecdsa-sha384 is not supported"},
		{"stale date", &f.rsa, []func(*http.Request){stale}, 400, "InvalidHeader", "greater than 300 s"},
		{"future date", &f.rsa, []func(*http.Request){future}, 400, "InvalidHeader", "clock skew of 60"},
		{"unparsable date", &f.rsa, []func(*http.Request){func(r *http.Request) { r.Header.Set("Date", "yesterday") }}, 400, "InvalidHeader", "is not an HTTP date"},
		{"basic auth", nil, []func(*http.Request){func(r *http.Request) { r.SetBasicAuth("a", "b") }}, 401, "InvalidCredentials", "scheme you requested is not supported"},
		{"bad version", &f.rsa, []func(*http.Request){func(r *http.Request) { r.Header.Set("Accept-Version", "~6") }}, 400, "InvalidVersion", "~6 is not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.do(c.s, "GET", "/my/machines", nil, c.edit...)
			code, msg := r.errCode(t)
			if r.status != c.status || code != c.code || !strings.Contains(msg, c.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", r.status, code, msg, c.status, c.code, c.msg)
			}
		})
	}

	// Missing Date: signed over a date the request then does not carry.
	req, _ := http.NewRequest("GET", f.srv.URL+"/my/machines", nil)
	f.rsa.sign(t, req)
	req.Header.Del("Date")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(b), "date was not in the request") {
		t.Fatalf("missing date: %d %s", res.StatusCode, b)
	}
	// Date present but not among the signed headers.
	req, _ = http.NewRequest("GET", f.srv.URL+"/my/machines", nil)
	f.rsa.sign(t, req)
	req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), `headers="date"`, `headers="host"`, 1))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(b), "date was not a signed header") {
		t.Fatalf("unsigned date: %d %s", res.StatusCode, b)
	}
	// Ping needs no signature.
	if r := f.do(nil, "GET", "/--ping", nil); r.status != 200 {
		t.Fatalf("ping: %d", r.status)
	}
	// Every rejection is in the request log with its reason.
	var log []LoggedRequest
	f.do(nil, "GET", "/__sim/requests", nil).json(t, &log)
	rejected := 0
	for _, e := range log {
		if !e.AuthOK && e.AuthError != "" {
			rejected++
		}
	}
	if rejected < len(cases)+1 {
		t.Fatalf("log holds %d rejections, want at least %d", rejected, len(cases)+1)
	}
}

// TestKeyFilesAndFingerprints loads keys written by ssh-keygen and compares
// the MD5 fingerprints with ssh-keygen's own.
func TestKeyFilesAndFingerprints(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	for _, kind := range []string{"rsa", "ed25519", "ecdsa"} {
		path := filepath.Join(dir, "id_"+kind)
		if out, err := exec.Command("ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
		out, err := exec.Command("ssh-keygen", "-l", "-E", "md5", "-f", path+".pub").Output()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimPrefix(strings.Fields(string(out))[1], "MD5:")
		pk, err := LoadPublicKey(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if pk.Fingerprint != want {
			t.Fatalf("%s: fingerprint %s, ssh-keygen says %s", kind, pk.Fingerprint, want)
		}
		// The same key as PKIX PEM gives the same fingerprint.
		der, err := x509.MarshalPKIXPublicKey(pk.Key)
		if err != nil {
			t.Fatal(err)
		}
		pemPath := filepath.Join(dir, kind+".pem")
		if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		pk2, err := LoadPublicKey(pemPath)
		if err != nil {
			t.Fatal(err)
		}
		if pk2.Fingerprint != want {
			t.Fatalf("%s PEM: fingerprint %s, want %s", kind, pk2.Fingerprint, want)
		}
	}
	if _, err := ParsePublicKey([]byte("not a key")); err == nil {
		t.Fatal("garbage parsed as a key")
	}
}

type machineJSON struct {
	ID                 string                 `json:"id"`
	Name               string                 `json:"name"`
	State              string                 `json:"state"`
	PrimaryIP          string                 `json:"primaryIp"`
	Tags               map[string]interface{} `json:"tags"`
	Metadata           map[string]string      `json:"metadata"`
	Package            string                 `json:"package"`
	FirewallEnabled    bool                   `json:"firewall_enabled"`
	DeletionProtection bool                   `json:"deletion_protection"`
	DNSNames           []string               `json:"dns_names"`
	Networks           []string               `json:"networks"`
}

func (f *fixture) waitState(id, want string) machineJSON {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var m machineJSON
		r := f.do(&f.rsa, "GET", "/my/machines/"+id, nil)
		if r.status != 200 && r.status != 410 {
			f.t.Fatalf("get machine: %d %s", r.status, r.body)
		}
		r.json(f.t, &m)
		if m.State == want {
			return m
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("machine %s stayed %s, want %s", id, m.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMachineLifecycle(t *testing.T) {
	f := newFixture(t)
	var pkgs []Package
	f.do(&f.rsa, "GET", "/my/packages?name=g4-highcpu-1G&version=2.0.0", nil).json(t, &pkgs)
	if len(pkgs) != 1 || pkgs[0].ID != PkgMediumV2 {
		t.Fatalf("package filter: %+v", pkgs)
	}
	var imgs []Image
	f.do(&f.rsa, "GET", "/my/images?name=base-64-lts", nil).json(t, &imgs)
	if len(imgs) != 2 {
		t.Fatalf("image filter: %+v", imgs)
	}
	body := map[string]interface{}{
		"name": "web-{{shortId}}", "image": ImgBaseNew, "package": PkgSmall,
		"networks": []string{NetFabric, NetPublic}, "affinity": []string{"instance!=db*"},
		"tag.role": "web", "tag.triton.cns.services": "web:8080", "metadata.cloud-init:user-data": "#cloud-config\n",
		"metadata.user-script": "#!/bin/sh\necho hi", "firewall_enabled": true,
	}
	r := f.do(&f.rsa, "POST", "/my/machines", body)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var m machineJSON
	r.json(t, &m)
	if m.State != "provisioning" || m.PrimaryIP != "" || !strings.HasPrefix(m.Name, "web-") || strings.Contains(m.Name, "{{") {
		t.Fatalf("created: %+v", m)
	}
	if m.Metadata["cloud-init:user-data"] != "#cloud-config\n" || m.Tags["role"] != "web" || !m.FirewallEnabled {
		t.Fatalf("fields not echoed: %+v", m)
	}
	m = f.waitState(m.ID, "running")
	if !strings.HasPrefix(m.PrimaryIP, "198.51.100.") || len(m.Networks) != 2 {
		t.Fatalf("running machine: %+v", m)
	}
	foundSvc := false
	for _, n := range m.DNSNames {
		if strings.HasPrefix(n, "web.svc.") {
			foundSvc = true
		}
	}
	if !foundSvc {
		t.Fatalf("no CNS service name in %v", m.DNSNames)
	}
	// Same name again is refused.
	if r := f.do(&f.rsa, "POST", "/my/machines", map[string]interface{}{"name": m.Name, "image": ImgBaseNew, "package": PkgSmall}); r.status != 409 {
		t.Fatalf("duplicate name: %d", r.status)
	}
	// Tags and metadata.
	if r := f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"/tags", map[string]interface{}{"env": "prod"}); r.status != 200 {
		t.Fatalf("add tags: %d %s", r.status, r.body)
	}
	var tags map[string]interface{}
	f.do(&f.rsa, "GET", "/my/machines/"+m.ID+"/tags", nil).json(t, &tags)
	if tags["env"] != "prod" || tags["role"] != "web" {
		t.Fatalf("tags: %v", tags)
	}
	if r := f.do(&f.rsa, "DELETE", "/my/machines/"+m.ID+"/tags/env", nil); r.status != 204 {
		t.Fatalf("delete tag: %d", r.status)
	}
	if r := f.do(&f.rsa, "GET", "/my/machines/"+m.ID+"/tags/env", nil); r.status != 404 {
		t.Fatalf("deleted tag still there: %d", r.status)
	}
	var us string
	f.do(&f.rsa, "GET", "/my/machines/"+m.ID+"/metadata/user-script", nil).json(t, &us)
	if us != "#!/bin/sh\necho hi" {
		t.Fatalf("metadata: %q", us)
	}
	// Listing by tag.
	var list []machineJSON
	f.do(&f.rsa, "GET", "/my/machines?tag.role=web", nil).json(t, &list)
	if len(list) != 1 {
		t.Fatalf("list by tag: %d", len(list))
	}
	// Stop, start, deletion protection, delete.
	if r := f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"?action=stop", nil); r.status != 202 {
		t.Fatalf("stop: %d %s", r.status, r.body)
	}
	f.waitState(m.ID, "stopped")
	if r := f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"?action=start", nil); r.status != 202 {
		t.Fatalf("start: %d", r.status)
	}
	f.waitState(m.ID, "running")
	if r := f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"?action=dance", nil); r.status != 409 {
		t.Fatalf("bad action: %d", r.status)
	}
	f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"?action=enable_deletion_protection", nil)
	r = f.do(&f.rsa, "DELETE", "/my/machines/"+m.ID, nil)
	if code, _ := r.errCode(t); r.status != 409 || code != "CannotDestroyMachine" {
		t.Fatalf("protected delete: %d %s", r.status, r.body)
	}
	f.do(&f.rsa, "POST", "/my/machines/"+m.ID+"?action=disable_deletion_protection", nil)
	if r := f.do(&f.rsa, "DELETE", "/my/machines/"+m.ID, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	f.waitState(m.ID, "deleted")
	if r := f.do(&f.rsa, "GET", "/my/machines/"+m.ID, nil); r.status != 410 {
		t.Fatalf("deleted machine: %d", r.status)
	}
	// Bad create bodies name the field.
	for _, c := range []struct {
		body map[string]interface{}
		want string
	}{
		{map[string]interface{}{"package": PkgSmall}, "image is a required argument"},
		{map[string]interface{}{"image": ImgBaseNew}, "package is a required argument"},
		{map[string]interface{}{"image": ImgBaseNew, "package": "nope"}, "package nope not found"},
		{map[string]interface{}{"image": ImgBaseNew, "package": PkgSmall, "networks": []string{"nope"}}, "network nope does not exist"},
		{map[string]interface{}{"image": ImgBaseNew, "package": PkgSmall, "metadata.x": 3}, "metadata metadata.x must be a string"},
	} {
		r := f.do(&f.rsa, "POST", "/my/machines", c.body)
		if _, msg := r.errCode(t); !strings.Contains(msg, c.want) {
			t.Fatalf("create %v: %d %s, want %q", c.body, r.status, r.body, c.want)
		}
	}
}

func TestFailedProvisionAndForcedState(t *testing.T) {
	f := newFixture(t)
	f.do(nil, "POST", "/__sim/faults", map[string]interface{}{"fail_provision": []string{"doomed"}})
	var m machineJSON
	f.do(&f.rsa, "POST", "/my/machines", map[string]interface{}{"name": "doomed-1", "image": ImgBaseNew, "package": PkgSmall}).json(t, &m)
	f.waitState(m.ID, "failed")
	var ok machineJSON
	f.do(&f.rsa, "POST", "/my/machines", map[string]interface{}{"name": "fine", "image": ImgBaseNew, "package": PkgSmall}).json(t, &ok)
	f.waitState(ok.ID, "running")
	if r := f.do(nil, "POST", "/__sim/machines/"+ok.ID+"/state", map[string]string{"state": "failed"}); r.status != 204 {
		t.Fatalf("force: %d %s", r.status, r.body)
	}
	f.waitState(ok.ID, "failed")
}

func TestFaultInjection(t *testing.T) {
	f := newFixture(t)
	r := f.do(nil, "POST", "/__sim/faults", map[string]interface{}{
		"latency_ms": 50,
		"errors": []map[string]interface{}{
			{"method": "GET", "path_prefix": "/" + testAccount + "/packages", "status": 503, "count": 2, "retry_after": 1},
			{"path_prefix": "/" + testAccount + "/images", "status": 429, "count": 1},
		},
	})
	if r.status != 200 {
		t.Fatalf("set faults: %d %s", r.status, r.body)
	}
	for i := 0; i < 2; i++ {
		start := time.Now()
		r := f.do(&f.rsa, "GET", "/"+testAccount+"/packages", nil)
		if r.status != 503 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("try %d: %d retry-after %q", i, r.status, r.header.Get("Retry-After"))
		}
		if time.Since(start) < 50*time.Millisecond {
			t.Fatalf("latency not injected")
		}
	}
	if r := f.do(&f.rsa, "GET", "/"+testAccount+"/packages", nil); r.status != 200 {
		t.Fatalf("after the faults: %d", r.status)
	}
	r = f.do(&f.rsa, "GET", "/"+testAccount+"/images", nil)
	if code, _ := r.errCode(t); r.status != 429 || code != "RequestThrottled" {
		t.Fatalf("throttle: %d %s", r.status, r.body)
	}
	// A dropped connection is a network error for the client.
	f.do(nil, "POST", "/__sim/faults", map[string]interface{}{"errors": []map[string]interface{}{{"reset": true}}})
	req, _ := http.NewRequest("GET", f.srv.URL+"/my/packages", nil)
	f.rsa.sign(t, req)
	// A fresh connection: Go's client retries idempotent requests that fail on a reused one.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if res, err := fresh.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("reset fault answered %d", res.StatusCode)
	}
	if r := f.do(&f.rsa, "GET", "/my/packages", nil); r.status != 200 {
		t.Fatalf("after reset: %d", r.status)
	}
	if r := f.do(nil, "POST", "/__sim/faults", map[string]interface{}{"errors": []map[string]interface{}{{"count": 1}}}); r.status != 400 {
		t.Fatalf("fault without status accepted: %d", r.status)
	}
	if r := f.do(nil, "POST", "/__sim/faults", map[string]interface{}{"bogus": 1}); r.status != 400 {
		t.Fatalf("unknown fault field accepted: %d", r.status)
	}
}

func TestFirewallRules(t *testing.T) {
	f := newFixture(t)
	var m machineJSON
	f.do(&f.rsa, "POST", "/my/machines", map[string]interface{}{"image": ImgBaseNew, "package": PkgSmall, "tag.role": "web"}).json(t, &m)
	var fr FWRule
	r := f.do(&f.rsa, "POST", "/my/fwrules", map[string]interface{}{"rule": "FROM any TO tag \"role\" = \"web\" ALLOW tcp PORT 80", "enabled": true, "description": "Nomad FWRule for service: web"})
	if r.status != 201 {
		t.Fatalf("create rule: %d %s", r.status, r.body)
	}
	r.json(t, &fr)
	var ms []machineJSON
	f.do(&f.rsa, "GET", "/my/fwrules/"+fr.ID+"/machines", nil).json(t, &ms)
	if len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("rule machines: %+v", ms)
	}
	var rules []FWRule
	f.do(&f.rsa, "GET", "/my/machines/"+m.ID+"/fwrules", nil).json(t, &rules)
	if len(rules) != 1 || rules[0].ID != fr.ID {
		t.Fatalf("machine rules: %+v", rules)
	}
	r = f.do(&f.rsa, "POST", "/my/fwrules", map[string]interface{}{"rule": "ALLOW everything"})
	if code, msg := r.errCode(t); r.status != 409 || code != "InvalidArgument" || !strings.Contains(msg, "rule:") {
		t.Fatalf("bad rule: %d %s", r.status, r.body)
	}
	if r := f.do(&f.rsa, "DELETE", "/my/fwrules/"+fr.ID, nil); r.status != 204 {
		t.Fatalf("delete rule: %d", r.status)
	}
	if r := f.do(&f.rsa, "GET", "/my/fwrules/"+fr.ID, nil); r.status != 404 {
		t.Fatalf("deleted rule: %d", r.status)
	}
}

func (f *fixture) createContainer(name string, cfg map[string]interface{}) string {
	f.t.Helper()
	r := f.do(nil, "POST", "/v1.24/containers/create?name="+name, cfg)
	if r.status != 201 {
		f.t.Fatalf("create container: %d %s", r.status, r.body)
	}
	var out struct{ Id string }
	r.json(f.t, &out)
	return out.Id
}

func TestDockerContainers(t *testing.T) {
	f := newFixture(t)
	// Missing image, then a pull, then create.
	r := f.do(nil, "POST", "/containers/create?name=x", map[string]interface{}{"Image": "alpine:3.12"})
	if r.status != 404 || !strings.Contains(string(r.body), "No such image: alpine:3.12") {
		t.Fatalf("missing image: %d %s", r.status, r.body)
	}
	if r := f.do(nil, "POST", "/images/create?fromImage=alpine&tag=3.12", nil); r.status != 200 {
		t.Fatalf("pull: %d %s", r.status, r.body)
	}
	if r := f.do(nil, "POST", "/images/create?fromImage=private/app&tag=1", nil); r.status != 500 || !strings.Contains(string(r.body), "authentication required") {
		t.Fatalf("private pull without auth: %d %s", r.status, r.body)
	}
	auth := base64.URLEncoding.EncodeToString([]byte(`{"username":"u","password":"p"}`))
	if r := f.do(nil, "POST", "/images/create?fromImage=private/app&tag=1", nil, func(r *http.Request) { r.Header.Set("X-Registry-Auth", auth) }); r.status != 200 {
		t.Fatalf("private pull with auth: %d %s", r.status, r.body)
	}

	// Exit code passes through wait; the CloudAPI machine follows.
	id := f.createContainer("exits", map[string]interface{}{"Image": "alpine:3.12", "Cmd": []string{"/bin/sh", "-c", "sleep 0.1; exit 3"},
		"Labels":     map[string]string{"com.joyent.package": "g4-highcpu-512M", "triton.cns.services": "app"},
		"HostConfig": map[string]interface{}{"PublishAllPorts": true}})
	uuid := id[0:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:32]
	m := f.waitState(uuid, "stopped")
	if m.Package != "g4-highcpu-512M" || m.Tags["triton.cns.services"] != "app" {
		t.Fatalf("container machine: %+v", m)
	}
	if r := f.do(nil, "POST", "/containers/"+id+"/start", nil); r.status != 204 {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	f.waitState(uuid, "running")
	var wait struct{ StatusCode int }
	f.do(nil, "POST", "/containers/"+id+"/wait", nil).json(t, &wait)
	if wait.StatusCode != 3 {
		t.Fatalf("exit code %d, want 3", wait.StatusCode)
	}
	f.waitState(uuid, "stopped")
	var insp struct {
		State struct {
			Running  bool
			ExitCode int
		}
		NetworkSettings struct{ IPAddress string }
	}
	f.do(nil, "GET", "/containers/"+id+"/json", nil).json(t, &insp)
	if insp.State.Running || insp.State.ExitCode != 3 || !strings.HasPrefix(insp.NetworkSettings.IPAddress, "198.51.100.") {
		t.Fatalf("inspect: %+v", insp)
	}

	// A container that ignores SIGTERM is killed when stop's timeout runs out.
	stubborn := f.createContainer("stubborn", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sh", "-c", "trap '' TERM; sleep 1000"}})
	f.do(nil, "POST", "/containers/"+stubborn+"/start", nil)
	start := time.Now()
	if r := f.do(nil, "POST", "/containers/"+stubborn+"/stop?t=1", nil); r.status != 204 {
		t.Fatalf("stop: %d %s", r.status, r.body)
	}
	if el := time.Since(start); el < time.Second || el > 3*time.Second {
		t.Fatalf("stop?t=1 took %v", el)
	}
	f.do(nil, "POST", "/containers/"+stubborn+"/wait", nil).json(t, &wait)
	if wait.StatusCode != 137 {
		t.Fatalf("stubborn exit %d, want 137", wait.StatusCode)
	}
	// One that honours SIGTERM stops at once with 143.
	polite := f.createContainer("polite", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sleep", "1000"}})
	f.do(nil, "POST", "/containers/"+polite+"/start", nil)
	start = time.Now()
	f.do(nil, "POST", "/containers/"+polite+"/stop?t=5", nil)
	if time.Since(start) > time.Second {
		t.Fatalf("polite stop waited")
	}
	f.do(nil, "POST", "/containers/"+polite+"/wait", nil).json(t, &wait)
	if wait.StatusCode != 143 {
		t.Fatalf("polite exit %d, want 143", wait.StatusCode)
	}
	// Kill with a signal; kill of a stopped container is refused.
	k := f.createContainer("killme", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sleep", "1000"}})
	f.do(nil, "POST", "/containers/"+k+"/start", nil)
	var stats struct {
		MemoryStats struct{ Limit uint64 } `json:"memory_stats"`
	}
	f.do(nil, "GET", "/containers/"+k+"/stats?stream=0", nil).json(t, &stats)
	if stats.MemoryStats.Limit != 1024<<20 {
		t.Fatalf("stats limit %d", stats.MemoryStats.Limit)
	}
	if r := f.do(nil, "POST", "/containers/"+k+"/kill?signal=SIGINT", nil); r.status != 204 {
		t.Fatalf("kill: %d", r.status)
	}
	f.do(nil, "POST", "/containers/"+k+"/wait", nil).json(t, &wait)
	if wait.StatusCode != 130 {
		t.Fatalf("SIGINT exit %d, want 130", wait.StatusCode)
	}
	if r := f.do(nil, "POST", "/containers/"+k+"/kill", nil); r.status != 409 {
		t.Fatalf("kill stopped: %d", r.status)
	}
	// Remove: refused while running without force.
	run := f.createContainer("running", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sleep", "1000"}})
	f.do(nil, "POST", "/containers/"+run+"/start", nil)
	if r := f.do(nil, "DELETE", "/containers/"+run, nil); r.status != 409 {
		t.Fatalf("remove running: %d", r.status)
	}
	if r := f.do(nil, "DELETE", "/containers/"+run+"?force=1", nil); r.status != 204 {
		t.Fatalf("force remove: %d", r.status)
	}
	if r := f.do(nil, "GET", "/containers/"+run+"/json", nil); r.status != 404 {
		t.Fatalf("removed container: %d", r.status)
	}
	// Admin exit.
	adm := f.createContainer("admin", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sleep", "1000"}})
	f.do(nil, "POST", "/containers/"+adm+"/start", nil)
	f.do(nil, "POST", "/__sim/containers/"+adm+"/exit", map[string]int{"code": 42})
	f.do(nil, "POST", "/containers/"+adm+"/wait", nil).json(t, &wait)
	if wait.StatusCode != 42 {
		t.Fatalf("admin exit %d", wait.StatusCode)
	}
	// CloudAPI tags on a container's machine.
	admUUID := adm[0:8] + "-" + adm[8:12] + "-" + adm[12:16] + "-" + adm[16:20] + "-" + adm[20:32]
	if r := f.do(&f.rsa, "POST", "/my/machines/"+admUUID+"/tags", map[string]string{"nomad": "yes"}); r.status != 200 {
		t.Fatalf("tag container machine: %d %s", r.status, r.body)
	}
}

// Docker's CPU percent over a stats document: (total delta / system delta)
// x CPUs x 100, the CPUs being percpu_usage's length when online_cpus is
// absent (API 1.24).
func TestDockerStatsCPU(t *testing.T) {
	f := newFixture(t)
	type cpu struct {
		CPUUsage struct {
			TotalUsage  uint64   `json:"total_usage"`
			PercpuUsage []uint64 `json:"percpu_usage"`
			User        uint64   `json:"usage_in_usermode"`
			Kernel      uint64   `json:"usage_in_kernelmode"`
		} `json:"cpu_usage"`
		System     uint64  `json:"system_cpu_usage"`
		OnlineCPUs *uint64 `json:"online_cpus"`
	}
	var doc struct {
		CPU    cpu `json:"cpu_stats"`
		PreCPU cpu `json:"precpu_stats"`
	}
	percent := func(cur, pre uint64) float64 {
		return float64(cur-pre) / float64(doc.CPU.System-doc.PreCPU.System) * float64(len(doc.CPU.CPUUsage.PercpuUsage)) * 100
	}
	id := f.createContainer("busy", map[string]interface{}{"Image": "busybox", "Cmd": []string{"sleep", "1000"}})
	f.do(nil, "POST", "/containers/"+id+"/start", nil)
	time.Sleep(1200 * time.Millisecond)
	f.do(nil, "GET", "/containers/"+id+"/stats?stream=0", nil).json(t, &doc)
	if doc.CPU.OnlineCPUs != nil || len(doc.CPU.CPUUsage.PercpuUsage) != 1 {
		t.Fatalf("want API 1.24's shape (no online_cpus, one percpu entry): %+v", doc.CPU)
	}
	if d := doc.CPU.System - doc.PreCPU.System; d < uint64(999*time.Millisecond) || d > uint64(1001*time.Millisecond) {
		t.Fatalf("precpu_stats is not the reading a second earlier: system delta %d ns", d)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"total", percent(doc.CPU.CPUUsage.TotalUsage, doc.PreCPU.CPUUsage.TotalUsage), 25},
		{"user", percent(doc.CPU.CPUUsage.User, doc.PreCPU.CPUUsage.User), 18.75},
		{"kernel", percent(doc.CPU.CPUUsage.Kernel, doc.PreCPU.CPUUsage.Kernel), 6.25},
	} {
		if c.got < c.want-0.01 || c.got > c.want+0.01 {
			t.Fatalf("%s CPU %.4f%%, want %.2f%%", c.name, c.got, c.want)
		}
	}
	// A container that ended over a second ago used no CPU since.
	f.do(nil, "POST", "/containers/"+id+"/kill", nil)
	time.Sleep(1100 * time.Millisecond)
	f.do(nil, "GET", "/containers/"+id+"/stats?stream=0", nil).json(t, &doc)
	if got := percent(doc.CPU.CPUUsage.TotalUsage, doc.PreCPU.CPUUsage.TotalUsage); got != 0 {
		t.Fatalf("stopped container CPU %.4f%%, want 0", got)
	}
}

func TestRequestLog(t *testing.T) {
	f := newFixture(t)
	f.do(&f.rsa, "POST", "/my/machines", map[string]interface{}{"image": ImgBaseNew, "package": PkgSmall, "tag.a": "b"})
	var log []LoggedRequest
	f.do(nil, "GET", "/__sim/requests", nil).json(t, &log)
	if len(log) != 1 {
		t.Fatalf("log: %+v", log)
	}
	e := log[0]
	if e.Method != "POST" || e.Path != "/my/machines" || e.Status != 201 || !e.AuthOK || e.KeyID != f.rsa.keyID ||
		e.Algorithm != "rsa-sha256" || e.Headers["accept-version"] != "~9||~8" || !strings.Contains(e.Body, `"tag.a":"b"`) {
		t.Fatalf("entry: %+v", e)
	}
	f.do(nil, "DELETE", "/__sim/requests", nil)
	f.do(nil, "GET", "/__sim/requests", nil).json(t, &log)
	if len(log) != 0 {
		t.Fatalf("log not cleared: %d", len(log))
	}
}

// TestBinaryPrintsAddress runs the real command line: flags, key loading,
// the printed address, a signed request over TCP.
func TestBinaryPrintsAddress(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = pw
	go func() { _ = run([]string{"-listen", "127.0.0.1:0", "-account", "acme", "-key", keyPath}) }()
	line := make([]byte, 64)
	n, err := pr.Read(line)
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSpace(string(line[:n]))
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("printed %q", url)
	}
	pk := mustKey(t, "key", priv)
	s := signer{"/acme/keys/" + pk.Fingerprint, "ed25519-sha512", priv}
	req, _ := http.NewRequest("GET", url+"/acme/machines", nil)
	s.sign(t, req)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
}
