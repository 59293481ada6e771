package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"conformancepb/drivers"
)

// TestTaskRunsAsItsUser: a task with `user` set runs as that user (and so
// does an exec into it), while the host and its supervisor stay root.
func TestTaskRunsAsItsUser(t *testing.T) {
	c := launchConfigured(t)
	tk := newTask(t, exampleTask)
	tk.Config.User = "nobody"
	// Nomad's task directories are world-traversable; t.TempDir's are 0700.
	for d := tk.AllocDir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	c.mustConfigure(t, tk, `
greeting = "as nobody"
sleep    = 30
`)
	c.startTask(t, tk)
	if got := tk.Stdout.WaitContent("as nobody\n", 5*time.Second); got != "as nobody\n" {
		t.Fatalf("stdout FIFO = %q, want the greeting", got)
	}
	resp, err := c.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId:  tk.ID,
		Command: []string{"bash", "-c", "echo uid=$(id -u) gid=$(id -g)"},
		Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	if got := strings.TrimSpace(string(resp.GetStdout())); got != "uid=65534 gid=65534" {
		t.Errorf("exec in a task of user nobody reports %q, want uid=65534 gid=65534", got)
	}

	// An unknown user is a clear start error, not a silent root task.
	bad := newTask(t, exampleTask)
	bad.Config.User = "no-such-user-here"
	c.mustConfigure(t, bad, `greeting = "x"`)
	_, err = c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: bad.Config})
	if err == nil || !strings.Contains(err.Error(), "no-such-user-here") {
		t.Errorf("StartTask with an unknown user: got %v, want an error naming the user", err)
	}
	c.requireServing(t, "after an unknown user")
}
