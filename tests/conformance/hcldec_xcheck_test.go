package conformance

// Cross-check of the host's Rust decoder (host/src/hcldec) against HCL's
// and go-cty's own code: every case below is decoded here with the real
// hcl/v2 + hcldec + go-cty through the harness's Nomad-like pipeline
// (jobconfig.go), and the result (msgpack bytes, or the diagnostics) is
// written to testdata/hcldec_xcheck.json. The Rust unit test
// `hcldec::tests::xcheck_against_go` decodes the same inputs with the same
// schemas and must produce the same bytes, or the same diagnostics.
//
// This test fails when the committed file differs from what Go produces
// now; regenerate it with XCHECK_WRITE=1 tests/conformance/run.sh -run TestXcheck
// and re-run the Rust test.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"conformancepb/hclspec"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	hcljson "github.com/hashicorp/hcl/v2/json"
)

// xcheckNode is one node of the flat WIT schema form (wit/driver.wit
// `spec-node`), as the Rust test reads it.
type xcheckNode struct {
	Kind     string        `json:"kind"`
	Name     string        `json:"name,omitempty"`
	Type     string        `json:"type,omitempty"`
	Required bool          `json:"required,omitempty"`
	Min      uint64        `json:"min,omitempty"`
	Max      uint64        `json:"max,omitempty"`
	Labels   []string      `json:"labels,omitempty"`
	Value    string        `json:"value,omitempty"`
	Fields   []xcheckField `json:"fields,omitempty"`
	Items    []uint32      `json:"items,omitempty"`
	Nested   uint32        `json:"nested,omitempty"`
	Primary  uint32        `json:"primary,omitempty"`
	Default  uint32        `json:"default,omitempty"`
}

type xcheckField struct {
	Name string `json:"name"`
	Node uint32 `json:"node"`
}

// xcheckDiag is one hcldec diagnostic, without its source position.
type xcheckDiag struct {
	Summary string `json:"summary"`
	Detail  string `json:"detail"`
}

type xcheckCase struct {
	Name    string            `json:"name"`
	Nodes   []xcheckNode      `json:"nodes"`
	HCL     string            `json:"hcl"`
	Vars    map[string]string `json:"vars,omitempty"`
	Msgpack string            `json:"msgpack,omitempty"`
	Errors  []xcheckDiag      `json:"errors,omitempty"`
}

// xt is a schema tree written conveniently; xcheckFlatten turns it into the
// flat node list (parents before children).
type xt struct {
	kind, name, typ, value string
	required               bool
	min, max               uint64
	labels                 []string
	fields                 []xtf
	items                  []*xt
	nested, primary, def   *xt
}

type xtf struct {
	name string
	node *xt
}

func xAttr(typ string) *xt               { return &xt{kind: "attr", typ: typ} }
func xReq(typ string) *xt                { return &xt{kind: "attr", typ: typ, required: true} }
func xNamed(name, typ string) *xt        { return &xt{kind: "attr", name: name, typ: typ} }
func xLit(v string) *xt                  { return &xt{kind: "literal", value: v} }
func xDef(p, d *xt) *xt                  { return &xt{kind: "default", primary: p, def: d} }
func xBlock(n *xt) *xt                   { return &xt{kind: "block", nested: n} }
func xReqBlock(n *xt) *xt                { return &xt{kind: "block", nested: n, required: true} }
func xBlockAttrs(typ string) *xt         { return &xt{kind: "block_attrs", typ: typ} }
func xList(min, max uint64, n *xt) *xt   { return &xt{kind: "block_list", min: min, max: max, nested: n} }
func xSet(min, max uint64, n *xt) *xt    { return &xt{kind: "block_set", min: min, max: max, nested: n} }
func xMap(labels []string, n *xt) *xt    { return &xt{kind: "block_map", labels: labels, nested: n} }
func xArray(items ...*xt) *xt            { return &xt{kind: "array", items: items} }
func xNamedBlock(name string, n *xt) *xt { return &xt{kind: "block", name: name, nested: n} }
func xNamedList(name string, n *xt) *xt  { return &xt{kind: "block_list", name: name, nested: n} }
func xObj(kv ...interface{}) *xt {
	o := &xt{kind: "object"}
	for i := 0; i+1 < len(kv); i += 2 {
		o.fields = append(o.fields, xtf{kv[i].(string), kv[i+1].(*xt)})
	}
	return o
}

