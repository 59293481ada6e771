//! From HCL text to the shape Nomad decodes, and from that shape's values
//! to cty values.
//!
//! Nomad never decodes a job's `config { }` block directly against the
//! driver's schema. The job parser first turns the block into a JSON-like
//! map (attributes become their values, nested blocks become lists of
//! objects, labelled blocks nest their bodies under their labels), and the
//! client later JSON-encodes that map and decodes it with HCL's JSON syntax
//! (NOMAD-PROTOCOL.md section 3.2). [`Json`] is that intermediate map; the
//! decoder in the parent module applies the schema to it with the JSON
//! syntax's rules, so that what is accepted, and how, is what Nomad does.

use std::collections::BTreeMap;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Expression, Value};

use super::value::{Dec, Val};

/// A JSON value as Nomad's job parser produces it.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Dec),
    /// A JSON string; HCL's JSON syntax reads it as a template.
    String(String),
    Array(Vec<Json>),
    /// Properties in order (duplicates are possible in JSON and kept).
    Object(Vec<(String, Json)>),
}

/// Converts a native-syntax body (the inside of a `config { }` block) into
/// the job parser's map. `path` names the body in errors.
///
/// The body comes from hcl-edit's parser, which keeps each number's source
/// text: literal numbers are read from it exactly, as cty reads them, not
/// through `f64`.
pub fn body_to_json(
    body: &hcl::edit::structure::Body,
    path: &str,
) -> Result<Vec<(String, Json)>, (String, String)> {
    use hcl::edit::structure::{BlockLabel, Structure};
    let ctx = function_context();
    let mut attrs: BTreeMap<String, Json> = BTreeMap::new();
    let mut blocks: Vec<(String, Vec<Json>)> = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let name = attr.key.as_str();
                let at = format!("{path}.{name}");
                if attrs.contains_key(name) {
                    return Err((
                        at,
                        format!("Attribute redefined; The argument {name:?} was already set."),
                    ));
                }
                let json = match literal_json(&attr.value) {
                    Some(j) => j,
                    None => expr_to_json(&Expression::from(attr.value.clone()), &ctx, &at)?,
                };
                attrs.insert(name.to_string(), json);
            }
            Structure::Block(block) => {
                let name = block.ident.as_str();
                let at = format!("{path}.{name}");
                let mut elem = Json::Object(body_to_json(&block.body, &at)?);
                for label in block.labels.iter().rev() {
                    let label = match label {
                        BlockLabel::Ident(i) => i.as_str().to_string(),
                        BlockLabel::String(s) => s.as_str().to_string(),
                    };
                    elem = Json::Object(vec![(label, Json::Array(vec![elem]))]);
                }
                match blocks.iter_mut().find(|(n, _)| n == name) {
                    Some((_, list)) => list.push(elem),
                    None => blocks.push((name.to_string(), vec![elem])),
                }
            }
        }
    }
    if let Some((name, _)) = blocks.iter().find(|(n, _)| attrs.contains_key(n)) {
        return Err((
            format!("{path}.{name}"),
            format!(
                "Unsupported block type; {name:?} is set as an argument; it cannot also be a block."
            ),
        ));
    }
    let mut out: Vec<(String, Json)> = attrs.into_iter().collect();
    out.extend(blocks.into_iter().map(|(n, l)| (n, Json::Array(l))));
    Ok(out)
}

/// A literal value (numbers, strings without templates, bools, null, and
/// arrays and objects of them) straight from the source, keeping each
/// number's exact text. None for anything that needs evaluating.
fn literal_json(expr: &hcl::edit::expr::Expression) -> Option<Json> {
    use hcl::edit::expr::{Expression as E, ObjectKey};
    Some(match expr {
        E::Null(_) => Json::Null,
        E::Bool(b) => Json::Bool(*b.value()),
        E::Number(n) => Json::Number(Dec::parse(n.as_repr()?.as_ref())?),
        E::String(s) => Json::String(s.value().clone()),
        E::Array(a) => Json::Array(a.iter().map(literal_json).collect::<Option<_>>()?),
        E::Object(o) => {
            let mut props = Vec::new();
            for (k, v) in o.iter() {
                let key = match k {
                    ObjectKey::Ident(i) => i.as_str().to_string(),
                    ObjectKey::Expression(E::String(s)) => s.value().clone(),
                    ObjectKey::Expression(_) => return None,
                };
                // Later duplicates win, as when HCL builds the object.
                props.retain(|(k, _): &(String, Json)| *k != key);
                props.push((key, literal_json(v.expr())?));
            }
            Json::Object(props)
        }
        _ => return None,
    })
}

