package conformance

// Bad inputs: each must be a clear gRPC error naming the field or problem,
// and the host must keep serving afterwards.

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"conformancepb/base"
	"conformancepb/drivers"

	"github.com/zclconf/go-cty/cty"
)

func TestUnknownTaskConfigKeyFailsDecode(t *testing.T) {
	c := launchConfigured(t)
	tk := newTask(t, exampleTask)
	// Nomad rejects this at hcldec decode ("Failed Validation"); StartTask
	// is never called.
	_, _, err := c.decodeTaskConfig(t, tk, `
greeting  = "hello"
bogus_key = 1
`)
	if err == nil {
		t.Fatalf("a config with bogus_key decoded without error; the TaskConfigSchema must not accept unknown keys")
	}
	if !strings.Contains(err.Error(), "bogus_key") {
		t.Errorf("decode error %q does not mention bogus_key", err)
	}
}

func TestWrongTypeOverGRPC(t *testing.T) {
	c := launchConfigured(t)
	tk := newTask(t, exampleTask)
	valid := c.mustConfigure(t, tk, `greeting = "hello"`)
	// Bypass hcldec: the same object, but greeting is the integer 5.
	tk.Config.MsgpackDriverConfig = msgpackObjectWith(t, valid, "greeting", []byte{0x05})
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with greeting = 5", "greeting")
	c.requireServing(t, "a wrongly typed task config")
}

func TestGarbageMsgpack(t *testing.T) {
	c := launchConfigured(t)
	tk := newTask(t, exampleTask)
	tk.Config.MsgpackDriverConfig = []byte{0xc1} // "never used" in msgpack
	_, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config})
	requireOrdinaryError(t, err, "StartTask with msgpack 0xc1", "")
	c.requireServing(t, "garbage msgpack")
	runHelloTask(t, c, "after garbage msgpack")
}

func TestUnsupportedShell(t *testing.T) {
	c := launchConfigured(t)
	_, b := c.encodeAgentConfig(t, map[string]interface{}{"shell": "zsh"})
	_, err := c.Base.SetConfig(rpcCtx(t, 5*time.Second), &base.SetConfigRequest{
		MsgpackConfig: b, NomadConfig: nomadConfig(), PluginApiVersion: driverAPIVersion,
	})
	requireOrdinaryError(t, err, `SetConfig(shell = "zsh")`, "shell")
	c.requireServing(t, "an unsupported shell")
	c.setConfig(t, agentPluginConfig(t), true)
	runHelloTask(t, c, "after a rejected SetConfig")
}

func TestUnknownTaskID(t *testing.T) {
	c := launchConfigured(t)
	id := newUUID(t) + "/" + exampleTask + "/" + randomHex(t, 4)
	ctx := func() context.Context { return rpcCtx(t, 5*time.Second) }
	_, err := c.Driver.WaitTask(ctx(), &drivers.WaitTaskRequest{TaskId: id})
	requireNotFound(t, err, "WaitTask(unknown id)", id)
	_, err = c.Driver.StopTask(ctx(), &drivers.StopTaskRequest{TaskId: id, Timeout: dur(time.Second)})
	requireNotFound(t, err, "StopTask(unknown id)", id)
	_, err = c.Driver.SignalTask(ctx(), &drivers.SignalTaskRequest{TaskId: id, Signal: "SIGTERM"})
	requireNotFound(t, err, "SignalTask(unknown id)", id)
	_, err = c.Driver.InspectTask(ctx(), &drivers.InspectTaskRequest{TaskId: id})
	requireNotFound(t, err, "InspectTask(unknown id)", id)
	c.requireServing(t, "calls for an unknown task id")
	runHelloTask(t, c, "after calls for an unknown task id")
}

// runHelloTask proves the host still runs tasks: a fresh valid config,
// started, waited for and destroyed.
func runHelloTask(t *testing.T, c *Configured, after string) {
	t.Helper()
	tk := newTask(t, exampleTask)
	c.mustConfigure(t, tk, `greeting = "hello"`)
	if _, err := c.Driver.StartTask(rpcCtx(t, 10*time.Second), &drivers.StartTaskRequest{Task: tk.Config}); err != nil {
		t.Fatalf("%s: StartTask with a valid config: %v", after, err)
	}
	w, _ := c.waitTask(t, tk.ID, 10*time.Second)
	requireResult(t, w, 0, 0)
	if got := tk.Stdout.WaitContent("hello\n", 2*time.Second); got != "hello\n" {
		t.Errorf("%s: stdout %q, want %q", after, got, "hello\n")
	}
	if _, err := c.Driver.DestroyTask(rpcCtx(t, 10*time.Second), &drivers.DestroyTaskRequest{TaskId: tk.ID, Force: true}); err != nil {
		t.Errorf("%s: DestroyTask: %v", after, err)
	}
}

// msgpackObjectWith encodes obj as Nomad would (a map with every attribute,
// keys sorted) but with the value of attribute name replaced by raw bytes.
func msgpackObjectWith(t *testing.T, obj cty.Value, name string, raw []byte) []byte {
	t.Helper()
	attrs := obj.Type().AttributeTypes()
	if _, ok := attrs[name]; !ok {
		t.Fatalf("config object has no attribute %q", name)
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	if len(keys) >= 16 {
		t.Fatalf("object too large for a fixmap")
	}
	buf.WriteByte(0x80 | byte(len(keys)))
	for _, k := range keys {
		if len(k) >= 32 {
			t.Fatalf("key %q too long for a fixstr", k)
		}
		buf.WriteByte(0xa0 | byte(len(k)))
		buf.WriteString(k)
		if k == name {
			buf.Write(raw)
			continue
		}
		b, err := EncodeMsgpack(obj.GetAttr(k))
		if err != nil {
			t.Fatalf("msgpack %s: %v", k, err)
		}
		buf.Write(b)
	}
	return buf.Bytes()
}
