//! HCL config -> cty-msgpack, as Nomad produces it.
//!
//! Nomad decodes a task's `config { }` block (and an agent's
//! `plugin "x" { config { } }` block) against the schema the driver returns,
//! then hands the driver the value as go-cty msgpack. This module does the
//! same from HCL text, so that the CLI can validate and run configs and the
//! guest test harness can feed a guest exactly the bytes Nomad would:
//!
//! 1. The native-syntax body is turned into the JSON-like map Nomad's job
//!    parser produces ([`body`]): attributes are evaluated (functions, no
//!    variables; templates naming runtime variables are kept as text),
//!    nested blocks become lists of objects.
//! 2. The map is decoded against the schema with the rules of hcldec over
//!    HCL's JSON syntax, which is what Nomad's client runs: unknown names,
//!    missing required attributes and blocks, min/max items, cty's type
//!    conversions, defaults, literals, string templates interpolated with
//!    the task's variables ([`Vars`]).
//! 3. The resulting cty value is encoded as go-cty's msgpack with the
//!    value's own type ([`value`]).
//!
//! Messages are hcldec's own (summary; detail), prefixed with the path of
//! the field, e.g. `config.bind.from`. The bytes were checked against
//! go-cty and hcl/v2 (`tests/conformance/hcldec_xcheck_test.go`).
//!
//! Numbers written as literals keep their exact source text (hcl-edit
//! keeps it), so big integers and long decimals encode as go-cty encodes
//! them. Known gaps, outside what configs normally contain: the result of
//! arithmetic or of a function is computed in `f64`; `strlen`/`length`
//! count Unicode scalar values, not grapheme clusters.

pub mod body;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;

use hcl::Expression;
use hcl::eval::{Context, Evaluate};

use crate::runtime::bindings::nomad::driver::types::{Spec, SpecNode};
pub use body::Vars;
use body::{Json, body_to_json, json_value, value_to_val};
use value::{Ty, Val, convert, make_set, unify};

/// Most nodes a decode may visit (schemas are DAGs; this bounds sharing).
const MAX_VISITS: usize = 100_000;
/// Deepest schema nesting accepted.
const MAX_DEPTH: usize = 64;

/// One problem found while decoding: where, and what hcldec says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// The field, e.g. `config.bind.from` or `config.port["http"]`.
    pub path: String,
    /// hcldec's summary, e.g. `Missing required argument`.
    pub summary: String,
    /// hcldec's detail, e.g. `The argument "from" is required, but no
    /// definition was found.`
    pub detail: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}: {}", self.path, self.summary)
        } else {
            write!(f, "{}: {}; {}", self.path, self.summary, self.detail)
        }
    }
}

/// Why a config did not decode: every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub diags: Vec<Diag>,
}

impl DecodeError {
    fn one(path: impl Into<String>, summary: impl Into<String>, detail: impl Into<String>) -> Self {
        DecodeError {
            diags: vec![Diag {
                path: path.into(),
                summary: summary.into(),
                detail: detail.into(),
            }],
        }
    }
}

impl Diag {
    /// The summary as Nomad's client prints it: it renames the JSON
    /// syntax's "Extraneous JSON object property" to "Invalid label".
    pub fn nomad_summary(&self) -> &str {
        if self.summary == "Extraneous JSON object property" {
            "Invalid label"
        } else {
            &self.summary
        }
    }
}