/// Evaluates a job-file expression as the job parser does: with functions
/// but no variables. A string template that refers to variables (runtime
/// interpolation such as `${NOMAD_TASK_DIR}`) is kept as template text for
/// the client to interpolate when it decodes the config.
fn expr_to_json(expr: &Expression, ctx: &Context, at: &str) -> Result<Json, (String, String)> {
    match guarded(|| expr.evaluate(ctx)).map_err(|m| (at.to_string(), m))? {
        Ok(v) => value_to_json(&v).map_err(|m| (at.to_string(), m)),
        Err(err) => {
            if let (hcl::eval::ErrorKind::UndefinedVar(_), Expression::TemplateExpr(t)) =
                (err.kind(), expr)
                && let Some(text) = template_text(t)
            {
                return Ok(Json::String(text));
            }
            Err((at.to_string(), eval_message(err.kind())))
        }
    }
}

/// Runs an hcl-rs evaluation, turning a panic inside it into an error.
///
/// hcl-rs's integer arithmetic panics on a remainder by zero (`7 % 0`) and,
/// in debug builds, on overflow; a config must not take the host down, so
/// such an expression becomes an error naming the field instead. (The
/// panic message still reaches stderr through the default hook.)
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        "Invalid expression; the arithmetic failed (a remainder by zero or an integer overflow)"
            .to_string()
    })
}

/// Rebuilds a template's text so that the JSON syntax reads it back as the
/// same template: literal `${`/`%{` re-escaped, interpolations kept.
fn template_text(t: &hcl::TemplateExpr) -> Option<String> {
    let template = hcl::Template::from_expr(t).ok()?;
    let mut s = String::new();
    for element in template.elements() {
        match element {
            hcl::template::Element::Literal(lit) => {
                s.push_str(&lit.replace("${", "$${").replace("%{", "%%{"))
            }
            hcl::template::Element::Interpolation(i) => {
                s.push_str("${");
                s.push_str(&i.expr.to_string());
                s.push('}');
            }
            hcl::template::Element::Directive(_) => return None,
        }
    }
    Some(s)
}

