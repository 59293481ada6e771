//! The guest's flattened schema (WIT `spec`: a node list, children by
//! index) turned into Nomad's recursive `hclspec.Spec`.

use nomad_plugin_proto::hclspec as pb;

use crate::runtime::bindings::nomad::driver::types::{Spec, SpecNode};

/// Most nodes a schema may have; a larger one is a guest bug.
const MAX_NODES: usize = 10_000;

/// Builds the proto tree, checking the flattening rules from `wit/`: node 0
/// is the root and every child index is greater than its parent's.
pub fn to_proto(spec: &Spec) -> Result<pb::Spec, String> {
    if spec.nodes.is_empty() {
        return Err("the schema has no nodes (node 0 must be the root)".into());
    }
    if spec.nodes.len() > MAX_NODES {
        return Err(format!(
            "the schema has {} nodes; at most {MAX_NODES} are allowed",
            spec.nodes.len()
        ));
    }
    build(spec, 0)
}

fn child(spec: &Spec, parent: usize, index: u32) -> Result<pb::Spec, String> {
    let i = index as usize;
    if i <= parent || i >= spec.nodes.len() {
        return Err(format!(
            "schema node {parent} refers to node {index}, but children must come after their parent \
             and exist (there are {} nodes)",
            spec.nodes.len()
        ));
    }
    build(spec, i)
}

fn build(spec: &Spec, at: usize) -> Result<pb::Spec, String> {
    use pb::spec::Block as B;
    let node = &spec.nodes[at];
    let block = match node {
        SpecNode::Object(fields) => {
            let mut attributes = std::collections::HashMap::new();
            for (name, idx) in fields {
                attributes.insert(name.clone(), child(spec, at, *idx)?);
            }
            B::Object(pb::Object { attributes })
        }
        SpecNode::Array(items) => B::Array(pb::Array {
            values: items
                .iter()
                .map(|i| child(spec, at, *i))
                .collect::<Result<_, _>>()?,
        }),
        SpecNode::Attr(a) => {
            check_type(at, &a.type_expr)?;
            B::Attr(pb::Attr {
                name: a.name.clone(),
                r#type: a.type_expr.clone(),
                required: a.required,
            })
        }
        SpecNode::Block(b) => B::BlockValue(Box::new(pb::Block {
            name: b.name.clone(),
            required: b.required,
            nested: Some(Box::new(child(spec, at, b.nested)?)),
        })),
        SpecNode::BlockAttrs(a) => {
            check_type(at, &a.type_expr)?;
            B::BlockAttrs(pb::BlockAttrs {
                name: a.name.clone(),
                r#type: a.type_expr.clone(),
                required: a.required,
            })
        }
        SpecNode::BlockList(b) => B::BlockList(Box::new(pb::BlockList {
            name: b.name.clone(),
            min_items: b.min_items,
            max_items: b.max_items,
            nested: Some(Box::new(child(spec, at, b.nested)?)),
        })),
        SpecNode::BlockSet(b) => B::BlockSet(Box::new(pb::BlockSet {
            name: b.name.clone(),
            min_items: b.min_items,
            max_items: b.max_items,
            nested: Some(Box::new(child(spec, at, b.nested)?)),
        })),
        SpecNode::BlockMap(b) => {
            if b.labels.is_empty() {
                return Err(format!(
                    "schema node {at} (block map {:?}) needs at least one label",
                    b.name
                ));
            }
            B::BlockMap(Box::new(pb::BlockMap {
                name: b.name.clone(),
                labels: b.labels.clone(),
                nested: Some(Box::new(child(spec, at, b.nested)?)),
            }))
        }
        SpecNode::Default(d) => B::Default(Box::new(pb::Default {
            primary: Some(Box::new(child(spec, at, d.primary)?)),
            default: Some(Box::new(child(spec, at, d.default)?)),
        })),
        SpecNode::Literal(v) => B::Literal(pb::Literal { value: v.clone() }),
    };
    Ok(pb::Spec { block: Some(block) })
}

/// Nomad fails to parse an empty type expression; catch it at load.
fn check_type(at: usize, ty: &str) -> Result<(), String> {
    if ty.trim().is_empty() {
        return Err(format!(
            "schema node {at} has an empty type; use \"any\" for an untyped attribute"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::bindings::nomad::driver::types::{AttrSpec, DefaultSpec};

    fn attr(name: &str, ty: &str) -> SpecNode {
        SpecNode::Attr(AttrSpec {
            name: name.into(),
            type_expr: ty.into(),
            required: false,
        })
    }

    #[test]
    fn builds_object_with_default() {
        let spec = Spec {
            nodes: vec![
                SpecNode::Object(vec![("shell".into(), 1)]),
                SpecNode::Default(DefaultSpec {
                    primary: 2,
                    default: 3,
                }),
                attr("shell", "string"),
                SpecNode::Literal("\"bash\"".into()),
            ],
        };
        let pb = to_proto(&spec).unwrap();
        let Some(pb::spec::Block::Object(obj)) = pb.block else {
            panic!("not an object")
        };
        let Some(pb::spec::Block::Default(d)) = &obj.attributes["shell"].block else {
            panic!("no default")
        };
        let Some(pb::spec::Block::Literal(l)) = &d.default.as_ref().unwrap().block else {
            panic!()
        };
        assert_eq!(l.value, "\"bash\"");
    }

    #[test]
    fn rejects_backward_and_dangling_references() {
        let cyclic = Spec {
            nodes: vec![SpecNode::Object(vec![("a".into(), 0)])],
        };
        assert!(to_proto(&cyclic).unwrap_err().contains("refers to node 0"));
        let dangling = Spec {
            nodes: vec![SpecNode::Array(vec![5])],
        };
        assert!(
            to_proto(&dangling)
                .unwrap_err()
                .contains("refers to node 5")
        );
        assert!(to_proto(&Spec { nodes: vec![] }).is_err());
        let untyped = Spec {
            nodes: vec![attr("x", " ")],
        };
        assert!(to_proto(&untyped).unwrap_err().contains("empty type"));
    }
}