impl DecodeError {
    /// The text Nomad's client gives for these diagnostics (its
    /// `formattedDiagnosticErrors`: `summary: detail`, with the renaming
    /// of [`Diag::nomad_summary`]), one per line, without field paths.
    /// `Display` instead prints HCL's own diagnostic form with the field
    /// path as the subject: `config.x: summary; detail`.
    pub fn nomad_message(&self) -> String {
        self.diags
            .iter()
            .map(|d| format!("{}: {}", d.nomad_summary(), d.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diags.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the body of a `config { }` block (HCL native syntax) against
/// `spec` and returns the cty-msgpack bytes Nomad would send. Templates may
/// not refer to variables; see [`decode_body_with`] to provide them.
pub fn decode_body(spec: &Spec, hcl: &str) -> Result<Vec<u8>, DecodeError> {
    decode_body_with(spec, hcl, &Vars::default())
}

/// [`decode_body`] with the task variables that `${...}` templates in string
/// values are interpolated with (Nomad's task environment).
pub fn decode_body_with(spec: &Spec, hcl: &str, vars: &Vars) -> Result<Vec<u8>, DecodeError> {
    decode_value(spec, hcl, vars).map(|v| v.to_msgpack())
}

/// The decoded cty value (what [`decode_body_with`] encodes).
pub fn decode_value(spec: &Spec, hcl: &str, vars: &Vars) -> Result<Val, DecodeError> {
    let body = hcl::edit::parser::parse_body(hcl).map_err(|e| syntax_error("config", &e))?;
    let map = body_to_json(&body, "config").map_err(|(path, msg)| split_message(&path, &msg))?;
    decode_json(spec, &Json::Object(map), vars)
}

/// Decodes a config already in the job parser's JSON form.
pub fn decode_json(spec: &Spec, config: &Json, vars: &Vars) -> Result<Val, DecodeError> {
    if spec.nodes.is_empty() {
        return Err(DecodeError::one(
            "schema",
            "Invalid schema",
            "the schema has no nodes (node 0 must be the root)",
        ));
    }
    let ctx = vars
        .context()
        .map_err(|m| DecodeError::one("variables", "Invalid variables", m))?;
    let mut d = Decoder {
        nodes: &spec.nodes,
        ctx,
        no_vars: vars.is_empty(),
        var_names: vars.top_level_names(),
        diags: Vec::new(),
        visits: 0,
    };
    let val = d.decode_body(0, "", config, "config", 0);
    match val {
        Ok(v) if d.diags.is_empty() => Ok(v),
        Ok(_) => Err(DecodeError { diags: d.diags }),
        Err(schema) => Err(DecodeError {
            diags: vec![schema],
        }),
    }
}

/// Finds, in a job file in HCL native syntax, the first `task` block (in
/// document order, at any depth) that has a `config { }` block, and returns
/// that task's name and config body. The error says what was missing.
pub fn task_config_from_job(
    job_hcl: &str,
) -> Result<(String, hcl::edit::structure::Body), DecodeError> {
    use hcl::edit::structure::{Block, BlockLabel, Body};
    let body = hcl::edit::parser::parse_body(job_hcl).map_err(|e| syntax_error("job", &e))?;
    fn label(b: &Block) -> String {
        match b.labels.first() {
            Some(BlockLabel::String(s)) => s.as_str().to_string(),
            Some(BlockLabel::Ident(i)) => i.as_str().to_string(),
            None => String::new(),
        }
    }
    /// (tasks seen, first task with a config).
    fn find(body: &Body, tasks: &mut usize) -> Option<(String, Body)> {
        for block in body.blocks() {
            if block.ident.as_str() == "task" {
                *tasks += 1;
                if let Some(cfg) = block.body.blocks().find(|b| b.ident.as_str() == "config") {
                    return Some((label(block), cfg.body.clone()));
                }
                continue;
            }
            if let Some(found) = find(&block.body, tasks) {
                return Some(found);
            }
        }
        None
    }
    let mut tasks = 0;
    match find(&body, &mut tasks) {
        Some(found) => Ok(found),
        None if tasks > 0 => Err(DecodeError::one(
            "job",
            "Missing config block",
            format!("None of the job's {tasks} task blocks has a config block."),
        )),
        None => Err(DecodeError::one(
            "job",
            "Missing task block",
            "No task block was found (expected job > group > task > config).",
        )),
    }
}

/// Decodes the config of the first task of a job file that has one.
pub fn decode_job_task(spec: &Spec, job_hcl: &str, vars: &Vars) -> Result<Vec<u8>, DecodeError> {
    let (_, cfg) = task_config_from_job(job_hcl)?;
    let map = body_to_json(&cfg, "config").map_err(|(path, msg)| split_message(&path, &msg))?;
    decode_json(spec, &Json::Object(map), vars).map(|v| v.to_msgpack())
}

fn syntax_error(path: &str, e: &dyn std::fmt::Display) -> DecodeError {
    let text = e.to_string().trim().to_string();
    // hcl-rs's wording of the most common mistake, two arguments on one
    // line, is "expected newline or eof"; say it as HCL does.
    let summary = if text.contains("expected newline or eof") {
        "Missing newline after argument; an argument definition must end with a newline \
         (HCL allows one argument per line)"
    } else {
        "Invalid HCL syntax"
    };
    DecodeError::one(path, summary, text)
}

fn split_message(path: &str, msg: &str) -> DecodeError {
    match msg.split_once("; ") {
        Some((s, d)) => DecodeError::one(path, s, d),
        None => DecodeError::one(path, msg, ""),
    }
}

/// What a body may contain, implied by the spec nodes that read it.
#[derive(Default, Debug)]
struct Schema {
    /// Attribute name -> required.
    attrs: BTreeMap<String, bool>,
    /// Block type -> label names.
    blocks: BTreeMap<String, Vec<String>>,
}

/// A body's content, split by the schema (hcl.BodyContent).
#[derive(Default, Debug)]
struct Content<'j> {
    attrs: BTreeMap<String, &'j Json>,
    blocks: Vec<BlockContent<'j>>,
}

#[derive(Debug)]
struct BlockContent<'j> {
    ty: String,
    labels: Vec<String>,
    body: &'j Json,
}

struct Decoder<'a> {
    nodes: &'a [SpecNode],
    ctx: Context<'static>,
    /// Decoding without variables: HCL then refuses any variable outright.
    no_vars: bool,
    /// Top-level variable names, for "Did you mean" hints.
    var_names: Vec<String>,
    diags: Vec<Diag>,
    visits: usize,
}

type SchemaResult<T> = Result<T, Diag>;

fn schema_diag(detail: String) -> Diag {
    Diag {
        path: "schema".into(),
        summary: "Invalid schema".into(),
        detail,
    }
}

fn pick_name(explicit: &str, implied: &str) -> String {
    if explicit.is_empty() {
        implied.to_string()
    } else {
        explicit.to_string()
    }
}

fn join(path: &str, name: &str) -> String {
    format!("{path}.{name}")
}

impl Decoder<'_> {
    fn diag(&mut self, path: &str, summary: impl Into<String>, detail: impl Into<String>) {
        self.diags.push(Diag {
            path: path.to_string(),
            summary: summary.into(),
            detail: detail.into(),
        });
    }

