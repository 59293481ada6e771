package conformance

// The driver as Nomad's client uses it: plugin info, schemas, SetConfig,
// capabilities, the fingerprint and event streams, and whole task lifecycles
// of the hello guest with configs decoded from the example job file.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"conformancepb/base"
	"conformancepb/drivers"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

var semverRE = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// sameAPIVersion compares API versions the way hashicorp/go-version does for
// these simple forms ("v0.1.0" == "0.1.0" == "0.1").
func sameAPIVersion(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimPrefix(s, "v")
		for strings.Count(s, ".") < 2 {
			s += ".0"
		}
		return s
	}
	return norm(a) == norm(b)
}

func TestPluginInfo(t *testing.T) {
	p := launchPlugin(t)
	if err := p.RPC.Ping(); err != nil {
		t.Errorf("go-plugin Ping (grpc.health.v1 Check for service \"plugin\"): %v", err)
	}
	info, err := p.Base.PluginInfo(rpcCtx(t, 5*time.Second), &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("PluginInfo: %v", err)
	}
	if info.GetType() != base.PluginType_DRIVER {
		t.Errorf("type = %v, want DRIVER (2)", info.GetType())
	}
	found := false
	for _, v := range info.GetPluginApiVersions() {
		if sameAPIVersion(v, driverAPIVersion) {
			found = true
		}
	}
	if !found {
		t.Errorf("plugin_api_versions = %q, must include %q", info.GetPluginApiVersions(), driverAPIVersion)
	}
	if info.GetName() != helloDriverName {
		t.Errorf("name = %q, want %q", info.GetName(), helloDriverName)
	}
	if !semverRE.MatchString(info.GetPluginVersion()) {
		t.Errorf("plugin_version %q is not a semantic version", info.GetPluginVersion())
	}
}

func TestConfigSchemaDecodesAgentConfig(t *testing.T) {
	c := &Configured{Plugin: launchPlugin(t)}
	c.ConfigSpec = c.configSpec(t)

	agent := agentPluginConfig(t)
	if js, _ := json.Marshal(agent); string(js) != `{"shell":"bash"}` {
		t.Fatalf("examples/hello/agent.hcl plugin config = %s, want {\"shell\":\"bash\"}", js)
	}
	v, _ := c.encodeAgentConfig(t, agent)
	if got := attrString(t, v, "shell"); got != "bash" {
		t.Errorf("decoded agent config shell = %q, want bash", got)
	}

	// No config block at all: Nomad decodes an empty map, so defaults apply.
	empty, _ := c.encodeAgentConfig(t, map[string]interface{}{})
	if got := attrString(t, empty, "shell"); got != "bash" {
		t.Errorf("empty agent config: shell = %q, want the default bash", got)
	}

	// Agent start-up validation: SetConfig without nomad_config, twice.
	c.setConfig(t, agent, false)
	c.setConfig(t, agent, false)
	// The long-lived instance: SetConfig with the agent's port range.
	c.setConfig(t, agent, true)
	c.setConfig(t, map[string]interface{}{}, true)
}

func TestCapabilities(t *testing.T) {
	c := launchConfigured(t)
	resp, err := c.Driver.Capabilities(rpcCtx(t, 5*time.Second), &drivers.CapabilitiesRequest{})
	if err != nil {
		t.Fatalf("Capabilities: %v", err)
	}
	caps := resp.GetCapabilities()
	if caps == nil {
		t.Fatalf("Capabilities response without capabilities")
	}
	if !caps.GetSendSignals() {
		t.Errorf("send_signals = false, want true")
	}
	if caps.GetFsIsolation() != drivers.DriverCapabilities_NONE {
		t.Errorf("fs_isolation = %v, want NONE", caps.GetFsIsolation())
	}
}

