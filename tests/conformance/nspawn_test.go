package conformance

// The nspawn guest (guests/nspawn) run for real: the host launched the way
// Nomad launches it, with the example agent config and grants file from
// examples/nspawn/, and real systemd-nspawn containers from the busybox
// image examples/nspawn/build-image.sh builds. This machine has no systemd
// as PID 1, so these runs cover the standalone mode (--register=no
// --keep-unit, exec through nsenter); the machined mode is covered by the
// guest's unit tests only.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"conformancepb/drivers"

	"github.com/zclconf/go-cty/cty"
)

const nspawnDriverName = "nspawn"

// nspawnGuestPath is the built guest (NSPAWN_WASM, as run.sh sets it).
func nspawnGuestPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NSPAWN_WASM")
	if p == "" {
		p = "target/wasm32-wasip2/guest/nspawn.wasm"
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(paths(t).Repo, p)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nspawn guest (NSPAWN_WASM) not available: %v; build it with cargo build -p nspawn-guest --target wasm32-wasip2 --profile guest", err)
	}
	return p
}

var (
	nspawnImageOnce sync.Once
	nspawnImageRoot string
	nspawnImageErr  error
)

// nspawnImages builds the example busybox image once per run with the
// repo's script, into target/nspawn-images/busybox, and returns the image
// root (what the agent's image_root points at).
func nspawnImages(t *testing.T) string {
	t.Helper()
	nspawnImageOnce.Do(func() {
		repo := paths(t).Repo
		root := filepath.Join(repo, "target", "nspawn-images")
		if err := os.MkdirAll(root, 0o755); err != nil {
			nspawnImageErr = err
			return
		}
		out, err := exec.Command(filepath.Join(repo, "examples", "nspawn", "build-image.sh"), filepath.Join(root, "busybox")).CombinedOutput()
		if err != nil {
			nspawnImageErr = fmt.Errorf("examples/nspawn/build-image.sh: %v\n%s", err, out)
			return
		}
		nspawnImageRoot = root
	})
	if nspawnImageErr != nil {
		t.Fatalf("building the busybox image: %v", nspawnImageErr)
	}
	return nspawnImageRoot
}

// nspawnRequireHost fails (never skips) when this machine cannot run
// containers: the harness is the place where they must run.
func nspawnRequireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the nspawn tests need root (systemd-nspawn does)")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Fatalf("systemd-nspawn not found (install the Debian package systemd-container): %v", err)
	}
}

// nspawnAgent is examples/nspawn/agent.hcl: the host's args and the plugin
// config, with image_root pointed at the image this run built.
func nspawnAgent(t *testing.T) ([]string, map[string]interface{}) {
	t.Helper()
	path := filepath.Join(paths(t).Repo, "examples", "nspawn", "agent.hcl")
	cfg, args, found, err := LoadAgentPluginConfig(path, agentPluginLabel)
	if err != nil || !found {
		t.Fatalf("reading %s: found=%v err=%v", path, found, err)
	}
	return args, cfg
}