    /// An expression's evaluation failed: record it as HCL words it.
    fn eval_diag(&mut self, path: &str, message: &str) {
        if self.no_vars && message.starts_with("Unknown variable;") {
            self.diag(
                path,
                "Variables not allowed",
                "Variables may not be used here.",
            );
            return;
        }
        let (s, d) = message.split_once("; ").unwrap_or((message, ""));
        let mut detail = d.to_string();
        if s == "Unknown variable"
            && let Some(name) = d.split('"').nth(1)
        {
            let names: Vec<&String> = self.var_names.iter().collect();
            if let Some(hint) = name_suggestion(name, &names) {
                detail.push_str(&format!(" Did you mean {hint:?}?"));
            }
        }
        self.diag(path, s, detail);
    }

    fn node(&mut self, idx: u32, parent: Option<usize>, depth: usize) -> SchemaResult<&SpecNode> {
        let i = idx as usize;
        if let Some(p) = parent
            && i <= p
        {
            return Err(schema_diag(format!(
                "schema node {p} refers to node {idx}; children must come after their parent"
            )));
        }
        if i >= self.nodes.len() {
            return Err(schema_diag(format!(
                "schema refers to node {idx}, but there are {} nodes",
                self.nodes.len()
            )));
        }
        self.visits += 1;
        if self.visits > MAX_VISITS || depth > MAX_DEPTH {
            return Err(schema_diag(format!(
                "the schema is too large or too deep (more than {MAX_VISITS} node visits or {MAX_DEPTH} levels)"
            )));
        }
        Ok(&self.nodes[i])
    }

