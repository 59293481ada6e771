package conformance

// Launching the host exactly as Nomad's plugin loader does (go-plugin client,
// gRPC only, Nomad's handshake) and the helpers every integration test uses.
// A missing host binary or guest is a test FAILURE, never a skip: the harness
// runs against a host that is still being written.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"conformancepb/base"
	"conformancepb/drivers"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
)

// Handshake constants from Nomad's plugins/base (NOMAD-PROTOCOL.md §1.1).
const (
	magicCookieKey   = "NOMAD_PLUGIN_MAGIC_COOKIE"
	magicCookieValue = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
	appProtocol      = 2
	driverAPIVersion = "v0.1.0"

	// The agent's plugin block is matched by the binary's file name.
	agentPluginLabel = "nomad-driver-wasm"
	// The driver name the hello guest reports (task `driver = "..."`).
	helloDriverName = "hello-world-example"
	allowedShell    = "/usr/bin/bash"
)

var nomadHandshake = plugin.HandshakeConfig{
	ProtocolVersion:  appProtocol,
	MagicCookieKey:   magicCookieKey,
	MagicCookieValue: magicCookieValue,
}

// harnessPaths are the files under test, from run.sh's environment (with the
// same defaults when the test binary is run by hand from this directory).
type harnessPaths struct {
	Repo, Host, Guest string
}

func paths(t testing.TB) harnessPaths {
	t.Helper()
	repo := os.Getenv("CONFORMANCE_REPO")
	if repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatalf("getwd: %v", err)
		}
		repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	}
	abs := func(env, def string) string {
		p := os.Getenv(env)
		if p == "" {
			p = def
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(repo, p)
		}
		return p
	}
	return harnessPaths{
		Repo:  repo,
		Host:  abs("NOMAD_WASM_HOST", "target/release/nomad-driver-wasm"),
		Guest: abs("HELLO_WASM", "target/wasm32-wasip2/release/hello.wasm"),
	}
}

// requireArtifacts fails (not skips) the test when the host or guest is
// missing.
func requireArtifacts(t testing.TB) harnessPaths {
	t.Helper()
	p := paths(t)
	for _, f := range []struct{ what, path string }{{"host binary (NOMAD_WASM_HOST)", p.Host}, {"hello guest (HELLO_WASM)", p.Guest}} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatalf("%s not available: %v", f.what, err)
		}
		if st.IsDir() {
			t.Fatalf("%s %s is a directory", f.what, f.path)
		}
	}
	return p
}

func hostArgs(p harnessPaths) []string {
	return []string{"--guest", p.Guest, "--allow-exec", allowedShell}
}

// driverPlugin is the client half of Nomad's "driver" plugin: dispensing it
// yields our generated BasePlugin + Driver clients on go-plugin's connection.
type driverPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

type dispensed struct {
	Base   base.BasePluginClient
	Driver drivers.DriverClient
	Conn   *grpc.ClientConn
}

func (driverPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the conformance harness is only a plugin client")
}

func (driverPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return &dispensed{Base: base.NewBasePluginClient(conn), Driver: drivers.NewDriverClient(conn), Conn: conn}, nil
}

// hostPIDs are the plugin processes this run started (never treated as
// leftover task processes).
var hostPIDs sync.Map

func isHostPID(pid int) bool {
	_, ok := hostPIDs.Load(pid)
	return ok
}

// Plugin is one running host process.
type Plugin struct {
	t      *testing.T
	Client *plugin.Client
	RPC    plugin.ClientProtocol
	Base   base.BasePluginClient
	Driver drivers.DriverClient
	Conn   *grpc.ClientConn

	logs   *testLogWriter
	stderr *lockedBuffer

	killOnce     sync.Once
	killDuration time.Duration
}