// nspawnPluginDir lays out a plugin dir as the agent config describes it:
// the guest and the example grants file beside it.
func nspawnPluginDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	wasm, err := os.ReadFile(nspawnGuestPath(t))
	if err != nil {
		t.Fatalf("reading the guest: %v", err)
	}
	grants, err := os.ReadFile(filepath.Join(paths(t).Repo, "examples", "nspawn", "nspawn.wasm.grants.hcl"))
	if err != nil {
		t.Fatalf("reading the example grants file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nspawn.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nspawn.wasm.grants.hcl"), grants, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nspawnLaunch starts the host with the nspawn guest and runs Nomad's
// start-up sequence with the example agent config. stateDir keeps the
// supervisor records (shared by a relaunch that recovers tasks).
func nspawnLaunch(t *testing.T, pluginDir, stateDir string) *killableHost {
	t.Helper()
	nspawnRequireHost(t)
	return nspawnLaunchWith(t, pluginDir, stateDir, nil)
}

// nspawnLaunchWith is nspawnLaunch with a chance to change the host's
// command (its environment or user) before it starts.
func nspawnLaunchWith(t *testing.T, pluginDir, stateDir string, adjust func(*exec.Cmd)) *killableHost {
	t.Helper()
	p := requireArtifacts(t)
	args, cfg := nspawnAgent(t)
	cfg["image_root"] = nspawnImages(t)
	for i := range args {
		if args[i] == "nspawn.wasm" {
			args[i] = filepath.Join(pluginDir, "nspawn.wasm")
		}
	}
	args = append(args, "--state-dir", stateDir)
	return launchHost(t, p.Host, args, func(cmd *exec.Cmd) {
		cmd.Dir = pluginDir
		if adjust != nil {
			adjust(cmd)
		}
	}, nspawnDriverName, cfg)
}

// nspawnStart decodes body as the task's config block (as Nomad would)
// and starts it.
func nspawnStart(t *testing.T, h *killableHost, name, body string) (*Task, *drivers.StartTaskResponse) {
	t.Helper()
	tk := newTask(t, name)
	h.mustConfigure(t, tk, body)
	return tk, h.startTask(t, tk)
}

// nspawnContainerBody is a config for a long-running container whose
// command reports the signals it gets on stdout.
const nspawnContainerBody = `
image       = "busybox"
boot        = false
process_two = true
ephemeral   = true
command = ["/bin/sh", "-c", <<-EOT
  trap 'echo got HUP' HUP
  trap 'echo got TERM; exit 7' TERM
  echo ready
  while true; do sleep 0.1; done
EOT
]
`

func nspawnWaitReady(t *testing.T, tk *Task) {
	t.Helper()
	if got := tk.Stdout.WaitContent("ready\n", 15*time.Second); !strings.Contains(got, "ready\n") {
		t.Fatalf("container did not print ready within 15 s; stdout %q, stderr %q", got, tk.Stderr.Content())
	}
}

func TestNspawnFingerprintAndCapabilities(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	caps, err := h.Driver.Capabilities(rpcCtx(t, 5*time.Second), &drivers.CapabilitiesRequest{})
	if err != nil {
		t.Fatalf("Capabilities: %v", err)
	}
	c := caps.GetCapabilities()
	if !c.GetSendSignals() || c.GetExec() != true || c.GetFsIsolation() != drivers.DriverCapabilities_IMAGE {
		t.Errorf("capabilities %v: want send_signals, exec, fs_isolation IMAGE", c)
	}
	modes := map[drivers.NetworkIsolationSpec_NetworkIsolationMode]bool{}
	for _, m := range c.GetNetworkIsolationModes() {
		modes[m] = true
	}
	if !modes[drivers.NetworkIsolationSpec_HOST] || !modes[drivers.NetworkIsolationSpec_GROUP] {
		t.Errorf("network isolation modes %v: want host and group", c.GetNetworkIsolationModes())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	fp := recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 10*time.Second, "fingerprint").(*drivers.FingerprintResponse)
	if fp.GetHealth() != drivers.FingerprintResponse_HEALTHY {
		t.Fatalf("health %v (%q), want HEALTHY on a root host with systemd-nspawn", fp.GetHealth(), fp.GetHealthDescription())
	}
	out, err := exec.Command("systemd-nspawn", "--version").Output()
	if err != nil {
		t.Fatalf("systemd-nspawn --version: %v", err)
	}
	want := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])[1]
	attrs := fp.GetAttributes()
	if got := attributeText(attrs["driver.nspawn.version"]); got != want {
		t.Errorf("driver.nspawn.version = %q, want %q (from systemd-nspawn --version)", got, want)
	}
	pid1, _ := os.ReadFile("/proc/1/comm")
	systemd := strings.TrimSpace(string(pid1)) == "systemd"
	if a := attrs["driver.nspawn.machined"]; a == nil || a.GetBoolVal() != systemd {
		t.Errorf("driver.nspawn.machined = %v, want %v (PID 1 is %q)", a, systemd, strings.TrimSpace(string(pid1)))
	}
	cancel()
}

