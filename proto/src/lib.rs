//! Wire types for Nomad's driver-plugin protocol and go-plugin's internal
//! services, generated from the `.proto` files in this crate's folder.
//!
//! The files are written for this project from the wire facts (package,
//! service and method names, field numbers); only those matter on the wire.
//! Generated code is kept apart from logic: the host's `nomad` adapter is
//! the one place that maps these types to the host's own.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

/// The generated modules, nested like the proto packages so that prost's
/// relative paths (`super::super::shared::...`) resolve.
pub mod hashicorp {
    pub mod nomad {
        pub mod plugins {
            pub mod shared {
                pub mod hclspec {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.hclspec");
                }
                pub mod structs {
                    tonic::include_proto!("hashicorp.nomad.plugins.shared.structs");
                }
            }
            pub mod base {
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.base.proto");
                }
            }
            pub mod drivers {
                pub mod proto {
                    tonic::include_proto!("hashicorp.nomad.plugins.drivers.proto");
                }
            }
        }
    }
}

/// `hashicorp.nomad.plugins.base.proto`
pub use hashicorp::nomad::plugins::base::proto as base;
/// `hashicorp.nomad.plugins.drivers.proto`
pub use hashicorp::nomad::plugins::drivers::proto as drivers;
/// `hashicorp.nomad.plugins.shared.hclspec`
pub use hashicorp::nomad::plugins::shared::hclspec;
/// `hashicorp.nomad.plugins.shared.structs`
pub use hashicorp::nomad::plugins::shared::structs;

/// go-plugin's internal services (`plugin` package).
pub mod goplugin {
    tonic::include_proto!("plugin");
}
