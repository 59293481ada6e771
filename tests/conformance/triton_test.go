package conformance

// The Triton guest end to end, as Nomad drives it, against the Triton
// simulator (tests/triton-sim: CloudAPI + sdc-docker, verifies every HTTP
// Signature, injects faults). The host is launched by go-plugin with the
// guest, an HTTP grant for the simulator's origin and the account's key
// (--secret); the plugin config is examples/triton/agent.hcl's with its
// endpoints pointed at the simulator; task configs are the job files of
// examples/triton/ decoded through the guest's TaskConfigSchema as Nomad
// decodes them. Only the datacenter-specific names (package, networks) are
// changed to the simulator's, and the container gets a command where the
// test needs a behaviour (the simulator runs nothing: it reads `exit N`,
// `sleep N`, `trap '' TERM` from the command).
//
// Timing: the guest polls a running instance every 5 s (tritonPollRunning),
// so an end is seen at most one poll interval after it happens; the bounds
// below allow that interval plus slack.
//
// Not a real Triton: the simulator keeps everything in memory.

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"conformancepb/drivers"
	"conformancepb/structs"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	simPackage       = "g4-highcpu-512M"
	simFabricNetwork = "My-Fabric-Network"
	simPublicNetwork = "Joyent-SDC-Public"
)

// tritonSlack is what an end may take beyond the moment it is due: one
// running-poll interval and 2 s.
const tritonSlack = tritonPollRunning + 2*time.Second

// dockerExample is examples/triton/example-docker.nomad's task config for
// the simulator: its package and public network renamed to the
// simulator's, and cmd (if given) as the container's command.
func dockerExample(t *testing.T, cmd []string, edit func(m map[string]interface{})) (JobTask, map[string]interface{}) {
	t.Helper()
	return tritonJobConfig(t, "example-docker.nomad", func(m map[string]interface{}) {
		m["package"] = []interface{}{map[string]interface{}{"name": simPackage}}
		d := tritonBlock(t, m, "docker_api")
		d["public_network"] = simPublicNetwork
		if cmd != nil {
			d["cmd"] = cmd
		}
		if edit != nil {
			edit(m)
		}
	})
}

// cloudExample is examples/triton/example-cloudapi.nomad's task config
// (exit_strategy "deleted", a firewall rule, tags) for the simulator.
func cloudExample(t *testing.T, edit func(m map[string]interface{})) (JobTask, map[string]interface{}) {
	t.Helper()
	return tritonJobConfig(t, "example-cloudapi.nomad", func(m map[string]interface{}) {
		m["package"] = []interface{}{map[string]interface{}{"name": simPackage}}
		c := tritonBlock(t, m, "cloud_api")
		c["networks"] = []interface{}{map[string]interface{}{"name": simFabricNetwork}}
		if edit != nil {
			edit(m)
		}
	})
}

func exitStrategy(s string) func(m map[string]interface{}) {
	return func(m map[string]interface{}) { m["exit_strategy"] = s }
}