// The seed document's config examples, exactly as written there, decode
// against the schema like Nomad decodes them (bind blocks, an environment
// map attribute, a port_map block, a command list).
func TestNspawnSeedExamplesDecode(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk := newTask(t, "debian")
	examples := []string{
		`
        image = "example/Debian/image"
        resolv_conf = "copy-host"
`,
		`
    command = [ "/bin/bash", "-c", "dhclient && nginx && tail -f /var/log/nginx/access.log" ]
    image = "x"
`,
		`
    environment = {
      FOO = "bar"
    }
    image = "x"
`,
		`
    port_map {
      http = 80
    }
    image = "x"
`,
	}
	// The seed's bind examples quote their keys inside the block
	// (`bind { "/var/lib/postgresql" = "/postgres" }`). That is HCL1, which
	// Nomad's job parser used when the seed was written: HCL2 refuses
	// quoted argument names before any driver sees the job. What HCL1 makes
	// of them is a list holding one object, and that decodes:
	for _, field := range []string{"bind", "bind_read_only"} {
		hcl1 := map[string]interface{}{
			"image": "x",
			field:   []interface{}{map[string]interface{}{"/var/lib/postgresql": "/postgres"}},
		}
		v, err := DecodeConfig(hcl1, h.TaskSpec, tk.Vars(t))
		if err != nil {
			t.Errorf("seed %s example (HCL1 form) does not decode: %v", field, err)
		} else if got := v.GetAttr(field).Index(cty.StringVal("/var/lib/postgresql")); got.AsString() != "/postgres" {
			t.Errorf("seed %s example decoded to %#v", field, v.GetAttr(field))
		}
		// In HCL2 the same mapping is written as a map value.
		hcl2 := fmt.Sprintf("image = \"x\"\n%s = {\n  \"/var/lib/postgresql\" = \"/postgres\"\n}\n", field)
		if _, _, err := h.decodeTaskConfig(t, tk, hcl2); err != nil {
			t.Errorf("%s as an HCL2 map does not decode: %v", field, err)
		}
		// And a block with identifier keys is a block.
		ident := fmt.Sprintf("image = \"x\"\n%s {\n  data = \"/data\"\n}\n", field)
		if _, _, err := h.decodeTaskConfig(t, tk, ident); err != nil {
			t.Errorf("%s block does not decode: %v", field, err)
		}
	}
	for i, body := range examples {
		v, _, err := h.decodeTaskConfig(t, tk, body)
		if err != nil {
			t.Errorf("seed example %d does not decode: %v\n%s", i, err, body)
			continue
		}
		if !v.GetAttr("boot").True() || !v.GetAttr("user_namespacing").True() {
			t.Errorf("seed example %d: defaults boot/user_namespacing are not true: %#v", i, v)
		}
	}
	// The example job's config decodes too.
	tasks, err := LoadJobTasks(filepath.Join(paths(t).Repo, "examples", "nspawn", "example.nomad"))
	if err != nil || len(tasks) != 1 || tasks[0].Driver != nspawnDriverName {
		t.Fatalf("examples/nspawn/example.nomad: tasks %v, err %v", tasks, err)
	}
	if _, _, err := h.decodeTaskConfigMap(t, tk, tasks[0].Config); err != nil {
		t.Errorf("examples/nspawn/example.nomad does not decode: %v", err)
	}
}

// The example job runs as written: its stdout reaches the FIFO, the env
// var and the task directory are visible inside, it exits 0.
func TestNspawnExampleJob(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tasks, err := LoadJobTasks(filepath.Join(paths(t).Repo, "examples", "nspawn", "example.nomad"))
	if err != nil || len(tasks) != 1 {
		t.Fatalf("example.nomad: %v %v", tasks, err)
	}
	tk := newTask(t, tasks[0].Task)
	_, b, err := h.decodeTaskConfigMap(t, tk, tasks[0].Config)
	if err != nil {
		t.Fatalf("decoding example.nomad: %v", err)
	}
	tk.Config.MsgpackDriverConfig = b
	h.startTask(t, tk)
	w, _ := h.waitTask(t, tk.ID, 30*time.Second)
	requireResult(t, w, 0, 0)
	machine := "busybox-" + tk.AllocID
	want := fmt.Sprintf("hello from %s: hi from the job\ntask dir at /local\n", machine)
	if got := tk.Stdout.WaitContent(want, 3*time.Second); got != want {
		t.Errorf("stdout FIFO = %q, want %q (stderr %q)", got, want, tk.Stderr.Content())
	}
}