func TestFingerprint(t *testing.T) {
	c := launchConfigured(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	stream, err := c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	first := recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 2*time.Second, "first FingerprintResponse")
	fp := first.(*drivers.FingerprintResponse)
	t.Logf("first fingerprint after %v: %v", time.Since(start).Round(time.Millisecond), fp)
	if fp.GetHealth() != drivers.FingerprintResponse_HEALTHY {
		t.Errorf("health = %v (%q), want HEALTHY", fp.GetHealth(), fp.GetHealthDescription())
	}
	attrs := fp.GetAttributes()
	if a := attrs["driver.hello.shell"]; a.GetStringVal() != "bash" {
		t.Errorf("attribute driver.hello.shell = %v, want string \"bash\"", a)
	}
	if a := attrs["driver.hello.shell_version"]; a == nil || strings.TrimSpace(attributeText(a)) == "" {
		t.Errorf("attribute driver.hello.shell_version = %v, want a non-empty version", a)
	}
	requireStreamStaysOpen(t, func() (interface{}, error) { return stream.Recv() }, time.Second, "Fingerprint")
	cancel()
}

func TestTaskEventsStreamStaysOpen(t *testing.T) {
	c := launchConfigured(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Driver.TaskEvents(ctx, &drivers.TaskEventsRequest{})
	if err != nil {
		t.Fatalf("TaskEvents: %v", err)
	}
	requireStreamStaysOpen(t, func() (interface{}, error) { return stream.Recv() }, time.Second, "TaskEvents")
	cancel()
}

// TestHelloJobLifecycle runs the example job's task as Nomad would, through
// every lifecycle call.
func TestHelloJobLifecycle(t *testing.T) {
	c := launchConfigured(t)
	jt := exampleJobTask(t)
	if jt.Driver != c.Info.GetName() {
		t.Errorf("example.nomad uses driver %q but the plugin is named %q", jt.Driver, c.Info.GetName())
	}
	tk := newTask(t, jt.Task)
	v, b, err := c.decodeTaskConfigMap(t, tk, jt.Config)
	if err != nil {
		t.Fatalf("decoding example.nomad task config against TaskConfigSchema: %v", err)
	}
	if got := attrString(t, v, "greeting"); got != "hello" {
		t.Fatalf("decoded greeting = %q, want hello", got)
	}
	tk.Config.MsgpackDriverConfig = b

	resp := c.startTask(t, tk)
	h := resp.GetHandle()
	if h == nil {
		t.Fatalf("StartTaskResponse has no handle")
	}
	if h.GetConfig().GetId() != tk.ID {
		t.Errorf("handle.config.id = %q, want %q", h.GetConfig().GetId(), tk.ID)
	}
	if h.GetState() != drivers.TaskState_RUNNING {
		t.Errorf("handle.state = %v, want RUNNING", h.GetState())
	}
	if h.GetVersion() < 1 {
		t.Errorf("handle.version = %d, want >= 1 (0 is reserved)", h.GetVersion())
	}
	if len(h.GetDriverState()) == 0 {
		t.Errorf("handle.driver_state is empty; the host needs it to recover the task")
	}

	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	requireResult(t, w, 0, 0)
	if got := tk.Stdout.WaitContent("hello\n", 2*time.Second); got != "hello\n" {
		t.Errorf("stdout FIFO = %q, want %q", got, "hello\n")
	}

	// The task has exited: WaitTask answers at once, and again.
	w2, took := c.waitTask(t, tk.ID, 2*time.Second)
	requireResult(t, w2, 0, 0)
	if took > time.Second {
		t.Errorf("WaitTask on an exited task took %v", took)
	}

	if _, err := c.Driver.StopTask(rpcCtx(t, 10*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
		t.Errorf("StopTask on an exited task: %v", err)
	}
	// StopTask does not remove the task.
	w3, _ := c.waitTask(t, tk.ID, 2*time.Second)
	requireResult(t, w3, 0, 0)

	for i := 1; i <= 2; i++ {
		if _, err := c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
			t.Errorf("DestroyTask #%d (must be idempotent): %v", i, err)
		}
	}
	if !tk.Stdout.WaitEOF(2 * time.Second) {
		t.Errorf("stdout FIFO still has a writer 2 s after DestroyTask (leaked file descriptor?)")
	}
	if got := tk.Stdout.Content(); got != "hello\n" {
		t.Errorf("stdout FIFO total = %q, want exactly %q", got, "hello\n")
	}
	t.Logf("stdout FIFO: %q", tk.Stdout.Content())
	t.Logf("stderr FIFO: %q", tk.Stderr.Content())
	t.Logf("exit: code %d, signal %d", w3.GetResult().GetExitCode(), w3.GetResult().GetSignal())

	_, err = c.Driver.WaitTask(rpcCtx(t, 5*time.Second), &drivers.WaitTaskRequest{TaskId: tk.ID})
	requireNotFound(t, err, "WaitTask after DestroyTask", tk.ID)
	c.requireServing(t, "WaitTask on a destroyed task")
}

func TestTaskExitCode(t *testing.T) {
	c := launchConfigured(t)
	tk := newTask(t, exampleTask)
	c.mustConfigure(t, tk, `
greeting  = "hello"
exit_code = 3
`)
	c.startTask(t, tk)
	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	requireResult(t, w, 3, 0)
	if got := tk.Stdout.WaitContent("hello\n", 2*time.Second); got != "hello\n" {
		t.Errorf("stdout FIFO = %q, want %q", got, "hello\n")
	}
}

// startSleeper starts a hello task that prints its greeting and then keeps
// running, and waits until the greeting arrived (so the task is up).
func startSleeper(t *testing.T, c *Configured) (*Task, *drivers.StartTaskResponse) {
	t.Helper()
	tk := newTask(t, exampleTask)
	c.mustConfigure(t, tk, `
greeting = "hello"
sleep    = 60
`)
	resp := c.startTask(t, tk)
	if got := tk.Stdout.WaitContent("hello\n", 5*time.Second); got != "hello\n" {
		t.Fatalf("sleeping task: stdout FIFO = %q, want %q before it sleeps", got, "hello\n")
	}
	return tk, resp
}

// waiter runs WaitTask in the background.
type waiter struct {
	done chan struct{}
	resp *drivers.WaitTaskResponse
	err  error
	at   time.Time
}

func (c *Configured) waitAsync(id string) *waiter {
	w := &waiter{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		w.resp, w.err = c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: id})
		w.at = time.Now()
	}()
	return w
}