// waitPolled waits until the guest has polled the instance (a GET whose
// path contains its id) at least once after start: the host follows the
// task from then on.
func (s *tritonSim) waitPolled(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range s.requests(t) {
			if r.Method == "GET" && strings.Contains(r.Path, id) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no poll of %s within 10 s; requests: %v", id, s.requests(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// polls counts the GETs whose path contains id.
func (s *tritonSim) polls(t *testing.T, id string) int {
	t.Helper()
	n := 0
	for _, r := range s.requests(t) {
		if r.Method == "GET" && strings.Contains(r.Path, id) {
			n++
		}
	}
	return n
}

// containerID is the id of the one container named name.
func (s *tritonSim) containerID(t *testing.T, name string) string {
	t.Helper()
	cs := s.state(t).containersNamed(name)
	if len(cs) != 1 {
		t.Fatalf("containers named %s: %v", name, cs)
	}
	return cs[0]["Id"].(string)
}

// creates counts the create requests (docker `?name=`, or a CloudAPI
// POST /:login/machines whose body names it) for the instance name.
func (s *tritonSim) creates(t *testing.T, name string) int {
	t.Helper()
	n := 0
	for _, r := range s.requests(t) {
		if r.Method == "POST" && (strings.HasSuffix(r.Path, "/containers/create") && strings.Contains(r.Query, name) ||
			r.Path == "/"+tritonAccount+"/machines" && strings.Contains(r.Body, name)) {
			n++
		}
	}
	return n
}

// requireExit checks a WaitTask result: exit code, no signal, and the
// error text (empty, or containing errMention).
func requireExit(t *testing.T, w *drivers.WaitTaskResponse, code int32, errMention string) {
	t.Helper()
	r := w.GetResult()
	okErr := w.GetErr() == ""
	if errMention != "" {
		okErr = strings.Contains(w.GetErr(), errMention)
	}
	if r.GetExitCode() != code || r.GetSignal() != 0 || !okErr {
		t.Errorf("WaitTask = {exit_code %d, signal %d, err %q}, want exit_code %d, signal 0, err mentioning %q",
			r.GetExitCode(), r.GetSignal(), w.GetErr(), code, errMention)
	}
}

// requireRecoverable: a StartTask failure Nomad retries under the restart
// policy (a RecoverableError{recoverable: true} first detail), not
// UNAVAILABLE/CANCELED, whose message names what failed.
func requireRecoverable(t *testing.T, err error, what string, mentions ...string) {
	t.Helper()
	requireOrdinaryError(t, err, what, "")
	if err == nil {
		return
	}
	st := status.Convert(err)
	for _, m := range mentions {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("%s: error message %q does not mention %q", what, st.Message(), m)
		}
	}
	details := st.Details()
	if len(details) == 0 {
		t.Errorf("%s: status %v %q carries no RecoverableError detail (Nomad treats it as fatal)", what, st.Code(), st.Message())
		return
	}
	re, ok := details[0].(*structs.RecoverableError)
	if !ok {
		t.Errorf("%s: first status detail is %T, want RecoverableError", what, details[0])
		return
	}
	if !re.GetRecoverable() {
		t.Errorf("%s: RecoverableError{recoverable: false}; a 503 is temporary and should be retried", what)
	}
	if st.Code() == codes.Unavailable || st.Code() == codes.Canceled {
		t.Errorf("%s: code %v", what, st.Code())
	}
}

func firstDetail(d []interface{}) interface{} {
	if len(d) == 0 {
		return nil
	}
	return d[0]
}

// TestTritonDockerExample: example-docker.nomad through StartTask →
// TaskEvents → WaitTask with the container's own exit code → DestroyTask
// (twice), and what the simulator holds afterwards for each exit_strategy.
func TestTritonDockerExample(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())
	ev := potCollectEvents(t, c.Configured)

	t.Run("exit code 3, stopped container kept", func(t *testing.T) {
		jt, cfg := dockerExample(t, []string{"sh", "-c", "exit 3"}, nil)
		tk, name, resp := tritonRun(t, c, jt, cfg)
		if resp.GetHandle().GetConfig().GetId() != tk.ID || len(resp.GetHandle().GetDriverState()) == 0 {
			t.Errorf("StartTask handle: config id %q, %d bytes of driver_state", resp.GetHandle().GetConfig().GetId(), len(resp.GetHandle().GetDriverState()))
		}
		e := ev.waitFor(t, "Triton container "+name+" created and started", 5*time.Second)
		if e.GetTaskId() != tk.ID || e.GetAllocId() != tk.AllocID {
			t.Errorf("event routed to %s/%s, want %s/%s", e.GetAllocId(), e.GetTaskId(), tk.AllocID, tk.ID)
		}
		st := sim.state(t)
		cs := st.containersNamed(name)
		if len(cs) != 1 {
			t.Fatalf("containers named %s: %v", name, st.Containers)
		}
		labels, _ := cs[0]["Config"].(map[string]interface{})["Labels"].(map[string]interface{})
		if labels["group"] != "webservice-cache" || labels["com.joyent.package"] != simPackage {
			t.Errorf("container labels %v, want the job's group label and the package", labels)
		}
		ms := st.machinesNamed(name)
		if len(ms) != 1 || ms[0]["tags"].(map[string]interface{})["role"] != "cache" {
			t.Errorf("the container's machine %v, want one tagged role=cache (tagged through signed CloudAPI)", ms)
		}

		w, took := c.waitTask(t, tk.ID, 20*time.Second)
		requireExit(t, w, 3, "")
		if took > tritonSlack+2*time.Second {
			t.Errorf("WaitTask took %v for a container that exits at once", took)
		}
		// StopTask of an exited task succeeds at once; WaitTask still
		// answers with the same result (NOMAD-PROTOCOL §8.3 step 6).
		start := time.Now()
		if _, err := c.Driver.StopTask(rpcCtx(t, 10*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second), Signal: "SIGTERM"}); err != nil {
			t.Errorf("StopTask of an exited task: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("StopTask of an exited task took %v", d)
		}
		w, _ = c.waitTask(t, tk.ID, 5*time.Second)
		requireExit(t, w, 3, "")
		destroyTwice(t, c, tk.ID)
		cs = sim.state(t).containersNamed(name)
		if len(cs) != 1 {
			t.Fatalf("exit_strategy \"stopped\" (the default) keeps the container; simulator has %v", cs)
		}
		if s := cs[0]["State"].(map[string]interface{}); s["Running"] != false || s["ExitCode"] != float64(3) {
			t.Errorf("kept container state %v, want not running with exit code 3", s)
		}
	})

	t.Run("exit_strategy deleted removes the container", func(t *testing.T) {
		jt, cfg := dockerExample(t, []string{"sh", "-c", "exit 5"}, exitStrategy("deleted"))
		tk, name, _ := tritonRun(t, c, jt, cfg)
		w, _ := c.waitTask(t, tk.ID, 20*time.Second)
		requireExit(t, w, 5, "")
		destroyTwice(t, c, tk.ID)
		st := sim.state(t)
		if cs := st.containersNamed(name); len(cs) != 0 {
			t.Errorf("after DestroyTask under exit_strategy \"deleted\" the simulator still has %v", cs)
		}
		for _, r := range sim.requests(t) {
			if r.API == "cloudapi" && r.Path != "/--ping" && !r.AuthOK {
				t.Errorf("CloudAPI request not authenticated: %v", r)
			}
		}
	})
}

