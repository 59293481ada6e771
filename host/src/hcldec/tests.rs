#![allow(clippy::unwrap_used)]

use super::*;
use crate::runtime::bindings::nomad::driver::types::{
    AttrSpec, BlockListSpec, BlockMapSpec, BlockSpec, DefaultSpec,
};

/// Builds flat specs in tests: push nodes, children after parents.
struct B {
    nodes: Vec<SpecNode>,
}

impl B {
    fn new() -> Self {
        B { nodes: vec![] }
    }
    fn push(&mut self, n: SpecNode) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }
    fn set(&mut self, i: u32, n: SpecNode) {
        self.nodes[i as usize] = n;
    }
    fn spec(self) -> Spec {
        Spec { nodes: self.nodes }
    }
}

fn attr(ty: &str, required: bool) -> SpecNode {
    SpecNode::Attr(AttrSpec {
        name: String::new(),
        type_expr: ty.into(),
        required,
    })
}

fn named_attr(name: &str, ty: &str) -> SpecNode {
    SpecNode::Attr(AttrSpec {
        name: name.into(),
        type_expr: ty.into(),
        required: false,
    })
}

fn with_cmd(rest: &str) -> String {
    format!("command = \"x\"\n{rest}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The schema of the "Nomad-like pipeline" vectors in
/// /work/shared/vectors/cty-msgpack.txt.
fn vector_spec() -> Spec {
    let mut b = B::new();
    let root = b.push(SpecNode::Object(vec![]));
    let args = b.push(attr("list(string)", false));
    let command = b.push(attr("string", true));
    let count = b.push(attr("number", false));
    let debug = b.push(SpecNode::Object(vec![])); // placeholder -> Default
    let debug_attr = b.push(named_attr("debug", "bool"));
    let debug_lit = b.push(SpecNode::Literal("false".into()));
    b.set(
        debug,
        SpecNode::Default(DefaultSpec {
            primary: debug_attr,
            default: debug_lit,
        }),
    );
    let env = b.push(attr("map(string)", false));
    let extra = b.push(attr("any", false));
    let labels = b.push(SpecNode::BlockAttrs(AttrSpec {
        name: String::new(),
        type_expr: "string".into(),
        required: false,
    }));
    let mount = b.push(SpecNode::Object(vec![]));
    let mount_obj = b.push(SpecNode::Object(vec![]));
    let ro = b.push(attr("bool", false));
    let source = b.push(attr("string", false));
    b.set(
        mount_obj,
        SpecNode::Object(vec![("ro".into(), ro), ("source".into(), source)]),
    );
    b.set(
        mount,
        SpecNode::BlockList(BlockListSpec {
            name: String::new(),
            min_items: 0,
            max_items: 0,
            nested: mount_obj,
        }),
    );
    let opts = b.push(SpecNode::Object(vec![]));
    let opts_obj = b.push(SpecNode::Object(vec![]));
    let level = b.push(attr("string", false));
    b.set(opts_obj, SpecNode::Object(vec![("level".into(), level)]));
    b.set(
        opts,
        SpecNode::Block(BlockSpec {
            name: String::new(),
            required: false,
            nested: opts_obj,
        }),
    );
    b.set(
        root,
        SpecNode::Object(vec![
            ("args".into(), args),
            ("command".into(), command),
            ("count".into(), count),
            ("debug".into(), debug),
            ("env".into(), env),
            ("extra".into(), extra),
            ("labels".into(), labels),
            ("mount".into(), mount),
            ("opts".into(), opts),
        ]),
    );
    b.spec()
}

#[test]
fn vector_minimal() {
    let got = decode_body(&vector_spec(), r#"command = "/bin/echo""#).unwrap();
    assert_eq!(
        hex(&got),
        "89a461726773c0a7636f6d6d616e64a92f62696e2f6563686fa5636f756e74c0a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"
    );
}

#[test]
fn vector_full_with_template_and_blocks() {
    let hcl = r#"
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
    "#;
    let vars = Vars::new().env("NOMAD_TASK_DIR", "/local");
    let got = decode_body_with(&vector_spec(), hcl, &vars).unwrap();
    assert_eq!(
        hex(&got),
        "89a46172677392a161a162a7636f6d6d616e64ad2f6c6f63616c2f72756e2e7368a5636f756e74a3302e31a56465627567c3a3656e7682a141a131a142a132a5657874726193a17801c3a66c6162656c7381a16ba176a56d6f756e749182a2726fc3a6736f75726365a22f61a46f70747381a56c6576656ca26869"
    );
}

#[test]
fn vector_numbers_and_extra_object() {
    let spec = vector_spec();
    assert_eq!(
        hex(&decode_body(&spec, &with_cmd(r#"count = 3"#)).unwrap()),
        "89a461726773c0a7636f6d6d616e64a178a5636f756e7403a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"
    );
    assert_eq!(
        hex(&decode_body(&spec, &with_cmd(r#"count = "42""#)).unwrap()),
        "89a461726773c0a7636f6d6d616e64a178a5636f756e742aa56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0"
    );
    assert_eq!(
        hex(&decode_body(&spec, &with_cmd(r#"extra = { a = "s", z = 1 }"#)).unwrap()),
        "89a461726773c0a7636f6d6d616e64a178a5636f756e74c0a56465627567c2a3656e76c0a5657874726182a161a173a17a01a66c6162656c73c0a56d6f756e7490a46f707473c0"
    );
}

#[test]
fn vector_errors() {
    let spec = vector_spec();
    let e = decode_body(&spec, &with_cmd(r#"bogus = 1"#)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.bogus: Extraneous JSON object property; No argument or block type is named \"bogus\"."
    );
    assert_eq!(
        e.nomad_message(),
        "Invalid label: No argument or block type is named \"bogus\"."
    );
    let e = decode_body(&spec, "").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.command: Missing required argument; The argument \"command\" is required, but no definition was found."
    );
}

#[test]
fn empty_object_spec() {
    let spec = Spec {
        nodes: vec![SpecNode::Object(vec![])],
    };
    assert_eq!(hex(&decode_body(&spec, "").unwrap()), "80");
}

#[test]
fn conversion_errors_name_the_field() {
    let spec = vector_spec();
    let e = decode_body(&spec, &with_cmd(r#"count = "many""#)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.count: Incorrect attribute value type; Inappropriate value for attribute \"count\": a number is required."
    );
    let e = decode_body(&spec, &with_cmd(r#"args = "a""#)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.args: Incorrect attribute value type; Inappropriate value for attribute \"args\": list of string required."
    );
    let e = decode_body(&spec, &with_cmd(r#"mount { ro = "maybe" }"#)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.mount[0].ro: Incorrect attribute value type; Inappropriate value for attribute \"ro\": a bool is required."
    );
    let e = decode_body(&spec, &with_cmd(r#"opts { lvl = "hi" }"#)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.opts.lvl: Extraneous JSON object property; No argument or block type is named \"lvl\". Did you mean \"level\"?"
    );
    let e = decode_body(
        &spec,
        &with_cmd(
            r#"opts { level = "a" }
opts { level = "b" }"#,
        ),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("config.opts: Duplicate opts block"),
        "{e}"
    );
    let e = decode_body(&spec, r#"command = "${NOMAD_TASK_DIR}""#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.command: Variables not allowed; Variables may not be used here."
    );
    let e = decode_body(&spec, "command = ").unwrap_err();
    assert!(
        e.to_string().starts_with("config: Invalid HCL syntax"),
        "{e}"
    );
}

#[test]
fn attribute_syntax_for_blocks_and_block_syntax_for_attrs() {
    // In Nomad's JSON path a block and an attribute holding an object are
    // the same thing; the schema decides.
    let spec = vector_spec();
    let a = decode_body(&spec, &with_cmd(r#"opts = { level = "hi" }"#)).unwrap();
    let b = decode_body(&spec, &with_cmd(r#"opts { level = "hi" }"#)).unwrap();
    assert_eq!(a, b);
    // A block given where a map attribute is expected is a list of one
    // object, not a map.
    let e = decode_body(&spec, &with_cmd(r#"env { A = "1" }"#)).unwrap_err();
    assert!(e.to_string().contains("map of string required"), "{e}");
}

fn block_map_spec() -> Spec {
    let mut b = B::new();
    let root = b.push(SpecNode::Object(vec![]));
    let port = b.push(SpecNode::Object(vec![]));
    let obj = b.push(SpecNode::Object(vec![]));
    let to = b.push(attr("number", true));
    let proto = b.push(SpecNode::Object(vec![]));
    let proto_attr = b.push(named_attr("proto", "string"));
    let proto_lit = b.push(SpecNode::Literal(r#""tcp""#.into()));
    b.set(
        proto,
        SpecNode::Default(DefaultSpec {
            primary: proto_attr,
            default: proto_lit,
        }),
    );
    b.set(
        obj,
        SpecNode::Object(vec![("to".into(), to), ("proto".into(), proto)]),
    );
    b.set(
        port,
        SpecNode::BlockMap(BlockMapSpec {
            name: String::new(),
            labels: vec!["name".into()],
            nested: obj,
        }),
    );
    let tags = b.push(SpecNode::BlockSet(BlockListSpec {
        name: "tag".into(),
        min_items: 0,
        max_items: 2,
        nested: 0, // fixed below
    }));
    let tag_obj = b.push(SpecNode::Object(vec![]));
    let tag_v = b.push(attr("string", true));
    b.set(tag_obj, SpecNode::Object(vec![("v".into(), tag_v)]));
    b.set(
        tags,
        SpecNode::BlockSet(BlockListSpec {
            name: "tag".into(),
            min_items: 0,
            max_items: 2,
            nested: tag_obj,
        }),
    );
    b.set(
        root,
        SpecNode::Object(vec![("port".into(), port), ("tags".into(), tags)]),
    );
    b.spec()
}

#[test]
fn block_maps_and_sets() {
    let spec = block_map_spec();
    let v = decode_value(
        &spec,
        r#"
        port "http" { to = "80" }
        port "dns" {
          to = 53
          proto = "udp"
        }
        tag { v = "b" }
        tag { v = "a" }
        "#,
        &Vars::new(),
    )
    .unwrap();
    let Val::Object(root) = &v else { panic!() };
    let Val::Map(_, ports) = &root["port"] else {
        panic!()
    };
    assert_eq!(ports.keys().collect::<Vec<_>>(), ["dns", "http"]);
    // msgpack: {port: {dns: {proto: udp, to: 53}, http: {proto: tcp, to: 80}},
    //           tags: [{v: a}, {v: b}]} (sets of objects ordered by cty's hash text)
    assert_eq!(
        hex(&v.to_msgpack()),
        "82a4706f727482a3646e7382a570726f746fa3756470a2746f35a46874747082a570726f746fa3746370a2746f50a47461677392\
         81a176a16181a176a162"
    );
    let e = decode_body(&spec, "port \"a\" { to = 1 }\nport \"a\" { to = 2 }").unwrap_err();
    assert!(e.to_string().contains("Duplicate port block"), "{e}");
    let e = decode_body(
        &spec,
        "tag { v = \"a\" }\ntag { v = \"b\" }\ntag { v = \"c\" }",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.tag: Too many tag blocks; No more than 2 \"tag\" blocks are allowed"
    );
    let e = decode_body(&spec, r#"port { to = 1 }"#).unwrap_err();
    assert!(
        e.to_string().contains("Missing block label")
            || e.to_string().contains("Incorrect JSON value type"),
        "{e}"
    );
}

#[test]
fn functions_and_expressions_in_configs_and_literals() {
    let mut b = B::new();
    let root = b.push(SpecNode::Object(vec![]));
    let a = b.push(attr("string", false));
    let d = b.push(SpecNode::Default(DefaultSpec {
        primary: 3,
        default: 4,
    }));
    b.push(named_attr("n", "number"));
    b.push(SpecNode::Literal("max(1, 7) + length([1, 2])".into()));
    b.set(
        root,
        SpecNode::Object(vec![("a".into(), a), ("n".into(), d)]),
    );
    let spec = b.spec();
    let v = decode_value(&spec, r#"a = upper("x${lower("Y")}")"#, &Vars::new()).unwrap();
    let Val::Object(m) = v else { panic!() };
    assert_eq!(m["a"], Val::string("XY"));
    assert_eq!(m["n"], Val::Number(value::Dec::parse("9").unwrap()));
}

#[test]
fn bad_schemas_are_reported_not_panicked() {
    let cyclic = Spec {
        nodes: vec![SpecNode::Object(vec![("a".into(), 0)])],
    };
    assert!(
        decode_body(&cyclic, "")
            .unwrap_err()
            .to_string()
            .contains("children must come after")
    );
    let dangling = Spec {
        nodes: vec![SpecNode::Object(vec![("a".into(), 7)])],
    };
    assert!(decode_body(&dangling, "").is_err());
    let bad_type = Spec {
        nodes: vec![
            SpecNode::Object(vec![("a".into(), 1)]),
            attr("strin", false),
        ],
    };
    let e = decode_body(&bad_type, "a = 1").unwrap_err().to_string();
    assert!(e.contains("\"strin\" is not a type"), "{e}");
    assert!(decode_body(&Spec { nodes: vec![] }, "").is_err());
}

#[test]
fn job_file_first_task_config() {
    let job = r#"
      job "j" {
        group "g" {
          task "t" {
            driver = "x"
            config {
              command = "/bin/true"
            }
          }
        }
      }
    "#;
    let got = decode_job_task(&vector_spec(), job, &Vars::new()).unwrap();
    assert_eq!(
        got,
        decode_body(&vector_spec(), r#"command = "/bin/true""#).unwrap()
    );
    let e = decode_job_task(&vector_spec(), r#"job "j" {}"#, &Vars::new()).unwrap_err();
    assert!(e.to_string().contains("Missing task block"), "{e}");
    // A task without config (a sidecar) is skipped for the next one.
    let two = r#"
      job "j" {
        group "g" {
          task "sidecar" {
            driver = "docker"
          }
          task "main" {
            config {
              command = "/bin/main"
            }
          }
        }
      }
    "#;
    let (name, _) = task_config_from_job(two).unwrap();
    assert_eq!(name, "main");
    let e = task_config_from_job("job \"j\" {\n  task \"a\" {}\n}").unwrap_err();
    assert!(
        e.to_string().contains("None of the job's 1 task blocks"),
        "{e}"
    );
}

#[test]
fn type_expressions() {
    assert_eq!(
        parse_type("list(map(string))").unwrap().to_string(),
        "list of map of string"
    );
    assert!(matches!(
        parse_type("object({a=string, b=number})").unwrap(),
        Ty::Object(..)
    ));
    assert!(matches!(parse_type("tuple([string, bool])").unwrap(), Ty::Tuple(t) if t.len() == 2));
    assert!(parse_type("").is_err());
    assert!(parse_type("list(string, number)").is_err());
}

/// One case of tests/conformance/testdata/hcldec_xcheck.json, written by
/// the Go test `TestXcheckHcldecVectors` from hcl/v2's hcldec and go-cty.
#[derive(serde::Deserialize)]
struct XcheckCase {
    name: String,
    nodes: Vec<XcheckNode>,
    hcl: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    msgpack: Option<String>,
    #[serde(default)]
    errors: Vec<XcheckDiag>,
}

#[derive(serde::Deserialize)]
struct XcheckNode {
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    min: u64,
    #[serde(default)]
    max: u64,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    value: String,
    #[serde(default)]
    fields: Vec<XcheckField>,
    #[serde(default)]
    items: Vec<u32>,
    #[serde(default)]
    nested: u32,
    #[serde(default)]
    primary: u32,
    #[serde(default)]
    default: u32,
}

#[derive(serde::Deserialize)]
struct XcheckField {
    name: String,
    node: u32,
}

#[derive(serde::Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct XcheckDiag {
    summary: String,
    detail: String,
}

fn xcheck_node(n: &XcheckNode) -> SpecNode {
    let attr = || AttrSpec {
        name: n.name.clone(),
        type_expr: n.ty.clone(),
        required: n.required,
    };
    let list = || BlockListSpec {
        name: n.name.clone(),
        min_items: n.min,
        max_items: n.max,
        nested: n.nested,
    };
    match n.kind.as_str() {
        "object" => SpecNode::Object(n.fields.iter().map(|f| (f.name.clone(), f.node)).collect()),
        "array" => SpecNode::Array(n.items.clone()),
        "attr" => SpecNode::Attr(attr()),
        "block" => SpecNode::Block(BlockSpec {
            name: n.name.clone(),
            required: n.required,
            nested: n.nested,
        }),
        "block_attrs" => SpecNode::BlockAttrs(attr()),
        "block_list" => SpecNode::BlockList(list()),
        "block_set" => SpecNode::BlockSet(list()),
        "block_map" => SpecNode::BlockMap(BlockMapSpec {
            name: n.name.clone(),
            labels: n.labels.clone(),
            nested: n.nested,
        }),
        "default" => SpecNode::Default(DefaultSpec {
            primary: n.primary,
            default: n.default,
        }),
        "literal" => SpecNode::Literal(n.value.clone()),
        other => panic!("unknown node kind {other}"),
    }
}

#[test]
fn xcheck_against_go() {
    let cases: Vec<XcheckCase> = serde_json::from_str(include_str!(
        "../../../tests/conformance/testdata/hcldec_xcheck.json"
    ))
    .unwrap();
    assert!(cases.len() > 50, "the cross-check table lost its cases");
    let mut failures = Vec::new();
    for c in &cases {
        let spec = Spec {
            nodes: c.nodes.iter().map(xcheck_node).collect(),
        };
        let mut vars = Vars::new();
        for (k, v) in &c.vars {
            vars = vars.env(k, v);
        }
        let got = decode_body_with(&spec, &c.hcl, &vars);
        match (&c.msgpack, got) {
            (Some(want), Ok(bytes)) => {
                if *want != hex(&bytes) {
                    failures.push(format!(
                        "{}: bytes differ\n  go:   {want}\n  rust: {}",
                        c.name,
                        hex(&bytes)
                    ));
                }
            }
            (Some(want), Err(e)) => {
                failures.push(format!(
                    "{}: go decoded it ({want}), rust failed: {e}",
                    c.name
                ));
            }
            (None, Ok(bytes)) => failures.push(format!(
                "{}: go failed with {:?}, rust decoded it: {}",
                c.name,
                c.errors,
                hex(&bytes)
            )),
            (None, Err(e)) => {
                let mut got: Vec<XcheckDiag> = e
                    .diags
                    .iter()
                    .map(|d| XcheckDiag {
                        summary: d.summary.clone(),
                        detail: d.detail.clone(),
                    })
                    .collect();
                got.sort();
                if got != c.errors {
                    failures.push(format!(
                        "{}: errors differ\n  go:   {:?}\n  rust: {:?}",
                        c.name, c.errors, got
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Go:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn quoted_argument_names_are_refused_as_hcl_refuses_them() {
    // hclsyntax: "Invalid argument name; Argument names must not be
    // quoted." Users write such keys in an object attribute instead.
    let spec = vector_spec();
    let e = decode_body(&spec, "command = \"x\"\nlabels {\n  \"a.b\" = \"v\"\n}").unwrap_err();
    assert!(
        e.to_string().starts_with("config: Invalid HCL syntax"),
        "{e}"
    );
    let ok = decode_body(&spec, "command = \"x\"\nlabels = {\n  \"a.b\" = \"v\"\n}").unwrap();
    assert!(hex(&ok).contains(&hex(b"a.b")));
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let spec = vector_spec();
    // hcl-edit's parser stops at 64 levels (HCL itself has no limit; no
    // real config comes near it).
    for depth in [50, 5_000] {
        let hcl = format!(
            "command = \"x\"\nextra = {}1{}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let r = decode_body(&spec, &hcl);
        if depth == 50 {
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("nesting depth"), "{e}");
        }
    }
}

#[test]
fn arithmetic_that_panics_in_hcl_rs_is_an_error() {
    let spec = vector_spec();
    let e = decode_body(&spec, "command = \"x\"\ncount = 7 % 0").unwrap_err();
    assert_eq!(e.diags[0].path, "config.count");
    assert!(e.to_string().contains("remainder by zero"), "{e}");
}

/// Mutated inputs and schemas: every outcome is a value or an error, never
/// a panic (the host decodes operator-written files with this code).
#[test]
fn mutated_inputs_and_schemas_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let bases = [
        "command = \"${NOMAD_TASK_DIR}/x\"\nargs = [\"a\", 1]\nmount {\n  ro = true\n}\nextra = { a = [1.5, \"x\"] }\nopts { level = \"%{ if true }y%{ endif }\" }",
        "port \"http\" {\n  to = \"80\"\n}\ntag {\n  v = \"a\"\n}\nn = 1e30",
        "a = <<EOT\nx ${y}\nEOT\nb = upper(\"x\")\nc = [for x in [1, 2] : x * 2]\nd = 1 == 1 ? \"t\" : \"f\"",
    ];
    let alphabet = b"{}[]()\"$%=\n .,:?-+*/!<>#\\0aZ_";
    let specs = [vector_spec(), block_map_spec()];
    let vars = Vars::new().env("NOMAD_TASK_DIR", "/t").env("y", "1");
    // HCLDEC_MUTATION_ROUNDS raises the count for a longer search.
    let rounds: usize = std::env::var("HCLDEC_MUTATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for round in 0..rounds {
        let base = bases[round % bases.len()].as_bytes();
        let mut text = base.to_vec();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % (text.len() + 1);
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 if at < text.len() => text[at] = c,
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.insert(at, c),
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let mut spec = specs[round % specs.len()].clone();
        if round % 5 == 0 {
            // Point a random child reference anywhere, even backwards.
            let n = spec.nodes.len() as u32;
            let i = (next() as usize) % spec.nodes.len();
            let to = (next() % u64::from(n + 2)) as u32;
            match &mut spec.nodes[i] {
                SpecNode::Object(fields) if !fields.is_empty() => fields[0].1 = to,
                SpecNode::Block(b) => b.nested = to,
                SpecNode::BlockList(b) | SpecNode::BlockSet(b) => b.nested = to,
                SpecNode::BlockMap(b) => b.nested = to,
                SpecNode::Default(d) => d.default = to,
                SpecNode::Attr(a) => a.type_expr = "list(".into(),
                _ => {}
            }
        }
        let _ = decode_body_with(&spec, &text, &vars);
        let _ = decode_body(&spec, &text);
    }
}
