package conformance

// The pot guest through the real host binary, as Nomad drives it, with the
// host's real process capability pointed at a RECORDING STAND-IN for pot
// (tests/standins/pot). The stand-in is not pot: it checks each invocation
// against pot's documented flags, records argv and environment, and plays
// a scripted lifecycle. Nothing here runs a FreeBSD jail.
//
// The helpers (stand-in build, host launch with a chosen guest, grants and
// PATH, call log, task-event collector) are shared with rkt_test.go.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"conformancepb/base"
	"conformancepb/drivers"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
)

// potStandinBuilds caches one build per stand-in per test run.
var potStandinBuilds sync.Map // name -> *potBuild

type potBuild struct {
	once sync.Once
	path string
	err  error
}

// potStandinBinary builds tests/standins/<name> (Go, standard library only)
// once per test run.
func potStandinBinary(t *testing.T, name string) string {
	t.Helper()
	v, _ := potStandinBuilds.LoadOrStore(name, &potBuild{})
	b := v.(*potBuild)
	b.once.Do(func() {
		repo := paths(t).Repo
		out := filepath.Join(repo, "target", "standins", name)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			b.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(repo, "tests", "standins", name)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", cmd.Dir, err, msg)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("building the %s stand-in: %v", name, b.err)
	}
	return b.path
}

// potStandin is one test's copy of a stand-in: its own directory holds the
// binary (named as the real program), calls.jsonl, script.json and state/.
type potStandin struct {
	Dir, Bin string
}

func potNewStandin(t *testing.T, name string, script map[string]interface{}) *potStandin {
	t.Helper()
	src, err := os.ReadFile(potStandinBinary(t, name))
	if err != nil {
		t.Fatalf("reading stand-in: %v", err)
	}
	dir := t.TempDir()
	s := &potStandin{Dir: dir, Bin: filepath.Join(dir, name)}
	if err := os.WriteFile(s.Bin, src, 0o755); err != nil {
		t.Fatalf("installing stand-in: %v", err)
	}
	s.setScript(t, script)
	return s
}

func (s *potStandin) setScript(t *testing.T, script map[string]interface{}) {
	t.Helper()
	if script == nil {
		script = map[string]interface{}{}
	}
	b, _ := json.Marshal(script)
	if err := os.WriteFile(filepath.Join(s.Dir, "script.json"), b, 0o644); err != nil {
		t.Fatalf("script.json: %v", err)
	}
}

// potCall is one recorded invocation of a stand-in.
type potCall struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
}

func (c potCall) String() string { return strings.Join(c.Argv, " ") }