pub fn value_to_json(v: &Value) -> Result<Json, String> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => Json::Number(number_to_dec(n)?),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(a) => Json::Array(a.iter().map(value_to_json).collect::<Result<_, _>>()?),
        Value::Object(o) => Json::Object(
            o.iter()
                .map(|(k, v)| value_to_json(v).map(|j| (k.clone(), j)))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn number_to_dec(n: &hcl::Number) -> Result<Dec, String> {
    if let Some(i) = n.as_i64() {
        return Ok(Dec::from_i64(i));
    }
    if let Some(u) = n.as_u64() {
        return Dec::parse(&u.to_string()).ok_or_else(|| format!("invalid number {u}"));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    Dec::from_f64(f).ok_or_else(|| format!("{f} is not a finite number"))
}

/// A cty value from an HCL value (functions' and literals' results): arrays
/// are tuples and objects are objects, as HCL's own evaluation types them.
pub fn value_to_val(v: &Value) -> Result<Val, String> {
    Ok(match v {
        Value::Null => Val::Null(super::value::Ty::Any),
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Number(number_to_dec(n)?),
        Value::String(s) => Val::string(s),
        Value::Array(a) => Val::Tuple(a.iter().map(value_to_val).collect::<Result<_, _>>()?),
        Value::Object(o) => Val::Object(
            o.iter()
                .map(|(k, v)| value_to_val(v).map(|v| (k.clone(), v)))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The value of a JSON expression (HCL JSON syntax's `Expression.Value`):
/// strings are templates evaluated against `ctx`; arrays are tuples and
/// objects are objects.
pub fn json_value(j: &Json, ctx: &Context) -> Result<Val, String> {
    Ok(match j {
        Json::Null => Val::Null(super::value::Ty::Any),
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(d) => Val::Number(d.clone()),
        Json::String(s) => template_value(s, ctx)?,
        Json::Array(a) => Val::Tuple(
            a.iter()
                .map(|j| json_value(j, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(props) => {
            let mut m = BTreeMap::new();
            for (k, v) in props {
                let key = match template_value(k, ctx)? {
                    Val::String(s) => s,
                    other => {
                        return Err(format!(
                            "Invalid object key; a string is required, not {}",
                            other.ty()
                        ));
                    }
                };
                m.insert(key, json_value(v, ctx)?);
            }
            Val::Object(m)
        }
    })
}

/// A JSON string read as a template. Text without template sequences is
/// the literal string.
fn template_value(s: &str, ctx: &Context) -> Result<Val, String> {
    if !s.contains("${") && !s.contains("%{") {
        return Ok(Val::string(s));
    }
    // JSON templates have no backslash escapes (the JSON string already
    // had them); hcl-rs's template parser processes them, so double them.
    let expr = hcl::TemplateExpr::QuotedString(s.replace('\\', "\\\\"));
    let template = hcl::Template::from_expr(&expr).map_err(|e| format!("Invalid template; {e}"))?;
    let elements = template.elements();
    // A template that is a single interpolation yields the interpolated
    // value itself (HCL's interpolation unwrapping).
    if let [hcl::template::Element::Interpolation(i)] = elements {
        let v = guarded(|| i.expr.evaluate(ctx))?.map_err(|e| eval_message(e.kind()))?;
        return value_to_val(&v);
    }
    let text = guarded(|| template.evaluate(ctx))?.map_err(|e| eval_message(e.kind()))?;
    Ok(Val::string(&text))
}

/// hcl-rs evaluation errors worded as HCL words them where they differ.
pub fn eval_message(kind: &hcl::eval::ErrorKind) -> String {
    match kind {
        hcl::eval::ErrorKind::UndefinedVar(name) => {
            format!(
                "Unknown variable; There is no variable named {:?}.",
                name.as_str()
            )
        }
        hcl::eval::ErrorKind::UndefinedFunc(name) => format!(
            "Call to unknown function; There is no function named {:?}.",
            name.to_string()
        ),
        other => format!("Invalid expression; {other}"),
    }
}

/// Variables a task config may interpolate (Nomad's task environment).
///
/// Every name is a top-level variable (dotted names such as
/// `attr.kernel.name` nest into objects), and all of them are also in the
/// `env` map, as Nomad offers them.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    env: BTreeMap<String, String>,
    node: BTreeMap<String, String>,
}

impl Vars {
    pub fn new() -> Self {
        Vars::default()
    }

    /// A task environment variable (`NOMAD_TASK_DIR`, user `env`, ...).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// A node attribute or meta value by its dotted name
    /// (`attr.kernel.name`, `meta.rack`, `node.datacenter`).
    pub fn node(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.node.insert(name.into(), value.into());
        self
    }

    /// The names templates can refer to at the top level.
    pub fn top_level_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .env
            .keys()
            .chain(self.node.keys())
            .filter_map(|k| k.split('.').next().map(str::to_string))
            .collect();
        if !self.is_empty() {
            names.push("env".into());
        }
        names.sort();
        names.dedup();
        names
    }

    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.node.is_empty()
    }

    pub(crate) fn context(&self) -> Result<Context<'static>, String> {
        let mut ctx = function_context();
        if self.is_empty() {
            return Ok(ctx);
        }
        let mut tree: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in self.env.iter().chain(self.node.iter()) {
            insert_dotted(&mut tree, k, v)?;
        }
        for (k, v) in tree {
            ctx.declare_var(k, v);
        }
        let env: hcl::Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        ctx.declare_var("env", Value::Object(env));
        Ok(ctx)
    }
}

fn insert_dotted(tree: &mut BTreeMap<String, Value>, key: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("variable {key:?} has an empty path element"));
    }
    let clash = || format!("variable {key:?} clashes with another");
    let (first, rest) = parts.split_first().ok_or_else(clash)?;
    if rest.is_empty() {
        if tree.contains_key(*first) {
            return Err(clash());
        }
        tree.insert(first.to_string(), Value::String(value.into()));
        return Ok(());
    }
    let mut cur = tree
        .entry(first.to_string())
        .or_insert_with(|| Value::Object(hcl::Map::new()));
    for (i, p) in rest.iter().enumerate() {
        let Value::Object(obj) = cur else {
            return Err(clash());
        };
        if i == rest.len() - 1 {
            if obj.contains_key(*p) {
                return Err(clash());
            }
            obj.insert(p.to_string(), Value::String(value.into()));
            return Ok(());
        }
        cur = obj
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(hcl::Map::new()));
    }
    Ok(())
}

/// An evaluation context with the functions Nomad offers in configs and
/// literals (NOMAD-PROTOCOL.md section 3.1).
pub fn function_context() -> Context<'static> {
    let mut ctx = Context::new();
    let any = || ParamType::Any;
    ctx.declare_func("lower", FuncDef::new(f_lower, [ParamType::String]));
    ctx.declare_func("upper", FuncDef::new(f_upper, [ParamType::String]));
    ctx.declare_func("strlen", FuncDef::new(f_strlen, [ParamType::String]));
    ctx.declare_func("length", FuncDef::new(f_length, [any()]));
    ctx.declare_func("abs", FuncDef::new(f_abs, [ParamType::Number]));
    ctx.declare_func("int", FuncDef::new(f_int, [ParamType::Number]));
    ctx.declare_func(
        "min",
        FuncDef::builder()
            .variadic_param(ParamType::Number)
            .build(f_min),
    );
    ctx.declare_func(
        "max",
        FuncDef::builder()
            .variadic_param(ParamType::Number)
            .build(f_max),
    );
    ctx.declare_func(
        "concat",
        FuncDef::builder()
            .variadic_param(ParamType::array_of(any()))
            .build(f_concat),
    );
    ctx.declare_func(
        "coalesce",
        FuncDef::builder().variadic_param(any()).build(f_coalesce),
    );
    ctx.declare_func("reverse", FuncDef::new(f_reverse, [any()]));
    ctx.declare_func(
        "substr",
        FuncDef::new(
            f_substr,
            [ParamType::String, ParamType::Number, ParamType::Number],
        ),
    );
    ctx.declare_func("hasindex", FuncDef::new(f_hasindex, [any(), any()]));
    ctx.declare_func("jsonencode", FuncDef::new(f_jsonencode, [any()]));
    ctx.declare_func(
        "jsondecode",
        FuncDef::new(f_jsondecode, [ParamType::String]),
    );
    ctx
}

fn arg_str(args: &FuncArgs, i: usize) -> String {
    args[i].as_str().unwrap_or_default().to_string()
}

fn arg_f64(args: &FuncArgs, i: usize) -> f64 {
    args[i].as_f64().unwrap_or(f64::NAN)
}

fn f_lower(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(arg_str(&args, 0).to_lowercase()))
}

fn f_upper(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(arg_str(&args, 0).to_uppercase()))
}

