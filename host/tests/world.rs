//! Loading checks a guest against the world this host serves: a component
//! built against an older draft of `nomad:driver` is refused with the names
//! of what it lacks; something that is not a component is refused too.
//!
//! `fixtures/hello-older-world.wasm` is the hello guest as built at commit
//! 440bc42, before the `task-stats` and `poll-task` exports and the `http`
//! and `fs` imports existed.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::{self, CallLimits, Guest, LoadError};

fn load(path: &std::path::Path) -> Result<Guest, LoadError> {
    let engine = runtime::engine().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = HostContext::new("x.wasm".into(), Grants::default(), state.path().into());
    Guest::load(&engine, path, None, host, CallLimits::default())
}

#[test]
fn a_guest_built_against_an_older_world_is_refused_naming_what_it_lacks() {
    let old =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello-older-world.wasm");
    match load(&old) {
        Err(e @ LoadError::WrongWorld { .. }) => {
            let text = e.to_string();
            assert!(text.contains("nomad:driver/driver-guest@0.1.0"), "{text}");
            assert!(
                text.contains("task-stats") || text.contains("poll-task"),
                "the error names a missing export: {text}"
            );
        }
        Err(e) => panic!("expected a wrong-world error, got: {e}"),
        Ok(_) => panic!("an older-world guest loaded"),
    }
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest core module: magic and version only.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    match load(&core) {
        Err(e @ LoadError::NotAComponent { .. }) => {
            assert!(e.to_string().contains("core.wasm"), "{e}")
        }
        Err(e) => panic!("expected not-a-component, got: {e}"),
        Ok(_) => panic!("a core module loaded as a guest"),
    }
}
