package conformance

// Pure-Go checks of the harness itself (no host needed): the hclspec
// converter, the Nomad-like decode pipeline against the cty-msgpack vectors
// in shared/vectors, the job/agent file readers, and the log-line checker.
// Run just these with: run.sh -run TestUnit

import (
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"conformancepb/hclspec"

	"github.com/zclconf/go-cty/cty"
)

func attrSpec(name, typ string, required bool) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Attr{Attr: &hclspec.Attr{Name: name, Type: typ, Required: required}}}
}

func objectSpec(attrs map[string]*hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Object{Object: &hclspec.Object{Attributes: attrs}}}
}

func defaultSpec(primary, def *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Default{Default: &hclspec.Default{Primary: primary, Default: def}}}
}

func literalSpec(v string) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: v}}}
}

// vectorSpec is the spec behind the "Nomad-like pipeline" vectors.
func vectorSpec() *hclspec.Spec {
	return objectSpec(map[string]*hclspec.Spec{
		"args":    attrSpec("", "list(string)", false),
		"command": attrSpec("", "string", true),
		"count":   attrSpec("", "number", false),
		"debug":   defaultSpec(attrSpec("debug", "bool", false), literalSpec("false")),
		"env":     attrSpec("", "map(string)", false),
		"extra":   attrSpec("", "any", false),
		"labels":  {Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Type: "string"}}},
		"mount": {Block: &hclspec.Spec_BlockList{BlockList: &hclspec.BlockList{
			Nested: objectSpec(map[string]*hclspec.Spec{
				"ro":     attrSpec("", "bool", false),
				"source": attrSpec("", "string", false),
			}),
		}}},
		"opts": {Block: &hclspec.Spec_BlockValue{BlockValue: &hclspec.Block{
			Nested: objectSpec(map[string]*hclspec.Spec{"level": attrSpec("", "string", false)}),
		}}},
	})
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// Vectors copied from /work/shared/vectors/cty-msgpack.txt (go-cty v1.12.1 +
// Nomad's hcl fork).
func TestUnitPipelineMatchesVectors(t *testing.T) {
	spec, err := ConvertSpec(vectorSpec())
	if err != nil {
		t.Fatalf("ConvertSpec: %v", err)
	}
	vars, err := TaskVariables(map[string]string{"NOMAD_TASK_DIR": "/local"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, json, msgpack string }{
		{"minimal", `{"command":"/bin/echo"}`,
			"89a461726773c0a7636f6d6d616e64a92f62696e2f6563686fa5636f756e74c0a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"},
		{"full", `{"args":["a","b"],"command":"${NOMAD_TASK_DIR}/run.sh","count":0.1,"debug":true,"env":{"A":"1","B":"2"},"extra":["x",1,true],"labels":[{"k":"v"}],"mount":[{"ro":true,"source":"/a"}],"opts":[{"level":"hi"}]}`,
			"89a46172677392a161a162a7636f6d6d616e64ad2f6c6f63616c2f72756e2e7368a5636f756e74a3302e31a56465627567c3a3656e7682a141a131a142a132a5657874726193a17801c3a66c6162656c7381a16ba176a56d6f756e749182a2726fc3a6736f75726365a22f61a46f70747381a56c6576656ca26869"},
		{"number 3 (int)", `{"command":"x","count":3}`,
			"89a461726773c0a7636f6d6d616e64a178a5636f756e7403a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"},
		{"number as string", `{"command":"x","count":"42"}`,
			"89a461726773c0a7636f6d6d616e64a178a5636f756e742aa56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"},
		{"extra object", `{"command":"x","extra":{"a":"s","z":1}}`,
			"89a461726773c0a7636f6d6d616e64a178a5636f756e74c0a56465627567c2a3656e76c0a5657874726182a161a173a17a01a66c6162656c73c0a56d6f756e7490a46f707473c0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := DecodeConfigJSON([]byte(tc.json), spec, vars)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			got, err := EncodeMsgpack(v)
			if err != nil {
				t.Fatalf("msgpack: %v", err)
			}
			if hex.EncodeToString(got) != tc.msgpack {
				t.Errorf("msgpack\n got  %x\n want %s", got, tc.msgpack)
			}
		})
	}

	t.Run("unknown key", func(t *testing.T) {
		_, err := DecodeConfigJSON([]byte(`{"command":"x","bogus":1}`), spec, vars)
		if err == nil || !strings.Contains(err.Error(), `"bogus"`) || !strings.Contains(err.Error(), "Invalid label") {
			t.Errorf("error %v, want Nomad's Invalid label naming \"bogus\"", err)
		}
	})
	t.Run("missing required", func(t *testing.T) {
		_, err := DecodeConfigJSON([]byte(`{}`), spec, vars)
		if err == nil || !strings.Contains(err.Error(), `The argument "command" is required`) {
			t.Errorf("error %v, want missing required argument command", err)
		}
	})
	t.Run("empty spec, empty config", func(t *testing.T) {
		empty, err := ConvertSpec(objectSpec(nil))
		if err != nil {
			t.Fatal(err)
		}
		v, err := DecodeConfig(map[string]interface{}{}, empty, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := EncodeMsgpack(v)
		if hex.EncodeToString(got) != "80" {
			t.Errorf("msgpack %x, want 80", got)
		}
	})
}

func TestUnitMsgpackPrimitives(t *testing.T) {
	big, _ := cty.ParseNumberVal("123456789012345678901234567890")
	cases := []struct {
		v    cty.Value
		want string
	}{
		{cty.NumberIntVal(5), "05"},
		{cty.NumberIntVal(-1), "ff"},
		{cty.NumberIntVal(200), "ccc8"},
		{cty.NumberIntVal(-200), "d1ff38"},
		{cty.NumberIntVal(70000), "ce00011170"},
		{cty.NumberFloatVal(1.5), "cb3ff8000000000000"},
		{cty.MustParseNumberVal("0.1"), "a3302e31"},
		{big, "be313233343536373839303132333435363738393031323334353637383930"},
		{cty.True, "c3"},
		{cty.StringVal("hi"), "a26869"},
		{cty.NullVal(cty.String), "c0"},
		{cty.ListVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")}), "92a161a162"},
		{cty.MapVal(map[string]cty.Value{"a": cty.StringVal("2"), "z": cty.StringVal("1")}), "82a161a132a17aa131"},
	}
	for _, tc := range cases {
		got, err := EncodeMsgpack(tc.v)
		if err != nil {
			t.Errorf("%#v: %v", tc.v, err)
			continue
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("%#v: got %x want %s", tc.v, got, tc.want)
		}
	}
}

// helloLikeSpec is a task spec of the shape the hello guest is expected to
// return.
func helloLikeSpec() *hclspec.Spec {
	return objectSpec(map[string]*hclspec.Spec{
		"greeting":  defaultSpec(attrSpec("greeting", "string", false), literalSpec(`"hello world"`)),
		"sleep":     defaultSpec(attrSpec("sleep", "number", false), literalSpec("0")),
		"exit_code": defaultSpec(attrSpec("exit_code", "number", false), literalSpec("0")),
	})
}

func TestUnitHelloLikeSpec(t *testing.T) {
	spec, err := ConvertSpec(helloLikeSpec())
	if err != nil {
		t.Fatalf("ConvertSpec: %v", err)
	}
	v, err := DecodeConfigJSON([]byte(`{"greeting":"hello"}`), spec, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := cty.ObjectVal(map[string]cty.Value{
		"greeting":  cty.StringVal("hello"),
		"sleep":     cty.NumberIntVal(0),
		"exit_code": cty.NumberIntVal(0),
	})
	if !v.RawEquals(want) {
		t.Errorf("decoded %#v, want %#v", v, want)
	}
	b, _ := EncodeMsgpack(v)
	// {"exit_code":0,"greeting":"hello","sleep":0}, keys sorted.
	wantHex := "83" + "a9" + hex.EncodeToString([]byte("exit_code")) + "00" +
		"a8" + hex.EncodeToString([]byte("greeting")) + "a5" + hex.EncodeToString([]byte("hello")) +
		"a5" + hex.EncodeToString([]byte("sleep")) + "00"
	if hex.EncodeToString(b) != wantHex {
		t.Errorf("msgpack %x, want %s", b, wantHex)
	}

	// Defaults apply to an empty config; a string number converts.
	v, err = DecodeConfigJSON([]byte(`{"sleep":"2"}`), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.GetAttr("greeting").AsString() != "hello world" || !v.GetAttr("sleep").RawEquals(cty.NumberIntVal(2)) {
		t.Errorf("decoded %#v", v)
	}

	// The hand-built msgpack used by the wrong-type test is byte-identical
	// to Nomad's when nothing is replaced.
	v, _ = DecodeConfigJSON([]byte(`{"greeting":"hello"}`), spec, nil)
	same := msgpackObjectWith(t, v, "greeting", mustHex(t, "a568656c6c6f"))
	if hex.EncodeToString(same) != wantHex {
		t.Errorf("msgpackObjectWith %x, want %s", same, wantHex)
	}
}

func TestUnitConverterRules(t *testing.T) {
	t.Run("attr in array needs a name", func(t *testing.T) {
		s := &hclspec.Spec{Block: &hclspec.Spec_Array{Array: &hclspec.Array{Values: []*hclspec.Spec{attrSpec("", "string", false)}}}}
		if _, err := ConvertSpec(s); err == nil {
			t.Errorf("unnamed attr in an array converted")
		}
		s.GetArray().Values[0] = attrSpec("a", "string", false)
		spec, err := ConvertSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		v, err := DecodeConfigJSON([]byte(`{"a":"x"}`), spec, nil)
		if err != nil || !v.RawEquals(cty.TupleVal([]cty.Value{cty.StringVal("x")})) {
			t.Errorf("tuple decode = %#v, %v", v, err)
		}
	})
	t.Run("default children get no implied name (as in Nomad)", func(t *testing.T) {
		s := objectSpec(map[string]*hclspec.Spec{"x": defaultSpec(attrSpec("", "string", false), literalSpec(`"d"`))})
		if _, err := ConvertSpec(s); err == nil {
			t.Errorf("Default with an unnamed primary Attr converted; Nomad rejects it")
		}
	})
	t.Run("nil spec", func(t *testing.T) {
		if _, err := ConvertSpec(nil); err == nil {
			t.Errorf("nil spec converted")
		}
	})
	t.Run("empty type is an error", func(t *testing.T) {
		if _, err := ConvertSpec(objectSpec(map[string]*hclspec.Spec{"a": attrSpec("", "", false)})); err == nil {
			t.Errorf("attr with empty type converted")
		}
	})
	t.Run("block_map needs labels", func(t *testing.T) {
		bm := &hclspec.Spec{Block: &hclspec.Spec_BlockMap{BlockMap: &hclspec.BlockMap{Nested: objectSpec(nil)}}}
		if _, err := ConvertSpec(objectSpec(map[string]*hclspec.Spec{"m": bm})); err == nil {
			t.Errorf("block_map without labels converted")
		}
		bm.GetBlockMap().Labels = []string{"name"}
		bm.GetBlockMap().Nested = objectSpec(map[string]*hclspec.Spec{"v": attrSpec("", "number", false)})
		spec, err := ConvertSpec(objectSpec(map[string]*hclspec.Spec{"m": bm}))
		if err != nil {
			t.Fatal(err)
		}
		v, err := DecodeConfigJSON([]byte(`{"m":{"a":{"v":1}}}`), spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := EncodeMsgpack(v)
		if hex.EncodeToString(got) != "81a16d81a16181a17601" {
			t.Errorf("block_map msgpack %x", got)
		}
	})
	t.Run("block_set", func(t *testing.T) {
		bs := &hclspec.Spec{Block: &hclspec.Spec_BlockSet{BlockSet: &hclspec.BlockSet{MaxItems: 1,
			Nested: objectSpec(map[string]*hclspec.Spec{"v": attrSpec("", "number", false)})}}}
		spec, err := ConvertSpec(objectSpec(map[string]*hclspec.Spec{"s": bs}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeConfigJSON([]byte(`{"s":[{"v":1},{"v":2}]}`), spec, nil); err == nil {
			t.Errorf("max_items 1 not enforced")
		}
	})
	t.Run("literal with functions", func(t *testing.T) {
		v, err := EvalLiteral(`upper("bash")`)
		if err != nil || !v.RawEquals(cty.StringVal("BASH")) {
			t.Errorf("upper literal = %#v, %v", v, err)
		}
		if _, err := EvalLiteral(`NOMAD_TASK_DIR`); err == nil {
			t.Errorf("a literal referring to a variable evaluated")
		}
	})
}

func TestUnitTypeExpressions(t *testing.T) {
	cases := map[string]cty.Type{
		"string":                            cty.String,
		"number":                            cty.Number,
		"bool":                              cty.Bool,
		"any":                               cty.DynamicPseudoType,
		"list(string)":                      cty.List(cty.String),
		"set(number)":                       cty.Set(cty.Number),
		"map(string)":                       cty.Map(cty.String),
		"list(map(string))":                 cty.List(cty.Map(cty.String)),
		"object({a=string, b=number})":      cty.Object(map[string]cty.Type{"a": cty.String, "b": cty.Number}),
		"tuple([string, number])":           cty.Tuple([]cty.Type{cty.String, cty.Number}),
		"map(object({ports=list(number)}))": cty.Map(cty.Object(map[string]cty.Type{"ports": cty.List(cty.Number)})),
	}
	for src, want := range cases {
		got, err := ParseTypeExpr(src)
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if !got.Equals(want) {
			t.Errorf("%q = %#v, want %#v", src, got, want)
		}
	}
	for _, bad := range []string{"", "strin", "list(", `"string"`, "list(string, number)"} {
		if ty, err := ParseTypeExpr(bad); err == nil {
			t.Errorf("%q parsed as %#v, want an error", bad, ty)
		}
	}
}

func TestUnitExampleFiles(t *testing.T) {
	repo := paths(t).Repo
	tasks, err := LoadJobTasks(filepath.Join(repo, "examples", "hello", "example.nomad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 {
		t.Fatalf("tasks = %v, want one", tasks)
	}
	jt := tasks[0]
	if jt.Job != "example" || jt.Group != "example" || jt.Task != "hello-world" || jt.Driver != "hello-world-example" {
		t.Errorf("task = %+v", jt)
	}
	spec, _ := ConvertSpec(helloLikeSpec())
	v, err := DecodeConfig(jt.Config, spec, nil)
	if err != nil || v.GetAttr("greeting").AsString() != "hello" {
		t.Errorf("example config decodes to %#v, %v", v, err)
	}

	cfg, args, found, err := LoadAgentPluginConfig(filepath.Join(repo, "examples", "hello", "agent.hcl"), agentPluginLabel)
	if err != nil || !found {
		t.Fatalf("agent.hcl: found=%v err=%v", found, err)
	}
	if len(cfg) != 1 || cfg["shell"] == nil {
		t.Errorf("agent plugin config = %v", cfg)
	}
	if strings.Join(args, " ") == "" || args[0] != "--guest" {
		t.Errorf("agent plugin args = %q", args)
	}
}

func TestUnitRuntimeInterpolation(t *testing.T) {
	m, err := ParseConfigSnippet(`
greeting = "hi ${NOMAD_TASK_NAME} on ${attr.kernel.name} $${not_a_var} ${env["NOMAD_JOB_NAME"]}"
sleep    = 1 + 1
nested {
  x = "y"
}
`)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ConvertSpec(objectSpec(map[string]*hclspec.Spec{
		"greeting": attrSpec("", "string", true),
		"sleep":    attrSpec("", "number", false),
		"nested": {Block: &hclspec.Spec_BlockList{BlockList: &hclspec.BlockList{
			Nested: objectSpec(map[string]*hclspec.Spec{"x": attrSpec("", "string", false)})}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	vars, err := TaskVariables(map[string]string{"NOMAD_TASK_NAME": "web", "NOMAD_JOB_NAME": "example"},
		map[string]string{"attr.kernel.name": "linux"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := DecodeConfig(m, spec, vars)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetAttr("greeting").AsString(); got != "hi web on linux ${not_a_var} example" {
		t.Errorf("greeting = %q", got)
	}
	if !v.GetAttr("sleep").RawEquals(cty.NumberIntVal(2)) {
		t.Errorf("sleep = %#v", v.GetAttr("sleep"))
	}
	if v.GetAttr("nested").LengthInt() != 1 {
		t.Errorf("nested = %#v", v.GetAttr("nested"))
	}
}

func TestUnitHCLStringQuoting(t *testing.T) {
	for _, s := range []string{`"; rm -rf / #`, "$(touch /tmp/x)", "`x`", `it's "q" \ $HOME %s`, "-n", "a\nb"} {
		m, err := ParseConfigSnippet("greeting = " + hclString(s))
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		spec, _ := ConvertSpec(helloLikeSpec())
		v, err := DecodeConfig(m, spec, nil)
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if got := v.GetAttr("greeting").AsString(); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
}

func TestUnitLogLineRules(t *testing.T) {
	good := []string{
		`plain text`,
		`[INFO] hello`,
		`{"@level":"info","@message":"task started","@timestamp":"2024-01-02T03:04:05.000000Z","@module":"x"}`,
		`{"@level":"WARN","@message":"m","@timestamp":"2024-01-02T03:04:05.123456+01:00"}`,
		`{"@level":"debug","@message":"no timestamp"}`,
	}
	bad := []string{
		`{"@level":"info","@message":5}`,
		`{"@level":3,"@message":"m"}`,
		`{"@level":"warning","@message":"m"}`,
		`{"@level":"info","@message":"m","@timestamp":"2024-01-02T03:04:05.123Z"}`,
		`{"@level":"info","@message":"m","@timestamp":"2024-01-02T03:04:05.123456789Z"}`,
		`{"@message":"m"}`,
	}
	for _, l := range good {
		if err := checkLogLine(l); err != nil {
			t.Errorf("%s: %v", l, err)
		}
	}
	for _, l := range bad {
		if err := checkLogLine(l); err == nil {
			t.Errorf("%s: accepted", l)
		}
	}
}

func TestUnitAPIVersionAndSemver(t *testing.T) {
	if !sameAPIVersion("v0.1.0", "0.1.0") || !sameAPIVersion("0.1", "v0.1.0") || sameAPIVersion("v0.2.0", "v0.1.0") {
		t.Errorf("sameAPIVersion")
	}
	for _, v := range []string{"0.1.0", "v1.2.3-dev", "1.0.0+abc"} {
		if !semverRE.MatchString(v) {
			t.Errorf("%q rejected", v)
		}
	}
	for _, v := range []string{"", "1.0", "latest", "1.0.0.0"} {
		if semverRE.MatchString(v) {
			t.Errorf("%q accepted", v)
		}
	}
}