func (s *potStandin) calls(t *testing.T) []potCall {
	t.Helper()
	f, err := os.Open(filepath.Join(s.Dir, "calls.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("calls.jsonl: %v", err)
	}
	defer f.Close()
	var out []potCall
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c potCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("calls.jsonl line %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}

// callsFrom returns the recorded calls from the first one whose argv[i]
// (after `skip` leading elements) is sub, dropping earlier ones (e.g. the
// fingerprint's `version`).
func potCallsFrom(calls []potCall, skip int, sub string) []potCall {
	for i, c := range calls {
		if len(c.Argv) > skip && c.Argv[skip] == sub {
			return calls[i:]
		}
	}
	return nil
}

func potCount(calls []potCall, skip int, sub string) int {
	n := 0
	for _, c := range calls {
		if len(c.Argv) > skip && c.Argv[skip] == sub {
			n++
		}
	}
	return n
}

// potWaitCall waits until a call with argv[skip] == sub has been recorded.
func (s *potStandin) waitCall(t *testing.T, skip int, sub string, limit time.Duration) []potCall {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		calls := s.calls(t)
		if potCount(calls, skip, sub) > 0 {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("no `%s` call within %v; calls: %v", sub, limit, calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// potHostOpts says how to launch the host for a driver guest.
type potHostOpts struct {
	GuestEnv, GuestDefault string // e.g. POT_WASM, target/wasm32-wasip2/guest/pot.wasm
	Grants                 []string
	PathPrefix             string   // prepended to the host's PATH (where the stand-ins are)
	ExtraEnv               []string // added to the host's environment
	AgentFile, AgentLabel  string   // examples/<driver>/agent.hcl, plugin "<label>"
}

// potLaunch starts the host with the given guest, grants and environment
// through go-plugin, and runs Nomad's start-up sequence (PluginInfo,
// ConfigSchema, SetConfig with the example agent config, TaskConfigSchema).
// Cleanup is launchPlugin's: graceful exit within 2 s, parseable stderr.
func potLaunch(t *testing.T, o potHostOpts) *Configured {
	t.Helper()
	p := paths(t)
	guest := os.Getenv(o.GuestEnv)
	if guest == "" {
		guest = o.GuestDefault
	}
	if !filepath.IsAbs(guest) {
		guest = filepath.Join(p.Repo, guest)
	}
	for _, f := range []struct{ what, path string }{{"host binary (NOMAD_WASM_HOST)", p.Host}, {"guest (" + o.GuestEnv + ")", guest}} {
		if st, err := os.Stat(f.path); err != nil || st.IsDir() {
			t.Fatalf("%s not available at %s: %v", f.what, f.path, err)
		}
	}
	args := []string{"--guest", guest}
	for _, g := range o.Grants {
		args = append(args, "--allow-exec", g)
	}
	cmd := exec.Command(p.Host, args...)
	// go-plugin appends this process's environment after cmd.Env, and Go
	// keeps the last of duplicate keys: so PATH is changed here for the
	// moment of the launch (tests in this package do not run in parallel).
	cmd.Env = append([]string{}, o.ExtraEnv...)
	if o.PathPrefix != "" {
		old := os.Getenv("PATH")
		os.Setenv("PATH", o.PathPrefix+":"+old)
		defer os.Setenv("PATH", old)
	}

	logs := &testLogWriter{t: t}
	stderr := &lockedBuffer{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  nomadHandshake,
		Plugins:          map[string]plugin.Plugin{"driver": driverPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "nomad", Level: hclog.Trace, Output: logs}),
		Stderr:           stderr,
	})
	pl := &Plugin{t: t, Client: client, logs: logs, stderr: stderr}
	t.Cleanup(func() {
		pl.Kill()
		if !client.Exited() {
			t.Errorf("plugin process has not exited after Kill")
		}
		if pl.RPC != nil && (pl.killDuration >= 2*time.Second || logs.Contains("plugin failed to exit gracefully")) {
			t.Errorf("plugin did not exit within 2 s of Controller.Shutdown (Kill took %v)", pl.killDuration)
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

	c := &Configured{Plugin: pl}
	info, err := pl.Base.PluginInfo(rpcCtx(t, 5*time.Second), &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("PluginInfo: %v", err)
	}
	c.Info = info
	c.ConfigSpec = c.configSpec(t)
	agent := filepath.Join(p.Repo, o.AgentFile)
	cfg, _, found, err := LoadAgentPluginConfig(agent, o.AgentLabel)
	if err != nil || !found {
		t.Fatalf("%s: plugin %q config: found=%v err=%v", agent, o.AgentLabel, found, err)
	}
	c.setConfig(t, cfg, true)
	c.TaskSpec = c.taskSpec(t)
	return c
}

// potEvents collects the TaskEvents stream from the moment it is opened.
type potEvents struct {
	mu     sync.Mutex
	events []*drivers.DriverTaskEvent
}

func potCollectEvents(t *testing.T, c *Configured) *potEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Driver.TaskEvents(ctx, &drivers.TaskEventsRequest{})
	if err != nil {
		t.Fatalf("TaskEvents: %v", err)
	}
	e := &potEvents{}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		}
	}()
	// The stream is registered once the RPC is under way.
	time.Sleep(100 * time.Millisecond)
	return e
}

// waitFor returns the first event whose message contains substr.
func (e *potEvents) waitFor(t *testing.T, substr string, limit time.Duration) *drivers.DriverTaskEvent {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		e.mu.Lock()
		for _, ev := range e.events {
			if strings.Contains(ev.GetMessage(), substr) {
				e.mu.Unlock()
				return ev
			}
		}
		all := fmt.Sprint(e.events)
		e.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no task event mentioning %q within %v; events: %s", substr, limit, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The pot driver's test setup.

const potTaskName = "www1"

// potEnvPath is the only environment the driver gives pot itself.
const potEnvPath = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/sbin:/bin"

// potLaunchWith launches the host with the pot guest, the pot stand-in on
// PATH and granted, and (if fakeFreeBSD) a `uname` that says FreeBSD.
func potLaunchWith(t *testing.T, s *potStandin, fakeFreeBSD bool, extraEnv ...string) *Configured {
	t.Helper()
	grants := []string{s.Bin}
	if fakeFreeBSD {
		uname := filepath.Join(s.Dir, "uname")
		if err := os.WriteFile(uname, []byte("#!/bin/sh\necho FreeBSD\n"), 0o755); err != nil {
			t.Fatalf("fake uname: %v", err)
		}
		grants = append(grants, uname)
	} else if u, err := exec.LookPath("uname"); err == nil {
		grants = append(grants, u)
	}
	return potLaunch(t, potHostOpts{
		GuestEnv: "POT_WASM", GuestDefault: "target/wasm32-wasip2/guest/pot.wasm",
		Grants: grants, PathPrefix: s.Dir, ExtraEnv: extraEnv,
		AgentFile: "examples/pot/agent.hcl", AgentLabel: "nomad-driver-pot",
	})
}

func potFingerprint(t *testing.T, c *Configured) *drivers.FingerprintResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	return recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 5*time.Second, "first FingerprintResponse").(*drivers.FingerprintResponse)
}

// potNewTask prepares a task as Nomad would, with the seed job's resources
// (memory 64, port "http" allocated as 28443).
func potNewTask(t *testing.T, c *Configured, hclBody string) *Task {
	t.Helper()
	tk := newTask(t, potTaskName)
	tk.Config.Resources.AllocatedResources.Memory.MemoryMb = 64
	tk.Config.Resources.Ports = []*drivers.PortMapping{{Label: "http", Value: 28443, HostIp: "127.0.0.1"}}
	if hclBody != "" {
		c.mustConfigure(t, tk, hclBody)
	}
	return tk
}

func potName(tk *Task) string {
	parts := strings.Split(tk.ID, "/")
	return strings.ReplaceAll(tk.Name+"_"+parts[len(parts)-1]+"_"+tk.AllocID, ".", "_")
}

func potSetEnvArgs(tk *Task) []string {
	keys := make([]string, 0, len(tk.Env))
	for k := range tk.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []string{"set-env", "-p", potName(tk)}
	for _, k := range keys {
		out = append(out, "-E", k+"="+tk.Env[k])
	}
	return out
}

func potRequireArgv(t *testing.T, what string, got potCall, want ...string) {
	t.Helper()
	if strings.Join(got.Argv, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("%s:\n got  %q\n want %q", what, got.Argv, want)
	}
}

func TestPotFingerprint(t *testing.T) {
	t.Run("freebsd with pot", func(t *testing.T) {
		s := potNewStandin(t, "pot", nil)
		c := potLaunchWith(t, s, true)
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_HEALTHY {
			t.Fatalf("health = %v (%q), want HEALTHY", fp.GetHealth(), fp.GetHealthDescription())
		}
		if v := fp.GetAttributes()["driver.pot.version"].GetStringVal(); v != "0.16.0" {
			t.Errorf("driver.pot.version = %q, want the stand-in's 0.16.0", v)
		}
		if !fp.GetAttributes()["driver.pot"].GetBoolVal() {
			t.Errorf("driver.pot attribute = %v, want true", fp.GetAttributes()["driver.pot"])
		}
		if potCount(s.calls(t), 0, "version") == 0 {
			t.Errorf("the fingerprint did not run `pot version`")
		}
	})
	t.Run("this linux host", func(t *testing.T) {
		s := potNewStandin(t, "pot", nil)
		c := potLaunchWith(t, s, false)
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED || !strings.Contains(fp.GetHealthDescription(), "FreeBSD") {
			t.Errorf("on Linux: health = %v (%q), want UNDETECTED saying pot needs FreeBSD", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
	t.Run("pot absent", func(t *testing.T) {
		s := potNewStandin(t, "pot", nil)
		c := potLaunchWith(t, s, true)
		if err := os.Remove(s.Bin); err != nil {
			t.Fatal(err)
		}
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED || !strings.Contains(fp.GetHealthDescription(), "pot") {
			t.Errorf("without pot: health = %v (%q), want UNDETECTED naming pot", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
	t.Run("disabled", func(t *testing.T) {
		s := potNewStandin(t, "pot", nil)
		c := potLaunchWith(t, s, true)
		c.setConfig(t, map[string]interface{}{"enabled": false}, true)
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED {
			t.Errorf("enabled = false: health = %v (%q), want UNDETECTED", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
}

// TestPotSeedJobLifecycle runs the seed's complete job example
// (examples/pot/example.nomad, decoded through the TaskConfigSchema as
// Nomad would) through start, signal, exec, stats, stop and destroy, and
// checks every pot command line the driver ran.
func TestPotSeedJobLifecycle(t *testing.T) {
	s := potNewStandin(t, "pot", nil)
	c := potLaunchWith(t, s, true, "POT_HOST_MARKER=must-not-leak")
	path := filepath.Join(paths(t).Repo, "examples", "pot", "example.nomad")
	tasks, err := LoadJobTasks(path)
	if err != nil || len(tasks) != 1 {
		t.Fatalf("%s: %v tasks, err %v", path, len(tasks), err)
	}
	jt := tasks[0]
	if jt.Driver != c.Info.GetName() || jt.Task != potTaskName {
		t.Fatalf("example.nomad task %q uses driver %q; plugin is %q", jt.Task, jt.Driver, c.Info.GetName())
	}
	tk := potNewTask(t, c, "")
	_, b, err := c.decodeTaskConfigMap(t, tk, jt.Config)
	if err != nil {
		t.Fatalf("the seed job's config does not decode against the pot TaskConfigSchema: %v", err)
	}
	tk.Config.MsgpackDriverConfig = b
	c.startTask(t, tk)
	if got := tk.Stdout.WaitContent("pot "+potName(tk)+" started\n", 5*time.Second); !strings.Contains(got, "started") {
		t.Fatalf("stdout FIFO = %q, want the stand-in's start line", got)
	}

	name := potName(tk)
	dir := filepath.Join(tk.AllocDir, potTaskName)
	calls := potCallsFrom(s.calls(t), 0, "prepare")
	want := [][]string{
		{"prepare", "-U", "https://potluck.honeyguide.net/nginx-nomad", "-p", "nginx-nomad-amd64-13_1", "-t", "1.1.13",
			"-c", `"nginx -g 'daemon off;'"`, "-N", "public-bridge", "-i", "auto", "-e", "80:28443",
			"-a", strings.TrimPrefix(name, potTaskName+"_"), "-n", potTaskName, "-v"},
		{"copy-in", "-p", name, "-s", "/mnt/s3/web/nginx.conf", "-d", "/usr/local/etc/nginx/nginx.conf"},
		{"mount-in", "-p", name, "-d", dir + "/local", "-m", "/local"},
		{"mount-in", "-p", name, "-d", dir + "/secrets", "-m", "/secrets"},
		{"mount-in", "-p", name, "-d", "/mnt/s3/web/www", "-m", "/mnt"},
		potSetEnvArgs(tk),
		{"set-rss", "-M", "64M", "-p", name},
		{"start", name},
	}
	if len(calls) != len(want) {
		t.Fatalf("pot calls after prepare = %d:\n%v\nwant %d", len(calls), calls, len(want))
	}
	for i := range want {
		potRequireArgv(t, fmt.Sprintf("call %d", i+1), calls[i], want[i]...)
	}
	for _, cl := range s.calls(t) {
		if len(cl.Env) != 1 || cl.Env[0] != potEnvPath {
			t.Errorf("`pot %s` ran with environment %q, want only %q (no host environment)", cl, cl.Env, potEnvPath)
		}
	}

	// Signal: `pot signal -s SIGHUP -p <pot>`, which the stand-in forwards.
	if _, err := c.Driver.SignalTask(rpcCtx(t, 10*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGHUP"}); err != nil {
		t.Fatalf("SignalTask: %v", err)
	}
	potRequireArgv(t, "signal", s.calls(t)[len(s.calls(t))-1], "signal", "-s", "SIGHUP", "-p", name)
	if got := tk.Stdout.WaitContent("pot "+name+" started\ngot SIGHUP\n", 5*time.Second); !strings.Contains(got, "got SIGHUP") {
		t.Errorf("stdout FIFO = %q, want the forwarded SIGHUP", got)
	}

	// Exec: `pot exec -p <pot> <cmd...>`; output and exit code come back.
	ex, err := c.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId: tk.ID, Command: []string{"sh", "-c", "echo in-jail; echo oops >&2; exit 3"}, Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	potRequireArgv(t, "exec", s.calls(t)[len(s.calls(t))-1], "exec", "-p", name, "sh", "-c", "echo in-jail; echo oops >&2; exit 3")
	if string(ex.GetStdout()) != "in-jail\n" || ex.GetResult().GetExitCode() != 3 {
		t.Errorf("exec: stdout %q exit %d, want \"in-jail\\n\" and 3", ex.GetStdout(), ex.GetResult().GetExitCode())
	}

	// Stats from `pot get-rss -p <pot> -J`.
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: tk.ID, CollectionInterval: dur(200 * time.Millisecond)})
	if err != nil {
		t.Fatalf("TaskStats: %v", err)
	}
	m := recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 5*time.Second, "TaskStats").(*drivers.TaskStatsResponse)
	cancel()
	if rss := m.GetStats().GetAggResourceUsage().GetMemory().GetRss(); rss != 1048576 {
		t.Errorf("stats RSS = %d, want the 1048576 pot get-rss reported", rss)
	}
	if potCount(s.calls(t), 0, "get-rss") == 0 {
		t.Errorf("no `pot get-rss` call behind TaskStats")
	}

	// Stop: `pot destroy -p <pot> -F` ends `pot start`; WaitTask returns.
	w := c.waitAsync(tk.ID)
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second), Signal: "SIGINT"}); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	res := w.get(t, 10*time.Second, "after StopTask")
	if res.GetResult().GetSignal() != 15 {
		t.Errorf("WaitTask after stop = %v, want the SIGTERM pot destroy sent to pot start", res.GetResult())
	}
	if _, err := c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID}); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
	all := s.calls(t)
	stop := potCallsFrom(all, 0, "destroy")
	if len(stop) == 0 {
		t.Fatalf("StopTask ran no `pot destroy`; calls: %v", all)
	}
	potRequireArgv(t, "stop", stop[0], "destroy", "-p", name, "-F")
	if n := potCount(all, 0, "destroy"); n != 1 {
		t.Errorf("%d `pot destroy` calls, want 1 (DestroyTask checks `pot ls -q` first): %v", n, all)
	}
	if len(stop) != 2 || strings.Join(stop[1].Argv, " ") != "ls -q" {
		t.Errorf("after the stop's destroy, want only DestroyTask's `pot ls -q`: %v", stop)
	}
	for _, cl := range all {
		for _, kv := range cl.Env {
			if strings.Contains(kv, "must-not-leak") {
				t.Errorf("the host's environment leaked into `pot %s`", cl)
			}
		}
	}
}

// TestPotExitCodeFromLastRunStats: `pot start` exits 125, the jail's own
// exit code (7) comes from `pot last-run-stats`, then the pot is destroyed.
func TestPotExitCodeFromLastRunStats(t *testing.T) {
	s := potNewStandin(t, "pot", map[string]interface{}{"start": map[string]int{"run_ms": 300, "exit": 125, "jail_exit": 7}})
	c := potLaunchWith(t, s, true)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "batch"
tag   = "1.0"
`)
	c.startTask(t, tk)
	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	requireResult(t, w, 7, 0)
	// Nomad destroys the task after every exit; that removes the pot.
	if _, err := c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID}); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
	name := potName(tk)
	after := potCallsFrom(s.calls(t), 0, "last-run-stats")
	if len(after) != 3 {
		t.Fatalf("calls from last-run-stats on: %v, want last-run-stats, ls -q, destroy", after)
	}
	potRequireArgv(t, "stats", after[0], "last-run-stats", "-p", name)
	potRequireArgv(t, "list", after[1], "ls", "-q")
	potRequireArgv(t, "destroy", after[2], "destroy", "-p", name, "-F")
}

// TestPotExitWithoutStats: a `pot start` that exits 125 with no
// last-run-stats exit code is a driver error, not a silent success.
func TestPotExitWithoutStats(t *testing.T) {
	s := potNewStandin(t, "pot", map[string]interface{}{
		"start": map[string]int{"run_ms": 200, "exit": 125},
		"fail":  map[string]interface{}{"last-run-stats": map[string]interface{}{"exit": 1, "stderr": "pot: the pot is corrupted\n"}},
	})
	c := potLaunchWith(t, s, true)
	ev := potCollectEvents(t, c)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "batch"
tag   = "1.0"
`)
	c.startTask(t, tk)
	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	if w.GetResult().GetExitCode() != 125 || !strings.Contains(w.GetErr(), "the pot is corrupted") {
		t.Errorf("WaitTask = %v err %q, want exit 125 with an error carrying pot's stderr", w.GetResult(), w.GetErr())
	}
	ev.waitFor(t, "the pot is corrupted", 5*time.Second)
}

// TestPotFailingPrepare: pot's stderr is in the StartTask error and in a
// task event; nothing else runs.
func TestPotFailingPrepare(t *testing.T) {
	stderr := "pot: zfs dataset zroot/pot/bases/nginx does not exist\n"
	s := potNewStandin(t, "pot", map[string]interface{}{"fail": map[string]interface{}{"prepare": map[string]interface{}{"exit": 1, "stderr": stderr}}})
	c := potLaunchWith(t, s, true)
	ev := potCollectEvents(t, c)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "nginx"
tag   = "1.0"
`)
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with a failing pot prepare", "zfs dataset zroot/pot/bases/nginx does not exist")
	e := ev.waitFor(t, "does not exist", 5*time.Second)
	if e.GetTaskName() != potTaskName || e.GetAllocId() != tk.AllocID {
		t.Errorf("event routed to %s/%s, want %s/%s", e.GetAllocId(), e.GetTaskName(), tk.AllocID, potTaskName)
	}
	if !strings.Contains(e.GetAnnotations()["stderr"], "does not exist") || !strings.HasPrefix(e.GetAnnotations()["command"], "pot prepare") {
		t.Errorf("event annotations %v, want pot's stderr and the command", e.GetAnnotations())
	}
	after := potCallsFrom(s.calls(t), 0, "prepare")
	if len(after) != 1 {
		t.Errorf("after a failed prepare nothing else should run: %v", after)
	}
}

// TestPotFailingStepCleansUp: a failing step after prepare surfaces its
// stderr and destroys the half-made pot.
func TestPotFailingStepCleansUp(t *testing.T) {
	s := potNewStandin(t, "pot", map[string]interface{}{"fail": map[string]interface{}{"mount-in": map[string]interface{}{"exit": 1, "stderr": "pot: mount_nullfs: Operation not permitted\n"}}})
	c := potLaunchWith(t, s, true)
	ev := potCollectEvents(t, c)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "nginx"
tag   = "1.0"
`)
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with a failing mount-in", "Operation not permitted")
	ev.waitFor(t, "Operation not permitted", 5*time.Second)
	calls := s.calls(t)
	last := calls[len(calls)-1]
	potRequireArgv(t, "clean-up", last, "destroy", "-p", potName(tk), "-F")
	if potCount(calls, 0, "start") != 0 {
		t.Errorf("pot start ran after a failed set-up step: %v", calls)
	}
}

// TestPotHostileEnvValues: values with spaces, quotes, $(), backquotes and
// backslashes reach `pot set-env` as single arguments, escaped for the
// jail's `export "K=V"`; a value with a newline is refused, naming it.
func TestPotHostileEnvValues(t *testing.T) {
	s := potNewStandin(t, "pot", nil)
	c := potLaunchWith(t, s, true)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "nginx"
tag   = "1.0"
`)
	tk.Env = map[string]string{
		"SPACES":    "a b  c",
		"QUOTES":    `it's "quoted"`,
		"SUBST":     "$(touch /tmp/pwned) `id`",
		"BACKSLASH": `C:\dir\`,
	}
	tk.Config.Env = tk.Env
	c.startTask(t, tk)
	env := potCallsFrom(s.calls(t), 0, "set-env")
	if len(env) == 0 {
		t.Fatalf("no set-env call")
	}
	potRequireArgv(t, "set-env", env[0], "set-env", "-p", potName(tk),
		"-E", `BACKSLASH=C:\\dir\\`,
		"-E", `QUOTES=it's "quoted"`,
		"-E", "SPACES=a b  c",
		"-E", "SUBST=\\$(touch /tmp/pwned) \\`id\\`")

	tk2 := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "nginx"
tag   = "1.0"
`)
	tk2.Config.Env = map[string]string{"CERT": "line1\nline2"}
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk2.Config})
	requireOrdinaryError(t, err, "StartTask with a newline in an env value", `"CERT"`)
}

// TestPotRejectsBadConfig: config errors name the field and no pot command
// runs.
func TestPotRejectsBadConfig(t *testing.T) {
	s := potNewStandin(t, "pot", nil)
	c := potLaunchWith(t, s, true)
	for _, tc := range []struct{ body, field string }{
		{`
image = "i"
pot = "p"
tag = "t"
network_mode = "bridge"`, "network_mode"},
		{`
image = "i"
pot = "p"
tag = "t"
port_map = { admin = "8080" }`, "port_map.admin"},
		{`
image = "i"
pot = "p"
tag = "t"
mount = ["relative:/mnt"]`, "mount[0]"},
		{`
image = "i"
pot = "p"
tag = "t"
args = ["-x"]`, "args"},
	} {
		tk := potNewTask(t, c, tc.body)
		_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
		requireOrdinaryError(t, err, "StartTask with bad "+tc.field, `"`+tc.field+`"`)
	}
	if n := potCount(s.calls(t), 0, "prepare"); n != 0 {
		t.Errorf("%d pot prepare calls for rejected configs, want 0", n)
	}
	// A config that names an unknown attribute fails Nomad's decode.
	tk := potNewTask(t, c, "")
	if _, _, err := c.decodeTaskConfig(t, tk, "image = \"i\"\npot = \"p\"\ntag = \"t\"\nnetwork = \"x\""); err == nil {
		t.Errorf("an unknown attribute decoded without error")
	}
}

// TestPotStopThenExit125: when stopping the jail makes `pot start` exit 125
// (rather than die by a signal), the stats are gone with the pot; the exit
// is reported as observed, not as a driver error.
func TestPotStopThenExit125(t *testing.T) {
	s := potNewStandin(t, "pot", map[string]interface{}{"start": map[string]int{"stop_exit": 125}})
	c := potLaunchWith(t, s, true)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "web"
tag   = "1.0"
`)
	c.startTask(t, tk)
	if got := tk.Stdout.WaitContent("pot "+potName(tk)+" started\n", 5*time.Second); !strings.Contains(got, "started") {
		t.Fatalf("stdout FIFO = %q", got)
	}
	w := c.waitAsync(tk.ID)
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	res := w.get(t, 10*time.Second, "after StopTask")
	if res.GetResult().GetExitCode() != 125 || res.GetErr() != "" {
		t.Errorf("WaitTask = %v err %q, want exit 125 and no error", res.GetResult(), res.GetErr())
	}
	after := potCallsFrom(s.calls(t), 0, "destroy")
	if len(after) < 3 || after[1].Argv[0] != "last-run-stats" || after[2].String() != "ls -q" {
		t.Errorf("after the stop: %v, want destroy, last-run-stats, ls -q", after)
	}
}

// TestPotLeastPrivilegeGrants: with examples/pot/pot.wasm.grants.hcl (pot
// limited to the subcommands the driver uses, uname to -s) and no
// --allow-exec, the whole lifecycle works; with `signal` removed from the
// file, SignalTask is refused naming the grant.
func TestPotLeastPrivilegeGrants(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(paths(t).Repo, "examples", "pot", "pot.wasm.grants.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	guestSrc := os.Getenv("POT_WASM")
	if guestSrc == "" {
		guestSrc = filepath.Join(paths(t).Repo, "target/wasm32-wasip2/guest/pot.wasm")
	}
	wasm, err := os.ReadFile(guestSrc)
	if err != nil {
		t.Fatalf("pot guest (POT_WASM): %v", err)
	}
	for _, withSignal := range []bool{true, false} {
		s := potNewStandin(t, "pot", nil)
		uname := filepath.Join(s.Dir, "uname")
		if err := os.WriteFile(uname, []byte("#!/bin/sh\necho FreeBSD\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		grants := strings.ReplaceAll(string(src), `"/usr/local/bin/pot"`, `"`+s.Bin+`"`)
		grants = strings.ReplaceAll(grants, `"/usr/bin/uname"`, `"`+uname+`"`)
		if !withSignal {
			grants = strings.ReplaceAll(grants, `["signal", "-s"],`, "")
		}
		gdir := t.TempDir()
		guest := filepath.Join(gdir, "pot.wasm")
		if err := os.WriteFile(guest, wasm, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(guest+".grants.hcl", []byte(grants), 0o644); err != nil {
			t.Fatal(err)
		}
		c := potLaunch(t, potHostOpts{
			GuestEnv: "POT_LEAST_PRIVILEGE_UNSET", GuestDefault: guest, PathPrefix: s.Dir,
			AgentFile: "examples/pot/agent.hcl", AgentLabel: "nomad-driver-pot",
		})
		if fp := potFingerprint(t, c); fp.GetHealth() != drivers.FingerprintResponse_HEALTHY {
			t.Fatalf("fingerprint with the grants file: %v (%q)", fp.GetHealth(), fp.GetHealthDescription())
		}
		tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "web"
tag   = "1.0"
copy  = ["/etc/hosts:/etc/hosts"]
mount = ["/srv:/srv"]
attributes = ["devfs_ruleset:3"]
extra_hosts = ["db:10.0.0.2"]
port_map = { http = "80" }
`)
		c.startTask(t, tk)
		// StartTask returns once `pot start` runs; the jail (here the
		// stand-in) is up a moment later, as it says on its stdout.
		if got := tk.Stdout.WaitContent("pot "+potName(tk)+" started\n", 5*time.Second); !strings.Contains(got, "started") {
			t.Fatalf("the pot never said it started: %q", got)
		}
		_, err := c.Driver.SignalTask(rpcCtx(t, 10*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGHUP"})
		if withSignal && err != nil {
			t.Errorf("SignalTask with signal granted: %v", err)
		}
		if !withSignal {
			requireOrdinaryError(t, err, "SignalTask without the signal grant", "not granted")
		}
		ex, err := c.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{TaskId: tk.ID, Command: []string{"true"}, Timeout: dur(10 * time.Second)})
		if err != nil || ex.GetResult().GetExitCode() != 0 {
			t.Errorf("ExecTask: %v %v", ex, err)
		}
		w := c.waitAsync(tk.ID)
		if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
			t.Fatalf("StopTask: %v", err)
		}
		w.get(t, 10*time.Second, "after StopTask")
		if _, err := c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID}); err != nil {
			t.Fatalf("DestroyTask: %v", err)
		}
		if n := potCount(s.calls(t), 0, "signal"); (n == 1) != withSignal {
			t.Errorf("signal granted=%v but pot signal ran %d times", withSignal, n)
		}
	}
}

// TestPotExecStreaming: `nomad alloc exec` through `pot exec -p <pot>`,
// with pipes and with a tty (the host allocates the pty around pot exec).
func TestPotExecStreaming(t *testing.T) {
	s := potNewStandin(t, "pot", nil)
	c := potLaunchWith(t, s, true)
	tk := potNewTask(t, c, `
image = "https://example.org/pots"
pot   = "web"
tag   = "1.0"
`)
	c.startTask(t, tk)
	r := runExecStream(t, c, &drivers.ExecTaskStreamingRequest{Setup: &drivers.ExecTaskStreamingRequest_Setup{
		TaskId: tk.ID, Command: []string{"sh", "-c", "read x; echo got:$x; echo e >&2; exit 4"},
	}}, []string{"hi\n"})
	if r.stdout != "got:hi\n" || r.stderr != "e\n" || r.exited.GetExitCode() != 4 {
		t.Errorf("pipes: stdout %q stderr %q exit %d, want got:hi, e, 4", r.stdout, r.stderr, r.exited.GetExitCode())
	}
	r = runExecStream(t, c, &drivers.ExecTaskStreamingRequest{
		Setup:   &drivers.ExecTaskStreamingRequest_Setup{TaskId: tk.ID, Command: []string{"sh", "-c", "test -t 0 && echo is-a-tty"}, Tty: true},
		TtySize: &drivers.ExecTaskStreamingRequest_TerminalSize{Height: 30, Width: 100},
	}, nil)
	if !strings.Contains(r.stdout, "is-a-tty") {
		t.Errorf("tty: stdout %q, want is-a-tty", r.stdout)
	}
	execs := potCallsFrom(s.calls(t), 0, "exec")
	if len(execs) != 2 {
		t.Fatalf("pot exec calls: %v", execs)
	}
	potRequireArgv(t, "exec (pipes)", execs[0], "exec", "-p", potName(tk), "sh", "-c", "read x; echo got:$x; echo e >&2; exit 4")
}

// TestPotRecoverAfterPluginRestart: pot tasks outlive the plugin; a new
// instance recovers them from Nomad's stored handle and keeps driving pot
// (stop → `pot destroy` of the right pot; a 125 exit while the plugin was
// down → the jail's code from last-run-stats).
func TestPotRecoverAfterPluginRestart(t *testing.T) {
	cfg := `
image = "https://example.org/pots"
pot   = "web"
tag   = "1.0"
`
	t.Run("running task is recovered and stopped", func(t *testing.T) {
		s := potNewStandin(t, "pot", nil)
		c1 := potLaunchWith(t, s, true)
		tk := potNewTask(t, c1, cfg)
		resp := c1.startTask(t, tk)
		tk.Stdout.WaitContent("pot "+potName(tk)+" started\n", 5*time.Second)
		c1.Kill()
		if tk.Stdout.WaitEOF(500 * time.Millisecond) {
			t.Fatalf("pot start's stdout closed when the plugin exited: the task did not survive it")
		}
		c2 := potLaunchWith(t, s, true)
		if _, err := c2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(resp.GetHandle())}); err != nil {
			t.Fatalf("RecoverTask: %v", err)
		}
		w := c2.waitAsync(tk.ID)
		w.requireBlocked(t, 300*time.Millisecond, "recovered pot task")
		if _, err := c2.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
			t.Fatalf("StopTask of the recovered task: %v", err)
		}
		w.get(t, 10*time.Second, "recovered task after StopTask")
		stop := potCallsFrom(s.calls(t), 0, "destroy")
		if len(stop) == 0 {
			t.Fatalf("no pot destroy after the recovered stop: %v", s.calls(t))
		}
		potRequireArgv(t, "recovered stop", stop[0], "destroy", "-p", potName(tk), "-F")
	})
	t.Run("exit 125 while the plugin was down", func(t *testing.T) {
		s := potNewStandin(t, "pot", map[string]interface{}{"start": map[string]int{"run_ms": 300, "exit": 125, "jail_exit": 6}})
		c1 := potLaunchWith(t, s, true)
		tk := potNewTask(t, c1, cfg)
		resp := c1.startTask(t, tk)
		c1.Kill()
		if !tk.Stdout.WaitEOF(5 * time.Second) {
			t.Fatalf("pot start (run_ms 300) did not finish within 5 s")
		}
		c2 := potLaunchWith(t, s, true)
		if _, err := c2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(resp.GetHandle())}); err != nil {
			t.Fatalf("RecoverTask: %v", err)
		}
		w, _ := c2.waitTask(t, tk.ID, 5*time.Second)
		requireResult(t, w, 6, 0)
	})
}
