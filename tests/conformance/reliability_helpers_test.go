package conformance

// Helpers for reliability_test.go: a host instance launched with extra
// arguments (its own --state-dir) that the test may SIGKILL, and /proc
// inspection of the supervisor and task processes it leaves behind. The
// launch itself (launchHost) also serves the nspawn and Triton tests.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"conformancepb/base"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
)

// killableHost is a configured plugin instance whose process the test may
// end with SIGKILL (as the OOM killer or a crash would), bypassing
// go-plugin's Kill.
type killableHost struct {
	*Configured
	Pid       int
	sigkilled atomic.Bool
}

// launchKillableHost is launchConfigured with extra host arguments (e.g.
// its own --state-dir), on a host the test may SIGKILL.
func launchKillableHost(t *testing.T, extraArgs ...string) *killableHost {
	t.Helper()
	p := requireArtifacts(t)
	return launchHost(t, p.Host, append(hostArgs(p), extraArgs...), nil, "", agentPluginConfig(t))
}

// launchHost starts the host binary with args through go-plugin as Nomad's
// plugin loader does (adjust, if not nil, may change the command first: its
// directory, environment or user) and runs Nomad's start-up sequence for
// the long-lived instance: PluginInfo (whose name must be driverName unless
// that is ""), ConfigSchema, SetConfig with cfg, TaskConfigSchema. The test
// may SIGKILL the process (killableHost.sigkill). Its cleanup runs the same
// checks as launchPlugin's (graceful exit within 2 s, process gone, stderr
// log lines Nomad can parse), except the graceful-exit check for an instance
// the test SIGKILLed on purpose. The reliability, nspawn and Triton tests
// launch their hosts with it.
func launchHost(t *testing.T, host string, args []string, adjust func(*exec.Cmd), driverName string, cfg map[string]interface{}) *killableHost {
	t.Helper()
	logs := &testLogWriter{t: t}
	stderr := &lockedBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "nomad",
		Level:  hclog.Trace,
		Output: logs,
	})
	cmd := exec.Command(host, args...)
	if adjust != nil {
		adjust(cmd)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  nomadHandshake,
		Plugins:          map[string]plugin.Plugin{"driver": driverPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		Stderr:           stderr,
	})
	pl := &Plugin{t: t, Client: client, logs: logs, stderr: stderr}
	h := &killableHost{Configured: &Configured{Plugin: pl}}
	t.Cleanup(func() {
		if h.sigkilled.Load() {
			// Releases go-plugin's side; its "failed to exit gracefully"
			// is expected for a process that is already dead.
			pl.Kill()
		} else {
			pl.Kill()
			if pl.RPC != nil && (pl.killDuration >= 2*time.Second || logs.Contains("plugin failed to exit gracefully")) {
				t.Errorf("plugin did not exit within 2 s of Controller.Shutdown (Kill took %v); go-plugin had to SIGKILL it", pl.killDuration)
			}
		}
		if !client.Exited() {
			t.Errorf("plugin process has not exited after Kill")
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
	rc := client.ReattachConfig()
	if rc == nil || rc.Pid <= 0 {
		t.Fatalf("go-plugin has no pid for the host process")
	}
	h.Pid = rc.Pid
	hostPIDs.Store(rc.Pid, true)
	d := raw.(*dispensed)
	pl.RPC, pl.Base, pl.Driver, pl.Conn = rpc, d.Base, d.Driver, d.Conn

	// Nomad's start-up sequence for the long-lived instance.
	info, err := pl.Base.PluginInfo(rpcCtx(t, 5*time.Second), &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("PluginInfo: %v", err)
	}
	if driverName != "" && info.GetName() != driverName {
		t.Fatalf("PluginInfo name = %q, want %q", info.GetName(), driverName)
	}
	h.Info = info
	h.ConfigSpec = h.configSpec(t)
	h.setConfig(t, cfg, true)
	h.TaskSpec = h.taskSpec(t)
	return h
}

// sigkill ends the host process with SIGKILL (no Controller.Shutdown, no
// chance to clean up) and waits until it is gone.
func (h *killableHost) sigkill(t *testing.T) {
	t.Helper()
	h.sigkilled.Store(true)
	if err := syscall.Kill(h.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL host pid %d: %v", h.Pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !h.Client.Exited() {
		if time.Now().After(deadline) {
			t.Fatalf("host pid %d: go-plugin did not see it exit within 10 s of SIGKILL", h.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if st, ok := readProcStat(h.Pid); !ok || st.State == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host pid %d still exists 10 s after SIGKILL", h.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStat is what the harness needs from /proc/<pid>/stat.
type procStat struct {
	State     byte
	StartTime uint64 // field 22, clock ticks since boot
}

func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// The command name (field 2) may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, false
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, false
	}
	return procStat{State: fields[0][0], StartTime: st}, true
}

// sameProcessAlive reports whether pid is still the process that had
// startTime (pids are reused) and has not exited (a zombie counts as gone).
func sameProcessAlive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	st, ok := readProcStat(pid)
	return ok && st.State != 'Z' && st.StartTime == startTime
}

// supervisorProc is a live task supervisor: a `nomad-driver-wasm
// __supervise <dir>` process, or a spare one (`__supervise --pooled`)
// that has since been handed <dir>.
type supervisorProc struct {
	Pid int
	Dir string
}

// supervisorsUnder lists live supervisor processes whose record directory
// is inside stateDir: those named by a started.json record there (spare
// supervisors get their directory over a socket, so their command line
// does not show it), and those started with the directory as an argument.
func supervisorsUnder(stateDir string) []supervisorProc {
	var found []supervisorProc
	seen := map[int]bool{}
	dirs, _ := os.ReadDir(stateDir)
	for _, d := range dirs {
		dir := filepath.Join(stateDir, d.Name())
		var rec supervisorRecord
		if readJSONFile(filepath.Join(dir, "started.json"), &rec) != nil {
			continue
		}
		if sameProcessAlive(rec.SupervisorPid, rec.SupervisorStartTime) && !seen[rec.SupervisorPid] {
			seen[rec.SupervisorPid] = true
			found = append(found, supervisorProc{Pid: rec.SupervisorPid, Dir: dir})
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() || seen[pid] {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a zombie (empty cmdline)
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		for i, a := range args {
			if a == "__supervise" && i+1 < len(args) && strings.HasPrefix(args[i+1], stateDir+string(filepath.Separator)) {
				if st, ok := readProcStat(pid); ok && st.State != 'Z' {
					found = append(found, supervisorProc{Pid: pid, Dir: args[i+1]})
				}
				break
			}
		}
	}
	return found
}

// supervisorRecord is a supervisor's started.json (host/src/supervisor.rs).
type supervisorRecord struct {
	Pid                 int    `json:"pid"`
	StartTime           uint64 `json:"start_time"`
	SupervisorPid       int    `json:"supervisor_pid"`
	SupervisorStartTime uint64 `json:"supervisor_start_time"`
}

// exitRecord is a supervisor's exited.json.
type exitRecord struct {
	Code   int `json:"code"`
	Signal int `json:"signal"`
}

func readJSONFile(path string, v interface{}) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// handleDriverState is the part of the host's TaskHandle.driver_state
// (JSON, host/src/tasks.rs HandleState) the harness reads.
type handleDriverState struct {
	Version     int      `json:"version"`
	MainProcess *string  `json:"main_process"`
	Processes   []string `json:"processes"`
	MainPid     *int     `json:"main_pid"`
}

// killLeftovers SIGKILLs every process a test left under stateDir: the
// task process groups first (so no task is orphaned), then the supervisors.
// extra are task pids (with start times) recorded by the test.
func killLeftovers(t *testing.T, stateDir string, extra map[int]uint64) {
	for pid, start := range extra {
		if sameProcessAlive(pid, start) {
			t.Logf("cleanup: killing leftover task process group %d", pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	sups := supervisorsUnder(stateDir)
	for _, s := range sups {
		var rec supervisorRecord
		if readJSONFile(filepath.Join(s.Dir, "started.json"), &rec) == nil && sameProcessAlive(rec.Pid, rec.StartTime) {
			t.Logf("cleanup: killing leftover task process group %d (supervisor %d)", rec.Pid, s.Pid)
			_ = syscall.Kill(-rec.Pid, syscall.SIGKILL)
			_ = syscall.Kill(rec.Pid, syscall.SIGKILL)
		}
	}
	if len(sups) > 0 {
		time.Sleep(200 * time.Millisecond)
	}
	for _, s := range supervisorsUnder(stateDir) {
		t.Logf("cleanup: killing leftover supervisor %d (%s)", s.Pid, s.Dir)
		_ = syscall.Kill(s.Pid, syscall.SIGKILL)
	}
}
