package conformance

// Building a task the way Nomad's client does before StartTask: the task ID,
// an allocation directory with Nomad's layout, logmon's FIFOs (opened for
// reading before the driver starts), the task environment, and the task
// config decoded from HCL through the plugin's own TaskConfigSchema.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"conformancepb/drivers"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/protobuf/types/known/durationpb"
)

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

const (
	exampleJob   = "example"
	exampleGroup = "example"
	exampleTask  = "hello-world"
)

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return hex.EncodeToString(b)
}

func newUUID(t testing.TB) string {
	h := randomHex(t, 16)
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
}

// Task is one task run prepared like Nomad prepares it.
type Task struct {
	ID, Name, AllocID, AllocDir string
	Env                         map[string]string
	Stdout, Stderr              *fifoReader
	Config                      *drivers.TaskConfig
}

// newTask lays out an allocation directory, creates and opens the log FIFOs
// and fills in a TaskConfig (without msgpack_driver_config).
func newTask(t *testing.T, name string) *Task {
	t.Helper()
	allocID := newUUID(t)
	// Nomad's task ID: <alloc_id>/<task_name>/<8 random hex chars>.
	id := fmt.Sprintf("%s/%s/%s", allocID, name, randomHex(t, 4))
	allocDir := filepath.Join(t.TempDir(), allocID)
	for _, d := range []string{
		"alloc/logs", "alloc/tmp", "alloc/data",
		name + "/local", name + "/secrets", name + "/tmp", name + "/private",
	} {
		if err := os.MkdirAll(filepath.Join(allocDir, d), 0o755); err != nil {
			t.Fatalf("mkdir: %v", err)
		}
	}
	logs := filepath.Join(allocDir, "alloc", "logs")
	tk := &Task{ID: id, Name: name, AllocID: allocID, AllocDir: allocDir}
	tk.Stdout = openFIFO(t, filepath.Join(logs, "."+name+".stdout.fifo"))
	tk.Stderr = openFIFO(t, filepath.Join(logs, "."+name+".stderr.fifo"))
	tk.Env = map[string]string{
		"NOMAD_ALLOC_DIR":      filepath.Join(allocDir, "alloc"),
		"NOMAD_TASK_DIR":       filepath.Join(allocDir, name, "local"),
		"NOMAD_SECRETS_DIR":    filepath.Join(allocDir, name, "secrets"),
		"NOMAD_ALLOC_ID":       allocID,
		"NOMAD_SHORT_ALLOC_ID": allocID[:8],
		"NOMAD_ALLOC_NAME":     fmt.Sprintf("%s.%s[0]", exampleJob, exampleGroup),
		"NOMAD_ALLOC_INDEX":    "0",
		"NOMAD_TASK_NAME":      name,
		"NOMAD_GROUP_NAME":     exampleGroup,
		"NOMAD_JOB_NAME":       exampleJob,
		"NOMAD_JOB_ID":         exampleJob,
		"NOMAD_NAMESPACE":      "default",
		"NOMAD_REGION":         "global",
		"NOMAD_DC":             "dc1",
		"NOMAD_CPU_LIMIT":      "100",
		"NOMAD_MEMORY_LIMIT":   "300",
		"NOMAD_PARENT_CGROUP":  "nomad.slice",
		// fs_isolation NONE: Nomad adds the agent's environment.
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root",
		"LANG": "C.UTF-8",
	}
	tk.Config = &drivers.TaskConfig{
		Id:        id,
		Name:      name,
		Env:       tk.Env,
		DeviceEnv: map[string]string{},
		Resources: &drivers.Resources{
			AllocatedResources: &drivers.AllocatedTaskResources{
				Cpu:    &drivers.AllocatedCpuResources{CpuShares: 100},
				Memory: &drivers.AllocatedMemoryResources{MemoryMb: 300},
			},
			LinuxResources: &drivers.LinuxResources{
				CpuShares:        100,
				MemoryLimitBytes: 300 << 20,
				PercentTicks:     0.01,
			},
		},
		AllocDir:      allocDir,
		StdoutPath:    tk.Stdout.Path,
		StderrPath:    tk.Stderr.Path,
		TaskGroupName: exampleGroup,
		JobName:       exampleJob,
		JobId:         exampleJob,
		AllocId:       allocID,
		Namespace:     "default",
		NodeName:      "conformance-node",
		NodeId:        newUUID(t),
	}
	return tk
}

// Vars are the variables Nomad offers to the task config decode.
func (tk *Task) Vars(t *testing.T) map[string]cty.Value {
	t.Helper()
	vars, err := TaskVariables(tk.Env, map[string]string{
		"attr.kernel.name": "linux",
		"node.unique.name": "conformance-node",
		"node.datacenter":  "dc1",
		"meta.rack":        "r1",
	})
	if err != nil {
		t.Fatalf("task variables: %v", err)
	}
	return vars
}

// decodeTaskConfig decodes an HCL `config {}` body (job-file syntax) for tk
// through the plugin's TaskConfigSchema, exactly as Nomad would, and returns
// the value and the msgpack bytes Nomad would send.
func (c *Configured) decodeTaskConfig(t *testing.T, tk *Task, hclBody string) (cty.Value, []byte, error) {
	t.Helper()
	m, err := ParseConfigSnippet(hclBody)
	if err != nil {
		t.Fatalf("parsing config snippet %q: %v", hclBody, err)
	}
	return c.decodeTaskConfigMap(t, tk, m)
}