// Exit codes, env vars, Nomad's task dirs, bind mounts, Nomad mounts.
func TestNspawnExitCodeEnvAndBinds(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "note.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	volume := t.TempDir()
	tk := newTask(t, "binds")
	tk.Config.Mounts = []*drivers.Mount{{TaskPath: "/volume", HostPath: volume, Readonly: false}}
	tk.Env["FROM_NOMAD"] = "task env"
	h.mustConfigure(t, tk, fmt.Sprintf(`
image       = "busybox"
boot        = false
process_two = true
ephemeral   = true
environment = {
  FROM_JOB = "job env"
}
bind_read_only = {
  %q = "/shared"
}
command = ["/bin/sh", "-c", <<-EOT
  echo "job=$FROM_JOB nomad=$FROM_NOMAD task_dir=$NOMAD_TASK_DIR alloc_dir=$NOMAD_ALLOC_DIR"
  cat /shared/note.txt
  echo written > /local/out.txt
  echo vol > /volume/v.txt
  touch /shared/x 2>/dev/null && echo shared-writable || echo shared-read-only
  echo oops >&2
  exit 3
EOT
]
`, shared))
	h.startTask(t, tk)
	w, _ := h.waitTask(t, tk.ID, 30*time.Second)
	requireResult(t, w, 3, 0)
	want := "job=job env nomad=task env task_dir=/local alloc_dir=/alloc\nfrom the host\nshared-read-only\n"
	if got := tk.Stdout.WaitContent(want, 3*time.Second); got != want {
		t.Errorf("stdout FIFO = %q, want %q (stderr %q)", got, want, tk.Stderr.Content())
	}
	if got := tk.Stderr.WaitContent("oops\n", 3*time.Second); !strings.Contains(got, "oops\n") {
		t.Errorf("stderr FIFO = %q, want it to contain %q", got, "oops\n")
	}
	if b, err := os.ReadFile(filepath.Join(tk.AllocDir, tk.Name, "local", "out.txt")); err != nil || string(b) != "written\n" {
		t.Errorf("file written to /local inside: %q, %v; want it in the task's local dir", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(volume, "v.txt")); err != nil || string(b) != "vol\n" {
		t.Errorf("file written to the Nomad mount /volume: %q, %v", b, err)
	}
}

// SignalTask reaches the container's command; StopTask's signal too, and
// the command's exit code is the task's.
func TestNspawnSignalAndStop(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk, _ := nspawnStart(t, h, "signals", nspawnContainerBody)
	nspawnWaitReady(t, tk)
	w := h.waitAsync(tk.ID)
	if _, err := h.Driver.SignalTask(rpcCtx(t, 10*time.Second), &drivers.SignalTaskRequest{TaskId: tk.ID, Signal: "SIGHUP"}); err != nil {
		t.Fatalf("SignalTask(SIGHUP): %v", err)
	}
	if got := tk.Stdout.WaitContent("ready\ngot HUP\n", 5*time.Second); got != "ready\ngot HUP\n" {
		t.Errorf("after SIGHUP stdout = %q, want the command to report it", got)
	}
	w.requireBlocked(t, 300*time.Millisecond, "after SIGHUP")
	start := time.Now()
	if _, err := h.Driver.StopTask(rpcCtx(t, 20*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(10 * time.Second), Signal: "SIGTERM"}); err != nil {
		t.Fatalf("StopTask(SIGTERM): %v", err)
	}
	r := w.get(t, 10*time.Second, "after StopTask")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the trapped SIGTERM took %v to end the container (escalation instead?)", took)
	}
	requireResult(t, r, 7, 0)
	if got := tk.Stdout.Content(); !strings.HasSuffix(got, "got TERM\n") {
		t.Errorf("stdout %q does not end with the command's TERM trap", got)
	}
	if _, err := h.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
		t.Errorf("DestroyTask: %v", err)
	}
	if !tk.Stdout.WaitEOF(5 * time.Second) {
		t.Errorf("stdout FIFO still has a writer after stop + destroy: a container process lives on")
	}
}