// TestTritonCloudExample: example-cloudapi.nomad (exit_strategy "deleted",
// a firewall rule, tags, user-script): the machine provisions, a machine
// forced to `failed` is a non-zero exit with a message, DestroyTask
// (twice) deletes the machine and the rule. Then how `stopped` and
// `deleted` machines end a task under each exit_strategy.
func TestTritonCloudExample(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())
	ev := potCollectEvents(t, c.Configured)

	t.Run("failed machine is exit 1; destroy deletes machine and rule", func(t *testing.T) {
		jt, cfg := cloudExample(t, nil)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		ev.waitFor(t, "Triton machine "+name+" created", 5*time.Second)
		m := sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		if tags := m["tags"].(map[string]interface{}); tags["role"] != "web" {
			t.Errorf("machine tags %v, want role=web", tags)
		}
		if md := m["metadata"].(map[string]interface{}); !strings.Contains(md["user-script"].(string), "svcadm enable nginx") {
			t.Errorf("machine metadata %v, want the job's user-script", md)
		}
		if m["firewall_enabled"] != true {
			t.Errorf("firewall_enabled = %v, want true (fwenabled)", m["firewall_enabled"])
		}
		if rules := sim.state(t).FWRules; len(rules) != 1 || !strings.Contains(rules[0]["rule"].(string), "ALLOW tcp PORT 80") {
			t.Errorf("firewall rules %v, want the job's one rule", rules)
		}
		w := c.waitAsync(tk.ID)
		w.requireBlocked(t, 500*time.Millisecond, "running machine")
		sim.forceMachineState(t, m["id"].(string), "failed")
		res := w.get(t, tritonSlack, "after the machine failed")
		requireExit(t, res, 1, "failed")
		destroyTwice(t, c, tk.ID)
		sim.waitMachine(t, name, 5*time.Second, "deleted", inState("deleted"))
		if rules := sim.state(t).FWRules; len(rules) != 0 {
			t.Errorf("after DestroyTask the simulator still has firewall rules %v", rules)
		}
		if n := len(sim.state(t).machinesNamed(name)); n != 1 {
			t.Errorf("%d machines named %s, want 1", n, name)
		}
	})

	t.Run("exit_strategy stopped: stopped machine is exit 0 and kept", func(t *testing.T) {
		jt, cfg := cloudExample(t, exitStrategy("stopped"))
		tk, name, _ := tritonRun(t, c, jt, cfg)
		m := sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		sim.forceMachineState(t, m["id"].(string), "stopped")
		w, _ := c.waitTask(t, tk.ID, tritonSlack)
		requireExit(t, w, 0, "")
		destroyTwice(t, c, tk.ID)
		if m := sim.waitMachine(t, name, time.Second, "kept", func(map[string]interface{}) bool { return true }); m["state"] != "stopped" {
			t.Errorf("exit_strategy \"stopped\": machine %s after destroy, want it kept stopped", m["state"])
		}
		if rules := sim.state(t).FWRules; len(rules) != 0 {
			t.Errorf("the task's firewall rule outlived DestroyTask: %v", rules)
		}
	})

	t.Run("exit_strategy deleted: stopped machine keeps the task, deleted ends it", func(t *testing.T) {
		jt, cfg := cloudExample(t, nil)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		m := sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		w := c.waitAsync(tk.ID)
		id := m["id"].(string)
		polls := sim.polls(t, id)
		sim.forceMachineState(t, id, "stopped")
		// Once the guest has seen the stopped machine, the task still runs.
		deadline := time.Now().Add(tritonSlack)
		for sim.polls(t, id) == polls {
			if time.Now().After(deadline) {
				t.Fatalf("the machine was not polled within %v", tritonSlack)
			}
			time.Sleep(50 * time.Millisecond)
		}
		w.requireBlocked(t, 500*time.Millisecond, "exit_strategy deleted with a stopped machine")
		sim.forceMachineState(t, m["id"].(string), "deleted")
		requireExit(t, w.get(t, tritonSlack, "after the machine was deleted"), 0, "")
		destroyTwice(t, c, tk.ID)
	})
}

