package conformance

// Helpers for triton_test.go: the Triton simulator (tests/triton-sim, its
// own Go module, built once per run), its unauthenticated test-control
// routes (/__sim/state, /__sim/requests, /__sim/faults, forced machine
// states and container exits), and the host launched as Nomad's loader
// does with the Triton guest, HTTP grants for the simulator's origin and
// the account's key held by the host (--secret).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"conformancepb/drivers"
)

// The account of examples/triton/agent.hcl; the simulator is started with it
// so the agent config is used as written, except for the endpoints.
const tritonAccount = "bruce_dev"

// tritonSimDelay is each simulated machine state transition (the
// simulator's -delay).
const tritonSimDelay = 100 * time.Millisecond

// tritonPollRunning is the guest's poll interval for a running instance
// (guests/triton/src/lib.rs POLL_RUNNING_MS): the longest the host can take
// to learn that an instance ended.
const tritonPollRunning = 5 * time.Second

var tritonSimBuild struct {
	once sync.Once
	path string
	err  error
}

// tritonSimBinary builds tests/triton-sim (module mode, standard library
// only, offline) once per test run into its own output file.
func tritonSimBinary(t *testing.T) string {
	t.Helper()
	b := &tritonSimBuild
	b.once.Do(func() {
		repo := paths(t).Repo
		out := filepath.Join(repo, "target", "triton-sim-conformance")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(repo, "tests", "triton-sim")
		env := []string{}
		for _, kv := range os.Environ() {
			switch strings.SplitN(kv, "=", 2)[0] {
			case "GO111MODULE", "GOPATH", "GOFLAGS", "GOPROXY", "GOCACHE":
				continue
			}
			env = append(env, kv)
		}
		cmd.Env = append(env,
			"GO111MODULE=on", "GOPROXY=off", "GOFLAGS=",
			"GOCACHE="+filepath.Join(repo, "target", "triton-sim-gocache"),
			"GOPATH="+filepath.Join(repo, "target", "triton-sim-gopath"))
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", cmd.Dir, err, msg)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("building the Triton simulator: %v", b.err)
	}
	return b.path
}

// tritonSim is one running simulator with a fresh Ed25519 key of the
// account (the private half is what the host signs with).
type tritonSim struct {
	URL, Dir, Key string
	cmd           *exec.Cmd
	stderr        *lockedBuffer
}

func startTritonSim(t *testing.T) *tritonSim {
	t.Helper()
	bin := tritonSimBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if msg, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen (openssh-client): %v\n%s", err, msg)
	}
	s := &tritonSim{Dir: dir, Key: key, stderr: &lockedBuffer{}}
	s.cmd = exec.Command(bin, "-listen", "127.0.0.1:0", "-account", tritonAccount,
		"-delay", tritonSimDelay.String(), "-key", key+".pub")
	s.cmd.Stderr = s.stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting the simulator: %v", err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case s.URL = <-line:
	case <-time.After(10 * time.Second):
		t.Fatalf("the simulator printed no URL within 10 s; stderr: %s", s.stderr.String())
	}
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Fatalf("the simulator printed %q; stderr: %s", s.URL, s.stderr.String())
	}
	return s
}

// admin calls a /__sim/ route (unauthenticated) and returns status and body.
func (s *tritonSim) admin(t *testing.T, method, path string, body interface{}) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("simulator %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *tritonSim) mustAdmin(t *testing.T, method, path string, body interface{}) []byte {
	t.Helper()
	st, b := s.admin(t, method, path, body)
	if st/100 != 2 {
		t.Fatalf("simulator %s %s: HTTP %d %s", method, path, st, b)
	}
	return b
}

// simState is GET /__sim/state.
type simState struct {
	Machines   []map[string]interface{} `json:"machines"`
	FWRules    []map[string]interface{} `json:"fwrules"`
	Containers []map[string]interface{} `json:"containers"`
}

func (s *tritonSim) state(t *testing.T) simState {
	t.Helper()
	var st simState
	if err := json.Unmarshal(s.mustAdmin(t, "GET", "/__sim/state", nil), &st); err != nil {
		t.Fatalf("simulator state: %v", err)
	}
	return st
}

// machinesNamed are the machines (docker containers included) whose name
// is name.
func (st simState) machinesNamed(name string) []map[string]interface{} {
	var out []map[string]interface{}
	for _, m := range st.Machines {
		if m["name"] == name {
			out = append(out, m)
		}
	}
	return out
}