// A command that ignores the stop signal is killed after the timeout, and
// DestroyTask leaves no container process behind.
func TestNspawnStopTimeoutEscalates(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk, _ := nspawnStart(t, h, "stubborn", `
image       = "busybox"
boot        = false
process_two = true
ephemeral   = true
command = ["/bin/sh", "-c", "trap '' TERM INT; echo ready; while true; do sleep 0.1; done"]
`)
	nspawnWaitReady(t, tk)
	w := h.waitAsync(tk.ID)
	start := time.Now()
	if _, err := h.Driver.StopTask(rpcCtx(t, 20*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(time.Second), Signal: "SIGTERM"}); err != nil {
		t.Fatalf("StopTask(timeout 1s): %v", err)
	}
	took := time.Since(start)
	if took < 900*time.Millisecond || took > 6*time.Second {
		t.Errorf("StopTask(timeout 1s) returned after %v, want about 1 s", took)
	}
	r := w.get(t, 5*time.Second, "after escalated stop").GetResult()
	if r.GetSignal() != 9 {
		t.Errorf("result %v, want signal 9 (killed after the timeout)", r)
	}
	if _, err := h.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
		t.Errorf("DestroyTask: %v", err)
	}
	if !tk.Stdout.WaitEOF(5 * time.Second) {
		t.Errorf("stdout FIFO still has a writer after the escalated stop + destroy: the container outlived its nspawn")
	}
}

// ExecTask runs inside the container: its root (the image's os-release),
// its hostname (the machine name), the task's env and dirs.
func TestNspawnExec(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk, _ := nspawnStart(t, h, "exec", nspawnContainerBody)
	nspawnWaitReady(t, tk)
	resp, err := h.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId:  tk.ID,
		Command: []string{"/bin/sh", "-c", `head -1 /etc/os-release; hostname; echo "$NOMAD_TASK_DIR"; ls /local >/dev/null && echo local-ok; echo bad >&2; exit 4`},
		Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	want := fmt.Sprintf("NAME=\"nomad-nspawn-busybox\"\nexec-%s\n/local\nlocal-ok\n", tk.AllocID)
	if got := string(resp.GetStdout()); got != want {
		t.Errorf("exec stdout = %q, want %q", got, want)
	}
	if got := string(resp.GetStderr()); got != "bad\n" {
		t.Errorf("exec stderr = %q, want %q", got, "bad\n")
	}
	if resp.GetResult().GetExitCode() != 4 {
		t.Errorf("exec exit code = %d, want 4", resp.GetResult().GetExitCode())
	}

	// Streaming (nomad alloc exec) with stdin.
	r := runExecStream(t, h.Configured, &drivers.ExecTaskStreamingRequest{Setup: &drivers.ExecTaskStreamingRequest_Setup{
		TaskId: tk.ID, Command: []string{"/bin/sh", "-c", "read line; echo \"got $line in $(hostname)\""},
	}}, []string{"input\n"})
	if want := fmt.Sprintf("got input in exec-%s\n", tk.AllocID); r.stdout != want {
		t.Errorf("streaming exec stdout = %q, want %q", r.stdout, want)
	}

	// With a terminal (nomad alloc exec -t), sized as asked.
	r = runExecStream(t, h.Configured, &drivers.ExecTaskStreamingRequest{
		Setup:   &drivers.ExecTaskStreamingRequest_Setup{TaskId: tk.ID, Command: []string{"/bin/sh", "-c", "test -t 0 && echo is-a-tty; stty size; hostname"}, Tty: true},
		TtySize: &drivers.ExecTaskStreamingRequest_TerminalSize{Height: 30, Width: 100},
	}, nil)
	if !strings.Contains(r.stdout, "is-a-tty") || !strings.Contains(r.stdout, "30 100") || !strings.Contains(r.stdout, "exec-"+tk.AllocID) {
		t.Errorf("tty exec output %q: want is-a-tty, the size 30 100 and the container's hostname", r.stdout)
	}
}