func xcheckFlatten(root *xt) []xcheckNode {
	var nodes []xcheckNode
	var add func(t *xt) uint32
	add = func(t *xt) uint32 {
		idx := uint32(len(nodes))
		nodes = append(nodes, xcheckNode{})
		n := xcheckNode{Kind: t.kind, Name: t.name, Type: t.typ, Required: t.required,
			Min: t.min, Max: t.max, Labels: t.labels, Value: t.value}
		for _, f := range t.fields {
			n.Fields = append(n.Fields, xcheckField{f.name, add(f.node)})
		}
		for _, it := range t.items {
			n.Items = append(n.Items, add(it))
		}
		if t.nested != nil {
			n.Nested = add(t.nested)
		}
		if t.primary != nil {
			n.Primary = add(t.primary)
			n.Default = add(t.def)
		}
		nodes[idx] = n
		return idx
	}
	add(root)
	return nodes
}

// xcheckProto rebuilds Nomad's recursive hclspec from the flat list.
func xcheckProto(nodes []xcheckNode, i uint32) *hclspec.Spec {
	n := nodes[i]
	switch n.Kind {
	case "object":
		attrs := map[string]*hclspec.Spec{}
		for _, f := range n.Fields {
			attrs[f.Name] = xcheckProto(nodes, f.Node)
		}
		return &hclspec.Spec{Block: &hclspec.Spec_Object{Object: &hclspec.Object{Attributes: attrs}}}
	case "array":
		var vals []*hclspec.Spec
		for _, it := range n.Items {
			vals = append(vals, xcheckProto(nodes, it))
		}
		return &hclspec.Spec{Block: &hclspec.Spec_Array{Array: &hclspec.Array{Values: vals}}}
	case "attr":
		return &hclspec.Spec{Block: &hclspec.Spec_Attr{Attr: &hclspec.Attr{Name: n.Name, Type: n.Type, Required: n.Required}}}
	case "block":
		return &hclspec.Spec{Block: &hclspec.Spec_BlockValue{BlockValue: &hclspec.Block{Name: n.Name, Required: n.Required, Nested: xcheckProto(nodes, n.Nested)}}}
	case "block_attrs":
		return &hclspec.Spec{Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Name: n.Name, Type: n.Type, Required: n.Required}}}
	case "block_list":
		return &hclspec.Spec{Block: &hclspec.Spec_BlockList{BlockList: &hclspec.BlockList{Name: n.Name, MinItems: n.Min, MaxItems: n.Max, Nested: xcheckProto(nodes, n.Nested)}}}
	case "block_set":
		return &hclspec.Spec{Block: &hclspec.Spec_BlockSet{BlockSet: &hclspec.BlockSet{Name: n.Name, MinItems: n.Min, MaxItems: n.Max, Nested: xcheckProto(nodes, n.Nested)}}}
	case "block_map":
		return &hclspec.Spec{Block: &hclspec.Spec_BlockMap{BlockMap: &hclspec.BlockMap{Name: n.Name, Labels: n.Labels, Nested: xcheckProto(nodes, n.Nested)}}}
	case "default":
		return &hclspec.Spec{Block: &hclspec.Spec_Default{Default: &hclspec.Default{Primary: xcheckProto(nodes, n.Primary), Default: xcheckProto(nodes, n.Default)}}}
	case "literal":
		return &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: n.Value}}}
	}
	panic("unknown node kind " + n.Kind)
}

// The schemas of the cases.
func xcheckHelloTask() *xt {
	return xObj(
		"greeting", xDef(xNamed("greeting", "string"), xLit(`"Hello, World!"`)),
		"sleep", xAttr("number"),
		"exit_code", xAttr("number"),
	)
}

func xcheckHelloPlugin() *xt {
	return xObj("shell", xDef(xNamed("shell", "string"), xLit(`"bash"`)))
}

func xcheckVectorSpec() *xt {
	return xObj(
		"args", xAttr("list(string)"),
		"command", xReq("string"),
		"count", xAttr("number"),
		"debug", xDef(xNamed("debug", "bool"), xLit("false")),
		"env", xAttr("map(string)"),
		"extra", xAttr("any"),
		"labels", xBlockAttrs("string"),
		"mount", xList(0, 0, xObj("ro", xAttr("bool"), "source", xAttr("string"))),
		"opts", xBlock(xObj("level", xAttr("string"))),
	)
}