func (st simState) containersNamed(name string) []map[string]interface{} {
	var out []map[string]interface{}
	for _, c := range st.Containers {
		if c["Name"] == "/"+name {
			out = append(out, c)
		}
	}
	return out
}

// simRequest is one entry of the simulator's request log.
type simRequest struct {
	Seq    int    `json:"seq"`
	API    string `json:"api"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query"`
	Body   string `json:"body"`
	Status int    `json:"status"`
	Fault  bool   `json:"fault"`
	AuthOK bool   `json:"auth_ok"`
}

func (r simRequest) String() string {
	return fmt.Sprintf("%s %s?%s -> %d", r.Method, r.Path, r.Query, r.Status)
}

func (s *tritonSim) requests(t *testing.T) []simRequest {
	t.Helper()
	var out []simRequest
	if err := json.Unmarshal(s.mustAdmin(t, "GET", "/__sim/requests", nil), &out); err != nil {
		t.Fatalf("simulator request log: %v", err)
	}
	return out
}

func (s *tritonSim) setFaults(t *testing.T, faults map[string]interface{}) {
	t.Helper()
	s.mustAdmin(t, "POST", "/__sim/faults", faults)
}

func (s *tritonSim) forceMachineState(t *testing.T, id, state string) {
	t.Helper()
	s.mustAdmin(t, "POST", "/__sim/machines/"+id+"/state", map[string]string{"state": state})
}

func (s *tritonSim) exitContainer(t *testing.T, id string, code int) {
	t.Helper()
	s.mustAdmin(t, "POST", "/__sim/containers/"+id+"/exit", map[string]int{"code": code})
}