// TestTritonStopTask: StopTask with the job's timeout ends the task no
// later than the timeout plus slack, with the result the guest reports
// (the container's real exit code; 0 for a stopped/deleted machine).
func TestTritonStopTask(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())

	stop := func(t *testing.T, tk *Task, timeout time.Duration) (*drivers.WaitTaskResponse, time.Duration) {
		t.Helper()
		w := c.waitAsync(tk.ID)
		start := time.Now()
		if _, err := c.Driver.StopTask(rpcCtx(t, timeout+30*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(timeout), Signal: "SIGTERM"}); err != nil {
			t.Fatalf("StopTask: %v", err)
		}
		res := w.get(t, timeout+tritonSlack, "after StopTask")
		took := w.at.Sub(start)
		if took > timeout+tritonSlack {
			t.Errorf("the task ended %v after StopTask with a %v timeout (allowed: timeout + %v)", took, timeout, tritonSlack)
		}
		return res, took
	}

	t.Run("docker ignoring SIGTERM is killed after the timeout: 137", func(t *testing.T) {
		jt, cfg := dockerExample(t, []string{"sh", "-c", "trap '' TERM; sleep 100"}, nil)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		sim.waitPolled(t, sim.containerID(t, name))
		res, took := stop(t, tk, 2*time.Second)
		requireExit(t, res, 137, "")
		if took < 1800*time.Millisecond {
			t.Errorf("a container ignoring SIGTERM ended %v after StopTask, before the 2 s timeout", took)
		}
		if cs := sim.state(t).containersNamed(name); len(cs) != 1 || cs[0]["State"].(map[string]interface{})["Running"] != false {
			t.Errorf("container after StopTask: %v, want it not running", cs)
		}
		destroyTwice(t, c, tk.ID)
	})

	t.Run("docker honouring SIGTERM ends long before the 30 s kill_timeout: 143", func(t *testing.T) {
		// The example's redis runs until stopped; kill_timeout = "30s".
		jt, cfg := dockerExample(t, nil, nil)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		sim.waitPolled(t, sim.containerID(t, name))
		res, took := stop(t, tk, 30*time.Second)
		requireExit(t, res, 143, "")
		if took > tritonSlack {
			t.Errorf("a container that ends on SIGTERM took %v to stop (allowed %v: one poll + slack)", took, tritonSlack)
		}
		destroyTwice(t, c, tk.ID)
	})

	// stopMachine starts the cloud example (edit applied), stops it once
	// the machine runs (exit 0, the machine then in state end) and
	// destroys the task; it returns the instance's name.
	stopMachine := func(t *testing.T, edit func(m map[string]interface{}), end string) string {
		t.Helper()
		jt, cfg := cloudExample(t, edit)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		res, _ := stop(t, tk, 5*time.Second)
		requireExit(t, res, 0, "")
		sim.waitMachine(t, name, time.Second, end, inState(end))
		destroyTwice(t, c, tk.ID)
		return name
	}

	t.Run("cloud exit_strategy stopped: machine stopped, exit 0", func(t *testing.T) {
		name := stopMachine(t, exitStrategy("stopped"), "stopped")
		sim.waitMachine(t, name, time.Second, "kept stopped", inState("stopped"))
	})

	t.Run("cloud exit_strategy deleted: machine deleted, exit 0", func(t *testing.T) {
		stopMachine(t, nil, "deleted")
		if rules := sim.state(t).FWRules; len(rules) != 0 {
			t.Errorf("firewall rules after DestroyTask: %v", rules)
		}
	})
}

