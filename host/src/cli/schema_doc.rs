//! A guest's hclspec schema written out as commented HCL that a user can
//! copy: every attribute and block with its type, whether it is required,
//! its default and its nesting.
//!
//! Conventions of the output: required attributes and attributes with a
//! default are written out (with the default as the value); optional
//! attributes without a default are commented out, so that the copied text
//! means the same as leaving them out. Blocks are always written out, with
//! their contents documented the same way.

use crate::runtime::bindings::nomad::driver::types::{Spec, SpecNode};

/// The schema is not a tree the host would serve (the same rules as
/// `nomad::hclspec`): the text names the node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SchemaError(String);

/// Deeper nesting than this is refused rather than rendered.
const MAX_DEPTH: usize = 64;

/// Renders the body of a block decoded by `spec` (for instance the inside
/// of `config { }`), indented by `indent` levels of two spaces.
pub fn body(spec: &Spec, indent: usize) -> Result<String, SchemaError> {
    if spec.nodes.is_empty() {
        return Err(SchemaError(
            "the schema has no nodes (node 0 must be the root)".into(),
        ));
    }
    let mut w = Writer {
        spec,
        out: Vec::new(),
    };
    w.contents(0, "", indent, 0)?;
    Ok(w.finish())
}

struct Writer<'a> {
    spec: &'a Spec,
    /// Entries (each a group of lines) separated by blank lines at the end.
    out: Vec<Vec<String>>,
}