func (w *waiter) requireBlocked(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case <-w.done:
		t.Fatalf("%s: WaitTask returned while the task should still run: %v, err %v", what, w.resp, w.err)
	case <-time.After(d):
	}
}

func (w *waiter) get(t *testing.T, limit time.Duration, what string) *drivers.WaitTaskResponse {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(limit):
		t.Fatalf("%s: WaitTask did not return within %v", what, limit)
	}
	if w.err != nil {
		t.Fatalf("%s: WaitTask: %v", what, w.err)
	}
	if w.resp.GetResult() == nil {
		t.Fatalf("%s: WaitTask response without result", what)
	}
	return w.resp
}

func TestStopTaskInterruptsRunningTask(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)
	w1, w2 := c.waitAsync(tk.ID), c.waitAsync(tk.ID)
	w1.requireBlocked(t, 300*time.Millisecond, "sleep=60 task")

	// A second StartTask for a running task ID must be refused.
	if _, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config}); err == nil {
		t.Errorf("StartTask for the already running task id %s succeeded; it must error", tk.ID)
	}

	start := time.Now()
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second), Signal: ""}); err != nil {
		t.Fatalf("StopTask(timeout 5s, signal \"\"): %v", err)
	}
	stopTook := time.Since(start)
	r1 := w1.get(t, 10*time.Second, "after StopTask").GetResult()
	r2 := w2.get(t, 2*time.Second, "second concurrent WaitTask").GetResult()
	ended := w1.at.Sub(start)
	t.Logf("StopTask took %v, task ended %v after it; result %v", stopTook.Round(time.Millisecond), ended.Round(time.Millisecond), r1)
	if r1.GetSignal() == 0 && r1.GetExitCode() == 0 {
		t.Errorf("stopped task reported a clean exit %v", r1)
	}
	// The default kill signal (SIGINT) must end bash + sleep, long before
	// the 5 s timeout would escalate to SIGKILL.
	if ended > 4500*time.Millisecond {
		t.Errorf("task ended %v after StopTask: the default signal did not stop it (escalation?)", ended)
	}
	if r1.GetSignal() != 2 && r1.GetExitCode() != 130 {
		t.Logf("note: result %v is neither signal 2 nor exit 130", r1)
	}
	if r1.GetSignal() != r2.GetSignal() || r1.GetExitCode() != r2.GetExitCode() {
		t.Errorf("concurrent WaitTask calls disagree: %v vs %v", r1, r2)
	}
	if !tk.Stdout.WaitEOF(3 * time.Second) {
		t.Errorf("stdout FIFO still open 3 s after the task was stopped: is a task process (e.g. sleep) still alive?")
	}
}

