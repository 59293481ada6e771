package conformance

// go-plugin AutoMTLS (client sets PLUGIN_CLIENT_CERT; the plugin answers with
// its own certificate in field 6 of the handshake line and serves mutual TLS).
// Nomad never enables it (NOMAD-PROTOCOL.md §1.1), so the rest of the harness
// runs plaintext; these tests cover the host for other go-plugin clients.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"conformancepb/base"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestAutoMTLSWithGoPlugin launches the host through go-plugin's own client
// with AutoMTLS on: go-plugin generates the client certificate, reads the
// server certificate from the handshake line and dials with TLS. PluginInfo
// must work, over TLS, and go-plugin's Kill must still end the process.
func TestAutoMTLSWithGoPlugin(t *testing.T) {
	p := requireArtifacts(t)
	logs := &testLogWriter{t: t}
	stderr := &lockedBuffer{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  nomadHandshake,
		Plugins:          map[string]plugin.Plugin{"driver": driverPlugin{}},
		Cmd:              exec.Command(p.Host, hostArgs(p)...),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "automtls", Level: hclog.Trace, Output: logs}),
		Stderr:           stderr,
		AutoMTLS:         true,
	})
	connected := false
	t.Cleanup(func() {
		start := time.Now()
		client.Kill()
		took := time.Since(start)
		if !client.Exited() {
			t.Errorf("plugin process has not exited after Kill")
		}
		if connected && (took >= 2*time.Second || logs.Contains("plugin failed to exit gracefully")) {
			t.Errorf("plugin did not exit within 2 s of Controller.Shutdown over TLS (Kill took %v)", took)
		}
		checkStderrLogLines(t, stderr.String())
		logs.Close()
	})

	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("go-plugin client with AutoMTLS (handshake + TLS dial): %v", err)
	}
	if rc := client.ReattachConfig(); rc != nil {
		hostPIDs.Store(rc.Pid, true)
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		t.Fatalf("dispense driver: %v", err)
	}
	connected = true
	d := raw.(*dispensed)

	var pr peer.Peer
	info, err := d.Base.PluginInfo(rpcCtx(t, 10*time.Second), &base.PluginInfoRequest{}, grpc.Peer(&pr))
	if err != nil {
		t.Fatalf("PluginInfo over AutoMTLS: %v", err)
	}
	if info.GetName() != helloDriverName {
		t.Errorf("PluginInfo name %q, want %q", info.GetName(), helloDriverName)
	}
	requireTLSPeer(t, pr)
}

