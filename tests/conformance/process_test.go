package conformance

// The process contract of a go-plugin server as Nomad launches it
// (NOMAD-PROTOCOL.md §1): magic cookie, protocol negotiation, the handshake
// line, the Unix socket, health, SIGINT, successive connections and
// Controller.Shutdown.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"conformancepb/base"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// nomadEnv is the environment Nomad's go-plugin client gives the plugin,
// with overrides (a value of "" removes the variable).
func nomadEnv(overrides map[string]string) []string {
	vars := map[string]string{
		magicCookieKey:             magicCookieValue,
		"PLUGIN_MIN_PORT":          "10000",
		"PLUGIN_MAX_PORT":          "25000",
		"PLUGIN_PROTOCOL_VERSIONS": "2",
	}
	for k, v := range overrides {
		vars[k] = v
	}
	var env []string
	for _, kv := range os.Environ() {
		k := kv
		if i := strings.IndexByte(kv, '='); i >= 0 {
			k = kv[:i]
		}
		if _, managed := vars[k]; !managed {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}

type runResult struct {
	stdout, stderr string
	exitCode       int
}

// runHost runs the host to completion, failing if it is still running after
// limit (it is then killed).
func runHost(t *testing.T, env []string, limit time.Duration) runResult {
	t.Helper()
	p := requireArtifacts(t)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Host, hostArgs(p)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("host still running after %v (stdout %q, stderr %q)", limit, stdout.String(), stderr.String())
	}
	res := runResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		res.exitCode = 0
	case errors.As(err, &exitErr):
		res.exitCode = exitErr.ExitCode()
	default:
		t.Fatalf("running host: %v", err)
	}
	t.Logf("exit %d\nstdout: %q\nstderr: %q", res.exitCode, res.stdout, res.stderr)
	return res
}

func TestRefusesToRunWithoutMagicCookie(t *testing.T) {
	for name, cookie := range map[string]string{"missing": "", "wrong": "not-the-cookie"} {
		cookie := cookie
		t.Run(name, func(t *testing.T) {
			r := runHost(t, nomadEnv(map[string]string{magicCookieKey: cookie}), 10*time.Second)
			if r.exitCode != 1 {
				t.Errorf("exit code %d, want 1", r.exitCode)
			}
			if strings.Contains(r.stdout, "|") {
				t.Errorf("printed a handshake line without the cookie: %q", r.stdout)
			}
			lower := strings.ToLower(r.stderr)
			if !strings.Contains(lower, "nomad") || !strings.Contains(lower, "plugin") {
				t.Errorf("stderr %q should explain (mentioning Nomad and plugin) that this binary is a Nomad plugin, not run by hand", r.stderr)
			}
		})
	}
}

func TestRejectsUnsupportedProtocolVersion(t *testing.T) {
	r := runHost(t, nomadEnv(map[string]string{"PLUGIN_PROTOCOL_VERSIONS": "1"}), 10*time.Second)
	if r.exitCode == 0 {
		t.Errorf("exit code 0, want non-zero when app protocol 2 is not offered")
	}
	if strings.HasPrefix(strings.TrimSpace(r.stdout), "1|") {
		t.Errorf("printed a handshake line although no common protocol version: %q", r.stdout)
	}
	lower := strings.ToLower(r.stderr)
	if !strings.Contains(lower, "protocol") || !strings.Contains(lower, "version") {
		t.Errorf("stderr %q should name the protocol version problem", r.stderr)
	}
}