// TestTritonFaults: injected 503s on polls are waited out and the real
// exit code still arrives; a 503 on create fails StartTask with a clear,
// recoverable error and leaves nothing behind; a machine whose
// provisioning fails is a non-zero exit.
func TestTritonFaults(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())

	// post503 makes the simulator answer the next POST whose path starts
	// with prefix with a 503.
	post503 := func(t *testing.T, prefix string) {
		t.Helper()
		sim.setFaults(t, map[string]interface{}{"errors": []map[string]interface{}{
			{"method": "POST", "path_prefix": prefix, "status": 503, "count": 1},
		}})
	}

	// failStart makes the task of jt's config cfg and requires its
	// StartTask to fail with a recoverable error (what) whose message
	// names mention and the 503.
	failStart := func(t *testing.T, jt JobTask, cfg map[string]interface{}, what, mention string) *Task {
		t.Helper()
		tk := tritonTask(t, c, jt, cfg)
		_, err := c.Driver.StartTask(rpcCtx(t, 30*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
		requireRecoverable(t, err, what, mention, "503")
		return tk
	}

	t.Run("503 on polls, with latency", func(t *testing.T) {
		sim.setFaults(t, map[string]interface{}{
			"latency_ms": 100,
			"errors": []map[string]interface{}{
				{"method": "GET", "path_prefix": "/v1.24/containers/", "status": 503, "count": 2, "retry_after": 1},
			},
		})
		defer sim.setFaults(t, map[string]interface{}{})
		jt, cfg := dockerExample(t, []string{"sh", "-c", "sleep 1; exit 3"}, nil)
		tk := tritonTask(t, c, jt, cfg)
		tritonStart(t, c, tk)
		w, _ := c.waitTask(t, tk.ID, 30*time.Second)
		requireExit(t, w, 3, "")
		faulted := 0
		for _, r := range sim.requests(t) {
			if r.Fault && r.Status == 503 {
				faulted++
			}
		}
		if faulted != 2 {
			t.Errorf("%d polls answered 503, want the 2 injected", faulted)
		}
		destroyTwice(t, c, tk.ID)
	})

	t.Run("503 on container create", func(t *testing.T) {
		post503(t, "/v1.24/containers/create")
		defer sim.setFaults(t, map[string]interface{}{})
		jt, cfg := dockerExample(t, []string{"sh", "-c", "exit 0"}, nil)
		tk := failStart(t, jt, cfg, "StartTask with a 503 on create", "creating the container")
		if cs := sim.state(t).containersNamed(tritonInstanceName(tk)); len(cs) != 0 {
			t.Errorf("a failed start left containers behind: %v", cs)
		}
		// The fault is spent: the restart Nomad makes succeeds.
		tk2 := tritonTask(t, c, jt, cfg)
		tritonStart(t, c, tk2)
		w, _ := c.waitTask(t, tk2.ID, 20*time.Second)
		requireExit(t, w, 0, "")
		destroyTwice(t, c, tk2.ID)
	})

	t.Run("503 after the container was created leaves no container", func(t *testing.T) {
		// The tags go to the container's machine through CloudAPI between
		// the container's create and its start.
		post503(t, "/"+tritonAccount+"/machines/")
		defer sim.setFaults(t, map[string]interface{}{})
		jt, cfg := dockerExample(t, []string{"sh", "-c", "exit 0"}, nil)
		tk := failStart(t, jt, cfg, "StartTask with a 503 on tagging", "tagging the instance")
		if cs := sim.state(t).containersNamed(tritonInstanceName(tk)); len(cs) != 0 {
			t.Errorf("a failed start left its container behind (NOMAD-PROTOCOL §8.3: clean up what a failed start created): %v", cs)
		}
	})

	t.Run("503 on machine create leaves no machine or firewall rule", func(t *testing.T) {
		post503(t, "/"+tritonAccount+"/machines")
		defer sim.setFaults(t, map[string]interface{}{})
		jt, cfg := cloudExample(t, nil)
		tk := failStart(t, jt, cfg, "StartTask with a 503 on machine create", "creating the machine")
		st := sim.state(t)
		if ms := st.machinesNamed(tritonInstanceName(tk)); len(ms) != 0 {
			t.Errorf("a failed start left machines behind: %v", ms)
		}
		if len(st.FWRules) != 0 {
			t.Errorf("a failed start left its firewall rules behind (NOMAD-PROTOCOL §8.3: clean up what a failed start created): %v", st.FWRules)
		}
	})

	t.Run("a key the account does not have: clear, not retried", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		if msg, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, msg)
		}
		c := tritonLaunchWithKey(t, sim, t.TempDir(), other)
		jt, cfg := cloudExample(t, nil)
		tk := tritonTask(t, c, jt, cfg)
		_, err := c.Driver.StartTask(rpcCtx(t, 30*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
		requireOrdinaryError(t, err, "StartTask signed with a key the account lacks", "looking up the package: HTTP 401 InvalidCredentials")
		d := status.Convert(err).Details()
		if re, ok := firstDetail(d).(*structs.RecoverableError); !ok || re.GetRecoverable() {
			t.Errorf("a refused key is not temporary: want RecoverableError{recoverable: false} first, got details %v", d)
		}
		if ms := sim.state(t).machinesNamed(tritonInstanceName(tk)); len(ms) != 0 {
			t.Errorf("machines after a refused start: %v", ms)
		}
	})

	t.Run("failed provisioning is exit 1", func(t *testing.T) {
		jt, cfg := cloudExample(t, nil)
		tk := tritonTask(t, c, jt, cfg)
		name := tritonInstanceName(tk)
		sim.setFaults(t, map[string]interface{}{"fail_provision": []string{name}})
		defer sim.setFaults(t, map[string]interface{}{})
		tritonStart(t, c, tk)
		w, _ := c.waitTask(t, tk.ID, 20*time.Second)
		requireExit(t, w, 1, "failed")
		sim.waitMachine(t, name, time.Second, "failed", inState("failed"))
		destroyTwice(t, c, tk.ID)
	})
}

