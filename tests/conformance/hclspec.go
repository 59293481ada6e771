package conformance

// Conversion of Nomad's hclspec protobuf schema into an hcldec.Spec, written
// for this harness from NOMAD-PROTOCOL.md §3.1 (the behaviour of Nomad's
// hclspecutils.Convert): the schema a plugin returns from ConfigSchema /
// TaskConfigSchema is turned into the spec Nomad decodes configs with.

import (
	"fmt"
	"reflect"
	"sort"

	"conformancepb/hclspec"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// specFunctions are the functions Nomad makes available to Literal
// expressions (and to config decoding): NOMAD-PROTOCOL.md §3.1.
func specFunctions() map[string]function.Function {
	return map[string]function.Function{
		"abs":        stdlib.AbsoluteFunc,
		"coalesce":   stdlib.CoalesceFunc,
		"concat":     stdlib.ConcatFunc,
		"hasindex":   stdlib.HasIndexFunc,
		"int":        stdlib.IntFunc,
		"jsondecode": stdlib.JSONDecodeFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"length":     stdlib.LengthFunc,
		"lower":      stdlib.LowerFunc,
		"max":        stdlib.MaxFunc,
		"min":        stdlib.MinFunc,
		"reverse":    stdlib.ReverseFunc,
		"strlen":     stdlib.StrlenFunc,
		"substr":     stdlib.SubstrFunc,
		"upper":      stdlib.UpperFunc,
	}
}

// ConvertSpec converts a plugin's hclspec into an hcldec.Spec. A nil spec is
// an error, as it is for Nomad's TaskConfigSchema path ("nil spec given").
func ConvertSpec(spec *hclspec.Spec) (hcldec.Spec, error) {
	if spec == nil {
		return nil, fmt.Errorf("nil spec given")
	}
	return convertSpec(spec, "", "root")
}

// convertSpec converts one node. impliedName is the key under which the node
// sits in its parent Object ("" elsewhere); path names the node in errors.
func convertSpec(spec *hclspec.Spec, impliedName, path string) (hcldec.Spec, error) {
	if spec == nil {
		return nil, fmt.Errorf("%s: missing spec", path)
	}
	switch {
	case spec.GetObject() != nil:
		return convertObject(spec.GetObject(), path)
	case spec.GetArray() != nil:
		return convertArray(spec.GetArray(), path)
	case spec.GetAttr() != nil:
		return convertAttr(spec.GetAttr(), impliedName, path)
	case spec.GetBlockValue() != nil:
		return convertBlock(spec.GetBlockValue(), impliedName, path)
	case spec.GetBlockAttrs() != nil:
		return convertBlockAttrs(spec.GetBlockAttrs(), impliedName, path)
	case spec.GetBlockList() != nil:
		b := spec.GetBlockList()
		return convertBlockList(b.GetName(), b.GetMinItems(), b.GetMaxItems(), b.GetNested(), false, impliedName, path)
	case spec.GetBlockSet() != nil:
		b := spec.GetBlockSet()
		return convertBlockList(b.GetName(), b.GetMinItems(), b.GetMaxItems(), b.GetNested(), true, impliedName, path)
	case spec.GetBlockMap() != nil:
		return convertBlockMap(spec.GetBlockMap(), impliedName, path)
	case spec.GetDefault() != nil:
		return convertDefault(spec.GetDefault(), path)
	case spec.GetLiteral() != nil:
		return convertLiteral(spec.GetLiteral(), path)
	default:
		return nil, fmt.Errorf("%s: spec has no member of its oneof set", path)
	}
}

func convertObject(o *hclspec.Object, path string) (hcldec.Spec, error) {
	out := hcldec.ObjectSpec{}
	keys := make([]string, 0, len(o.GetAttributes()))
	for k := range o.GetAttributes() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		child, err := convertSpec(o.GetAttributes()[k], k, path+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = child
	}
	return out, nil
}

func convertArray(a *hclspec.Array, path string) (hcldec.Spec, error) {
	out := hcldec.TupleSpec{}
	for i, v := range a.GetValues() {
		// Tuple members get no implied name.
		child, err := convertSpec(v, "", fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, child)
	}
	return out, nil
}

func pickName(explicit, implied string) string {
	if explicit != "" {
		return explicit
	}
	return implied
}

func convertAttr(a *hclspec.Attr, impliedName, path string) (hcldec.Spec, error) {
	name := pickName(a.GetName(), impliedName)
	if name == "" {
		return nil, fmt.Errorf("%s: attribute spec has no name (neither explicit nor implied)", path)
	}
	ty, err := ParseTypeExpr(a.GetType())
	if err != nil {
		return nil, fmt.Errorf("%s: attribute %q: %v", path, name, err)
	}
	return &hcldec.AttrSpec{Name: name, Type: ty, Required: a.GetRequired()}, nil
}

func convertBlock(b *hclspec.Block, impliedName, path string) (hcldec.Spec, error) {
	name := pickName(b.GetName(), impliedName)
	if name == "" {
		return nil, fmt.Errorf("%s: block spec has no name", path)
	}
	if b.GetNested() == nil {
		return nil, fmt.Errorf("%s: block %q has no nested spec", path, name)
	}
	nested, err := convertSpec(b.GetNested(), "", path+"{"+name+"}")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockSpec{TypeName: name, Required: b.GetRequired(), Nested: nested}, nil
}

func convertBlockAttrs(b *hclspec.BlockAttrs, impliedName, path string) (hcldec.Spec, error) {
	name := pickName(b.GetName(), impliedName)
	if name == "" {
		return nil, fmt.Errorf("%s: block_attrs spec has no name", path)
	}
	ty, err := ParseTypeExpr(b.GetType())
	if err != nil {
		return nil, fmt.Errorf("%s: block_attrs %q: %v", path, name, err)
	}
	return &hcldec.BlockAttrsSpec{TypeName: name, ElementType: ty, Required: b.GetRequired()}, nil
}

func convertBlockList(name string, min, max uint64, nestedSpec *hclspec.Spec, set bool, impliedName, path string) (hcldec.Spec, error) {
	name = pickName(name, impliedName)
	if name == "" {
		return nil, fmt.Errorf("%s: block list/set spec has no name", path)
	}
	if nestedSpec == nil {
		return nil, fmt.Errorf("%s: block list/set %q has no nested spec", path, name)
	}
	nested, err := convertSpec(nestedSpec, "", path+"{"+name+"}")
	if err != nil {
		return nil, err
	}
	if set {
		return &hcldec.BlockSetSpec{TypeName: name, MinItems: int(min), MaxItems: int(max), Nested: nested}, nil
	}
	return &hcldec.BlockListSpec{TypeName: name, MinItems: int(min), MaxItems: int(max), Nested: nested}, nil
}

func convertBlockMap(b *hclspec.BlockMap, impliedName, path string) (hcldec.Spec, error) {
	name := pickName(b.GetName(), impliedName)
	if name == "" {
		return nil, fmt.Errorf("%s: block_map spec has no name", path)
	}
	if len(b.GetLabels()) == 0 {
		return nil, fmt.Errorf("%s: block_map %q needs at least one label", path, name)
	}
	if b.GetNested() == nil {
		return nil, fmt.Errorf("%s: block_map %q has no nested spec", path, name)
	}
	nested, err := convertSpec(b.GetNested(), "", path+"{"+name+"}")
	if err != nil {
		return nil, err
	}
	return &hcldec.BlockMapSpec{TypeName: name, LabelNames: append([]string(nil), b.GetLabels()...), Nested: nested}, nil
}

func convertDefault(d *hclspec.Default, path string) (hcldec.Spec, error) {
	if d.GetPrimary() == nil || d.GetDefault() == nil {
		return nil, fmt.Errorf("%s: default spec needs both primary and default", path)
	}
	// Nomad gives neither side the implied name of the Default's key: a
	// primary Attr must name itself, or Nomad rejects the whole schema.
	primary, err := convertSpec(d.GetPrimary(), "", path+".primary")
	if err != nil {
		return nil, err
	}
	def, err := convertSpec(d.GetDefault(), "", path+".default")
	if err != nil {
		return nil, err
	}
	return &hcldec.DefaultSpec{Primary: primary, Default: def}, nil
}

func convertLiteral(l *hclspec.Literal, path string) (hcldec.Spec, error) {
	v, err := EvalLiteral(l.GetValue())
	if err != nil {
		return nil, fmt.Errorf("%s: literal %q: %v", path, l.GetValue(), err)
	}
	return &hcldec.LiteralSpec{Value: v}, nil
}

// EvalLiteral evaluates a Literal's native-syntax expression with functions
// only (no variables), as Nomad does.
func EvalLiteral(src string) (cty.Value, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(src), "<literal>", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	v, diags := expr.Value(&hcl.EvalContext{Functions: specFunctions()})
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return v, nil
}

// ParseTypeExpr parses an hclspec type expression ("string", "list(string)",
// "object({a=number})", "any", ...) the way Nomad does: the text is parsed as
// a native-syntax expression and evaluated in a context where the primitive
// type names are variables holding types and list/set/map/tuple/object are
// functions from types to types. An empty string is a parse error, as in
// Nomad.
func ParseTypeExpr(src string) (cty.Type, error) {
	expr, diags := hclsyntax.ParseExpression([]byte(src), "<type>", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilType, diags
	}
	v, diags := expr.Value(typeExprContext)
	if diags.HasErrors() {
		return cty.NilType, diags
	}
	if v.IsNull() {
		return cty.DynamicPseudoType, nil
	}
	if !v.Type().Equals(typeCapsule) {
		return cty.NilType, fmt.Errorf("invalid type expression %q: a type is required, not %s", src, v.Type().FriendlyName())
	}
	return typeOf(v), nil
}

// typeCapsule is a cty type whose values carry a cty.Type, so that type
// expressions can be evaluated as ordinary HCL expressions.
var typeCapsule = cty.Capsule("type", reflect.TypeOf(cty.NilType))

func typeVal(ty cty.Type) cty.Value { return cty.CapsuleVal(typeCapsule, &ty) }

func typeOf(v cty.Value) cty.Type { return *(v.EncapsulatedValue().(*cty.Type)) }

// typeConstructor builds a one-argument function (param of type paramType)
// whose result is a type computed by build.
func typeConstructor(paramName string, paramType cty.Type, build func(arg cty.Value) cty.Type) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: paramName, Type: paramType}},
		Type:   function.StaticReturnType(typeCapsule),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return typeVal(build(args[0])), nil
		},
	})
}

