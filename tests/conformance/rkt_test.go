package conformance

// The rkt guest through the real host binary, as Nomad drives it, with the
// host's real process capability pointed at a RECORDING STAND-IN for rkt
// (tests/standins/rkt). The stand-in is not rkt (rkt is abandoned upstream
// and its binary is not obtainable here): it checks each invocation
// against rkt's documented flags, records argv and environment, and plays a
// scripted pod. Helpers are in pot_test.go.

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"conformancepb/drivers"
)

const rktTaskName = "etcd"

const rktEnvPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func rktLaunchWith(t *testing.T, s *potStandin, extraEnv ...string) *Configured {
	t.Helper()
	return potLaunch(t, potHostOpts{
		GuestEnv: "RKT_WASM", GuestDefault: "target/wasm32-wasip2/guest/rkt.wasm",
		Grants: []string{s.Bin}, PathPrefix: s.Dir, ExtraEnv: extraEnv,
		AgentFile: "examples/rkt/agent.hcl", AgentLabel: "nomad-driver-rkt",
	})
}

// rktPod is the UUID of the one pod the stand-in prepared.
func rktPod(t *testing.T, s *potStandin) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir, "state", "pods"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("want exactly one prepared pod, got %v (%v)", entries, err)
	}
	return entries[0].Name()
}

// rktSub is the index of the subcommand in a recorded argv (after the
// global --flags).
func rktSub(c potCall) string {
	for _, a := range c.Argv {
		if !strings.HasPrefix(a, "--") {
			return a
		}
	}
	return ""
}

func rktCalls(s *potStandin, t *testing.T, sub string) []potCall {
	var out []potCall
	for _, c := range s.calls(t) {
		if rktSub(c) == sub {
			out = append(out, c)
		}
	}
	return out
}