// A container-style schema: nested blocks, maps, lists of objects.
func xcheckContainer() *xt {
	return xObj(
		"image", xReq("string"),
		"args", xAttr("list(string)"),
		"environment", xAttr("map(string)"),
		"port_map", xAttr("list(map(number))"),
		"ports", xAttr("list(string)"),
		"cpu_hard_limit", xDef(xNamed("cpu_hard_limit", "bool"), xLit("false")),
		"memory_hard_limit", xAttr("number"),
		"bind", xList(0, 0, xObj(
			"from", xReq("string"),
			"to", xReq("string"),
			"readonly", xDef(xNamed("readonly", "bool"), xLit("true")),
		)),
		"auth", xBlock(xObj("username", xReq("string"), "password", xAttr("string"))),
		"logging", xBlock(xObj(
			"type", xAttr("string"),
			"config", xBlockAttrs("string"),
		)),
		"labels", xAttr("map(string)"),
		"devices", xAttr("list(object({host_path=string, container_path=string}))"),
		"tags", xAttr("set(string)"),
		"weights", xAttr("map(number)"),
		"extra", xAttr("any"),
		"options", xAttr("list(any)"),
	)
}

// The Triton driver's task config schema as its README documents it
// (shared/seeds): nested required blocks, block lists, block attrs.
func xcheckTriton() *xt {
	named := func(n, t string) *xt { return xNamed(n, t) }
	return xObj(
		"api_type", &xt{kind: "attr", name: "api_type", typ: "string", required: true},
		"docker_api", xNamedBlock("docker_api", xObj(
			"cmd", named("cmd", "list(string)"),
			"entrypoint", named("entrypoint", "list(string)"),
			"openstdin", named("openstdin", "bool"),
			"tty", named("tty", "bool"),
			"workingdir", named("workingdir", "string"),
			"hostname", named("hostname", "string"),
			"dns", named("dns", "list(string)"),
			"labels", &xt{kind: "block_attrs", name: "labels", typ: "string"},
			"log_config", xNamedBlock("log_config", xObj(
				"type", named("type", "string"),
				"config", &xt{kind: "block_attrs", name: "config", typ: "string"},
			)),
			"ports", xNamedBlock("ports", xObj(
				"tcp", named("tcp", "list(number)"),
				"udp", named("udp", "list(number)"),
				"publish_all", named("publish_all", "bool"),
			)),
			"image", &xt{kind: "block", name: "image", required: true, nested: xObj(
				"name", &xt{kind: "attr", name: "name", typ: "string", required: true},
				"tag", named("tag", "string"),
				"auto_pull", named("auto_pull", "bool"),
			)},
			"restart_policy", named("restart_policy", "string"),
		)),
		"cloud_api", xNamedBlock("cloud_api", xObj(
			"image", &xt{kind: "block", name: "image", required: true, nested: xObj(
				"name", named("name", "string"),
				"uuid", named("uuid", "string"),
				"version", named("version", "string"),
				"most_recent", named("most_recent", "bool"),
			)},
			"networks", xNamedList("networks", xObj(
				"name", named("name", "string"),
				"uuid", named("uuid", "string"),
			)),
			"user_data", named("user_data", "string"),
			"user_script", named("user_script", "string"),
		)),
		"tags", &xt{kind: "block_attrs", name: "tags", typ: "string"},
		"affinity", named("affinity", "list(string)"),
		"fwenabled", named("fwenabled", "bool"),
		"fwrules", &xt{kind: "block_attrs", name: "fwrules", typ: "string"},
		"cns", named("cns", "list(string)"),
		"package", &xt{kind: "block", name: "package", required: true, nested: xObj(
			"name", named("name", "string"),
			"uuid", named("uuid", "string"),
			"version", named("version", "string"),
		)},
	)
}