impl Writer<'_> {
    fn finish(self) -> String {
        let mut s = String::new();
        for (i, entry) in self.out.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            for line in entry {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }

    fn node(&self, parent: Option<usize>, index: u32) -> Result<(usize, &SpecNode), SchemaError> {
        let i = index as usize;
        let ok = match parent {
            Some(p) => i > p && i < self.spec.nodes.len(),
            None => i < self.spec.nodes.len(),
        };
        if !ok {
            return Err(SchemaError(format!(
                "schema node {} refers to node {index}, but children must come after their \
                 parent and exist (there are {} nodes)",
                parent.unwrap_or(0),
                self.spec.nodes.len()
            )));
        }
        Ok((i, &self.spec.nodes[i]))
    }

    /// What node `at` decodes from a body: an object's fields, or the node
    /// itself as a single entry named `key`.
    fn contents(
        &mut self,
        at: usize,
        key: &str,
        indent: usize,
        depth: usize,
    ) -> Result<(), SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError(format!(
                "the schema nests deeper than {MAX_DEPTH} levels"
            )));
        }
        match &self.spec.nodes[at] {
            // Fields of a nested object or a tuple decode from the same body.
            SpecNode::Object(fields) => {
                for (name, child) in fields {
                    let (i, _) = self.node(Some(at), *child)?;
                    self.contents(i, name, indent, depth + 1)?;
                }
                Ok(())
            }
            SpecNode::Array(items) => {
                for child in items {
                    let (i, _) = self.node(Some(at), *child)?;
                    self.contents(i, key, indent, depth + 1)?;
                }
                Ok(())
            }
            _ => self.entry(at, key, None, indent, depth),
        }
    }

    /// One attribute or block named `key` (unless the node names itself).
    fn entry(
        &mut self,
        at: usize,
        key: &str,
        default: Option<&str>,
        indent: usize,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let pad = "  ".repeat(indent);
        let name_of = |own: &str| {
            if own.is_empty() {
                key.to_owned()
            } else {
                own.to_owned()
            }
        };
        let with_default = |mut what: String| {
            if let Some(d) = default {
                what.push_str(&format!(", default {d}"));
            }
            what
        };
        match &self.spec.nodes[at] {
            SpecNode::Attr(a) => {
                let name = name_of(&a.name);
                let ty = a.type_expr.trim();
                let what = with_default(format!(
                    "{ty}, {}",
                    if a.required { "required" } else { "optional" }
                ));
                let mut lines = vec![format!("{pad}# {what}")];
                match default {
                    Some(d) => lines.push(format!("{pad}{name} = {d}")),
                    None if a.required => lines.push(format!("{pad}{name} = {}", placeholder(ty))),
                    None => lines.push(format!("{pad}# {name} = {}", placeholder(ty))),
                }
                self.out.push(lines);
            }
            SpecNode::Default(d) => {
                let (primary, _) = self.node(Some(at), d.primary)?;
                let (_, fallback) = self.node(Some(at), d.default)?;
                let text = match fallback {
                    SpecNode::Literal(l) => l.trim().to_owned(),
                    _ => "(computed)".to_owned(),
                };
                return self.entry(primary, key, Some(&text), indent, depth + 1);
            }
            SpecNode::Literal(l) => {
                self.out.push(vec![format!(
                    "{pad}# {key}: always {} (set by the driver, not in the config)",
                    l.trim()
                )]);
            }
            SpecNode::Block(b) => {
                let what = with_default(format!(
                    "block, {}",
                    if b.required { "required" } else { "optional" }
                ));
                self.block(at, b.nested, &name_of(&b.name), "", &what, indent, depth)?;
            }
            SpecNode::BlockList(b) | SpecNode::BlockSet(b) => {
                let kind = if matches!(self.spec.nodes[at], SpecNode::BlockSet(_)) {
                    "set"
                } else {
                    "list"
                };
                let mut what = format!("block, repeatable ({kind}");
                if b.min_items > 0 {
                    what.push_str(&format!(", at least {}", b.min_items));
                }
                if b.max_items > 0 {
                    what.push_str(&format!(", at most {}", b.max_items));
                }
                what.push(')');
                let what = with_default(what);
                self.block(at, b.nested, &name_of(&b.name), "", &what, indent, depth)?;
            }
            SpecNode::BlockMap(b) => {
                let labels: String = b.labels.iter().map(|l| format!(" \"<{l}>\"")).collect();
                let what = with_default(format!(
                    "labelled block, repeatable, one per {}",
                    b.labels.join(" and ")
                ));
                self.block(
                    at,
                    b.nested,
                    &name_of(&b.name),
                    &labels,
                    &what,
                    indent,
                    depth,
                )?;
            }
            SpecNode::BlockAttrs(a) => {
                let ty = a.type_expr.trim();
                let what = with_default(format!(
                    "block of attributes with any names, each {ty}, {}",
                    if a.required { "required" } else { "optional" }
                ));
                self.out.push(vec![
                    format!("{pad}# {what}"),
                    format!("{pad}{} {{", name_of(&a.name)),
                    format!("{pad}  # <name> = {}", placeholder(ty)),
                    format!("{pad}}}"),
                ]);
            }
            SpecNode::Object(_) | SpecNode::Array(_) => {
                // Reached through a Default: the fields decode from this body.
                return self.contents(at, key, indent, depth + 1);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &mut self,
        at: usize,
        nested: u32,
        name: &str,
        labels: &str,
        what: &str,
        indent: usize,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let pad = "  ".repeat(indent);
        let (inner, _) = self.node(Some(at), nested)?;
        let mut sub = Writer {
            spec: self.spec,
            out: Vec::new(),
        };
        sub.contents(inner, name, indent + 1, depth + 1)?;
        let mut lines = vec![format!("{pad}# {what}"), format!("{pad}{name}{labels} {{")];
        let text = sub.finish();
        lines.extend(text.lines().map(str::to_owned));
        lines.push(format!("{pad}}}"));
        self.out.push(lines);
        Ok(())
    }
}

/// A value of type `ty` to show where the schema gives none.
fn placeholder(ty: &str) -> &'static str {
    let head = ty.split('(').next().unwrap_or("").trim();
    match head {
        "string" => "\"\"",
        "number" => "0",
        "bool" => "false",
        "list" | "set" | "tuple" => "[]",
        "map" | "object" => "{}",
        _ => "null",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::bindings::nomad::driver::types::{
        AttrSpec, BlockListSpec, BlockMapSpec, BlockSpec, DefaultSpec,
    };

    fn attr(name: &str, ty: &str, required: bool) -> SpecNode {
        SpecNode::Attr(AttrSpec {
            name: name.into(),
            type_expr: ty.into(),
            required,
        })
    }

    #[test]
    fn attributes_show_type_requiredness_and_default() {
        let spec = Spec {
            nodes: vec![
                SpecNode::Object(vec![
                    ("shell".into(), 1),
                    ("image".into(), 4),
                    ("args".into(), 5),
                ]),
                SpecNode::Default(DefaultSpec {
                    primary: 2,
                    default: 3,
                }),
                attr("shell", "string", false),
                SpecNode::Literal("\"bash\"".into()),
                attr("", "string", true),
                attr("args", "list(string)", false),
            ],
        };
        assert_eq!(
            body(&spec, 1).unwrap(),
            "  # string, optional, default \"bash\"\n  shell = \"bash\"\n\n\
             \x20 # string, required\n  image = \"\"\n\n\
             \x20 # list(string), optional\n  # args = []\n"
        );
    }

    #[test]
    fn blocks_nest_with_their_kind_and_labels() {
        let spec = Spec {
            nodes: vec![
                SpecNode::Object(vec![
                    ("bind".into(), 1),
                    ("port".into(), 3),
                    ("volume".into(), 5),
                    ("environment".into(), 7),
                ]),
                SpecNode::Block(BlockSpec {
                    name: "bind".into(),
                    required: false,
                    nested: 2,
                }),
                SpecNode::Object(vec![]),
                SpecNode::BlockList(BlockListSpec {
                    name: "port".into(),
                    min_items: 1,
                    max_items: 0,
                    nested: 4,
                }),
                SpecNode::Object(vec![("to".into(), 9)]),
                SpecNode::BlockMap(BlockMapSpec {
                    name: "volume".into(),
                    labels: vec!["name".into()],
                    nested: 6,
                }),
                SpecNode::Object(vec![]),
                SpecNode::BlockAttrs(AttrSpec {
                    name: "environment".into(),
                    type_expr: "string".into(),
                    required: false,
                }),
                SpecNode::Literal(String::new()),
                attr("to", "number", true),
            ],
        };
        assert_eq!(
            body(&spec, 0).unwrap(),
            "# block, optional\nbind {\n}\n\n\
             # block, repeatable (list, at least 1)\nport {\n  # number, required\n  to = 0\n}\n\n\
             # labelled block, repeatable, one per name\nvolume \"<name>\" {\n}\n\n\
             # block of attributes with any names, each string, optional\n\
             environment {\n  # <name> = \"\"\n}\n"
        );
    }

    #[test]
    fn malformed_schemas_are_errors_not_panics() {
        let backward = Spec {
            nodes: vec![SpecNode::Object(vec![("a".into(), 0)])],
        };
        assert!(
            body(&backward, 0)
                .unwrap_err()
                .0
                .contains("refers to node 0")
        );
        let dangling = Spec {
            nodes: vec![SpecNode::Block(BlockSpec {
                name: "b".into(),
                required: true,
                nested: 7,
            })],
        };
        assert!(
            body(&dangling, 0)
                .unwrap_err()
                .0
                .contains("refers to node 7")
        );
        assert!(body(&Spec { nodes: vec![] }, 0).is_err());
    }
}