func TestRktFingerprint(t *testing.T) {
	t.Run("supported version", func(t *testing.T) {
		s := potNewStandin(t, "rkt", nil)
		c := rktLaunchWith(t, s)
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_HEALTHY {
			t.Fatalf("health = %v (%q), want HEALTHY", fp.GetHealth(), fp.GetHealthDescription())
		}
		a := fp.GetAttributes()
		if a["driver.rkt.version"].GetStringVal() != "1.30.0" || a["driver.rkt.appc.version"].GetStringVal() != "0.8.11" {
			t.Errorf("version attributes %v, want rkt 1.30.0 / appc 0.8.11 from the stand-in", a)
		}
		if !a["driver.rkt"].GetBoolVal() || !a["driver.rkt.volumes.enabled"].GetBoolVal() {
			t.Errorf("driver.rkt / driver.rkt.volumes.enabled = %v / %v, want true", a["driver.rkt"], a["driver.rkt.volumes.enabled"])
		}
	})
	t.Run("too old", func(t *testing.T) {
		s := potNewStandin(t, "rkt", map[string]interface{}{"version": "1.26.0"})
		c := rktLaunchWith(t, s)
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED || !strings.Contains(fp.GetHealthDescription(), "1.27.0") {
			t.Errorf("rkt 1.26.0: health = %v (%q), want UNDETECTED naming the minimum 1.27.0", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
	t.Run("absent", func(t *testing.T) {
		s := potNewStandin(t, "rkt", nil)
		c := rktLaunchWith(t, s)
		if err := os.Remove(s.Bin); err != nil {
			t.Fatal(err)
		}
		fp := potFingerprint(t, c)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED {
			t.Errorf("without rkt: health = %v (%q), want UNDETECTED", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
}

// TestRktJobLifecycle runs examples/rkt/example.nomad (the seed's fields,
// decoded through the TaskConfigSchema as Nomad would): trust, prepare,
// run-prepared, signal, exec via `rkt enter`, stop.
func TestRktJobLifecycle(t *testing.T) {
	s := potNewStandin(t, "rkt", nil)
	c := rktLaunchWith(t, s, "RKT_HOST_MARKER=must-not-leak")
	path := filepath.Join(paths(t).Repo, "examples", "rkt", "example.nomad")
	tasks, err := LoadJobTasks(path)
	if err != nil || len(tasks) != 1 || tasks[0].Driver != "rkt" {
		t.Fatalf("%s: %v, err %v", path, tasks, err)
	}
	tk := newTask(t, rktTaskName)
	_, b, err := c.decodeTaskConfigMap(t, tk, tasks[0].Config)
	if err != nil {
		t.Fatalf("example.nomad does not decode against the rkt TaskConfigSchema: %v", err)
	}
	tk.Config.MsgpackDriverConfig = b
	c.startTask(t, tk)
	uuid := rktPod(t, s)
	if got := tk.Stdout.WaitContent("pod "+uuid+" running", 5*time.Second); !strings.Contains(got, "pod "+uuid+" running") {
		t.Fatalf("stdout FIFO = %q, want the stand-in's pod line", got)
	}

	calls := s.calls(t)
	var seq []potCall
	for _, cl := range calls {
		if rktSub(cl) != "version" {
			seq = append(seq, cl)
		}
	}
	if len(seq) != 3 {
		t.Fatalf("rkt calls = %v, want trust, prepare, run-prepared", seq)
	}
	potRequireArgv(t, "trust", seq[0], "trust", "--skip-fingerprint-review=true", "--prefix=coreos.com/etcd", "--debug=false")
	vol := tk.AllocID + "-" + rktTaskName
	want := []string{"--debug=false", "prepare",
		"--volume=" + vol + "-alloc,kind=host,source=" + tk.AllocDir + "/alloc", "--mount=volume=" + vol + "-alloc,target=/alloc",
		"--volume=" + vol + "-local,kind=host,source=" + tk.AllocDir + "/etcd/local", "--mount=volume=" + vol + "-local,target=/local",
		"--volume=" + vol + "-secrets,kind=host,source=" + tk.AllocDir + "/etcd/secrets", "--mount=volume=" + vol + "-secrets,target=/secrets",
	}
	keys := make([]string, 0, len(tk.Env))
	for k := range tk.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want = append(want, "--set-env="+k+"="+tk.Env[k])
	}
	want = append(want, "coreos.com/etcd:v2.0.4", "--exec=/etcd", "--memory=314572800", "--cpu=100",
		"--", "--version", "--data-dir=/local")
	potRequireArgv(t, "prepare", seq[1], want...)
	potRequireArgv(t, "run-prepared", seq[2], "--debug=false", "run-prepared",
		"--dns=8.8.8.8", "--dns=8.8.4.4", "--dns-search=example.com", uuid)
	for _, cl := range calls {
		if len(cl.Env) != 1 || cl.Env[0] != rktEnvPath {
			t.Errorf("`rkt %s` ran with environment %q, want only %q (no host environment)", cl, cl.Env, rktEnvPath)
		}
	}

	// Signals go to run-prepared's process group (the host supervises it).
	if _, err := c.Driver.SignalTask(rpcCtx(t, 10*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGHUP"}); err != nil {
		t.Fatalf("SignalTask: %v", err)
	}
	if got := tk.Stdout.WaitContent("pod "+uuid+" running", 5*time.Second); !strings.Contains(tk.Stdout.WaitContent(got+"got SIGHUP\n", 5*time.Second), "got SIGHUP") {
		t.Errorf("stdout FIFO = %q, want the SIGHUP the pod received", tk.Stdout.Content())
	}

	// Exec is `rkt enter <uuid> <cmd...>`.
	ex, err := c.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId: tk.ID, Command: []string{"sh", "-c", "echo in-pod; exit 5"}, Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	enter := rktCalls(s, t, "enter")
	if len(enter) != 1 {
		t.Fatalf("enter calls: %v", enter)
	}
	potRequireArgv(t, "enter", enter[0], "enter", uuid, "sh", "-c", "echo in-pod; exit 5")
	if string(ex.GetStdout()) != "in-pod\n" || ex.GetResult().GetExitCode() != 5 {
		t.Errorf("exec: stdout %q exit %d, want \"in-pod\\n\" and 5", ex.GetStdout(), ex.GetResult().GetExitCode())
	}

	// Stop with Nomad's default: SIGINT to the pod's process group.
	w := c.waitAsync(tk.ID)
	if _, err := c.Driver.StopTask(rpcCtx(t, 15*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second)}); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	if res := w.get(t, 10*time.Second, "after StopTask"); res.GetResult().GetSignal() != 2 {
		t.Errorf("WaitTask after stop = %v, want signal 2 (SIGINT)", res.GetResult())
	}
	for _, cl := range s.calls(t) {
		for _, kv := range cl.Env {
			if strings.Contains(kv, "must-not-leak") {
				t.Errorf("the host's environment leaked into `rkt %s`", cl)
			}
		}
	}
}

// TestRktExitCode: the pod's exit status is the task's.
func TestRktExitCode(t *testing.T) {
	s := potNewStandin(t, "rkt", map[string]interface{}{"run": map[string]int{"run_ms": 200, "exit": 3}})
	c := rktLaunchWith(t, s)
	tk := newTask(t, rktTaskName)
	c.mustConfigure(t, tk, `image = "docker://busybox"`)
	c.startTask(t, tk)
	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	requireResult(t, w, 3, 0)
	if prep := rktCalls(s, t, "prepare"); len(prep) != 1 || prep[0].Argv[0] != "--insecure-options=all" {
		t.Errorf("without trust_prefix, prepare must run with --insecure-options=all: %v", prep)
	}
}

// TestRktFailingPrepare: rkt's stderr is in the StartTask error and in a
// task event; run-prepared never runs.
func TestRktFailingPrepare(t *testing.T) {
	s := potNewStandin(t, "rkt", map[string]interface{}{"fail": map[string]interface{}{"prepare": map[string]interface{}{"exit": 254, "stderr": "prepare: cannot fetch image: no such image docker://nope\n"}}})
	c := rktLaunchWith(t, s)
	ev := potCollectEvents(t, c)
	tk := newTask(t, rktTaskName)
	c.mustConfigure(t, tk, `image = "docker://nope"`)
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with a failing rkt prepare", "no such image docker://nope")
	e := ev.waitFor(t, "no such image", 5*time.Second)
	if !strings.HasPrefix(e.GetAnnotations()["command"], "rkt --insecure-options=all --debug=false prepare") {
		t.Errorf("event annotations %v, want the rkt command line", e.GetAnnotations())
	}
	if n := len(rktCalls(s, t, "run-prepared")); n != 0 {
		t.Errorf("run-prepared ran %d times after a failed prepare", n)
	}
}

// TestRktHostileValues: env values and args with spaces, quotes, $(),
// newlines are single argv elements, intact.
func TestRktHostileValues(t *testing.T) {
	s := potNewStandin(t, "rkt", nil)
	c := rktLaunchWith(t, s)
	tk := newTask(t, rktTaskName)
	c.mustConfigure(t, tk, `
image   = "docker://busybox"
command = "/bin/sh"
args    = ["-c", "echo \"$1\"; $(id)", "two\nlines"]
`)
	hostile := map[string]string{"SPACES": "a b  c", "QUOTES": `it's "q"`, "SUBST": "$(id) `id`", "NEWLINE": "l1\nl2"}
	tk.Env = hostile
	tk.Config.Env = hostile
	c.startTask(t, tk)
	prep := rktCalls(s, t, "prepare")
	if len(prep) != 1 {
		t.Fatalf("prepare calls: %v", prep)
	}
	argv := prep[0].Argv
	has := func(a string) bool {
		for _, x := range argv {
			if x == a {
				return true
			}
		}
		return false
	}
	for k, v := range hostile {
		if !has("--set-env=" + k + "=" + v) {
			t.Errorf("prepare argv lacks the intact --set-env=%s=%q: %q", k, v, argv)
		}
	}
	if tail := argv[len(argv)-4:]; strings.Join(tail, "\x00") != strings.Join([]string{"--", "-c", "echo \"$1\"; $(id)", "two\nlines"}, "\x00") {
		t.Errorf("app args = %q, want them intact after --", tail)
	}
}

// TestRktRejectsBadConfig: config errors name the field; rkt never runs.
func TestRktRejectsBadConfig(t *testing.T) {
	s := potNewStandin(t, "rkt", nil)
	c := rktLaunchWith(t, s)
	for _, tc := range []struct{ body, field string }{
		{"image = \"i\"\ndns_servers = [\"eight\"]", "dns_servers[0]"},
		{"image = \"i\"\ninsecure_options = [\"everything\"]", "insecure_options[0]"},
		{"image = \"i\"\nvolumes = [\"/a:/b:rw\"]", "volumes[0]"},
	} {
		tk := newTask(t, rktTaskName)
		c.mustConfigure(t, tk, tc.body)
		_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
		requireOrdinaryError(t, err, "StartTask with bad "+tc.field, `"`+tc.field+`"`)
	}
	c.setConfig(t, map[string]interface{}{"volumes_enabled": false}, true)
	tk := newTask(t, rktTaskName)
	c.mustConfigure(t, tk, "image = \"i\"\nvolumes = [\"/srv:/srv\"]")
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with volumes while volumes_enabled = false", "volumes_enabled")
	for _, cl := range s.calls(t) {
		if sub := rktSub(cl); sub != "version" {
			t.Errorf("rkt ran `%s` for a rejected config", cl)
		}
	}
}