// launchPlugin starts the host through go-plugin and dispenses "driver".
// Cleanup kills it (Controller.Shutdown) and checks it exited in time and
// that everything it logged on stderr is safe for Nomad to parse.
func launchPlugin(t *testing.T) *Plugin {
	t.Helper()
	p := requireArtifacts(t)
	logs := &testLogWriter{t: t}
	stderr := &lockedBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "nomad",
		Level:  hclog.Trace,
		Output: logs,
	})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  nomadHandshake,
		Plugins:          map[string]plugin.Plugin{"driver": driverPlugin{}},
		Cmd:              exec.Command(p.Host, hostArgs(p)...),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           stderr,
	})
	pl := &Plugin{t: t, Client: client, logs: logs, stderr: stderr}
	t.Cleanup(func() {
		pl.Kill()
		if !client.Exited() {
			t.Errorf("plugin process has not exited after Kill")
		}
		// Only meaningful once connected: without an address go-plugin
		// never asks for a graceful exit.
		if pl.RPC != nil && (pl.killDuration >= 2*time.Second || logs.Contains("plugin failed to exit gracefully")) {
			t.Errorf("plugin did not exit within 2 s of Controller.Shutdown (Kill took %v); go-plugin had to SIGKILL it", pl.killDuration)
		}
		checkStderrLogLines(t, stderr.String())
		logs.Close()
	})

	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("go-plugin client (handshake + dial): %v", err)
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		t.Fatalf("dispense driver: %v", err)
	}
	if rc := client.ReattachConfig(); rc != nil {
		hostPIDs.Store(rc.Pid, true)
	}
	d := raw.(*dispensed)
	pl.RPC, pl.Base, pl.Driver, pl.Conn = rpc, d.Base, d.Driver, d.Conn
	return pl
}

// Kill ends the plugin the way Nomad does (go-plugin Kill → Controller.Shutdown,
// SIGKILL after 2 s) and returns how long that took. Safe to call twice.
func (p *Plugin) Kill() time.Duration {
	p.killOnce.Do(func() {
		start := time.Now()
		p.Client.Kill()
		p.killDuration = time.Since(start)
	})
	return p.killDuration
}

// Configured is a plugin that got SetConfig like the long-lived instance
// Nomad keeps per driver, with both schemas converted.
type Configured struct {
	*Plugin
	Info       *base.PluginInfoResponse
	ConfigSpec hcldec.Spec
	TaskSpec   hcldec.Spec
}

// launchConfigured launches the host and runs Nomad's start-up sequence for
// the long-lived instance: PluginInfo, ConfigSchema, SetConfig (agent config
// from examples/hello/agent.hcl, with nomad_config ports), TaskConfigSchema.
func launchConfigured(t *testing.T) *Configured {
	t.Helper()
	pl := launchPlugin(t)
	c := &Configured{Plugin: pl}
	ctx := rpcCtx(t, 5*time.Second)
	info, err := pl.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("PluginInfo: %v", err)
	}
	c.Info = info
	c.ConfigSpec = c.configSpec(t)
	agentCfg := agentPluginConfig(t)
	c.setConfig(t, agentCfg, true)
	c.TaskSpec = c.taskSpec(t)
	return c
}

func (p *Plugin) configSpec(t *testing.T) hcldec.Spec {
	t.Helper()
	resp, err := p.Base.ConfigSchema(rpcCtx(t, 5*time.Second), &base.ConfigSchemaRequest{})
	if err != nil {
		t.Fatalf("ConfigSchema: %v", err)
	}
	if resp.GetSpec() == nil {
		t.Fatalf("ConfigSchema returned no spec, but the hello driver takes agent config (shell)")
	}
	spec, err := ConvertSpec(resp.GetSpec())
	if err != nil {
		t.Fatalf("converting ConfigSchema spec as Nomad would: %v", err)
	}
	return spec
}

func (p *Plugin) taskSpec(t *testing.T) hcldec.Spec {
	t.Helper()
	resp, err := p.Driver.TaskConfigSchema(rpcCtx(t, 5*time.Second), &drivers.TaskConfigSchemaRequest{})
	if err != nil {
		t.Fatalf("TaskConfigSchema: %v", err)
	}
	spec, err := ConvertSpec(resp.GetSpec())
	if err != nil {
		t.Fatalf("converting TaskConfigSchema spec as Nomad would: %v", err)
	}
	return spec
}

// agentPluginConfig is the plugin's `config {}` map from the example agent
// configuration.
func agentPluginConfig(t *testing.T) map[string]interface{} {
	t.Helper()
	path := filepath.Join(paths(t).Repo, "examples", "hello", "agent.hcl")
	cfg, _, found, err := LoadAgentPluginConfig(path, agentPluginLabel)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if !found {
		t.Fatalf("%s has no plugin %q block", path, agentPluginLabel)
	}
	return cfg
}