func xcheckCases() []xcheckCase {
	type c struct {
		name string
		spec *xt
		hcl  string
		vars map[string]string
	}
	vars := map[string]string{"NOMAD_TASK_DIR": "/alloc/t/local", "NOMAD_ALLOC_ID": "a1", "FOO": "bar"}
	list := []c{
		{"hello task empty", xcheckHelloTask(), ``, nil},
		{"hello task greeting", xcheckHelloTask(), `greeting = "hi"`, nil},
		{"hello task shell metacharacters", xcheckHelloTask(), `greeting = "\"; rm -rf / # $(id) ` + "`id`" + `"`, nil},
		{"hello task numbers as strings", xcheckHelloTask(), "sleep = \"5\"\nexit_code = \"3\"", nil},
		{"hello task float exit code", xcheckHelloTask(), "exit_code = 3.0\nsleep = 0.5", nil},
		{"hello task number greeting", xcheckHelloTask(), `greeting = 5`, nil},
		{"hello task bool greeting", xcheckHelloTask(), `greeting = true`, nil},
		{"hello task unknown key", xcheckHelloTask(), `shell = "fish"`, nil},
		{"hello task close misspelling", xcheckHelloTask(), `greting = "x"`, nil},
		{"hello task bad number", xcheckHelloTask(), `sleep = "soon"`, nil},
		{"hello task null", xcheckHelloTask(), `greeting = null`, nil},
		{"hello plugin empty", xcheckHelloPlugin(), ``, nil},
		{"hello plugin fish", xcheckHelloPlugin(), `shell = "fish"`, nil},
		{"vector minimal", xcheckVectorSpec(), `command = "/bin/echo"`, nil},
		{"vector full", xcheckVectorSpec(), `
args    = ["a", "b"]
command = "${NOMAD_TASK_DIR}/run.sh"
count   = 0.1
debug   = true
env     = { A = "1", B = "2" }
extra   = ["x", 1, true]
labels { k = "v" }
mount {
  ro     = true
  source = "/a"
}
opts { level = "hi" }
`, vars},
		{"vector missing required", xcheckVectorSpec(), `count = 1`, nil},
		{"vector two opts", xcheckVectorSpec(), "command = \"x\"\nopts { level = \"a\" }\nopts { level = \"b\" }", nil},
		{"vector block as attribute", xcheckVectorSpec(), "command = \"x\"\nopts = { level = \"hi\" }", nil},
		{"vector map attribute as block", xcheckVectorSpec(), "command = \"x\"\nenv { A = \"1\" }", nil},
		{"vector labels as attribute", xcheckVectorSpec(), "command = \"x\"\nlabels = { a = 1, b = true }", nil},
		{"vector numbers", xcheckVectorSpec(), "command = 12\ncount = 123456789012", nil},
		{"vector negative and exponent", xcheckVectorSpec(), "command = -1.5\ncount = 1e3", nil},
		{"vector big and small", xcheckVectorSpec(), "command = \"x\"\ncount = 1e30", nil},
		{"vector quoted big", xcheckVectorSpec(), "command = \"x\"\ncount = \"123456789012345678901234567890\"", nil},
		{"vector unquoted big", xcheckVectorSpec(), "command = \"x\"\ncount = 123456789012345678901234567890", nil},
		{"vector long decimal", xcheckVectorSpec(), "command = \"x\"\ncount = 3.14159265358979323846264338327950288", nil},
		{"vector int64 edges", xcheckVectorSpec(), "command = \"x\"\ncount = -9223372036854775809\nextra = [9223372036854775807, -9223372036854775808, 18446744073709551615, 18446744073709551616]", nil},
		{"vector arithmetic", xcheckVectorSpec(), "command = \"x\"\ncount = 1 + 0.1\nextra = [2 * 3, 10 / 4, -(5), 7 % 3]", nil},
		{"vector numbers in lists", xcheckVectorSpec(), "command = \"x\"\nextra = [0.1, 1e40, -0.0, 1.5e-7]\nargs = [1.25, 1e21]", nil},
		{"vector quoted object keys", xcheckVectorSpec(), "command = \"x\"\nextra = { \"a b\" = 1, c = { \"d.e\" = [] } }", nil},
		{"vector fraction", xcheckVectorSpec(), "command = \"x\"\ncount = -0.25", nil},
		{"vector string to bool", xcheckVectorSpec(), "command = \"x\"\ndebug = \"true\"\nmount { ro = \"1\" }\nmount { ro = \"false\" }", nil},
		{"vector bad bool", xcheckVectorSpec(), "command = \"x\"\ndebug = \"True\"", nil},
		{"vector number to bool", xcheckVectorSpec(), "command = \"x\"\ndebug = 1", nil},
		{"vector list from string", xcheckVectorSpec(), "command = \"x\"\nargs = \"a\"", nil},
		{"vector list with numbers", xcheckVectorSpec(), "command = \"x\"\nargs = [1, true, \"s\"]", nil},
		{"vector list with object", xcheckVectorSpec(), "command = \"x\"\nargs = [{a = 1}]", nil},
		{"vector extra object", xcheckVectorSpec(), "command = \"x\"\nextra = { z = 1, a = \"s\", m = [1, 2] }", nil},
		{"vector extra string", xcheckVectorSpec(), "command = \"x\"\nextra = \"s\"", nil},
		{"vector unknown variable", xcheckVectorSpec(), `command = "${NOMAD_TASK_DIR}/x"`, nil},
		{"vector misspelt variable", xcheckVectorSpec(), `command = "${NOMAD_TASKDIR}/x"`, vars},
		{"vector variable in number", xcheckVectorSpec(), "command = \"x\"\ncount = \"${NOMAD_ALLOC_ID}\"", vars},
		{"vector env variable", xcheckVectorSpec(), "command = \"${env[\"FOO\"]}-${NOMAD_ALLOC_ID}\"", vars},
		{"vector escaped template", xcheckVectorSpec(), `command = "$${FOO}"`, vars},
		{"vector nfc", xcheckVectorSpec(), "command = \"e\u0301\"", nil},
		{"vector heredoc", xcheckVectorSpec(), "command = <<EOT\nline one\n  line two\nEOT\n", nil},
		{"vector functions", xcheckVectorSpec(), "command = upper(\"abc\")\nargs = concat([\"a\"], [\"b\"])", nil},
		{"container full", xcheckContainer(), `
image = "redis:7"
args  = ["--port", "6379"]
environment = {
  FOO = "bar"
  N   = 5
}
port_map {
  db = 6379
}
ports = ["db"]
memory_hard_limit = "512"
bind {
  from = "/src"
  to   = "/dst"
}
bind {
  from     = "/a"
  to       = "/b"
  readonly = false
}
auth {
  username = "u"
}
logging {
  type = "syslog"
  config {
    tag = "x"
  }
}
labels = { "com.example" = "1" }
devices = [{ host_path = "/dev/fuse", container_path = "/dev/fuse" }]
tags = ["b", "a", "b"]
weights = { x = "1.5", y = 2 }
options = ["a", "b"]
`, nil},
		{"container bind missing to", xcheckContainer(), "image = \"x\"\nbind {\n  from = \"/a\"\n}", nil},
		{"container auth missing", xcheckContainer(), "image = \"x\"\nauth {\n  password = \"p\"\n}", nil},
		{"container device missing attribute", xcheckContainer(), "image = \"x\"\ndevices = [{ host_path = \"/dev/fuse\" }]", nil},
		{"container device extra attribute", xcheckContainer(), "image = \"x\"\ndevices = [{ host_path = \"/a\", container_path = \"/b\", mode = \"rw\" }]", nil},
		{"container weights bad", xcheckContainer(), "image = \"x\"\nweights = { x = \"heavy\" }", nil},
		{"container options mixed", xcheckContainer(), "image = \"x\"\noptions = [\"a\", 1]", nil},
		{"container options objects", xcheckContainer(), "image = \"x\"\noptions = [{ a = 1 }, { a = 2 }]", nil},
		{"container port_map as list attribute", xcheckContainer(), "image = \"x\"\nport_map = [{ db = \"6379\" }]", nil},
		{"container nested unknown", xcheckContainer(), "image = \"x\"\nlogging {\n  typo = \"x\"\n}", nil},
		{"triton cloud api", xcheckTriton(), `
api_type = "cloud_api"
cloud_api {
  image {
    name        = "base-64-lts"
    most_recent = true
  }
  networks {
    name = "Joyent-SDC-Public"
  }
  networks {
    uuid = "7ec5c5c4-0000-4000-8000-000000000001"
  }
  user_script = "#!/bin/sh\necho ${NOMAD_ALLOC_ID}"
}
tags {
  role = "web"
  tier = 2
}
affinity  = ["instance!=web*"]
fwenabled = "true"
fwrules {
  web = "FROM any TO all vms ALLOW tcp PORT 80"
}
cns = ["web"]
package {
  name = "g4-highcpu-1G"
}
`, vars},
		{"triton docker api", xcheckTriton(), `
api_type = "docker_api"
docker_api {
  cmd = ["/bin/sh", "-c", "sleep 600"]
  tty = false
  labels = {
    "com.example.app" = "web"
  }
  log_config {
    type = "syslog"
    config {
      syslog-address = "udp://10.0.0.1:514"
    }
  }
  ports {
    tcp = [80, "443"]
  }
  image {
    name      = "redis"
    tag       = "7"
    auto_pull = true
  }
}
package {
  name = "sample-512M"
}
`, nil},
		{"triton docker api without image", xcheckTriton(), "api_type = \"docker_api\"\ndocker_api {\n  tty = true\n}\npackage {\n  name = \"x\"\n}", nil},
		{"triton missing package and api type", xcheckTriton(), "cns = [\"a\"]", nil},
		{"block map one label", xObj("port", xMap([]string{"name"}, xObj("to", xReq("number"), "proto", xDef(xNamed("proto", "string"), xLit(`"tcp"`))))), `
port "http" {
  to = "80"
}
port "dns" {
  to    = 53
  proto = "udp"
}
`, nil},
		{"block map two labels", xObj("route", xMap([]string{"from", "to"}, xObj("weight", xAttr("number")))), `
route "a" "b" {
  weight = 1
}
route "a" "c" {
  weight = 2
}
route "z" "b" {}
`, nil},
		{"block map duplicate", xObj("port", xMap([]string{"name"}, xObj("to", xAttr("number")))), "port \"a\" {\n  to = 1\n}\nport \"a\" {\n  to = 2\n}", nil},
		{"block map empty", xObj("port", xMap([]string{"name"}, xObj("to", xAttr("number")))), ``, nil},
		{"block map missing label", xObj("port", xMap([]string{"name"}, xObj("to", xAttr("number")))), "port {\n  to = 1\n}", nil},
		{"block set of objects", xObj("tag", xSet(0, 0, xObj("k", xAttr("string"), "n", xAttr("number")))), `
tag {
  k = "b"
  n = 2
}
tag {
  k = "a"
  n = 10
}
tag {
  k = "b"
  n = 2
}
tag {
  k = "a"
  n = 9
}
`, nil},
		{"block set of numbers", xObj("n", xSet(0, 0, xNamed("v", "number"))), "n {\n  v = 10\n}\nn {\n  v = 9\n}\nn {\n  v = -1\n}", nil},
		{"block list limits low", xObj("m", xList(2, 3, xObj("a", xAttr("string")))), "m {\n  a = \"x\"\n}", nil},
		{"block list limits high", xObj("m", xList(0, 1, xObj("a", xAttr("string")))), "m {\n  a = \"x\"\n}\nm {\n  a = \"y\"\n}", nil},
		{"block list of any", xObj("m", xList(0, 0, xObj("a", xAttr("any")))), "m {\n  a = \"x\"\n}\nm {\n  a = 1\n}", nil},
		{"block list of any objects", xObj("m", xList(0, 0, xObj("a", xAttr("any")))), "m {\n  a = { x = 1 }\n}\nm {\n  a = { x = \"s\" }\n}", nil},
		{"required block missing", xObj("auth", xReqBlock(xObj("u", xAttr("string")))), ``, nil},
		{"named members", xObj("first", xNamedBlock("one", xObj("x", xAttr("string"))), "second", xNamedList("two", xObj("y", xAttr("number")))), "one {\n  x = \"a\"\n}\ntwo {\n  y = 1\n}", nil},
		{"tuple spec", xArray(xNamed("a", "string"), xNamed("b", "number"), xLit(`[1, "x"]`)), "a = \"s\"\nb = 2", nil},
		{"literal default types", xObj("n", xDef(xNamed("n", "string"), xLit("5")), "l", xDef(xNamed("l", "list(string)"), xLit(`["a", 2]`)), "o", xLit(`{ b = 1, a = "x" }`)), ``, nil},
		{"literal functions", xObj("s", xLit(`upper("abc")`), "n", xLit("max(1, 7) + length([1, 2])"), "j", xLit(`jsonencode({a = 1})`)), ``, nil},
		{"set attr of numbers", xObj("s", xAttr("set(number)")), `s = [3, "1", 2, 1]`, nil},
		{"map of lists", xObj("m", xAttr("map(list(string))")), `m = { a = ["x"], b = [] }`, nil},
		{"object attr", xObj("o", xAttr("object({name=string, port=number})")), `o = { name = "a", port = "80" }`, nil},
		{"tuple attr", xObj("t", xAttr("tuple([string, number, bool])")), `t = [1, "2", "true"]`, nil},
		{"tuple attr wrong length", xObj("t", xAttr("tuple([string, number])")), `t = ["a"]`, nil},
		{"empty object spec", xObj(), ``, nil},
		{"empty object spec with key", xObj(), `a = 1`, nil},
		{"deep nesting", xObj("a", xBlock(xObj("b", xBlock(xObj("c", xList(0, 0, xObj("d", xReq("string")))))))), "a {\n  b {\n    c {\n      d = \"x\"\n    }\n    c {}\n  }\n}", nil},
	}
	var out []xcheckCase
	for _, tc := range list {
		out = append(out, xcheckCase{Name: tc.name, Nodes: xcheckFlatten(tc.spec), HCL: tc.hcl, Vars: tc.vars})
	}
	return out
}