// TestHandshakeAndTransport talks to the host without go-plugin, checking
// what go-plugin itself only checks loosely: the exact handshake line, the
// private socket directory, health, SIGINT, a second connection, and
// Controller.Shutdown ending the process and removing the socket.
func TestHandshakeAndTransport(t *testing.T) {
	p := requireArtifacts(t)
	cmd := exec.Command(p.Host, hostArgs(p)...)
	cmd.Env = nomadEnv(nil)
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
	type lineRes struct {
		line string
		err  error
	}
	lineCh := make(chan lineRes, 1)
	exited := make(chan error, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, err := br.ReadString('\n')
		lineCh <- lineRes{line, err}
		// Like go-plugin: after the handshake line, stdout is drained.
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
	case r := <-lineCh:
		if r.err != nil {
			t.Fatalf("reading the handshake line: %v (got %q)", r.err, r.line)
		}
		line = r.line
	case <-time.After(10 * time.Second):
		t.Fatalf("no handshake line on stdout within 10 s")
	}
	t.Logf("handshake line: %q", line)
	fields := strings.Split(strings.TrimSpace(line), "|")
	if len(fields) != 5 && len(fields) != 6 {
		t.Fatalf("handshake line has %d fields, want 5 or 6 (CORE|APP|NETWORK|ADDRESS|PROTOCOL[|])", len(fields))
	}
	want := []string{"1", "2", "unix", "", "grpc"}
	for i, w := range want {
		if w != "" && fields[i] != w {
			t.Errorf("handshake field %d = %q, want %q", i+1, fields[i], w)
		}
	}
	if len(fields) == 6 && fields[5] != "" {
		t.Errorf("handshake field 6 = %q, want empty (Nomad uses no AutoMTLS)", fields[5])
	}
	sock := fields[3]
	checkSocketDir(t, sock)

	conn := dialSocket(t, sock)
	ctx := rpcCtx(t, 10*time.Second)
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
	if err != nil {
		t.Errorf("health Check(\"plugin\"): %v", err)
	} else if hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check(\"plugin\") = %v, want SERVING", hc.GetStatus())
	}
	if _, err := base.NewBasePluginClient(conn).PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
		t.Fatalf("PluginInfo: %v", err)
	}

	// A Ctrl-C to the agent's process group must not kill its plugins.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("sending SIGINT: %v", err)
	}
	select {
	case err := <-exited:
		t.Fatalf("host exited on SIGINT (%v); plugins must ignore SIGINT", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := base.NewBasePluginClient(conn).PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
		t.Fatalf("PluginInfo after SIGINT: %v", err)
	}

	// A restarted agent reattaches with a new connection.
	conn.Close()
	conn2 := dialSocket(t, sock)
	if _, err := base.NewBasePluginClient(conn2).PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
		t.Fatalf("PluginInfo on a second connection: %v", err)
	}

	start := time.Now()
	// Go servers stop serving inside the call, so the caller often sees
	// UNAVAILABLE; go-plugin ignores the result. Only the exit matters, but
	// the method must exist.
	if err := conn2.Invoke(ctx, "/plugin.GRPCController/Shutdown", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		if status.Code(err) == codes.Unimplemented {
			t.Fatalf("Controller.Shutdown is not implemented: %v", err)
		}
		t.Logf("Controller.Shutdown returned %v (tolerated, as by go-plugin)", err)
	}
	select {
	case err := <-exited:
		t.Logf("host exited %v after Shutdown: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(2 * time.Second):
		t.Fatalf("host still running 2 s after Controller.Shutdown (Nomad would SIGKILL it)")
	}
	requireSocketGone(t, sock)
}

// TestKillShutsDownCleanly: go-plugin's Kill (Controller.Shutdown) ends the
// process within 2 s, and the private socket directory disappears.
func TestKillShutsDownCleanly(t *testing.T) {
	pl := launchPlugin(t)
	rc := pl.Client.ReattachConfig()
	if rc == nil || rc.Addr == nil {
		t.Fatalf("no reattach config / address after the handshake")
	}
	if rc.Addr.Network() != "unix" {
		t.Fatalf("plugin listens on %s %s, want a unix socket", rc.Addr.Network(), rc.Addr)
	}
	sock := rc.Addr.String()
	checkSocketDir(t, sock)
	took := pl.Kill()
	if took >= 2*time.Second {
		t.Errorf("Kill took %v: the host did not exit within 2 s of Controller.Shutdown", took)
	}
	if !pl.Client.Exited() {
		t.Errorf("go-plugin reports the process has not exited")
	}
	requireSocketGone(t, sock)
}

// checkSocketDir: the socket lives in a directory only the plugin's user can
// enter (mode 0700).
func checkSocketDir(t *testing.T, sock string) {
	t.Helper()
	if !filepath.IsAbs(sock) {
		t.Errorf("socket path %q is not absolute", sock)
	}
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("socket %s: %v", sock, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is not a socket (mode %v)", sock, st.Mode())
	}
	dir := filepath.Dir(sock)
	dst, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("socket directory %s: %v", dir, err)
	}
	if perm := dst.Mode().Perm(); perm != 0o700 {
		t.Errorf("socket directory %s has mode %#o, want 0700", dir, perm)
	}
	if dir == os.TempDir() || dir == "/tmp" {
		t.Errorf("socket is directly in %s, want a private directory of its own", dir)
	}
}

// requireSocketGone: after exit the socket's private directory is removed
// (or at least the socket, when it was not in a directory of its own).
func requireSocketGone(t *testing.T, sock string) {
	t.Helper()
	dir := filepath.Dir(sock)
	if dir == filepath.Clean(os.TempDir()) || dir == "/tmp" {
		requireGone(t, sock)
		return
	}
	requireGone(t, dir)
}

func requireGone(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		_, err := os.Stat(dir)
		if os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s still exists after the plugin exited (stat: %v)", dir, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialSocket connects like Nomad: plaintext h2c, custom dialer, target
// "unused".
func dialSocket(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "unused",
		grpc.WithInsecure(),
		grpc.WithBlock(),
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