// TestAutoMTLSHandshakeLine drives the protocol by hand: it sets
// PLUGIN_CLIENT_CERT itself, checks that field 6 of the handshake line is
// the server certificate (DER, unpadded standard base64, as go-plugin's
// client decodes it), and that the socket then serves only mutual TLS.
func TestAutoMTLSHandshakeLine(t *testing.T) {
	p := requireArtifacts(t)
	clientCert, clientPEM := autoMTLSCert(t)

	cmd := exec.Command(p.Host, hostArgs(p)...)
	cmd.Env = nomadEnv(map[string]string{"PLUGIN_CLIENT_CERT": string(clientPEM)})
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting host: %v", err)
	}
	hostPIDs.Store(cmd.Process.Pid, true)
	lineCh := make(chan string, 1)
	exited := make(chan error, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lineCh <- line
		_, _ = io.Copy(io.Discard, br)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		t.Logf("host stderr:\n%s", stderr.String())
		checkStderrLogLines(t, stderr.String())
	})

	var line string
	select {
	case line = <-lineCh:
	case <-time.After(10 * time.Second):
		t.Fatalf("no handshake line on stdout within 10 s")
	}
	t.Logf("handshake line: %q", line)
	fields := strings.Split(strings.TrimSpace(line), "|")
	if len(fields) != 6 {
		t.Fatalf("handshake line has %d fields, want 6 (CORE|APP|NETWORK|ADDRESS|PROTOCOL|SERVER_CERT)", len(fields))
	}
	for i, w := range []string{"1", "2", "unix", "", "grpc"} {
		if w != "" && fields[i] != w {
			t.Errorf("handshake field %d = %q, want %q", i+1, fields[i], w)
		}
	}
	field6 := fields[5]
	if len(field6) <= 50 {
		t.Fatalf("handshake field 6 = %q; go-plugin ignores it unless it is longer than 50 characters", field6)
	}
	der, err := base64.RawStdEncoding.DecodeString(field6)
	if err != nil {
		t.Fatalf("handshake field 6 is not unpadded standard base64 (go-plugin uses RawStdEncoding): %v", err)
	}
	serverCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("handshake field 6 is not an X.509 certificate: %v", err)
	}
	if err := serverCert.VerifyHostname("localhost"); err != nil {
		t.Errorf("server certificate is not valid for localhost (go-plugin's ServerName): %v", err)
	}
	if time.Now().Before(serverCert.NotBefore) || time.Now().After(serverCert.NotAfter) {
		t.Errorf("server certificate not valid now (%v .. %v)", serverCert.NotBefore, serverCert.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCert)
	sock := fields[3]

	// go-plugin's client TLS config: its certificate, the server certificate
	// as the only root, server name localhost.
	conn := dialTLS(t, sock, &tls.Config{
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      roots,
		ServerName:   "localhost",
	})
	var pr peer.Peer
	if _, err := base.NewBasePluginClient(conn).PluginInfo(rpcCtx(t, 10*time.Second), &base.PluginInfoRequest{}, grpc.Peer(&pr)); err != nil {
		t.Fatalf("PluginInfo over mutual TLS: %v", err)
	}
	requireTLSPeer(t, pr)

	// Without a client certificate, with a different one, or in plaintext:
	// no service.
	otherCert, _ := autoMTLSCert(t)
	for name, dial := range map[string]func() *grpc.ClientConn{
		"no client certificate": func() *grpc.ClientConn {
			return dialTLS(t, sock, &tls.Config{RootCAs: roots, ServerName: "localhost"})
		},
		"another client certificate": func() *grpc.ClientConn {
			return dialTLS(t, sock, &tls.Config{Certificates: []tls.Certificate{otherCert}, RootCAs: roots, ServerName: "localhost"})
		},
		"plaintext h2c": func() *grpc.ClientConn {
			return dialNoBlock(t, sock, grpc.WithInsecure())
		},
	} {
		c := dial()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := base.NewBasePluginClient(c).PluginInfo(ctx, &base.PluginInfoRequest{}, grpc.WaitForReady(false))
		cancel()
		if err == nil {
			t.Errorf("%s: PluginInfo succeeded; the AutoMTLS socket must require the client's certificate", name)
		}
	}

	// The good connection still works, and Controller.Shutdown over TLS ends
	// the process in time.
	start := time.Now()
	_ = conn.Invoke(rpcCtx(t, 5*time.Second), "/plugin.GRPCController/Shutdown", &emptypb.Empty{}, &emptypb.Empty{})
	select {
	case err := <-exited:
		t.Logf("host exited %v after Shutdown: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(2 * time.Second):
		t.Fatalf("host still running 2 s after Controller.Shutdown")
	}
}

// TestAutoMTLSBadClientCert: an unusable PLUGIN_CLIENT_CERT is a clear error
// and exit 1, before any handshake line.
func TestAutoMTLSBadClientCert(t *testing.T) {
	r := runHost(t, nomadEnv(map[string]string{"PLUGIN_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"}), 10*time.Second)
	if r.exitCode != 1 {
		t.Errorf("exit code %d, want 1", r.exitCode)
	}
	if strings.Contains(r.stdout, "|") {
		t.Errorf("printed a handshake line with an unusable client certificate: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "PLUGIN_CLIENT_CERT") {
		t.Errorf("stderr %q should name PLUGIN_CLIENT_CERT", r.stderr)
	}
	if strings.Contains(r.stderr, "panicked") {
		t.Errorf("host panicked: %q", r.stderr)
	}
}

func requireTLSPeer(t *testing.T, pr peer.Peer) {
	t.Helper()
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		t.Fatalf("connection auth info is %T, want TLS", pr.AuthInfo)
	}
	if ti.State.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %#x, want 1.2 or later", ti.State.Version)
	}
	if len(ti.State.PeerCertificates) == 0 || ti.State.PeerCertificates[0].VerifyHostname("localhost") != nil {
		t.Errorf("server did not present a certificate for localhost")
	}
}

// autoMTLSCert makes a client certificate shaped like go-plugin's (ECDSA
// P-521, self-signed CA certificate for localhost, client+server auth).
func autoMTLSCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"conformance"}},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM
}

// dialTLS connects to the socket like go-plugin's gRPC client with a TLS
// config (non-blocking: errors surface on the first call).
func dialTLS(t *testing.T, sock string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	return dialNoBlock(t, sock, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

func dialNoBlock(t *testing.T, sock string, creds grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.Dial("unused", creds,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}),
	)
	if err != nil {
		t.Fatalf("dialing %s: %v", sock, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