// The container survives a SIGKILL of the host; a new host recovers the
// task from the stored handle, can exec into it, stop it and get its exit
// code.
func TestNspawnSurvivesHostSIGKILL(t *testing.T) {
	pluginDir, stateDir := nspawnPluginDir(t), t.TempDir()
	h1 := nspawnLaunch(t, pluginDir, stateDir)
	tk, resp := nspawnStart(t, h1, "recover", nspawnContainerBody)
	nspawnWaitReady(t, tk)
	h1.sigkill(t)
	if tk.Stdout.WaitEOF(500 * time.Millisecond) {
		t.Fatalf("the container's stdout closed when the host was killed: it did not survive")
	}
	h2 := nspawnLaunch(t, pluginDir, stateDir)
	if _, err := h2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(resp.GetHandle())}); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	w := h2.waitAsync(tk.ID)
	w.requireBlocked(t, 300*time.Millisecond, "recovered container")
	ex, err := h2.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId: tk.ID, Command: []string{"hostname"}, Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask after recovery: %v", err)
	}
	if got, want := string(ex.GetStdout()), "recover-"+tk.AllocID+"\n"; got != want {
		t.Errorf("exec after recovery: stdout %q, want %q", got, want)
	}
	if _, err := h2.Driver.StopTask(rpcCtx(t, 20*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(10 * time.Second), Signal: "SIGTERM"}); err != nil {
		t.Fatalf("StopTask after recovery: %v", err)
	}
	requireResult(t, w.get(t, 10*time.Second, "recovered container after stop"), 7, 0)
	if _, err := h2.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
		t.Errorf("DestroyTask: %v", err)
	}
	if !tk.Stdout.WaitEOF(5 * time.Second) {
		t.Errorf("stdout FIFO still open after the recovered container was stopped and destroyed")
	}
}

// Bad configs are refused at StartTask with errors that name the fields.
func TestNspawnRejectsBadConfigs(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	cases := []struct{ body, mention1, mention2 string }{
		{`image = "busybox"
boot = true
process_two = true`, "boot", "process_two"},
		{`image = "busybox"
network_zone = "a"
network_bridge = "b"`, "network_zone", "network_bridge"},
		{`image = "busybox"
boot = false
console = "tty"`, "console", "tty"},
		{`image = "../etc"`, "image", ".."},
		{`image = "no-such-image"`, "image", "does not exist"},
	}
	for _, c := range cases {
		tk := newTask(t, "bad")
		h.mustConfigure(t, tk, c.body)
		_, err := h.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
		requireOrdinaryError(t, err, "StartTask("+strings.ReplaceAll(c.body, "\n", "; ")+")", c.mention1)
		if err != nil && !strings.Contains(err.Error(), c.mention2) {
			t.Errorf("error %q does not name %q", err, c.mention2)
		}
	}
}

// nspawnPayload finds the container's command as the host sees it:
// systemd-nspawn (by its --machine= argument), its child (the container's
// PID 1, the stub init) and that one's child (the command, PID 2).
func nspawnPayload(t *testing.T, machine string) int {
	t.Helper()
	first := func(args ...string) int {
		out, err := exec.Command("pgrep", args...).Output()
		if err != nil {
			t.Fatalf("pgrep %v: %v", args, err)
		}
		var pid int
		if _, err := fmt.Sscan(string(out), &pid); err != nil {
			t.Fatalf("pgrep %v printed %q", args, out)
		}
		return pid
	}
	main := first("--oldest", "--full", "--", "^[^ ]*systemd-nspawn .*--machine="+machine+"( |$)")
	leader := first("--oldest", "--parent", fmt.Sprint(main))
	return first("--oldest", "--parent", fmt.Sprint(leader))
}

// nspawnMemoryLimit is the tightest memory limit (bytes) of the cgroups
// pid sits in, walking up from its own (v2 memory.max, v1
// memory.limit_in_bytes); 0 if none is set.
func nspawnMemoryLimit(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("reading the command's cgroups: %v", err)
	}
	var best int64
	consider := func(dir, file string) {
		for d := dir; ; d = filepath.Dir(d) {
			if raw, err := os.ReadFile(filepath.Join(d, file)); err == nil {
				var v int64
				if _, err := fmt.Sscan(strings.TrimSpace(string(raw)), &v); err == nil && v > 0 && v < 1<<50 && (best == 0 || v < best) {
					best = v
				}
			}
			if d == "/sys/fs/cgroup" || d == "/" || d == "." {
				return
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
				consider(filepath.Join(root, parts[2]), "memory.max")
			}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			consider(filepath.Join("/sys/fs/cgroup/memory", parts[2]), "memory.limit_in_bytes")
		}
	}
	return best
}