// TestTritonRecoverAfterHostSIGKILL: the host process is SIGKILLed (no
// Shutdown); a new host recovers the task from the TaskHandle StartTask
// returned (without msgpack_driver_config, as Nomad stores it), reattaches
// without creating a second instance, reports the real exit when the
// instance ends, and a second RecoverTask is harmless. An instance that
// ended while no host ran reports its real result after recovery.
func TestTritonRecoverAfterHostSIGKILL(t *testing.T) {
	sim := startTritonSim(t)

	recoverTwice := func(t *testing.T, c *killableHost, h *drivers.TaskHandle) {
		t.Helper()
		for i := 1; i <= 2; i++ {
			if _, err := c.Driver.RecoverTask(rpcCtx(t, 20*time.Second), &drivers.RecoverTaskRequest{Handle: storedHandle(h)}); err != nil {
				t.Fatalf("RecoverTask #%d: %v", i, err)
			}
		}
	}

	// startKillRecover starts the task of jt's config cfg on a host with
	// its own state dir, runs beforeKill, SIGKILLs that host, runs
	// whileDown (either may be nil; both get the instance's name), then
	// launches a second host on the same state dir that recovers the task
	// (twice) from the handle StartTask returned.
	startKillRecover := func(t *testing.T, jt JobTask, cfg map[string]interface{}, beforeKill, whileDown func(name string)) (*killableHost, *Task, string) {
		t.Helper()
		stateDir := t.TempDir()
		c1 := tritonLaunch(t, sim, stateDir)
		tk, name, resp := tritonRun(t, c1, jt, cfg)
		if beforeKill != nil {
			beforeKill(name)
		}
		c1.sigkill(t)
		if whileDown != nil {
			whileDown(name)
		}
		c2 := tritonLaunch(t, sim, stateDir)
		tritonCleanup(t, c2, tk)
		recoverTwice(t, c2, resp.GetHandle())
		return c2, tk, name
	}

	// requireEndedWhileDown: the recovered task of an instance that ended
	// while no host ran reports that end at once, and is destroyed.
	requireEndedWhileDown := func(t *testing.T, c2 *killableHost, tk *Task, code int32, errMention string) {
		t.Helper()
		w, _ := c2.waitTask(t, tk.ID, 5*time.Second)
		requireExit(t, w, code, errMention)
		destroyTwice(t, c2, tk.ID)
	}

	t.Run("running container", func(t *testing.T) {
		jt, cfg := dockerExample(t, nil, nil)
		var id string
		c2, tk, name := startKillRecover(t, jt, cfg, func(name string) {
			id = sim.containerID(t, name)
			sim.waitPolled(t, id)
		}, nil)
		w := c2.waitAsync(tk.ID)
		w.requireBlocked(t, time.Second, "recovered running container")
		if cs, n := sim.state(t).containersNamed(name), sim.creates(t, name); len(cs) != 1 || n != 1 {
			t.Fatalf("after recovery: containers %v, %d creates; want the one container", cs, n)
		}
		sim.exitContainer(t, id, 42)
		requireExit(t, w.get(t, tritonSlack, "recovered container after exit 42"), 42, "")
		destroyTwice(t, c2, tk.ID)
	})

	t.Run("running machine", func(t *testing.T) {
		jt, cfg := cloudExample(t, nil)
		var m map[string]interface{}
		c2, tk, name := startKillRecover(t, jt, cfg, func(name string) {
			m = sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		}, nil)
		w := c2.waitAsync(tk.ID)
		w.requireBlocked(t, time.Second, "recovered running machine")
		if ms, n := sim.state(t).machinesNamed(name), sim.creates(t, name); len(ms) != 1 || n != 1 {
			t.Fatalf("after recovery: machines %v, %d creates; want the one machine", ms, n)
		}
		sim.forceMachineState(t, m["id"].(string), "failed")
		requireExit(t, w.get(t, tritonSlack, "recovered machine after it failed"), 1, "failed")
		destroyTwice(t, c2, tk.ID)
		sim.waitMachine(t, name, 5*time.Second, "deleted", inState("deleted"))
		if rules := sim.state(t).FWRules; len(rules) != 0 {
			t.Errorf("the recovered task's firewall rule outlived DestroyTask: %v", rules)
		}
	})

	t.Run("container exited while no host ran", func(t *testing.T) {
		jt, cfg := dockerExample(t, nil, nil)
		c2, tk, _ := startKillRecover(t, jt, cfg, nil, func(name string) {
			sim.exitContainer(t, sim.containerID(t, name), 7)
		})
		requireEndedWhileDown(t, c2, tk, 7, "")
	})

	t.Run("container removed while no host ran", func(t *testing.T) {
		// exit_strategy "stopped" (the example's default): an instance
		// that is gone is a failure with a message, not a clean exit.
		jt, cfg := dockerExample(t, nil, nil)
		var id string
		c2, tk, _ := startKillRecover(t, jt, cfg, func(name string) {
			id = sim.containerID(t, name)
		}, func(string) {
			if st, b := sim.admin(t, "DELETE", "/v1.24/containers/"+id+"?force=1", nil); st/100 != 2 {
				t.Fatalf("removing the container in the simulator: HTTP %d %s", st, b)
			}
		})
		requireEndedWhileDown(t, c2, tk, 1, "no longer exists")
	})

	t.Run("machine failed while no host ran", func(t *testing.T) {
		jt, cfg := cloudExample(t, exitStrategy("stopped"))
		var m map[string]interface{}
		c2, tk, _ := startKillRecover(t, jt, cfg, func(name string) {
			m = sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		}, func(string) {
			sim.forceMachineState(t, m["id"].(string), "failed")
		})
		requireEndedWhileDown(t, c2, tk, 1, "failed")
	})
}