func TestStopTaskEscalatesToSIGKILL(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)
	w := c.waitAsync(tk.ID)
	start := time.Now()
	// SIGWINCH is ignored by bash and sleep: only the escalation can end it.
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(time.Second), Signal: "SIGWINCH"}); err != nil {
		t.Fatalf("StopTask(timeout 1s, SIGWINCH): %v", err)
	}
	took := time.Since(start)
	if took < 900*time.Millisecond || took > 4*time.Second {
		t.Errorf("StopTask(timeout 1s) returned after %v, want about 1 s (signal, wait the timeout, then kill)", took)
	}
	r := w.get(t, 3*time.Second, "after escalated StopTask").GetResult()
	if r.GetSignal() != 9 {
		t.Errorf("result %v, want signal 9 (SIGKILL after the timeout)", r)
	}
}

func TestSignalTask(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)
	w := c.waitAsync(tk.ID)

	_, err := c.Driver.SignalTask(rpcCtx(t, 5*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGBOGUS"})
	requireOrdinaryError(t, err, "SignalTask(SIGBOGUS)", "SIGBOGUS")
	w.requireBlocked(t, 300*time.Millisecond, "after a rejected signal")

	if _, err := c.Driver.SignalTask(rpcCtx(t, 5*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGTERM"}); err != nil {
		t.Fatalf("SignalTask(SIGTERM): %v", err)
	}
	r := w.get(t, 5*time.Second, "after SIGTERM").GetResult()
	if r.GetSignal() != 15 && r.GetExitCode() != 143 {
		t.Errorf("result %v, want signal 15 or exit code 143", r)
	}
}

// hclString quotes s as an HCL native-syntax string literal with no
// interpolation.
func hclString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "${", "$${", "%{", "%%{")
	return `"` + r.Replace(s) + `"`
}

