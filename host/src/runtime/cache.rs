//! Ahead-of-time compilation with an on-disk cache.
//!
//! Compiling a component with Cranelift takes tens of milliseconds (seconds
//! in a debug build); deserializing a precompiled artifact takes well under
//! one. Artifacts are stored as `<sha256 of the component>-<engine hash>.cwasm`
//! so a new guest, a new host build or a different engine configuration
//! never picks up a stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use super::LoadError;

pub(super) struct Loaded {
    pub component: Component,
    pub sha256: String,
    pub source: Source,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    /// The file itself was a precompiled artifact.
    Precompiled,
    /// Found in the cache.
    Cache,
    /// Compiled now (and written to the cache if there is one).
    Compiled,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Precompiled => "precompiled file",
            Source::Cache => "cache",
            Source::Compiled => "compiled",
        }
    }
}

/// The hex sha256 of a guest's bytes: its identity everywhere. (aws-lc's
/// SHA-256 uses the CPU's SHA instructions: several times faster than a
/// portable one, and hashing is on every load.)
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// The file name of the cached artifact for these bytes on this engine.
pub(crate) fn artifact_name(engine: &Engine, sha256: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{sha256}-{:016x}.cwasm", h.finish())
}

pub(super) fn load_component(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    let sha256 = sha256_hex(bytes);
    let not_component = |reason: String| LoadError::NotAComponent {
        path: path.to_path_buf(),
        reason,
    };
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => {
            let component = deserialize(engine, bytes).map_err(not_component)?;
            return Ok(Loaded {
                component,
                sha256,
                source: Source::Precompiled,
            });
        }
        Some(Precompiled::Module) => {
            return Err(not_component(
                "it is a precompiled core module, not a component".into(),
            ));
        }
        None => {}
    }

    let cached: Option<PathBuf> = cache_dir.map(|d| d.join(artifact_name(engine, &sha256)));
    if let Some(file) = &cached
        && let Ok(artifact) = std::fs::read(file)
    {
        match deserialize(engine, &artifact) {
            Ok(component) => {
                return Ok(Loaded {
                    component,
                    sha256,
                    source: Source::Cache,
                });
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unusable cached artifact")
            }
        }
    }

    let artifact = engine
        .precompile_component(bytes)
        .map_err(|e| not_component(format!("{e:#}")))?;
    if let (Some(dir), Some(file)) = (cache_dir, &cached)
        && let Err(e) = store_artifact(dir, file, &artifact)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compile cache; compiling on every start");
    }
    let component = deserialize(engine, &artifact).map_err(not_component)?;
    Ok(Loaded {
        component,
        sha256,
        source: Source::Compiled,
    })
}

/// Writes atomically (temp file + rename) into a private directory.
fn store_artifact(dir: &Path, file: &Path, artifact: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, artifact)?;
    std::fs::rename(&tmp, file)
}

#[allow(unsafe_code)]
pub(super) fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: wasmtime requires that precompiled bytes come from a trusted
    // source. They are either the guest file the operator named (trusted like
    // the host binary itself) or an artifact this host wrote into its own
    // 0700 cache directory. wasmtime still checks the engine and version
    // header and refuses a mismatch.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))
}