// waitMachine polls the simulator until the one machine named name
// satisfies ok, and returns it.
func (s *tritonSim) waitMachine(t *testing.T, name string, limit time.Duration, what string, ok func(map[string]interface{}) bool) map[string]interface{} {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ms := s.state(t).machinesNamed(name)
		if len(ms) > 1 {
			t.Fatalf("%d machines named %s: %v", len(ms), name, ms)
		}
		if len(ms) == 1 && ok(ms[0]) {
			return ms[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("machine %s: not %s within %v: %v", name, what, limit, ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func inState(states ...string) func(map[string]interface{}) bool {
	return func(m map[string]interface{}) bool {
		for _, s := range states {
			if m["state"] == s {
				return true
			}
		}
		return false
	}
}

// tritonLaunch starts the host with the Triton guest (TRITON_WASM), HTTP
// grants for the simulator's origin and the key as the `triton` secret,
// through go-plugin as Nomad's loader does, and runs Nomad's start-up
// sequence with examples/triton/agent.hcl's plugin config, its endpoints
// pointed at the simulator. The test may SIGKILL the process.
func tritonLaunch(t *testing.T, sim *tritonSim, stateDir string) *killableHost {
	t.Helper()
	return tritonLaunchWithKey(t, sim, stateDir, sim.Key)
}

// tritonLaunchWithKey is tritonLaunch with another private key granted as
// the `triton` secret.
func tritonLaunchWithKey(t *testing.T, sim *tritonSim, stateDir, key string) *killableHost {
	t.Helper()
	p := paths(t)
	guest := os.Getenv("TRITON_WASM")
	if guest == "" {
		guest = "target/wasm32-wasip2/guest/triton.wasm"
	}
	if !filepath.IsAbs(guest) {
		guest = filepath.Join(p.Repo, guest)
	}
	for _, f := range []struct{ what, path string }{{"host binary (NOMAD_WASM_HOST)", p.Host}, {"triton guest (TRITON_WASM)", guest}} {
		if st, err := os.Stat(f.path); err != nil || st.IsDir() {
			t.Fatalf("%s not available at %s: %v", f.what, f.path, err)
		}
	}
	agent := filepath.Join(p.Repo, "examples", "triton", "agent.hcl")
	cfg, _, found, err := LoadAgentPluginConfig(agent, "nomad-driver-triton")
	if err != nil || !found {
		t.Fatalf("%s: plugin \"nomad-driver-triton\" config: found=%v err=%v", agent, found, err)
	}
	cfg["cloudapi_url"] = sim.URL
	cfg["docker_url"] = sim.URL
	args := []string{
		"--guest", guest,
		"--allow-http", sim.URL,
		"--secret", "triton=" + key,
		"--state-dir", stateDir,
	}
	return launchHost(t, p.Host, args, nil, "triton", cfg)
}

// tritonJobConfig is the `config {}` map of the one task of an
// examples/triton job file, as Nomad's jobspec parser hands it over, with
// edit applied (to name the simulator's package and networks, and to give
// the container a behaviour).
func tritonJobConfig(t *testing.T, file string, edit func(m map[string]interface{})) (JobTask, map[string]interface{}) {
	t.Helper()
	path := filepath.Join(paths(t).Repo, "examples", "triton", file)
	tasks, err := LoadJobTasks(path)
	if err != nil || len(tasks) != 1 {
		t.Fatalf("%s: %d tasks, err %v", path, len(tasks), err)
	}
	jt := tasks[0]
	if jt.Driver != "triton" {
		t.Fatalf("%s: task %q uses driver %q", path, jt.Task, jt.Driver)
	}
	if edit != nil {
		edit(jt.Config)
	}
	return jt, jt.Config
}

// block returns the body map of the one `name { }` block of a config map.
func tritonBlock(t *testing.T, m map[string]interface{}, name string) map[string]interface{} {
	t.Helper()
	l, ok := m[name].([]interface{})
	if !ok || len(l) != 1 {
		t.Fatalf("config has no single %q block: %#v", name, m[name])
	}
	b, ok := l[0].(map[string]interface{})
	if !ok {
		t.Fatalf("%q block is %T", name, l[0])
	}
	return b
}

// tritonTask prepares a task named like the job file's, with the config
// decoded through the plugin's TaskConfigSchema as Nomad does.
func tritonTask(t *testing.T, c *killableHost, jt JobTask, cfg map[string]interface{}) *Task {
	t.Helper()
	tk := newTask(t, jt.Task)
	_, b, err := c.decodeTaskConfigMap(t, tk, cfg)
	if err != nil {
		t.Fatalf("the %s task's config does not decode against the Triton TaskConfigSchema: %v", jt.Task, err)
	}
	tk.Config.MsgpackDriverConfig = b
	return tk
}

// tritonInstanceName is the name the guest gives the instance.
func tritonInstanceName(tk *Task) string {
	return fmt.Sprintf("%s-%s-%s-%s", tk.Config.JobName, tk.Config.TaskGroupName, tk.Name, tk.AllocID[:8])
}

// tritonStart starts tk and registers a clean-up on c (stop, destroy).
func tritonStart(t *testing.T, c *killableHost, tk *Task) *drivers.StartTaskResponse {
	t.Helper()
	resp, err := c.Driver.StartTask(rpcCtx(t, 30*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	if err != nil {
		t.Fatalf("StartTask %s: %v", tk.ID, err)
	}
	tritonCleanup(t, c, tk)
	return resp
}

// tritonRun makes the task of jt's config cfg (tritonTask) and starts it
// on c (tritonStart): the task, its instance's name and StartTask's answer.
func tritonRun(t *testing.T, c *killableHost, jt JobTask, cfg map[string]interface{}) (*Task, string, *drivers.StartTaskResponse) {
	t.Helper()
	tk := tritonTask(t, c, jt, cfg)
	return tk, tritonInstanceName(tk), tritonStart(t, c, tk)
}

func tritonCleanup(t *testing.T, c *killableHost, tk *Task) {
	t.Cleanup(func() {
		if c.sigkilled.Load() {
			return
		}
		_, _ = c.Driver.StopTask(rpcCtx(t, 20*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(time.Second)})
		_, _ = c.Driver.DestroyTask(rpcCtx(t, 20*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true})
	})
}

func destroyTwice(t *testing.T, c *killableHost, id string) {
	t.Helper()
	for i := 1; i <= 2; i++ {
		if _, err := c.Driver.DestroyTask(rpcCtx(t, 20*time.Second), &drivers.DestroyTaskRequest{TaskId: id, Force: true}); err != nil {
			t.Fatalf("DestroyTask #%d: %v", i, err)
		}
	}
	_, err := c.Driver.WaitTask(rpcCtx(t, 5*time.Second), &drivers.WaitTaskRequest{TaskId: id})
	requireNotFound(t, err, "WaitTask after DestroyTask", id)
}