    /// hcldec.ImpliedSchema: the attributes and blocks the nodes reading
    /// one body ask for.
    fn implied_schema(
        &mut self,
        idx: u32,
        parent: Option<usize>,
        implied: &str,
        schema: &mut Schema,
        depth: usize,
    ) -> SchemaResult<()> {
        let node = self.node(idx, parent, depth)?.clone();
        let here = Some(idx as usize);
        let name_of = |explicit: &str, kind: &str| {
            let n = pick_name(explicit, implied);
            if n.is_empty() {
                Err(schema_diag(format!(
                    "schema node {idx}: {kind} has no name (neither its own nor its object key)"
                )))
            } else {
                Ok(n)
            }
        };
        match &node {
            SpecNode::Object(fields) => {
                for (k, child) in fields {
                    self.implied_schema(*child, here, k, schema, depth + 1)?;
                }
            }
            SpecNode::Array(items) => {
                for child in items {
                    self.implied_schema(*child, here, "", schema, depth + 1)?;
                }
            }
            SpecNode::Default(d) => {
                self.implied_schema(d.primary, here, "", schema, depth + 1)?;
                self.implied_schema(d.default, here, "", schema, depth + 1)?;
            }
            SpecNode::Attr(a) => {
                let n = name_of(&a.name, "an attribute")?;
                let req = schema.attrs.entry(n).or_insert(false);
                *req |= a.required;
            }
            SpecNode::Block(b) => {
                schema.blocks.insert(name_of(&b.name, "a block")?, vec![]);
            }
            SpecNode::BlockAttrs(a) => {
                schema.blocks.insert(name_of(&a.name, "a block")?, vec![]);
            }
            SpecNode::BlockList(b) | SpecNode::BlockSet(b) => {
                schema.blocks.insert(name_of(&b.name, "a block")?, vec![]);
            }
            SpecNode::BlockMap(b) => {
                if b.labels.is_empty() {
                    return Err(schema_diag(format!(
                        "schema node {idx} (block map {:?}) needs at least one label",
                        b.name
                    )));
                }
                schema
                    .blocks
                    .insert(name_of(&b.name, "a block")?, b.labels.clone());
            }
            SpecNode::Literal(_) => {}
        }
        Ok(())
    }

    /// hcldec's `decode(body, spec)`: the body's content by the spec's
    /// implied schema, then the spec applied to it.
    fn decode_body(
        &mut self,
        idx: u32,
        implied: &str,
        body: &Json,
        path: &str,
        depth: usize,
    ) -> SchemaResult<Val> {
        let mut schema = Schema::default();
        self.implied_schema(idx, None, implied, &mut schema, depth)?;
        let content = self.content(body, &schema, path);
        self.decode_spec(idx, None, implied, &content, path, depth)
    }

