package conformance

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"conformancepb/drivers"
)

// TestExecTask: a script-check style exec runs in the task's context (its
// environment and working directory) and reports output and exit code; a
// program the operator did not grant is refused, naming the grant.
func TestExecTask(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)
	resp, err := c.Driver.ExecTask(rpcCtx(t, 20*time.Second), &drivers.ExecTaskRequest{
		TaskId:  tk.ID,
		Command: []string{"bash", "-c", `echo "dir=$NOMAD_TASK_DIR"; pwd; echo oops >&2; exit 4`},
		Timeout: dur(10 * time.Second),
	})
	if err != nil {
		t.Fatalf("ExecTask: %v", err)
	}
	out := string(resp.GetStdout())
	if !strings.Contains(out, "dir="+tk.Env["NOMAD_TASK_DIR"]+"\n") {
		t.Errorf("exec stdout %q does not show the task's NOMAD_TASK_DIR %q", out, tk.Env["NOMAD_TASK_DIR"])
	}
	if !strings.Contains(out, "\n"+filepath.Join(tk.AllocDir, tk.Name)+"\n") {
		t.Errorf("exec stdout %q: working directory is not the task dir %q", out, filepath.Join(tk.AllocDir, tk.Name))
	}
	if got := string(resp.GetStderr()); got != "oops\n" {
		t.Errorf("exec stderr = %q, want %q", got, "oops\n")
	}
	if resp.GetResult().GetExitCode() != 4 {
		t.Errorf("exec exit code = %d, want 4", resp.GetResult().GetExitCode())
	}

	_, err = c.Driver.ExecTask(rpcCtx(t, 10*time.Second), &drivers.ExecTaskRequest{
		TaskId: tk.ID, Command: []string{"/usr/bin/env"}, Timeout: dur(5 * time.Second),
	})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--allow-exec /usr/bin/env") {
		t.Errorf("exec of an ungranted program: got %v, want PermissionDenied naming --allow-exec /usr/bin/env", err)
	}
	c.requireServing(t, "after a refused exec")
}

type execResult struct {
	stdout, stderr             string
	stdoutClosed, stderrClosed bool
	exited                     *drivers.ExitResult
}

func runExecStream(t *testing.T, c *Configured, first *drivers.ExecTaskStreamingRequest, stdin []string) execResult {
	t.Helper()
	stream, err := c.Driver.ExecTaskStreaming(rpcCtx(t, 30*time.Second))
	if err != nil {
		t.Fatalf("ExecTaskStreaming: %v", err)
	}
	if err := stream.Send(first); err != nil {
		t.Fatalf("send setup: %v", err)
	}
	for _, s := range stdin {
		if err := stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte(s)}}); err != nil {
			t.Fatalf("send stdin: %v", err)
		}
	}
	// A heartbeat (no setup, stdin or size) must be ignored.
	_ = stream.Send(&drivers.ExecTaskStreamingRequest{})
	if len(stdin) > 0 {
		_ = stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Close: true}})
	}
	var r execResult
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("exec stream: %v", err)
		}
		if o := m.GetStdout(); o != nil {
			r.stdout += string(o.GetData())
			r.stdoutClosed = r.stdoutClosed || o.GetClose()
		}
		if e := m.GetStderr(); e != nil {
			r.stderr += string(e.GetData())
			r.stderrClosed = r.stderrClosed || e.GetClose()
		}
		if m.GetExited() {
			r.exited = m.GetResult()
		}
	}
	_ = stream.CloseSend()
	if r.exited == nil {
		t.Fatalf("exec stream ended without an exited message (stdout %q)", r.stdout)
	}
	return r
}

// TestExecTaskStreaming: `nomad alloc exec` with pipes and with a tty.
func TestExecTaskStreaming(t *testing.T) {
	c := launchConfigured(t)
	tk, _ := startSleeper(t, c)

	t.Run("pipes", func(t *testing.T) {
		r := runExecStream(t, c, &drivers.ExecTaskStreamingRequest{Setup: &drivers.ExecTaskStreamingRequest_Setup{
			TaskId: tk.ID, Command: []string{"bash", "-c", "read x; echo got:$x; echo e >&2; exit 3"},
		}}, []string{"hi\n"})
		if r.stdout != "got:hi\n" || r.stderr != "e\n" {
			t.Errorf("stdout %q stderr %q, want %q and %q", r.stdout, r.stderr, "got:hi\n", "e\n")
		}
		if !r.stdoutClosed || !r.stderrClosed {
			t.Errorf("stream ends not marked: stdout closed %v, stderr closed %v", r.stdoutClosed, r.stderrClosed)
		}
		if r.exited.GetExitCode() != 3 {
			t.Errorf("exit code %d, want 3", r.exited.GetExitCode())
		}
	})

	t.Run("tty", func(t *testing.T) {
		r := runExecStream(t, c, &drivers.ExecTaskStreamingRequest{
			Setup:   &drivers.ExecTaskStreamingRequest_Setup{TaskId: tk.ID, Command: []string{"bash", "-c", "test -t 0 && echo is-a-tty; stty size"}, Tty: true},
			TtySize: &drivers.ExecTaskStreamingRequest_TerminalSize{Height: 30, Width: 100},
		}, nil)
		if !strings.Contains(r.stdout, "is-a-tty") || !strings.Contains(r.stdout, "30 100") {
			t.Errorf("tty exec output %q: want is-a-tty and the size 30 100", r.stdout)
		}
		if r.exited.GetExitCode() != 0 {
			t.Errorf("exit code %d, want 0", r.exited.GetExitCode())
		}
	})

	t.Run("no setup first", func(t *testing.T) {
		stream, err := c.Driver.ExecTaskStreaming(rpcCtx(t, 10*time.Second))
		if err != nil {
			t.Fatalf("ExecTaskStreaming: %v", err)
		}
		_ = stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte("x")}})
		_, err = stream.Recv()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "setup") {
			t.Errorf("exec without setup: got %v, want InvalidArgument mentioning setup", err)
		}
	})
	c.requireServing(t, "after exec")
}