func TestGreetingIsPrintedLiterally(t *testing.T) {
	c := launchConfigured(t)
	marker := func(tag string) string {
		return filepath.Join(os.TempDir(), fmt.Sprintf("pwned-%s-%s", tag, randomHex(t, 6)))
	}
	subst, backtick := marker("subst"), marker("backtick")
	cases := []struct {
		name, greeting string
		mustNotExist   string
	}{
		{"quote-semicolon-rm", `"; rm -rf / #`, ""},
		{"command-substitution", "$(touch " + subst + ")", subst},
		{"backticks", "`touch " + backtick + "`", backtick},
		// (`${` is left out: Nomad's client interpolates config strings.)
		{"quotes-and-variables", `it's "quoted" \ $HOME $1 %s *`, ""},
		{"leading-dash", "-n", ""},
	}
	for _, tc := range cases {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			tk := newTask(t, exampleTask)
			v := c.mustConfigure(t, tk, "greeting = "+hclString(tc.greeting)+"\n")
			if got := attrString(t, v, "greeting"); got != tc.greeting {
				t.Fatalf("harness: decoded greeting %q, want %q", got, tc.greeting)
			}
			c.startTask(t, tk)
			w, _ := c.waitTask(t, tk.ID, 10*time.Second)
			requireResult(t, w, 0, 0)
			want := tc.greeting + "\n"
			if got := tk.Stdout.WaitContent(want, 2*time.Second); got != want {
				t.Errorf("stdout FIFO = %q, want the greeting verbatim %q", got, want)
			}
			if tc.mustNotExist != "" {
				if _, err := os.Stat(tc.mustNotExist); err == nil {
					os.Remove(tc.mustNotExist)
					t.Errorf("the greeting was run by a shell: %s was created", tc.mustNotExist)
				}
			}
		})
	}
}

// TestTaskStats: Nomad polls stats for every running task and re-calls
// the stream forever if it ends, so it must stay open while the task runs,
// and every message must carry stats, a timestamp and aggregate usage
// (NOMAD-PROTOCOL.md §8.3 step 5, §10).
func TestTaskStats(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: tk.ID, CollectionInterval: dur(200 * time.Millisecond)})
	if err != nil {
		t.Fatalf("TaskStats: %v", err)
	}
	msgs := requireStreamStaysOpen(t, func() (interface{}, error) { return stream.Recv() }, 1500*time.Millisecond, "TaskStats")
	// At a 200 ms interval, 1.5 s must bring several samples.
	if len(msgs) < 3 {
		t.Fatalf("TaskStats sent %d messages in 1.5 s at a 200 ms interval, want >= 3", len(msgs))
	}
	for _, m := range msgs {
		s := m.(*drivers.TaskStatsResponse).GetStats()
		if s == nil || s.GetAggResourceUsage() == nil || s.GetTimestamp() == nil {
			t.Fatalf("TaskStatsResponse without stats / agg_resource_usage / timestamp: %v", m)
		}
		if s.GetId() != tk.ID {
			t.Errorf("stats for %q, want %q", s.GetId(), tk.ID)
		}
		mem := s.GetAggResourceUsage().GetMemory()
		// The task is bash + sleep: a few MB of RSS, certainly more than 100 KB
		// and less than 1 GB.
		if mem.GetRss() < 100<<10 || mem.GetRss() > 1<<30 {
			t.Errorf("aggregate RSS %d bytes is not plausible for bash + sleep", mem.GetRss())
		}
		measuredRSS := false
		for _, f := range mem.GetMeasuredFields() {
			if f == drivers.MemoryUsage_RSS {
				measuredRSS = true
			}
		}
		if !measuredRSS {
			t.Errorf("memory measured_fields %v does not include RSS", mem.GetMeasuredFields())
		}
		if len(s.GetResourceUsageByPid()) < 1 {
			t.Errorf("no per-pid usage in %v", s)
		}
		if cpu := s.GetAggResourceUsage().GetCpu(); cpu.GetPercent() < 0 || cpu.GetPercent() > 400 {
			t.Errorf("CPU percent %v is not plausible for a sleeping task", cpu.GetPercent())
		}
	}
	cancel()
}

// TestRecoverTaskIsIdempotent: RecoverTask for a task the instance already
// manages succeeds and leaves it running (NOMAD-PROTOCOL.md §8.4).
func TestRecoverTaskIsIdempotent(t *testing.T) {
	c := launchConfigured(t)
	tk, resp := startSleeper(t, c)
	w := c.waitAsync(tk.ID)
	if _, err := c.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: resp.GetHandle()}); err != nil {
		t.Fatalf("RecoverTask of a live, known task: %v", err)
	}
	w.requireBlocked(t, 300*time.Millisecond, "after RecoverTask")
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	w.get(t, 10*time.Second, "after StopTask")
}