    /// HCL JSON syntax's `body.Content(schema)`.
    fn content<'j>(&mut self, body: &'j Json, schema: &Schema, path: &str) -> Content<'j> {
        let mut content = Content::default();
        let props = self.deep_attrs(body, path, None);
        let mut extraneous = Vec::new();
        for (name, value) in props {
            if name == "//" {
                continue;
            }
            if schema.attrs.contains_key(name) {
                if content.attrs.contains_key(name) {
                    self.diag(
                        &join(path, name),
                        "Duplicate argument",
                        format!("The argument {name:?} was already set."),
                    );
                    continue;
                }
                content.attrs.insert(name.clone(), value);
            } else if let Some(labels) = schema.blocks.get(name) {
                let at = join(path, name);
                self.unpack_block(
                    value,
                    name,
                    labels,
                    &mut Vec::new(),
                    &mut content.blocks,
                    &at,
                );
            } else {
                extraneous.push(name.clone());
            }
        }
        for (name, required) in &schema.attrs {
            if *required && !content.attrs.contains_key(name) {
                self.diag(
                    &join(path, name),
                    "Missing required argument",
                    format!("The argument {name:?} is required, but no definition was found."),
                );
            }
        }
        let suggestions: Vec<&String> = schema.attrs.keys().chain(schema.blocks.keys()).collect();
        for name in extraneous {
            let hint = name_suggestion(&name, &suggestions)
                .map(|s| format!(" Did you mean {s:?}?"))
                .unwrap_or_default();
            self.diag(
                &join(path, &name),
                "Extraneous JSON object property",
                format!("No argument or block type is named {name:?}.{hint}"),
            );
        }
        content
    }

    /// The properties of a body value: an object's, or those of every
    /// object in an array.
    fn deep_attrs<'j>(
        &mut self,
        v: &'j Json,
        path: &str,
        label: Option<&str>,
    ) -> Vec<(&'j String, &'j Json)> {
        let mut out = Vec::new();
        match v {
            Json::Null => {}
            Json::Object(props) => out.extend(props.iter().map(|(k, v)| (k, v))),
            Json::Array(items) => {
                for item in items {
                    match item {
                        Json::Object(props) => out.extend(props.iter().map(|(k, v)| (k, v))),
                        _ => {
                            let detail = match label {
                                Some(l) => format!(
                                    "A JSON object is required here, to specify {l} labels for this block."
                                ),
                                None => "A JSON object is required here, to define arguments and child blocks.".to_string(),
                            };
                            self.diag(path, "Incorrect JSON value type", detail);
                        }
                    }
                }
            }
            _ => {
                let detail = match label {
                    Some(l) => format!(
                        "Either a JSON object or JSON array of objects is required here, to specify {l} labels for this block."
                    ),
                    None => "Either a JSON object or JSON array of objects is required here, to define arguments and child blocks.".to_string(),
                };
                self.diag(path, "Incorrect JSON value type", detail);
            }
        }
        out
    }

    fn unpack_block<'j>(
        &mut self,
        v: &'j Json,
        ty: &str,
        labels_left: &[String],
        labels_used: &mut Vec<String>,
        blocks: &mut Vec<BlockContent<'j>>,
        path: &str,
    ) {
        if let Some((label, rest)) = labels_left.split_first() {
            let props = self.deep_attrs(v, path, Some(label));
            if props.is_empty() {
                self.diag(
                    path,
                    "Missing block label",
                    format!(
                        "At least one object property is required, whose name represents the {ty} block's {label}."
                    ),
                );
                return;
            }
            for (key, value) in props {
                labels_used.push(key.clone());
                let at = format!("{path}[{key:?}]");
                self.unpack_block(value, ty, rest, labels_used, blocks, &at);
                labels_used.pop();
            }
            return;
        }
        match v {
            Json::Null => {}
            Json::Object(_) => blocks.push(BlockContent {
                ty: ty.to_string(),
                labels: labels_used.clone(),
                body: v,
            }),
            Json::Array(items) => {
                for item in items {
                    blocks.push(BlockContent {
                        ty: ty.to_string(),
                        labels: labels_used.clone(),
                        body: item,
                    });
                }
            }
            _ => self.diag(
                path,
                "Incorrect JSON value type",
                format!(
                    "Either a JSON object or a JSON array is required, representing the contents of one or more {ty:?} blocks."
                ),
            ),
        }
    }

    fn decode_spec(
        &mut self,
        idx: u32,
        parent: Option<usize>,
        implied: &str,
        content: &Content<'_>,
        path: &str,
        depth: usize,
    ) -> SchemaResult<Val> {
        let node = self.node(idx, parent, depth)?.clone();
        let here = Some(idx as usize);
        match &node {
            SpecNode::Object(fields) => {
                let mut out = BTreeMap::new();
                let mut sorted: Vec<&(String, u32)> = fields.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, child) in sorted {
                    let v = self.decode_spec(*child, here, k, content, path, depth + 1)?;
                    out.insert(k.clone(), v);
                }
                Ok(Val::Object(out))
            }
            SpecNode::Array(items) => {
                let mut out = Vec::new();
                for child in items {
                    out.push(self.decode_spec(*child, here, "", content, path, depth + 1)?);
                }
                Ok(Val::Tuple(out))
            }
            SpecNode::Attr(a) => {
                let name = pick_name(&a.name, implied);
                let ty = parse_type(&a.type_expr).map_err(|m| {
                    schema_diag(format!("schema node {idx} (attribute {name:?}): {m}"))
                })?;
                let at = join(path, &name);
                let Some(expr) = content.attrs.get(&name) else {
                    return Ok(Val::Null(ty));
                };
                let val = match json_value(expr, &self.ctx) {
                    Ok(v) => v,
                    Err(m) => {
                        self.eval_diag(&at, &m);
                        return Ok(Val::Null(ty));
                    }
                };
                match convert(val, &ty) {
                    Ok(v) => Ok(v),
                    Err(m) => {
                        self.diag(
                            &at,
                            "Incorrect attribute value type",
                            format!("Inappropriate value for attribute {name:?}: {m}."),
                        );
                        Ok(Val::Null(ty))
                    }
                }
            }
            SpecNode::Block(b) => {
                let name = pick_name(&b.name, implied);
                let at = join(path, &name);
                let found: Vec<&BlockContent> =
                    content.blocks.iter().filter(|c| c.ty == name).collect();
                if found.len() > 1 {
                    self.diag(
                        &at,
                        format!("Duplicate {name} block"),
                        format!("Only one block of type {name:?} is allowed."),
                    );
                }
                match found.first() {
                    None => {
                        if b.required {
                            self.diag(
                                &at,
                                format!("Missing {name} block"),
                                format!("A block of type {name:?} is required here."),
                            );
                        }
                        Ok(Val::Null(Ty::Any))
                    }
                    Some(block) => self.decode_body(b.nested, "", block.body, &at, depth + 1),
                }
            }
            SpecNode::BlockAttrs(a) => {
                let name = pick_name(&a.name, implied);
                let at = join(path, &name);
                let ety = parse_type(&a.type_expr)
                    .map_err(|m| schema_diag(format!("schema node {idx} (block {name:?}): {m}")))?;
                let found: Vec<&BlockContent> =
                    content.blocks.iter().filter(|c| c.ty == name).collect();
                let Some(block) = found.first() else {
                    if a.required {
                        self.diag(
                            &at,
                            format!("Missing {name} block"),
                            format!("A block of type {name:?} is required here."),
                        );
                    }
                    return Ok(Val::Null(Ty::Map(Box::new(ety))));
                };
                if found.len() > 1 {
                    self.diag(
                        &at,
                        format!("Duplicate {name} block"),
                        format!("Only one block of type {name:?} is allowed."),
                    );
                }
                let Json::Object(props) = block.body else {
                    self.diag(
                        &at,
                        "Incorrect JSON value type",
                        "A JSON object is required here, setting the arguments for this block.",
                    );
                    return Ok(Val::Map(ety, BTreeMap::new()));
                };
                let mut vals = BTreeMap::new();
                for (k, v) in props {
                    if k == "//" {
                        continue;
                    }
                    let attr_at = join(&at, k);
                    if vals.contains_key(k) {
                        self.diag(
                            &attr_at,
                            "Duplicate attribute definition",
                            format!("The argument {k:?} was already set."),
                        );
                        continue;
                    }
                    let val = match json_value(v, &self.ctx) {
                        Ok(v) => v,
                        Err(m) => {
                            self.eval_diag(&attr_at, &m);
                            continue;
                        }
                    };
                    match convert(val, &ety) {
                        Ok(v) => {
                            vals.insert(k.clone(), v);
                        }
                        Err(m) => self.diag(
                            &attr_at,
                            "Invalid attribute value",
                            format!("Invalid value for attribute of {name:?} block: {m}."),
                        ),
                    }
                }
                if ety == Ty::Any && !vals.is_empty() {
                    let types: Vec<Ty> = vals.values().map(Val::ty).collect();
                    if unify(&types).is_none() {
                        self.diag(
                            &at,
                            "Invalid attribute value",
                            format!(
                                "The attributes of {name:?} block must all have the same type."
                            ),
                        );
                    }
                }
                Ok(Val::Map(ety, vals))
            }
            SpecNode::BlockList(b) | SpecNode::BlockSet(b) => {
                let is_set = matches!(node, SpecNode::BlockSet(_));
                let name = pick_name(&b.name, implied);
                let at = join(path, &name);
                let found: Vec<&BlockContent> =
                    content.blocks.iter().filter(|c| c.ty == name).collect();
                let mut elems = Vec::new();
                for (i, block) in found.iter().enumerate() {
                    let item_at = format!("{at}[{i}]");
                    elems.push(self.decode_body(b.nested, "", block.body, &item_at, depth + 1)?);
                }
                if (elems.len() as u64) < b.min_items {
                    self.diag(
                        &at,
                        format!("Insufficient {name} blocks"),
                        format!("At least {} {name:?} blocks are required.", b.min_items),
                    );
                } else if b.max_items > 0 && elems.len() as u64 > b.max_items {
                    self.diag(
                        &at,
                        format!("Too many {name} blocks"),
                        format!("No more than {} {name:?} blocks are allowed", b.max_items),
                    );
                }
                let types: Vec<Ty> = elems.iter().map(Val::ty).collect();
                let ety = if elems.is_empty() {
                    Ty::Any
                } else if let Some(t) = unify(&types) {
                    t
                } else {
                    self.diag(
                        &at,
                        format!("Unconsistent argument types in {name} blocks"),
                        "Corresponding attributes in all blocks of this type must be the same.",
                    );
                    return Ok(Val::Null(Ty::Any));
                };
                let mut converted = Vec::new();
                for (i, e) in elems.into_iter().enumerate() {
                    match convert(e, &ety) {
                        Ok(v) => converted.push(v),
                        Err(m) => {
                            self.diag(
                                &at,
                                format!("Unconsistent argument types in {name} blocks"),
                                format!(
                                    "Block with index {i} has inconsistent argument types: {m}."
                                ),
                            );
                            return Ok(Val::Null(Ty::Any));
                        }
                    }
                }
                Ok(if is_set {
                    make_set(ety, converted)
                } else {
                    Val::List(ety, converted)
                })
            }
            SpecNode::BlockMap(b) => {
                let name = pick_name(&b.name, implied);
                let at = join(path, &name);
                let found: Vec<&BlockContent> =
                    content.blocks.iter().filter(|c| c.ty == name).collect();
                let mut root: BTreeMap<String, Val> = BTreeMap::new();
                for block in found {
                    let mut item_at = at.clone();
                    for l in &block.labels {
                        item_at.push_str(&format!("[{l:?}]"));
                    }
                    let val = self.decode_body(b.nested, "", block.body, &item_at, depth + 1)?;
                    if !insert_by_labels(&mut root, &block.labels, val) {
                        let labels: String =
                            block.labels.iter().map(|l| format!(" {l:?}")).collect();
                        self.diag(
                            &item_at,
                            format!("Duplicate {name} block"),
                            format!(
                                "A block for {name}{labels} was already defined. The {name} labels must be unique."
                            ),
                        );
                    }
                }
                Ok(fix_map_types(Val::Map(Ty::Any, root)))
            }
            SpecNode::Default(d) => {
                let v = self.decode_spec(d.primary, here, "", content, path, depth + 1)?;
                if v.is_null() {
                    self.decode_spec(d.default, here, "", content, path, depth + 1)
                } else {
                    Ok(v)
                }
            }
            SpecNode::Literal(src) => eval_literal(src)
                .map_err(|m| schema_diag(format!("schema node {idx} (literal {src:?}): {m}"))),
        }
    }
}

