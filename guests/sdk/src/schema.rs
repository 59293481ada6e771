//! Build hclspec schemas as a tree; [`Schema::build`] flattens it into the
//! WIT form (node 0 is the root, children after their parent).
//!
//! ```
//! use nomad_driver_sdk::schema::Schema;
//! let spec = Schema::object([
//!     ("greeting", Schema::attr("string").or_default("\"Hello, World!\"")),
//!     ("count", Schema::attr("number")),
//!     ("image", Schema::required("string")),
//! ])
//! .build();
//! assert_eq!(spec.nodes.len(), 6);
//! ```

use crate::bindings::nomad::driver::types::{
    AttrSpec, BlockListSpec, BlockMapSpec, BlockSpec, DefaultSpec, Spec, SpecNode,
};

/// One schema node with its children in place.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    /// Named fields; a field's name is also the attribute/block name.
    Object(Vec<(String, Schema)>),
    Array(Vec<Schema>),
    Attr {
        name: String,
        ty: String,
        required: bool,
    },
    Block {
        name: String,
        required: bool,
        nested: Box<Schema>,
    },
    BlockAttrs {
        name: String,
        ty: String,
        required: bool,
    },
    BlockList {
        name: String,
        min: u64,
        max: u64,
        nested: Box<Schema>,
    },
    BlockSet {
        name: String,
        min: u64,
        max: u64,
        nested: Box<Schema>,
    },
    BlockMap {
        name: String,
        labels: Vec<String>,
        nested: Box<Schema>,
    },
    Default {
        primary: Box<Schema>,
        default: Box<Schema>,
    },
    /// An HCL expression: strings must be quoted (`"\"bash\""`).
    Literal(String),
}

impl Schema {
    pub fn object<N: Into<String>>(fields: impl IntoIterator<Item = (N, Schema)>) -> Self {
        Schema::Object(fields.into_iter().map(|(n, s)| (n.into(), s)).collect())
    }

    /// An optional attribute of HCL type `ty`, named after its object field.
    pub fn attr(ty: &str) -> Self {
        Schema::Attr {
            name: String::new(),
            ty: ty.into(),
            required: false,
        }
    }

    /// A required attribute of HCL type `ty`.
    pub fn required(ty: &str) -> Self {
        Schema::Attr {
            name: String::new(),
            ty: ty.into(),
            required: true,
        }
    }

    /// A single nested block `name { ... }` (named after its field).
    pub fn block(nested: Schema) -> Self {
        Schema::Block {
            name: String::new(),
            required: false,
            nested: Box::new(nested),
        }
    }

    /// A block of free-form attributes `name { k = v }` of type `ty`.
    pub fn block_attrs(ty: &str) -> Self {
        Schema::BlockAttrs {
            name: String::new(),
            ty: ty.into(),
            required: false,
        }
    }

    /// Repeated blocks, as a list.
    pub fn block_list(nested: Schema) -> Self {
        Schema::BlockList {
            name: String::new(),
            min: 0,
            max: 0,
            nested: Box::new(nested),
        }
    }

    /// This schema, or `literal` (an HCL expression) when unset.
    pub fn or_default(self, literal: &str) -> Self {
        Schema::Default {
            primary: Box::new(self),
            default: Box::new(Schema::Literal(literal.into())),
        }
    }

    /// Gives a nameless attribute or block the name of the object field it
    /// sits in. Nomad does the same for direct children of an object, but
    /// not through a `Default`, so the builder names them explicitly.
    fn named(self, field: &str) -> Self {
        let fill = |name: String| {
            if name.is_empty() {
                field.to_owned()
            } else {
                name
            }
        };
        match self {
            Schema::Attr { name, ty, required } => Schema::Attr {
                name: fill(name),
                ty,
                required,
            },
            Schema::BlockAttrs { name, ty, required } => Schema::BlockAttrs {
                name: fill(name),
                ty,
                required,
            },
            Schema::Block {
                name,
                required,
                nested,
            } => Schema::Block {
                name: fill(name),
                required,
                nested,
            },
            Schema::BlockList {
                name,
                min,
                max,
                nested,
            } => Schema::BlockList {
                name: fill(name),
                min,
                max,
                nested,
            },
            Schema::BlockSet {
                name,
                min,
                max,
                nested,
            } => Schema::BlockSet {
                name: fill(name),
                min,
                max,
                nested,
            },
            Schema::BlockMap {
                name,
                labels,
                nested,
            } => Schema::BlockMap {
                name: fill(name),
                labels,
                nested,
            },
            Schema::Default { primary, default } => Schema::Default {
                primary: Box::new(primary.named(field)),
                default,
            },
            other => other,
        }
    }