func (c *Configured) decodeTaskConfigMap(t *testing.T, tk *Task, m map[string]interface{}) (cty.Value, []byte, error) {
	t.Helper()
	v, err := DecodeConfig(m, c.TaskSpec, tk.Vars(t))
	if err != nil {
		return cty.NilVal, nil, err
	}
	b, err := EncodeMsgpack(v)
	if err != nil {
		t.Fatalf("msgpack: %v", err)
	}
	return v, b, nil
}

// mustConfigure decodes hclBody into tk.Config.MsgpackDriverConfig.
func (c *Configured) mustConfigure(t *testing.T, tk *Task, hclBody string) cty.Value {
	t.Helper()
	v, b, err := c.decodeTaskConfig(t, tk, hclBody)
	if err != nil {
		t.Fatalf("decoding task config %q against TaskConfigSchema: %v", hclBody, err)
	}
	tk.Config.MsgpackDriverConfig = b
	return v
}

func (c *Configured) startTask(t *testing.T, tk *Task) *drivers.StartTaskResponse {
	t.Helper()
	resp, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	if err != nil {
		t.Fatalf("StartTask %s: %v", tk.ID, err)
	}
	// Whatever happens next, don't leave the task running.
	t.Cleanup(func() {
		_, _ = c.Driver.StopTask(rpcCtx(t, 10*time.Second), &drivers.StopTaskRequest{TaskId: tk.ID, Timeout: dur(0), Signal: "SIGKILL"})
		_, _ = c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true})
	})
	return resp
}

// waitTask calls WaitTask and fails unless it returns within limit.
func (c *Configured) waitTask(t *testing.T, id string, limit time.Duration) (*drivers.WaitTaskResponse, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := c.Driver.WaitTask(rpcCtx(t, limit), &drivers.WaitTaskRequest{TaskId: id})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("WaitTask %s (after %v, limit %v): %v", id, took.Round(time.Millisecond), limit, err)
	}
	if resp.GetResult() == nil {
		t.Fatalf("WaitTask %s: response without result (Nomad 1.6 would panic)", id)
	}
	return resp, took
}

// fifoReader is logmon's side of a task log FIFO: created 0600, opened for
// reading before StartTask (open blocks until the driver opens the write
// side), read until EOF.
type fifoReader struct {
	Path string

	mu     sync.Mutex
	buf    bytes.Buffer
	file   *os.File
	opened chan struct{}
	eof    chan struct{}
	err    error
}

func openFIFO(t *testing.T, path string) *fifoReader {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo %s: %v", path, err)
	}
	r := &fifoReader{Path: path, opened: make(chan struct{}), eof: make(chan struct{})}
	go r.run()
	t.Cleanup(func() {
		// A task that outlived its test (a failed stop or recovery) still
		// holds the write end: end it, so no sleeper survives the run.
		if r.WasOpened() && !r.WaitEOF(time.Second) {
			for _, pid := range fifoWriters(path) {
				t.Logf("killing leftover task process %d (still writing %s)", pid, filepath.Base(path))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		r.release()
	})
	return r
}

// fifoWriters lists processes other than plugin hosts that have path open.
func fifoWriters(path string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() || isHostPID(pid) {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && target == path {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func (r *fifoReader) run() {
	defer close(r.eof)
	f, err := os.OpenFile(r.Path, os.O_RDONLY, 0)
	if err != nil {
		r.setErr(err)
		close(r.opened)
		return
	}
	r.mu.Lock()
	r.file = f
	r.mu.Unlock()
	close(r.opened)
	chunk := make([]byte, 4096)
	for {
		n, err := f.Read(chunk)
		if n > 0 {
			r.mu.Lock()
			r.buf.Write(chunk[:n])
			r.mu.Unlock()
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			r.setErr(err)
			return
		}
	}
}

func (r *fifoReader) setErr(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

// Content is everything read so far.
func (r *fifoReader) Content() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// WaitContent waits until at least len(want) bytes have arrived (or EOF).
func (r *fifoReader) WaitContent(want string, limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if len(r.Content()) >= len(want) || r.AtEOF() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r.Content()
}

// WaitEOF reports whether every writer closed the FIFO within limit.
func (r *fifoReader) WaitEOF(limit time.Duration) bool {
	select {
	case <-r.eof:
		return true
	case <-time.After(limit):
		return false
	}
}

func (r *fifoReader) AtEOF() bool {
	select {
	case <-r.eof:
		return true
	default:
		return false
	}
}

// WasOpened reports whether a writer ever opened the FIFO.
func (r *fifoReader) WasOpened() bool {
	select {
	case <-r.opened:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.file != nil
	default:
		return false
	}
}

// release unblocks a reader still waiting in open (by opening and closing a
// write side) and closes the read side.
func (r *fifoReader) release() {
	for i := 0; i < 40; i++ {
		select {
		case <-r.opened:
			i = 40
		default:
			if w, err := os.OpenFile(r.Path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			select {
			case <-r.opened:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	r.mu.Lock()
	f := r.file
	r.mu.Unlock()
	if f != nil {
		f.Close()
	}
}