/// Stores a block map entry under its labels (nested maps for more than one
/// label); false if that entry already exists.
fn insert_by_labels(map: &mut BTreeMap<String, Val>, labels: &[String], val: Val) -> bool {
    match labels {
        [] => true,
        [last] => {
            if map.contains_key(last) {
                return false;
            }
            map.insert(last.clone(), val);
            true
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.clone())
                .or_insert_with(|| Val::Map(Ty::Any, BTreeMap::new()));
            match entry {
                Val::Map(_, inner) => insert_by_labels(inner, rest, val),
                _ => false,
            }
        }
    }
}

/// Gives nested block maps their element types (the encoding does not
/// depend on them; `Val::ty` does).
fn fix_map_types(v: Val) -> Val {
    match v {
        Val::Map(_, m) => {
            let m: BTreeMap<String, Val> =
                m.into_iter().map(|(k, v)| (k, fix_map_types(v))).collect();
            let ety = m.values().next().map(Val::ty).unwrap_or(Ty::Any);
            Val::Map(ety, m)
        }
        other => other,
    }
}

/// A Literal spec: an HCL native-syntax expression evaluated with functions
/// only, as Nomad does.
pub fn eval_literal(src: &str) -> Result<Val, String> {
    let expr: Expression = src
        .parse()
        .map_err(|e: hcl::Error| format!("invalid expression: {}", e.to_string().trim()))?;
    let ctx = body::function_context();
    let v = body::guarded(|| expr.evaluate(&ctx))?.map_err(|e| body::eval_message(e.kind()))?;
    value_to_val(&v)
}