    /// Flattens the tree for the WIT boundary.
    pub fn build(&self) -> Spec {
        let mut nodes = Vec::new();
        push(&mut nodes, self);
        Spec { nodes }
    }
}

/// Pushes `s` and its subtree in pre-order; returns `s`'s index. The node
/// slot is reserved first so every child index is greater than its parent's.
fn push(nodes: &mut Vec<SpecNode>, s: &Schema) -> u32 {
    let at = nodes.len();
    nodes.push(SpecNode::Literal(String::new()));
    let node = match s {
        Schema::Object(fields) => SpecNode::Object(
            fields
                .iter()
                .map(|(n, c)| (n.clone(), push(nodes, &c.clone().named(n))))
                .collect(),
        ),
        Schema::Array(items) => SpecNode::Array(items.iter().map(|c| push(nodes, c)).collect()),
        Schema::Attr { name, ty, required } => SpecNode::Attr(AttrSpec {
            name: name.clone(),
            type_expr: ty.clone(),
            required: *required,
        }),
        Schema::Block {
            name,
            required,
            nested,
        } => SpecNode::Block(BlockSpec {
            name: name.clone(),
            required: *required,
            nested: push(nodes, nested),
        }),
        Schema::BlockAttrs { name, ty, required } => SpecNode::BlockAttrs(AttrSpec {
            name: name.clone(),
            type_expr: ty.clone(),
            required: *required,
        }),
        Schema::BlockList {
            name,
            min,
            max,
            nested,
        } => SpecNode::BlockList(BlockListSpec {
            name: name.clone(),
            min_items: *min,
            max_items: *max,
            nested: push(nodes, nested),
        }),
        Schema::BlockSet {
            name,
            min,
            max,
            nested,
        } => SpecNode::BlockSet(BlockListSpec {
            name: name.clone(),
            min_items: *min,
            max_items: *max,
            nested: push(nodes, nested),
        }),
        Schema::BlockMap {
            name,
            labels,
            nested,
        } => SpecNode::BlockMap(BlockMapSpec {
            name: name.clone(),
            labels: labels.clone(),
            nested: push(nodes, nested),
        }),
        Schema::Default { primary, default } => {
            let primary = push(nodes, primary);
            let default = push(nodes, default);
            SpecNode::Default(DefaultSpec { primary, default })
        }
        Schema::Literal(v) => SpecNode::Literal(v.clone()),
    };
    nodes[at] = node;
    at as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_always_come_after_their_parent() {
        let spec = Schema::object([
            ("shell", Schema::attr("string").or_default("\"bash\"")),
            (
                "mount",
                Schema::block_list(Schema::object([("source", Schema::required("string"))])),
            ),
        ])
        .build();
        for (i, n) in spec.nodes.iter().enumerate() {
            let kids: Vec<u32> = match n {
                SpecNode::Object(f) => f.iter().map(|(_, c)| *c).collect(),
                SpecNode::Array(c) => c.clone(),
                SpecNode::Default(d) => vec![d.primary, d.default],
                SpecNode::BlockList(b) => vec![b.nested],
                _ => vec![],
            };
            for k in kids {
                assert!(k as usize > i && (k as usize) < spec.nodes.len());
            }
        }
        assert!(matches!(&spec.nodes[0], SpecNode::Object(f) if f.len() == 2));
        assert!(matches!(&spec.nodes[3], SpecNode::Literal(l) if l == "\"bash\""));
        // The attribute under the Default carries its field's name.
        assert!(matches!(&spec.nodes[2], SpecNode::Attr(a) if a.name == "shell"));
    }
}