// TestTasksOutliveThePlugin: when the agent shuts down it kills the plugin,
// and tasks keep running; a new plugin instance recovers them from the
// stored handle (whose msgpack_driver_config is not persisted by Nomad) and
// still learns their real exit status (NOMAD-PROTOCOL.md §8.4).
func TestTasksOutliveThePlugin(t *testing.T) {
	t.Run("running task is recovered and stopped", func(t *testing.T) {
		c1 := launchConfigured(t)
		tk, resp := startSleeper(t, c1)
		if took := c1.Kill(); took >= 2*time.Second {
			t.Errorf("plugin took %v to exit after Shutdown with a task running", took)
		}
		if tk.Stdout.WaitEOF(500 * time.Millisecond) {
			t.Fatalf("the task's stdout closed when the plugin exited: the task did not survive the plugin")
		}
		c2 := launchConfigured(t)
		if _, err := c2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(resp.GetHandle())}); err != nil {
			t.Fatalf("RecoverTask in a new plugin instance: %v", err)
		}
		w := c2.waitAsync(tk.ID)
		w.requireBlocked(t, 300*time.Millisecond, "recovered sleep=60 task")
		if _, err := c2.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
			t.Fatalf("StopTask of the recovered task: %v", err)
		}
		r := w.get(t, 10*time.Second, "recovered task after StopTask").GetResult()
		if r.GetSignal() == 0 && r.GetExitCode() == 0 {
			t.Errorf("stopped recovered task reported a clean exit %v", r)
		}
		if !tk.Stdout.WaitEOF(3 * time.Second) {
			t.Errorf("recovered task's stdout still open after StopTask: the task process is still alive")
		}
		if _, err := c2.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
			t.Errorf("DestroyTask of the recovered task: %v", err)
		}
	})
	t.Run("exit status while the plugin was down is kept", func(t *testing.T) {
		c1 := launchConfigured(t)
		tk := newTask(t, exampleTask)
		c1.mustConfigure(t, tk, `
greeting  = "hello"
sleep     = 1
exit_code = 3
`)
		resp := c1.startTask(t, tk)
		c1.Kill()
		if !tk.Stdout.WaitEOF(5 * time.Second) {
			t.Fatalf("task (sleep = 1) did not finish within 5 s")
		}
		c2 := launchConfigured(t)
		if _, err := c2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(resp.GetHandle())}); err != nil {
			t.Fatalf("RecoverTask of a task that exited while the plugin was down: %v", err)
		}
		w, _ := c2.waitTask(t, tk.ID, 5*time.Second)
		requireResult(t, w, 3, 0)
		if _, err := c2.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
			t.Errorf("DestroyTask of the recovered task: %v", err)
		}
	})
}

// storedHandle is the handle as Nomad has it after an agent restart: the
// state DB does not keep msgpack_driver_config.
func storedHandle(h *drivers.TaskHandle) *drivers.TaskHandle {
	if h == nil {
		return nil
	}
	cp := proto.Clone(h).(*drivers.TaskHandle)
	if cp.Config != nil {
		cp.Config.MsgpackDriverConfig = nil
	}
	return cp
}

// --- shared assertions ---------------------------------------------------