/// Parses an hclspec type expression: `string`, `number`, `bool`, `any`,
/// `list(T)`, `set(T)`, `map(T)`, `tuple([T, ...])`, `object({a = T, ...})`.
pub fn parse_type(src: &str) -> Result<Ty, String> {
    let expr: Expression = src.parse().map_err(|e: hcl::Error| {
        format!("invalid type expression {src:?}: {}", e.to_string().trim())
    })?;
    type_of(&expr).map_err(|m| format!("invalid type expression {src:?}: {m}"))
}

fn type_of(expr: &Expression) -> Result<Ty, String> {
    match expr {
        Expression::Variable(v) => match v.as_str() {
            "string" => Ok(Ty::String),
            "number" => Ok(Ty::Number),
            "bool" => Ok(Ty::Bool),
            "any" => Ok(Ty::Any),
            other => Err(format!("{other:?} is not a type")),
        },
        Expression::Parenthesis(inner) => type_of(inner),
        Expression::FuncCall(call) => {
            let fname = call.name.name.as_str();
            let [arg] = call.args.as_slice() else {
                return Err(format!("{fname}() takes exactly one argument"));
            };
            match fname {
                "list" => Ok(Ty::List(Box::new(type_of(arg)?))),
                "set" => Ok(Ty::Set(Box::new(type_of(arg)?))),
                "map" => Ok(Ty::Map(Box::new(type_of(arg)?))),
                "tuple" => match arg {
                    Expression::Array(items) => Ok(Ty::Tuple(
                        items.iter().map(type_of).collect::<Result<_, _>>()?,
                    )),
                    _ => Err("tuple() needs a list of types, e.g. tuple([string, number])".into()),
                },
                "object" => match arg {
                    Expression::Object(obj) => {
                        let mut attrs = BTreeMap::new();
                        for (k, v) in obj.iter() {
                            let key = match k {
                                hcl::ObjectKey::Identifier(id) => id.as_str().to_string(),
                                hcl::ObjectKey::Expression(Expression::String(s)) => s.clone(),
                                hcl::ObjectKey::Expression(Expression::Variable(v)) => {
                                    v.as_str().to_string()
                                }
                                _ => return Err("object() attribute names must be names".into()),
                            };
                            attrs.insert(key, type_of(v)?);
                        }
                        Ok(Ty::object(attrs))
                    }
                    _ => Err("object() needs an object of types, e.g. object({a = string})".into()),
                },
                other => Err(format!("{other}() is not a type constructor")),
            }
        }
        other => Err(format!("{other} is not a type")),
    }
}

/// HCL's `nameSuggestion`: the first known name within edit distance 2.
fn name_suggestion(given: &str, names: &[&String]) -> Option<String> {
    names
        .iter()
        .find(|n| levenshtein(given, n) < 3)
        .map(|n| (*n).clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