var typeExprContext = &hcl.EvalContext{
	Variables: map[string]cty.Value{
		"string": typeVal(cty.String),
		"number": typeVal(cty.Number),
		"bool":   typeVal(cty.Bool),
		"any":    typeVal(cty.DynamicPseudoType),
	},
	Functions: map[string]function.Function{
		"list": typeConstructor("element_type", typeCapsule, func(a cty.Value) cty.Type { return cty.List(typeOf(a)) }),
		"set":  typeConstructor("element_type", typeCapsule, func(a cty.Value) cty.Type { return cty.Set(typeOf(a)) }),
		"map":  typeConstructor("element_type", typeCapsule, func(a cty.Value) cty.Type { return cty.Map(typeOf(a)) }),
		"tuple": typeConstructor("element_types", cty.List(typeCapsule), func(a cty.Value) cty.Type {
			var elems []cty.Type
			for it := a.ElementIterator(); it.Next(); {
				_, e := it.Element()
				elems = append(elems, typeOf(e))
			}
			return cty.Tuple(elems)
		}),
		"object": typeConstructor("attribute_types", cty.Map(typeCapsule), func(a cty.Value) cty.Type {
			attrs := map[string]cty.Type{}
			for it := a.ElementIterator(); it.Next(); {
				k, e := it.Element()
				attrs[k.AsString()] = typeOf(e)
			}
			return cty.Object(attrs)
		}),
	},
}