// The task's memory limit holds the container's command (the host's cgroup
// limits, since there is no machined to apply --property=MemoryMax).
func TestNspawnMemoryLimit(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk := newTask(t, "memory")
	h.mustConfigure(t, tk, nspawnContainerBody)
	tk.Config.Resources.LinuxResources.MemoryLimitBytes = 96 << 20
	tk.Config.Resources.AllocatedResources.Memory.MemoryMb = 96
	h.startTask(t, tk)
	nspawnWaitReady(t, tk)
	pid := nspawnPayload(t, "memory-"+tk.AllocID)
	if got := nspawnMemoryLimit(t, pid); got != 96<<20 {
		t.Errorf("memory limit over the container's command (pid %d) = %d bytes, want %d", pid, got, 96<<20)
	}
}

// TaskStats counts the container's processes (they run in a session of
// their own, outside systemd-nspawn's process group): a command holding
// 48 MB shows at least that much resident memory.
func TestNspawnTaskStats(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	tk, _ := nspawnStart(t, h, "stats", `
image       = "busybox"
boot        = false
process_two = true
ephemeral   = true
command = ["/bin/sh", "-c", "x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo ready; while true; do sleep 0.1; done"]
`)
	nspawnWaitReady(t, tk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.Driver.TaskStats(ctx, &drivers.TaskStatsRequest{TaskId: tk.ID, CollectionInterval: dur(200 * time.Millisecond)})
	if err != nil {
		t.Fatalf("TaskStats: %v", err)
	}
	m := recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 5*time.Second, "TaskStats").(*drivers.TaskStatsResponse)
	mem := m.GetStats().GetAggResourceUsage().GetMemory()
	if mem.GetRss() < 48000000 || mem.GetRss() > 1<<30 {
		t.Errorf("aggregate RSS %d bytes, want at least the 48 MB the container's command holds", mem.GetRss())
	}
	rss := false
	for _, f := range mem.GetMeasuredFields() {
		rss = rss || f == drivers.MemoryUsage_RSS
	}
	if !rss {
		t.Errorf("measured fields %v do not include RSS", mem.GetMeasuredFields())
	}
	cancel()
}

func nspawnFingerprintOnce(t *testing.T, h *killableHost) *drivers.FingerprintResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	return recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 10*time.Second, "fingerprint").(*drivers.FingerprintResponse)
}