// TestTritonDestroyForceOfRunningTask: DestroyTask(force) of a task that
// still runs (Nomad does this after a failed RecoverTask, NOMAD-PROTOCOL
// §8.4) must not leave the instance running, whatever the exit_strategy
// (§8.3: DestroyTask removes all resources).
func TestTritonDestroyForceOfRunningTask(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())

	t.Run("docker, exit_strategy stopped", func(t *testing.T) {
		jt, cfg := dockerExample(t, nil, nil)
		tk, name, _ := tritonRun(t, c, jt, cfg)
		sim.waitPolled(t, sim.containerID(t, name))
		destroyTwice(t, c, tk.ID)
		if cs := sim.state(t).containersNamed(name); len(cs) == 1 && cs[0]["State"].(map[string]interface{})["Running"] != false {
			t.Errorf("the container still runs after DestroyTask(force): %v", cs[0]["State"])
		}
	})

	t.Run("cloud, exit_strategy stopped", func(t *testing.T) {
		jt, cfg := cloudExample(t, exitStrategy("stopped"))
		tk, name, _ := tritonRun(t, c, jt, cfg)
		sim.waitMachine(t, name, 10*time.Second, "running", inState("running"))
		destroyTwice(t, c, tk.ID)
		sim.waitMachine(t, name, 2*time.Second, "stopping or stopped after DestroyTask(force)", inState("stopping", "stopped"))
		if rules := sim.state(t).FWRules; len(rules) != 0 {
			t.Errorf("firewall rules after DestroyTask: %v", rules)
		}
	})
}

