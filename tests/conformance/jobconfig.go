package conformance

// From files to the bytes Nomad sends: job-file task `config {}` blocks and
// agent `plugin "x" { config {} }` blocks are turned into Go maps (as Nomad's
// jobspec / agent-config parsers do), then decoded the way Nomad's
// hclutils.ParseHclInterface does (NOMAD-PROTOCOL.md §3.2): JSON-encode the
// map, parse it with the HCL JSON parser, hcldec.Decode it against the
// plugin's spec with an EvalContext of functions + task-environment
// variables, and finally cty-msgpack the value with its own type (§4).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	ctymsgpack "github.com/zclconf/go-cty/cty/msgpack"
)

// JobTask is one task of a job file with its driver config as the map the
// jobspec parser hands to the client.
type JobTask struct {
	Job, Group, Task, Driver string
	Config                   map[string]interface{}
}

// LoadJobTasks reads an HCL2 job file and returns every job > group > task.
func LoadJobTasks(path string) ([]JobTask, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	body, err := parseNative(src, path)
	if err != nil {
		return nil, err
	}
	var out []JobTask
	for _, job := range blocksOf(body, "job") {
		for _, group := range blocksOf(job.Body, "group") {
			for _, task := range blocksOf(group.Body, "task") {
				jt := JobTask{Job: label(job), Group: label(group), Task: label(task)}
				if attr, ok := task.Body.Attributes["driver"]; ok {
					v, diags := attr.Expr.Value(nil)
					if diags.HasErrors() || v.Type() != cty.String {
						return nil, fmt.Errorf("%s: task %q: driver must be a string: %v", path, jt.Task, diags)
					}
					jt.Driver = v.AsString()
				}
				jt.Config = map[string]interface{}{}
				if cfg := blocksOf(task.Body, "config"); len(cfg) > 0 {
					if len(cfg) > 1 {
						return nil, fmt.Errorf("%s: task %q has %d config blocks", path, jt.Task, len(cfg))
					}
					if jt.Config, err = BodyToMap(cfg[0].Body); err != nil {
						return nil, fmt.Errorf("%s: task %q config: %v", path, jt.Task, err)
					}
				}
				out = append(out, jt)
			}
		}
	}
	return out, nil
}

// LoadAgentPluginConfig reads an agent config file and returns the `config`
// block of `plugin "<label>"` as a map. found is false if the plugin block
// is absent; a plugin block without a config block yields an empty map
// (Nomad then still decodes it, so defaults apply).
func LoadAgentPluginConfig(path, pluginLabel string) (cfg map[string]interface{}, args []string, found bool, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, false, err
	}
	body, err := parseNative(src, path)
	if err != nil {
		return nil, nil, false, err
	}
	for _, p := range blocksOf(body, "plugin") {
		if label(p) != pluginLabel {
			continue
		}
		if a, ok := p.Body.Attributes["args"]; ok {
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				return nil, nil, true, diags
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				args = append(args, e.AsString())
			}
		}
		cfgBlocks := blocksOf(p.Body, "config")
		if len(cfgBlocks) == 0 {
			return map[string]interface{}{}, args, true, nil
		}
		m, err := BodyToMap(cfgBlocks[0].Body)
		return m, args, true, err
	}
	return nil, nil, false, nil
}

// ParseConfigSnippet parses the inside of a `config { ... }` block written in
// HCL native syntax (as in a job file) into the jobspec map form.
func ParseConfigSnippet(src string) (map[string]interface{}, error) {
	body, err := parseNative([]byte(src), "<snippet>")
	if err != nil {
		return nil, err
	}
	return BodyToMap(body)
}

func parseNative(src []byte, filename string) (*hclsyntax.Body, error) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	return f.Body.(*hclsyntax.Body), nil
}

func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func label(b *hclsyntax.Block) string {
	if len(b.Labels) == 0 {
		return ""
	}
	return b.Labels[0]
}

// BodyToMap converts a config body into the map shape the jobspec parser
// produces: each attribute becomes its value; nested blocks of one type
// become a list of objects (a labelled block nests its body under its
// labels). Values are kept as JSON so numbers stay exact.
func BodyToMap(body *hclsyntax.Body) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	names := make([]string, 0, len(body.Attributes))
	for n := range body.Attributes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, err := exprToJSON(body.Attributes[n].Expr)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %v", n, err)
		}
		out[n] = v
	}
	for _, b := range body.Blocks {
		inner, err := BodyToMap(b.Body)
		if err != nil {
			return nil, fmt.Errorf("block %q: %v", b.Type, err)
		}
		var elem interface{} = inner
		for i := len(b.Labels) - 1; i >= 0; i-- {
			elem = map[string]interface{}{b.Labels[i]: []interface{}{elem}}
		}
		list, _ := out[b.Type].([]interface{})
		out[b.Type] = append(list, elem)
	}
	return out, nil
}

// exprToJSON evaluates a job-file expression. As in Nomad's jobspec, runtime
// interpolations (`${NOMAD_TASK_DIR}`, `${attr.kernel.name}`, ...) can't be
// resolved when the job is parsed: a string template that refers to
// variables is kept as template text, to be interpolated by the client when
// it decodes the config against the driver's spec.
func exprToJSON(expr hclsyntax.Expression) (json.RawMessage, error) {
	if len(expr.Variables()) > 0 {
		text, ok := templateText(expr)
		if !ok {
			return nil, fmt.Errorf("only string templates may refer to runtime variables in this harness")
		}
		return json.Marshal(text)
	}
	v, diags := expr.Value(&hcl.EvalContext{Functions: specFunctions()})
	if diags.HasErrors() {
		return nil, diags
	}
	return ctyjson.Marshal(v, v.Type())
}