// UNDETECTED when systemd-nspawn is not on the host's PATH, and when the
// host does not run as root.
func TestNspawnFingerprintUndetected(t *testing.T) {
	t.Run("no systemd-nspawn", func(t *testing.T) {
		nspawnRequireHost(t)
		nspawnImages(t)
		pluginDir := nspawnPluginDir(t)
		// go-plugin gives the plugin the agent's environment: change it.
		t.Setenv("PATH", "/nonexistent")
		h := nspawnLaunchWith(t, pluginDir, t.TempDir(), nil)
		fp := nspawnFingerprintOnce(t, h)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED || !strings.Contains(fp.GetHealthDescription(), "systemd-nspawn") {
			t.Errorf("fingerprint %v (%q), want UNDETECTED naming systemd-nspawn", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
	t.Run("not root", func(t *testing.T) {
		// The host binary, guest and grants in a plugin dir the unprivileged
		// user can read, as an agent would install them.
		pluginDir, stateDir := nspawnPluginDir(t), t.TempDir()
		// A hard link where possible: a debug host is hundreds of MB.
		bin := filepath.Join(pluginDir, "nomad-driver-wasm")
		if err := os.Link(requireArtifacts(t).Host, bin); err != nil {
			host, err := os.ReadFile(requireArtifacts(t).Host)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bin, host, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range []string{pluginDir, stateDir} {
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Dir(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("HOME", stateDir)
		h := nspawnLaunchWith(t, pluginDir, stateDir, func(c *exec.Cmd) {
			c.Path = bin
			c.Args[0] = c.Path
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		})
		fp := nspawnFingerprintOnce(t, h)
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED || !strings.Contains(fp.GetHealthDescription(), "root") {
			t.Errorf("fingerprint %v (%q), want UNDETECTED saying the host is not root", fp.GetHealth(), fp.GetHealthDescription())
		}
	})
}

// Group network mode: the container joins the namespace Nomad gives the
// task group (here one made with `ip netns`, holding a veth pair the
// container must see) instead of a network of its own.
func TestNspawnJoinsTheGroupNetworkNamespace(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	ns := "nspawn-test-" + randomHex(t, 4)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "grpdummy0", "type", "veth", "peer", "name", "grpdummy1").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	tk := newTask(t, "group")
	tk.Config.NetworkIsolationSpec = &drivers.NetworkIsolationSpec{
		Mode: drivers.NetworkIsolationSpec_GROUP,
		Path: "/var/run/netns/" + ns,
	}
	h.mustConfigure(t, tk, `
image       = "busybox"
boot        = false
process_two = true
ephemeral   = true
command     = ["/bin/sh", "-c", "ip -o link | grep -o 'grpdummy0' | head -1 ; ip -o link | grep -c host0"]
`)
	h.startTask(t, tk)
	w, _ := h.waitTask(t, tk.ID, 30*time.Second)
	// grep -c prints 0 and exits 1 when no veth (host0) is there.
	requireResult(t, w, 1, 0)
	if got, want := tk.Stdout.WaitContent("grpdummy0\n0\n", 3*time.Second), "grpdummy0\n0\n"; got != want {
		t.Errorf("stdout %q, want %q: the group's interface and no veth of nspawn's own (stderr %q)", got, want, tk.Stderr.Content())
	}
}

// A booted container stops the way systemd does it: SIGTERM to nspawn,
// which sends SIGRTMIN+3 to the container's init (here a busybox script
// standing in for systemd, handling signal 37 = SIGRTMIN+3 as poweroff),
// whatever kill signal the job names.
func TestNspawnBootedContainerPowersOff(t *testing.T) {
	h := nspawnLaunch(t, nspawnPluginDir(t), t.TempDir())
	root := nspawnImages(t)
	img := filepath.Join(root, "busybox-boot")
	_ = os.RemoveAll(img)
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "busybox"), img).CombinedOutput(); err != nil {
		t.Fatalf("copying the image: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = os.RemoveAll(img) })
	init := "#!/bin/sh\ntrap 'echo powering off; exit 0' 37\necho booted \"$@\"\nwhile :; do sleep 0.1; done\n"
	if err := os.WriteFile(filepath.Join(img, "sbin", "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	tk, _ := nspawnStart(t, h, "booted", `
image     = "busybox-boot"
ephemeral = true
command   = ["arg1"]
`)
	if got := tk.Stdout.WaitContent("booted arg1", 15*time.Second); !strings.Contains(got, "booted arg1") {
		t.Fatalf("init did not start with the command as its arguments: stdout %q, stderr %q", got, tk.Stderr.Content())
	}
	// Exec enters the booted container: its PID 1 is the init.
	ex, err := h.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId: tk.ID, Command: []string{"/bin/sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"}, Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	if got := string(ex.GetStdout()); !strings.Contains(got, "/sbin/init arg1") {
		t.Errorf("exec: the container's PID 1 is %q, want the init with its argument", got)
	}
	w := h.waitAsync(tk.ID)
	start := time.Now()
	if _, err := h.Driver.StopTask(rpcCtx(t, 20*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(10 * time.Second), Signal: "SIGINT"}); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	requireResult(t, w.get(t, 10*time.Second, "after poweroff"), 0, 0)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("poweroff took %v (escalation instead of SIGRTMIN+3?)", took)
	}
	if got := tk.Stdout.Content(); !strings.Contains(got, "powering off") {
		t.Errorf("stdout %q: init never got SIGRTMIN+3", got)
	}
}