// nomadConfig is what the long-lived instance gets (agent defaults).
func nomadConfig() *base.NomadConfig {
	return &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}
}

// encodeAgentConfig decodes an agent config map against the ConfigSchema
// spec (no variables, as for agent config) and msgpack-encodes it.
func (c *Configured) encodeAgentConfig(t *testing.T, cfg map[string]interface{}) (cty.Value, []byte) {
	t.Helper()
	v, err := DecodeConfig(cfg, c.ConfigSpec, nil)
	if err != nil {
		t.Fatalf("decoding agent plugin config %v: %v", cfg, err)
	}
	b, err := EncodeMsgpack(v)
	if err != nil {
		t.Fatalf("msgpack: %v", err)
	}
	return v, b
}

func (c *Configured) setConfig(t *testing.T, cfg map[string]interface{}, withNomad bool) {
	t.Helper()
	_, b := c.encodeAgentConfig(t, cfg)
	req := &base.SetConfigRequest{MsgpackConfig: b, PluginApiVersion: driverAPIVersion}
	if withNomad {
		req.NomadConfig = nomadConfig()
	}
	if _, err := c.Base.SetConfig(rpcCtx(t, 5*time.Second), req); err != nil {
		t.Fatalf("SetConfig(%v): %v", cfg, err)
	}
}

// requireServing proves the host still answers after an error.
func (p *Plugin) requireServing(t *testing.T, after string) {
	t.Helper()
	resp, err := p.Base.PluginInfo(rpcCtx(t, 5*time.Second), &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("host stopped serving after %s: PluginInfo: %v", after, err)
	}
	if resp.GetName() != helloDriverName {
		t.Fatalf("after %s: PluginInfo name %q", after, resp.GetName())
	}
}

func rpcCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testLogWriter sends go-plugin's hclog output (including the host's
// re-logged stderr) to the test log, and remembers it for assertions.
type testLogWriter struct {
	t      *testing.T
	mu     sync.Mutex
	all    strings.Builder
	closed bool
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	if !w.closed {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testLogWriter) Contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Contains(w.all.String(), s)
}

// Close stops forwarding to the test log (logging after a test ends panics).
func (w *testLogWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// checkStderrLogLines applies the rules of NOMAD-PROTOCOL.md §1.5 to every
// line the host wrote on stderr: JSON lines must carry @message/@level as
// strings (a non-string panics the agent), a level Nomad knows, and an
// @timestamp in Go's layout with exactly 6 fractional digits.
func checkStderrLogLines(t *testing.T, stderr string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		if err := checkLogLine(sc.Text()); err != nil {
			t.Errorf("host stderr line %d: %v\n  line: %s", n, err, sc.Text())
		}
	}
}

func checkLogLine(line string) error {
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "{") {
		return nil // plain text lines are logged at DEBUG or by their [LEVEL] prefix
	}
	var obj map[string]interface{}
	if err := json.Unmarshal([]byte(trimmed), &obj); err != nil {
		return nil // not JSON: logged verbatim
	}
	msg, ok := obj["@message"]
	if !ok {
		return fmt.Errorf("JSON log line without @message")
	}
	if _, ok := msg.(string); !ok {
		return fmt.Errorf("@message is %T, must be a string (Nomad would panic)", msg)
	}
	lvl, ok := obj["@level"]
	if !ok {
		return fmt.Errorf("JSON log line without @level (Nomad logs it verbatim at DEBUG)")
	}
	ls, ok := lvl.(string)
	if !ok {
		return fmt.Errorf("@level is %T, must be a string (Nomad would panic)", lvl)
	}
	switch strings.ToLower(ls) {
	case "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("@level %q is not one of trace|debug|info|warn|error", ls)
	}
	if ts, ok := obj["@timestamp"]; ok {
		s, isStr := ts.(string)
		if !isStr {
			return fmt.Errorf("@timestamp is %T, must be a string (Nomad would panic)", ts)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", s); err != nil {
			return fmt.Errorf("@timestamp %q does not parse in Go layout 2006-01-02T15:04:05.000000Z07:00: %v", s, err)
		}
	}
	return nil
}
