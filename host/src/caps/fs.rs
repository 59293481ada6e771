//! `nomad:driver/fs`: files inside the directories the operator granted
//! (`dir` grants) and, in a call about a task, that task's allocation
//! directory.
//!
//! Every operation opens the granted root as a cap-std [`Dir`] and works
//! relative to it, so `..` and symlinks cannot lead outside it: cap-std
//! resolves each path component itself and refuses an escape.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::fs::{Entry, EntryKind, FsError, Host};

/// The most `read-file` returns.
pub const READ_LIMIT: u64 = 16 << 20;

/// A directory tree the current call may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub path: PathBuf,
    pub write: bool,
}

/// The roots of a call: the `dir` grants, plus the task's allocation
/// directory (writable) when the call is about a task.
pub fn roots(state: &CallState) -> Vec<Root> {
    let mut roots: Vec<Root> = state
        .host
        .grants
        .dirs()
        .iter()
        .map(|g| Root {
            path: g.path.clone(),
            write: g.write,
        })
        .collect();
    if let Some(task) = &state.task
        && Path::new(&task.alloc_dir).is_absolute()
    {
        roots.push(Root {
            path: Path::new(&task.alloc_dir).components().collect(),
            write: true,
        });
    }
    roots
}

/// A path inside a root.
#[derive(Debug)]
pub struct Resolved {
    pub root: Root,
    /// Relative to the root; empty for the root itself.
    pub rel: PathBuf,
}

/// Finds the granted root `path` is under (the deepest one), checking the
/// access asked for.
pub fn resolve(roots: &[Root], path: &str, write: bool) -> Result<Resolved, FsError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(FsError::Failed(format!("{path:?} is not an absolute path")));
    }
    let normal: PathBuf = p.components().collect();
    let mut best: Option<(&Root, PathBuf)> = None;
    for root in roots {
        if let Ok(rel) = normal.strip_prefix(&root.path) {
            let deeper = best
                .as_ref()
                .is_none_or(|(b, _)| root.path.as_os_str().len() > b.path.as_os_str().len());
            if deeper {
                best = Some((root, rel.to_path_buf()));
            }
        }
    }
    let Some((root, rel)) = best else {
        return Err(FsError::NotGranted(format!(
            "{path} is outside every directory granted to this guest: add \
             `dir \"<directory>\" {{}}` to its grants file"
        )));
    };
    if write && !root.write {
        return Err(FsError::NotGranted(format!(
            "writing {path}: the grant for {} is read-only: make it \
             `dir \"{}\" {{ write = true }}` in the grants file",
            root.path.display(),
            root.path.display()
        )));
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        // cap-std would refuse an escape anyway; `..` that stays inside is
        // refused too, so a path means what it says.
        return Err(FsError::NotGranted(format!(
            "{path}: `..` is not allowed in paths"
        )));
    }
    Ok(Resolved {
        root: root.clone(),
        rel,
    })
}

fn open_root(r: &Resolved) -> Result<Dir, FsError> {
    Dir::open_ambient_dir(&r.root.path, ambient_authority()).map_err(|e| {
        io_error(
            &format!("opening granted directory {}", r.root.path.display()),
            &r.root.path,
            e,
        )
    })
}

fn rel_or_dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

fn io_error(what: &str, root: &Path, e: std::io::Error) -> FsError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound(format!("{what}: not found")),
        std::io::ErrorKind::PermissionDenied if e.to_string().contains("outside") => {
            FsError::NotGranted(format!(
                "{what}: leads outside the granted directory {}",
                root.display()
            ))
        }
        _ => FsError::Failed(format!("{what}: {e}")),
    }
}