/// cty counts grapheme clusters; this counts Unicode scalar values, which
/// agrees for text without combining sequences.
fn f_strlen(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::from(arg_str(&args, 0).chars().count() as u64))
}

fn f_length(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Array(a) => Ok(Value::from(a.len() as u64)),
        Value::Object(o) => Ok(Value::from(o.len() as u64)),
        Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
        other => Err(format!(
            "collection must be a list, a map or a tuple, not {other}"
        )),
    }
}

fn num_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

fn f_abs(args: FuncArgs) -> Result<Value, String> {
    Ok(num_value(arg_f64(&args, 0).abs()))
}

fn f_int(args: FuncArgs) -> Result<Value, String> {
    Ok(num_value(arg_f64(&args, 0).trunc()))
}

fn f_min(args: FuncArgs) -> Result<Value, String> {
    let vals: Vec<f64> = args.iter().filter_map(Value::as_f64).collect();
    if vals.is_empty() {
        return Err("must pass at least one number".into());
    }
    Ok(num_value(vals.into_iter().fold(f64::INFINITY, f64::min)))
}

fn f_max(args: FuncArgs) -> Result<Value, String> {
    let vals: Vec<f64> = args.iter().filter_map(Value::as_f64).collect();
    if vals.is_empty() {
        return Err("must pass at least one number".into());
    }
    Ok(num_value(
        vals.into_iter().fold(f64::NEG_INFINITY, f64::max),
    ))
}

fn f_concat(args: FuncArgs) -> Result<Value, String> {
    let mut out = Vec::new();
    for a in args.iter() {
        if let Value::Array(items) = a {
            out.extend(items.iter().cloned());
        }
    }
    Ok(Value::Array(out))
}

fn f_coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| "no non-null arguments".to_string())
}

fn f_reverse(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Array(a) => Ok(Value::Array(a.iter().rev().cloned().collect())),
        other => Err(format!(
            "can only reverse list or tuple values, not {other}"
        )),
    }
}

fn f_substr(args: FuncArgs) -> Result<Value, String> {
    let s: Vec<char> = arg_str(&args, 0).chars().collect();
    let offset = arg_f64(&args, 1) as i64;
    let length = arg_f64(&args, 2) as i64;
    let len = s.len() as i64;
    let start = if offset < 0 { len + offset } else { offset }.clamp(0, len);
    let end = if length < 0 {
        len
    } else {
        (start + length).min(len)
    };
    Ok(Value::String(
        s[start as usize..end as usize].iter().collect(),
    ))
}

fn f_hasindex(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(match (&args[0], &args[1]) {
        (Value::Array(a), Value::Number(n)) => n.as_u64().is_some_and(|i| (i as usize) < a.len()),
        (Value::Object(o), Value::String(k)) => o.contains_key(k),
        _ => false,
    }))
}

fn f_jsonencode(args: FuncArgs) -> Result<Value, String> {
    serde_json::to_string(&args[0])
        .map(Value::String)
        .map_err(|e| e.to_string())
}

fn f_jsondecode(args: FuncArgs) -> Result<Value, String> {
    serde_json::from_str::<Value>(&arg_str(&args, 0)).map_err(|e| e.to_string())
}