func exampleJobTask(t *testing.T) JobTask {
	t.Helper()
	path := filepath.Join(paths(t).Repo, "examples", "hello", "example.nomad")
	tasks, err := LoadJobTasks(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	for _, jt := range tasks {
		if jt.Task == exampleTask {
			return jt
		}
	}
	t.Fatalf("%s has no task %q (tasks: %v)", path, exampleTask, tasks)
	return JobTask{}
}

func attrString(t *testing.T, v cty.Value, name string) string {
	t.Helper()
	if !v.Type().IsObjectType() || !v.Type().HasAttribute(name) {
		t.Fatalf("decoded config %#v has no attribute %q", v, name)
	}
	a := v.GetAttr(name)
	if a.IsNull() || a.Type() != cty.String {
		t.Fatalf("decoded %s = %#v, want a string", name, a)
	}
	return a.AsString()
}

func attributeText(a interface{ GetStringVal() string }) string {
	if s := a.GetStringVal(); s != "" {
		return s
	}
	return fmt.Sprint(a)
}

func requireResult(t *testing.T, w *drivers.WaitTaskResponse, exitCode, signal int32) {
	t.Helper()
	r := w.GetResult()
	if r.GetExitCode() != exitCode || r.GetSignal() != signal || w.GetErr() != "" {
		t.Errorf("WaitTask = {exit_code %d, signal %d, err %q}, want {exit_code %d, signal %d, err \"\"}",
			r.GetExitCode(), r.GetSignal(), w.GetErr(), exitCode, signal)
	}
}

// requireOrdinaryError checks err is a gRPC status error that Nomad treats
// as an ordinary failure (not UNAVAILABLE/CANCELED, which it reads as
// "plugin shutting down") and that its message mentions mention.
func requireOrdinaryError(t *testing.T, err error, what, mention string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want an error", what)
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Errorf("%s: error %v is not a gRPC status", what, err)
		return
	}
	if st.Code() == codes.Unavailable || st.Code() == codes.Canceled || st.Code() == codes.OK {
		t.Errorf("%s: status code %v; Nomad treats UNAVAILABLE/CANCELED as the plugin shutting down", what, st.Code())
	}
	if mention != "" && !strings.Contains(strings.ToLower(st.Message()), strings.ToLower(mention)) {
		t.Errorf("%s: error message %q does not mention %q", what, st.Message(), mention)
	}
	t.Logf("%s: %v: %s", what, st.Code(), st.Message())
}

// requireNotFound: an ordinary error whose message names the problem
// (contains "not found") or the task id.
func requireNotFound(t *testing.T, err error, what, id string) {
	t.Helper()
	requireOrdinaryError(t, err, what, "")
	if err == nil {
		return
	}
	msg := strings.ToLower(status.Convert(err).Message())
	if !strings.Contains(msg, "not found") && !strings.Contains(msg, strings.ToLower(id)) {
		t.Errorf("%s: message %q names neither the problem (not found) nor the task id", what, status.Convert(err).Message())
	}
}

// recvWithin returns the next stream message, failing if none arrives in
// time or the stream ends.
func recvWithin(t *testing.T, recv func() (interface{}, error), limit time.Duration, what string) interface{} {
	t.Helper()
	type res struct {
		m   interface{}
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: stream ended: %v", what, r.err)
		}
		return r.m
	case <-time.After(limit):
		t.Fatalf("%s: nothing within %v", what, limit)
	}
	return nil
}

// requireStreamStaysOpen receives for d and fails if the stream ends (EOF or
// error) in that time. It returns the messages that arrived.
func requireStreamStaysOpen(t *testing.T, recv func() (interface{}, error), d time.Duration, what string) []interface{} {
	t.Helper()
	type res struct {
		m   interface{}
		err error
	}
	ch := make(chan res, 64)
	go func() {
		for {
			m, err := recv()
			ch <- res{m, err}
			if err != nil {
				return
			}
		}
	}()
	var msgs []interface{}
	deadline := time.After(d)
	for {
		select {
		case r := <-ch:
			if r.err == io.EOF {
				t.Fatalf("%s stream ended (EOF) within %v; Nomad would re-call it in a tight loop", what, d)
			}
			if r.err != nil {
				t.Fatalf("%s stream failed within %v: %v", what, d, r.err)
			}
			msgs = append(msgs, r.m)
		case <-deadline:
			return msgs
		}
	}
}