// TestTritonInspectTaskShowsThePrimaryIP: once the instance runs, InspectTask
// (which Nomad calls for remote tasks) carries a network override whose
// address is the instance's primary IP as the simulator reports it, with
// the fields Nomad dereferences (NOMAD-PROTOCOL §8.8, §10).
func TestTritonInspectTaskShowsThePrimaryIP(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())

	inspectAddr := func(t *testing.T, tk *Task, want string) {
		t.Helper()
		deadline := time.Now().Add(tritonSlack)
		for {
			r, err := c.Driver.InspectTask(rpcCtx(t, 10*time.Second), &drivers.InspectTaskRequest{TaskId: tk.ID})
			if err != nil {
				t.Fatalf("InspectTask: %v", err)
			}
			if r.GetTask() == nil || r.GetTask().GetResult() == nil || r.GetTask().GetStartedAt() == nil || r.GetTask().GetCompletedAt() == nil {
				t.Fatalf("InspectTask lacks fields Nomad dereferences: %v", r)
			}
			if r.GetTask().GetState() != drivers.TaskState_RUNNING {
				t.Errorf("InspectTask state %v, want RUNNING", r.GetTask().GetState())
			}
			if got := r.GetNetworkOverride().GetAddr(); got == want {
				return
			} else if got != "" {
				t.Fatalf("InspectTask network override address %q, want the primary IP %q", got, want)
			}
			if time.Now().After(deadline) {
				t.Fatalf("InspectTask has no network override with %q within %v of the instance running: %v", want, tritonSlack, r)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	for _, tc := range []struct {
		name    string
		example func(t *testing.T) (JobTask, map[string]interface{})
	}{
		{"cloud machine", func(t *testing.T) (JobTask, map[string]interface{}) { return cloudExample(t, nil) }},
		{"docker container", func(t *testing.T) (JobTask, map[string]interface{}) { return dockerExample(t, nil, nil) }},
	} {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			jt, cfg := tc.example(t)
			tk, name, _ := tritonRun(t, c, jt, cfg)
			m := sim.waitMachine(t, name, 10*time.Second, "running with a primary IP", func(m map[string]interface{}) bool {
				return m["state"] == "running" && m["primaryIp"] != nil
			})
			inspectAddr(t, tk, m["primaryIp"].(string))
		})
	}
}

// TestTritonDetach: Nomad stops a remote task with the DETACH signal when it
// hands the task to a replacement allocation (NOMAD-PROTOCOL §6, remote_tasks):
// this allocation stops managing it but must not stop or delete the instance.
// The replacement recovers it from the same handle under its own task id and
// then owns it to the end, exit code included.
func TestTritonDetach(t *testing.T) {
	sim := startTritonSim(t)
	c := tritonLaunch(t, sim, t.TempDir())

	jt, cfg := dockerExample(t, nil, exitStrategy("deleted"))
	tk, name, resp := tritonRun(t, c, jt, cfg)
	id := sim.containerID(t, name)
	sim.waitPolled(t, id)

	if _, err := c.Driver.StopTask(rpcCtx(t, 10*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(5 * time.Second), Signal: "DETACH"}); err != nil {
		t.Fatalf("StopTask(DETACH): %v", err)
	}
	w, err := c.Driver.WaitTask(rpcCtx(t, 5*time.Second), &drivers.WaitTaskRequest{TaskId: tk.ID})
	if err != nil {
		t.Fatalf("WaitTask after DETACH: %v", err)
	}
	requireExit(t, w, 0, "")
	destroyTwice(t, c, tk.ID)
	cs := sim.state(t).containersNamed(name)
	if len(cs) != 1 || cs[0]["State"].(map[string]interface{})["Running"] != true {
		t.Fatalf("after DETACH and DestroyTask (exit_strategy deleted) the container must still run: %v", cs)
	}

	// The replacement allocation's task gets the handle.
	h := storedHandle(resp.GetHandle())
	h.Config.Id = tk.ID + "-replacement"
	h.Config.AllocId = "replacement-" + tk.AllocID
	if _, err := c.Driver.RecoverTask(rpcCtx(t, 20*time.Second), &drivers.RecoverTaskRequest{TaskId: h.Config.Id, Handle: h}); err != nil {
		t.Fatalf("RecoverTask by the replacement: %v", err)
	}
	t.Cleanup(func() {
		_, _ = c.Driver.DestroyTask(rpcCtx(t, 20*time.Second), &drivers.DestroyTaskRequest{TaskId: h.Config.Id, Force: true})
	})
	wa := c.waitAsync(h.Config.Id)
	wa.requireBlocked(t, time.Second, "the replacement's recovered container")
	if n := sim.creates(t, name); n != 1 {
		t.Fatalf("%d container creates; DETACH and recovery must not create another", n)
	}
	sim.exitContainer(t, id, 9)
	requireExit(t, wa.get(t, tritonSlack, "the replacement's container after exit 9"), 9, "")
	destroyTwice(t, c, h.Config.Id)
	if cs := sim.state(t).containersNamed(name); len(cs) != 0 {
		t.Errorf("the replacement's DestroyTask (exit_strategy deleted) left the container: %v", cs)
	}
}