// xcheckDecode runs a case through the Nomad-like pipeline, keeping
// hcldec's diagnostics (not the harness's joined error text).
func xcheckDecode(t *testing.T, tc *xcheckCase) {
	spec, err := ConvertSpec(xcheckProto(tc.Nodes, 0))
	if err != nil {
		t.Fatalf("%s: converting the spec: %v", tc.Name, err)
	}
	cfg, err := ParseConfigSnippet(tc.HCL)
	if err != nil {
		t.Fatalf("%s: parsing the HCL: %v", tc.Name, err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		t.Fatalf("%s: %v", tc.Name, err)
	}
	f, diags := hcljson.Parse(buf.Bytes(), "")
	if diags.HasErrors() {
		t.Fatalf("%s: %v", tc.Name, diags)
	}
	vars, err := TaskVariables(tc.Vars, nil)
	if err != nil {
		t.Fatalf("%s: %v", tc.Name, err)
	}
	if len(tc.Vars) == 0 {
		vars = nil
	}
	ctx := &hcl.EvalContext{Variables: vars, Functions: specFunctions()}
	v, diags := hcldec.Decode(f.Body, spec, ctx)
	if diags.HasErrors() {
		for _, d := range diags {
			if d.Severity != hcl.DiagError {
				continue
			}
			tc.Errors = append(tc.Errors, xcheckDiag{Summary: d.Summary, Detail: xcheckStripPositions(d.Detail)})
		}
		sort.Slice(tc.Errors, func(i, j int) bool {
			a, b := tc.Errors[i], tc.Errors[j]
			return a.Summary+"\x00"+a.Detail < b.Summary+"\x00"+b.Detail
		})
		return
	}
	b, err := EncodeMsgpack(v)
	if err != nil {
		t.Fatalf("%s: encoding: %v", tc.Name, err)
	}
	tc.Msgpack = hex.EncodeToString(b)
}

// xcheckStripPositions drops the source positions hcldec puts in some
// details (they refer to the JSON text Nomad builds, not to anything a
// user wrote).
func xcheckStripPositions(detail string) string {
	for _, marker := range []string{" Previous definition was at ", " was already set at ", " Another was defined at "} {
		if i := strings.Index(detail, marker); i >= 0 {
			return detail[:i]
		}
	}
	return detail
}

func TestXcheckHcldecVectors(t *testing.T) {
	cases := xcheckCases()
	for i := range cases {
		xcheckDecode(t, &cases[i])
	}
	got, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "hcldec_xcheck.json")
	if os.Getenv("XCHECK_WRITE") == "1" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d cases)", path, len(cases))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it with XCHECK_WRITE=1 tests/conformance/run.sh -run TestXcheck", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: Go's hcldec now decodes the cases differently (or the cases changed); "+
			"regenerate it with XCHECK_WRITE=1 tests/conformance/run.sh -run TestXcheck and re-run "+
			"cargo test -p nomad-wasm-host --lib hcldec", path)
	}
	fmt.Printf("xcheck: %d cases match %s\n", len(cases), path)
}