fn kind_of(ft: cap_std::fs::FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

pub fn read_file(roots: &[Root], path: &str) -> Result<Vec<u8>, FsError> {
    let r = resolve(roots, path, false)?;
    let dir = open_root(&r)?;
    let err = |e| io_error(&format!("reading {path}"), &r.root.path, e);
    let file = dir.open(rel_or_dot(&r.rel)).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    if len > READ_LIMIT {
        return Err(FsError::Failed(format!(
            "reading {path}: {len} bytes is more than the {READ_LIMIT} byte limit"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(READ_LIMIT + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > READ_LIMIT {
        return Err(FsError::Failed(format!(
            "reading {path}: more than the {READ_LIMIT} byte limit"
        )));
    }
    Ok(out)
}

pub fn write_file(roots: &[Root], path: &str, contents: &[u8], mode: u32) -> Result<(), FsError> {
    use std::io::Write;
    let r = resolve(roots, path, true)?;
    let Some(name) = r.rel.file_name() else {
        return Err(FsError::Failed(format!("{path} names no file")));
    };
    let dir = open_root(&r)?;
    let err = |e| io_error(&format!("writing {path}"), &r.root.path, e);
    let parent = r.rel.parent().unwrap_or(Path::new(""));
    let tmp = parent.join(format!(
        ".{}.{:08x}.tmp",
        name.to_string_lossy(),
        rand::random::<u32>()
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true).mode(mode & 0o7777);
    let mut file = dir.open_with(&tmp, &opts).map_err(err)?;
    let written = file.write_all(contents).and_then(|()| file.flush());
    drop(file);
    if let Err(e) = written.and_then(|()| dir.rename(&tmp, &dir, &r.rel)) {
        let _ = dir.remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

pub fn list_dir(roots: &[Root], path: &str) -> Result<Vec<Entry>, FsError> {
    let r = resolve(roots, path, false)?;
    let dir = open_root(&r)?;
    let err = |e| io_error(&format!("listing {path}"), &r.root.path, e);
    let mut entries = Vec::new();
    for entry in dir.read_dir(rel_or_dot(&r.rel)).map_err(err)? {
        let entry = entry.map_err(err)?;
        let ft = entry.file_type().map_err(err)?;
        let size = if ft.is_file() {
            entry.metadata().map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        entries.push(Entry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind: kind_of(ft),
            size,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

pub fn create_dir(roots: &[Root], path: &str) -> Result<(), FsError> {
    let r = resolve(roots, path, true)?;
    if r.rel.as_os_str().is_empty() {
        return Ok(());
    }
    let dir = open_root(&r)?;
    dir.create_dir_all(&r.rel)
        .map_err(|e| io_error(&format!("creating {path}"), &r.root.path, e))
}

pub fn remove(roots: &[Root], path: &str) -> Result<(), FsError> {
    let r = resolve(roots, path, true)?;
    if r.rel.as_os_str().is_empty() {
        return Err(FsError::Failed(format!(
            "{path} is a granted directory itself; it cannot be removed"
        )));
    }
    let dir = open_root(&r)?;
    let err = |e| io_error(&format!("removing {path}"), &r.root.path, e);
    let removed = match dir.symlink_metadata(&r.rel) {
        Ok(m) if m.is_dir() => dir.remove_dir_all(&r.rel),
        Ok(_) => dir.remove_file(&r.rel),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

pub fn metadata(roots: &[Root], path: &str) -> Result<Option<Entry>, FsError> {
    let r = resolve(roots, path, false)?;
    let dir = open_root(&r)?;
    match dir.symlink_metadata(rel_or_dot(&r.rel)) {
        Ok(m) => Ok(Some(Entry {
            name: r
                .rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: kind_of(m.file_type()),
            size: if m.is_file() { m.len() } else { 0 },
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&format!("inspecting {path}"), &r.root.path, e)),
    }
}

impl Host for CallState {
    fn read_file(&mut self, path: String) -> Result<Vec<u8>, FsError> {
        let roots = roots(self);
        self.blocking(|_| read_file(&roots, &path))
    }

    fn write_file(&mut self, path: String, contents: Vec<u8>, mode: u32) -> Result<(), FsError> {
        let roots = roots(self);
        self.blocking(|_| write_file(&roots, &path, &contents, mode))
    }

    fn list_dir(&mut self, path: String) -> Result<Vec<Entry>, FsError> {
        let roots = roots(self);
        self.blocking(|_| list_dir(&roots, &path))
    }

    fn create_dir(&mut self, path: String) -> Result<(), FsError> {
        let roots = roots(self);
        self.blocking(|_| create_dir(&roots, &path))
    }

    fn remove(&mut self, path: String) -> Result<(), FsError> {
        let roots = roots(self);
        self.blocking(|_| remove(&roots, &path))
    }

    fn metadata(&mut self, path: String) -> Result<Option<Entry>, FsError> {
        let roots = roots(self);
        self.blocking(|_| metadata(&roots, &path))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Vec<Root>) {
        let t = tempfile::tempdir().unwrap();
        let ro = t.path().join("images");
        let rw = t.path().join("work");
        std::fs::create_dir_all(ro.join("sub")).unwrap();
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::write(ro.join("sub/a.txt"), b"alpha").unwrap();
        std::fs::write(t.path().join("secret.txt"), b"outside").unwrap();
        let roots = vec![
            Root {
                path: ro,
                write: false,
            },
            Root {
                path: rw,
                write: true,
            },
        ];
        (t, roots)
    }

    fn p(t: &tempfile::TempDir, rel: &str) -> String {
        t.path().join(rel).to_string_lossy().into_owned()
    }

    #[test]
    fn reads_and_lists_inside_a_read_only_grant() {
        let (t, roots) = setup();
        assert_eq!(
            read_file(&roots, &p(&t, "images/sub/a.txt")).unwrap(),
            b"alpha"
        );
        let list = list_dir(&roots, &p(&t, "images/sub")).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].name.as_str(), list[0].size), ("a.txt", 5));
        assert!(matches!(list[0].kind, EntryKind::File));
        let m = metadata(&roots, &p(&t, "images/sub")).unwrap().unwrap();
        assert!(matches!(m.kind, EntryKind::Directory));
        assert!(metadata(&roots, &p(&t, "images/none")).unwrap().is_none());
    }

    #[test]
    fn writes_are_refused_in_a_read_only_grant_naming_it() {
        let (t, roots) = setup();
        match write_file(&roots, &p(&t, "images/new.txt"), b"x", 0o644) {
            Err(FsError::NotGranted(m)) => assert!(m.contains("write = true"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!t.path().join("images/new.txt").exists());
        assert!(matches!(
            remove(&roots, &p(&t, "images/sub/a.txt")),
            Err(FsError::NotGranted(_))
        ));
    }

    #[test]
    fn paths_outside_every_grant_are_refused() {
        let (t, roots) = setup();
        match read_file(&roots, &p(&t, "secret.txt")) {
            Err(FsError::NotGranted(m)) => assert!(m.contains("outside every directory"), "{m}"),
            other => panic!("{other:?}"),
        }
        // `..` never gets out, even when the lexical prefix matches.
        assert!(matches!(
            read_file(&roots, &p(&t, "images/../secret.txt")),
            Err(FsError::NotGranted(_))
        ));
        assert!(matches!(
            read_file(&roots, "relative/path"),
            Err(FsError::Failed(_))
        ));
    }

    #[test]
    fn symlinks_cannot_lead_outside_a_grant() {
        let (t, roots) = setup();
        std::os::unix::fs::symlink(t.path().join("secret.txt"), t.path().join("work/link"))
            .unwrap();
        std::os::unix::fs::symlink("../secret.txt", t.path().join("work/rel-link")).unwrap();
        for link in ["work/link", "work/rel-link"] {
            match read_file(&roots, &p(&t, link)) {
                Err(FsError::NotGranted(m)) => assert!(m.contains("leads outside"), "{m}"),
                other => panic!("{link}: {other:?}"),
            }
        }
        // Writing through an escaping symlink replaces the link, never the
        // file outside.
        write_file(&roots, &p(&t, "work/link"), b"new", 0o600).unwrap();
        assert_eq!(
            std::fs::read(t.path().join("secret.txt")).unwrap(),
            b"outside"
        );
    }

    #[test]
    fn writes_are_atomic_and_take_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let (t, roots) = setup();
        let f = p(&t, "work/conf/app.json");
        assert!(matches!(
            write_file(&roots, &f, b"{}", 0o640),
            Err(FsError::NotFound(_))
        ));
        create_dir(&roots, &p(&t, "work/conf")).unwrap();
        write_file(&roots, &f, b"{\"a\":1}", 0o640).unwrap();
        write_file(&roots, &f, b"{\"a\":2}", 0o640).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"{\"a\":2}");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o640 & !0o022, "mode {mode:o}");
        let names: Vec<String> = list_dir(&roots, &p(&t, "work/conf"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["app.json"], "no temp files left");
        remove(&roots, &p(&t, "work/conf")).unwrap();
        assert!(!t.path().join("work/conf").exists());
        remove(&roots, &p(&t, "work/conf")).unwrap();
        assert!(matches!(
            remove(&roots, &p(&t, "work")),
            Err(FsError::Failed(_))
        ));
    }

    #[test]
    fn reads_are_capped() {
        let (t, roots) = setup();
        let big = t.path().join("work/big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(READ_LIMIT + 1).unwrap();
        match read_file(&roots, &big.to_string_lossy()) {
            Err(FsError::Failed(m)) => assert!(m.contains("limit"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_deepest_grant_decides() {
        let (t, mut roots) = setup();
        roots.push(Root {
            path: t.path().join("images/sub"),
            write: true,
        });
        write_file(&roots, &p(&t, "images/sub/b.txt"), b"b", 0o644).unwrap();
        assert!(matches!(
            write_file(&roots, &p(&t, "images/c.txt"), b"c", 0o644),
            Err(FsError::NotGranted(_))
        ));
    }
}