// templateText rebuilds the source text of a string template so that the
// HCL JSON parser reads it back as the same template.
func templateText(expr hclsyntax.Expression) (string, bool) {
	tmpl, ok := expr.(*hclsyntax.TemplateExpr)
	if !ok {
		if wrap, isWrap := expr.(*hclsyntax.TemplateWrapExpr); isWrap {
			text, ok := interpolation(wrap.Wrapped)
			return text, ok
		}
		return "", false
	}
	var sb strings.Builder
	for _, part := range tmpl.Parts {
		if lit, isLit := part.(*hclsyntax.LiteralValueExpr); isLit && lit.Val.Type() == cty.String {
			s := lit.Val.AsString()
			s = strings.ReplaceAll(s, "${", "$${")
			s = strings.ReplaceAll(s, "%{", "%%{")
			sb.WriteString(s)
			continue
		}
		text, ok := interpolation(part)
		if !ok {
			return "", false
		}
		sb.WriteString(text)
	}
	return sb.String(), true
}

func interpolation(e hclsyntax.Expression) (string, bool) {
	trav, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok {
		return "", false
	}
	var sb strings.Builder
	for _, step := range trav.Traversal {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			sb.WriteString(s.Name)
		case hcl.TraverseAttr:
			sb.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			if s.Key.Type() != cty.String {
				return "", false
			}
			k, _ := json.Marshal(s.Key.AsString())
			sb.WriteString("[" + string(k) + "]")
		default:
			return "", false
		}
	}
	return "${" + sb.String() + "}", true
}

// TaskVariables builds the variables Nomad offers when decoding a task
// config: every environment variable by name (dotted names nest into
// objects, e.g. "attr.kernel.name" → attr.kernel.name), the flat `env` map,
// and the node attributes (`node.*`, `attr.*`, `meta.*`).
func TaskVariables(env, nodeAttrs map[string]string) (map[string]cty.Value, error) {
	tree := map[string]interface{}{}
	flat := map[string]cty.Value{}
	add := func(k, v string) error {
		parts := strings.Split(k, ".")
		cur := tree
		for i, p := range parts {
			if p == "" {
				return fmt.Errorf("variable %q has an empty path element", k)
			}
			if i == len(parts)-1 {
				if _, exists := cur[p]; exists {
					return fmt.Errorf("variable %q clashes with another", k)
				}
				cur[p] = v
				break
			}
			next, exists := cur[p]
			if !exists {
				n := map[string]interface{}{}
				cur[p] = n
				cur = n
				continue
			}
			n, isMap := next.(map[string]interface{})
			if !isMap {
				return fmt.Errorf("variable %q clashes with another", k)
			}
			cur = n
		}
		return nil
	}
	for _, k := range sortedKeys(env) {
		if err := add(k, env[k]); err != nil {
			return nil, err
		}
		flat[k] = cty.StringVal(env[k])
	}
	for _, k := range sortedKeys(nodeAttrs) {
		if err := add(k, nodeAttrs[k]); err != nil {
			return nil, err
		}
	}
	out := map[string]cty.Value{}
	for k, v := range tree {
		out[k] = toCty(v)
	}
	if len(flat) > 0 {
		out["env"] = cty.MapVal(flat)
	} else {
		out["env"] = cty.MapValEmpty(cty.String)
	}
	return out, nil
}

func toCty(v interface{}) cty.Value {
	switch t := v.(type) {
	case string:
		return cty.StringVal(t)
	case map[string]interface{}:
		attrs := map[string]cty.Value{}
		for k, e := range t {
			attrs[k] = toCty(e)
		}
		return cty.ObjectVal(attrs)
	}
	panic(fmt.Sprintf("unexpected %T", v))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// DecodeConfig is the client-side decode of a config map against a plugin's
// spec (Nomad's ParseHclInterface): map → JSON → HCL JSON body →
// hcldec.Decode with functions and vars (vars may be nil).
func DecodeConfig(cfg map[string]interface{}, spec hcldec.Spec, vars map[string]cty.Value) (cty.Value, error) {
	if cfg == nil {
		cfg = map[string]interface{}{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return cty.NilVal, fmt.Errorf("encoding config as JSON: %v", err)
	}
	return DecodeConfigJSON(buf.Bytes(), spec, vars)
}

// DecodeConfigJSON is DecodeConfig for a config already in JSON form.
func DecodeConfigJSON(src []byte, spec hcldec.Spec, vars map[string]cty.Value) (cty.Value, error) {
	f, diags := hcljson.Parse(src, "")
	if diags.HasErrors() {
		return cty.NilVal, formatDiags(diags)
	}
	ctx := &hcl.EvalContext{Variables: vars, Functions: specFunctions()}
	v, diags := hcldec.Decode(f.Body, spec, ctx)
	if diags.HasErrors() {
		return cty.NilVal, formatDiags(diags)
	}
	return v, nil
}

// formatDiags renders diagnostics the way Nomad reports config errors
// (summary: detail), including its renaming of the JSON parser's
// "Extraneous JSON object property" to "Invalid label".
func formatDiags(diags hcl.Diagnostics) error {
	var msgs []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		summary := d.Summary
		if summary == "Extraneous JSON object property" {
			summary = "Invalid label"
		}
		msgs = append(msgs, fmt.Sprintf("%s: %s", summary, d.Detail))
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// EncodeMsgpack is what Nomad puts on the wire: the value msgpack-encoded
// with its own type.
func EncodeMsgpack(v cty.Value) ([]byte, error) {
	return ctymsgpack.Marshal(v, v.Type())
}
