//! Proof that the Triton guest's linear memory never holds the bytes of the
//! private key the host signs its CloudAPI requests with.
//!
//! How: the host's own loader and driver core (`runtime::Guest::load`,
//! `driver::Driver`, the code the plugin and `nomad-driver-wasm run` use) run
//! the BUILT guest through whole task lifecycles against the Triton simulator
//! (`tests/triton-sim`, which verifies every HTTP Signature), with real keys
//! held by the host through `secret` grants (four key files, and one key
//! whose PEM text is in an environment variable). The only difference from the
//! plugin is the engine: instead of the pooling allocator, every linear memory
//! an instance gets comes from [`ScanningCreator`] below (wasmtime's
//! `Config::with_host_memory`, on-demand allocation). Each memory is scanned
//! when wasmtime frees it, i.e. at the end of every guest call (the host makes
//! a fresh instance per call and drops it afterwards), whole, from byte 0 to
//! its final size; and also in the middle of a call, each time the http
//! import has just signed a request with the key (the host's trace event
//! `http request signed`), while the guest waits in that import. The host's
//! trace span `guest call` names the call the memory belongs to.
//!
//! What is looked for, for every key in every scan: any 24-byte run of any
//! encoding of the key that contains at least one byte of secret value (so
//! the public key, format headers and constants never count): the PEM body
//! lines, the base64 body unwrapped, the decoded file (PKCS#1 or PKCS#8 DER,
//! or the OpenSSH key blob), PKCS#1 and PKCS#8 DER of RSA keys and PKCS#8 DER of
//! Ed25519 (and their base64), and every secret number raw, big- and
//! little-endian and in hex (RSA d, p, q, dp, dq, qinv; the Ed25519 seed;
//! the ECDSA scalar).
//!
//! It cannot pass vacuously: every call kind of the lifecycle must have been
//! scanned, every scan must have covered bytes, the calls that talk to
//! Triton must show the request URL (and the configured ones the account) in
//! the memory scanned, the simulator must have verified requests signed with
//! each key during its run, and three positive controls (key material handed
//! to the guest through channels it does see: as set-config's argument, and
//! as a plugin config string, found after set-config and fingerprint and
//! mid-call in start-task) must be reported by the same scanner through the
//! same paths.
//!
//! This guest never calls `http.describe-key`; the host's answer to it is
//! scanned directly instead.
//!
//! Needs the built guest (`scripts/build.sh`, or `cargo build -p
//! triton-guest --target wasm32-wasip2 --profile guest`), `go` (builds the
//! simulator) and `ssh-keygen`.

#![allow(clippy::unwrap_used)]
// `ScanningMemory` implements wasmtime's unsafe `LinearMemory` and
// `MemoryCreator` traits and owns a raw allocation; see its SAFETY comments.
#![allow(unsafe_code)]

mod common;

use std::alloc::Layout;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{
    SimProcess, checked, docker_sleep_conf, guest_wasm, repo, sim_binary, sim_request_async,
};
use nomad_wasm_host::caps::HostContext;
use nomad_wasm_host::driver::Driver;
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::{CallLimits, Guest};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::traits::PrivateKeyParts as _;
use serde_json::Value;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use triton::config::{CloudApi, CloudImage, Network, Package, PluginConf, TaskConf};

const ACCOUNT: &str = "keymem-acct";

/// The shortest run of an encoding counted as a leak.
const WINDOW: usize = 24;

// ---------------------------------------------------------------------------
// Which guest call is running on this thread: the host's `guest call` span.

thread_local! {
    static CURRENT_CALL: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct CallName(String);

/// Keeps, per thread, the `call` field of the host's `guest call` spans that
/// are entered, and scans the running call's memories at the http
/// capability's `http request signed` event. Enables nothing else.
struct CallNames;

struct CallField(Option<String>);

impl tracing::field::Visit for CallField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "call" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "call" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

fn is_call_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.name() == "guest call"
}

/// The host's `http request signed` event, inside the http import.
fn is_signed_event(m: &tracing::Metadata<'_>) -> bool {
    m.is_event() && m.target() == "nomad_wasm_host::caps::http"
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for CallNames {
    fn register_callsite(
        &self,
        m: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if is_call_span(m) || is_signed_event(m) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(&self, m: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        is_call_span(m) || is_signed_event(m)
    }
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if is_signed_event(event.metadata()) {
            scan_live_memories_of_this_thread();
        }
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::Id,
        ctx: Context<'_, S>,
    ) {
        let mut call = CallField(None);
        attrs.record(&mut call);
        if let (Some(name), Some(span)) = (call.0, ctx.span(id)) {
            span.extensions_mut().insert(CallName(name));
        }
    }
    fn on_enter(&self, id: &tracing::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(name) = span.extensions().get::<CallName>()
        {
            CURRENT_CALL.with(|c| c.borrow_mut().push(name.0.clone()));
        }
    }
    fn on_exit(&self, id: &tracing::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && span.extensions().get::<CallName>().is_some()
        {
            CURRENT_CALL.with(|c| c.borrow_mut().pop());
        }
    }
}

fn install_call_names() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CallNames))
            .unwrap();
    });
}

// ---------------------------------------------------------------------------
// The scanner: every 24-byte window of every secret encoding, plus markers.

/// One encoding of a key: its bytes and which of them are secret.
#[derive(Debug, Clone)]
struct Form {
    label: String,
    bytes: Vec<u8>,
    secret: Vec<bool>,
}

impl Form {
    fn all_secret(label: String, bytes: Vec<u8>) -> Form {
        let secret = vec![true; bytes.len()];
        Form {
            label,
            bytes,
            secret,
        }
    }

    /// `bytes` with the secret values found in it marked.
    fn containing(label: String, bytes: Vec<u8>, secrets: &[(String, Vec<u8>)]) -> Form {
        let mut secret = vec![false; bytes.len()];
        for (_, s) in secrets {
            // As stored in the encodings: without leading zero bytes.
            let s = &s[s.iter().position(|&b| b != 0).unwrap_or(s.len())..];
            let mut i = 0;
            while let Some(at) = find(&bytes[i..], s) {
                secret[i + at..i + at + s.len()].fill(true);
                i += at + 1;
            }
        }
        assert!(
            secret.iter().any(|&b| b),
            "{label}: no secret value found in it (the test's key parsing is wrong)"
        );
        Form {
            label,
            bytes,
            secret,
        }
    }

    /// The base64 of this form: a character is secret when a bit it
    /// encodes is.
    fn base64(&self, label: String) -> Form {
        let text = B64.encode(&self.bytes).into_bytes();
        let secret = (0..text.len())
            .map(|c| {
                let (first, last) = (6 * c / 8, (6 * c + 5) / 8);
                (first..=last.min(self.bytes.len().saturating_sub(1)))
                    .any(|b| self.secret.get(b).copied().unwrap_or(false))
            })
            .collect();
        Form {
            label,
            bytes: text,
            secret,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug)]
struct Scanner {
    ac: AhoCorasick,
    /// Per pattern: the labels of the forms it comes from, or a marker's.
    hits: Vec<Hit>,
}

#[derive(Debug)]
enum Hit {
    Leak(Vec<String>),
    Marker(String),
}

impl Scanner {
    fn new(forms: &[Form], markers: &[(&str, &str)]) -> Scanner {
        let mut windows: HashMap<&[u8], Vec<String>> = HashMap::new();
        for f in forms {
            if f.bytes.len() < WINDOW {
                continue;
            }
            for s in 0..=f.bytes.len() - WINDOW {
                if !f.secret[s..s + WINDOW].contains(&true) {
                    continue;
                }
                let labels = windows.entry(&f.bytes[s..s + WINDOW]).or_default();
                if !labels.contains(&f.label) {
                    labels.push(f.label.clone());
                }
            }
        }
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut hits = Vec::new();
        for (w, labels) in windows {
            patterns.push(w.to_vec());
            hits.push(Hit::Leak(labels));
        }
        for (name, text) in markers {
            patterns.push(text.as_bytes().to_vec());
            hits.push(Hit::Marker((*name).to_owned()));
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .unwrap();
        Scanner { ac, hits }
    }

    /// The leaked forms and the markers found in `mem`.
    fn scan(&self, mem: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut leaks, mut markers) = (BTreeSet::new(), BTreeSet::new());
        for m in self.ac.find_overlapping_iter(mem) {
            match &self.hits[m.pattern().as_usize()] {
                Hit::Leak(labels) => leaks.extend(labels.iter().cloned()),
                Hit::Marker(name) => {
                    markers.insert(name.clone());
                }
            }
        }
        (leaks, markers)
    }
}

/// What one freed guest memory held.
#[derive(Debug, Clone)]
struct Scan {
    call: String,
    bytes: usize,
    leaks: BTreeSet<String>,
    markers: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Sink {
    scanner: RwLock<Option<Arc<Scanner>>>,
    scans: Mutex<Vec<Scan>>,
}

impl Sink {
    fn take(&self) -> Vec<Scan> {
        std::mem::take(&mut *self.scans.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Scans `mem` for the call running on this thread; `when` is added to
    /// the call's name ("" for the scan when the memory is freed).
    fn record(&self, mem: &[u8], when: &str) {
        let call = CURRENT_CALL
            .with(|c| c.borrow().last().cloned())
            .unwrap_or_else(|| "(outside any guest call)".into())
            + when;
        let scanner = self
            .scanner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (leaks, markers) = match scanner {
            Some(s) => s.scan(mem),
            None => (
                BTreeSet::from(["NOT SCANNED: no scanner yet".to_owned()]),
                BTreeSet::new(),
            ),
        };
        self.scans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Scan {
                call,
                bytes: mem.len(),
                leaks,
                markers,
            });
    }
}

// ---------------------------------------------------------------------------
// Linear memories that are scanned when wasmtime frees them.

const ALIGN: usize = 16;

/// A guest's linear memory in a plain heap allocation, zeroed, scanned in
/// full when dropped (when the call's store drops its instance).
struct ScanningMemory {
    /// Its entry in [`LIVE`].
    id: u64,
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    max: Option<usize>,
    sink: Arc<Sink>,
}

// SAFETY: the allocation is owned by this value alone; wasmtime accesses it
// only through the store that owns the memory, one thread at a time.
unsafe impl Send for ScanningMemory {}
// SAFETY: as above; `&self` methods only read `len`, `cap` and the pointer.
unsafe impl Sync for ScanningMemory {}

fn layout(cap: usize) -> Layout {
    // `cap` is at most the memory's maximum, far below isize::MAX.
    Layout::from_size_align(cap.max(ALIGN), ALIGN).unwrap()
}

impl ScanningMemory {
    fn new(minimum: usize, max: Option<usize>, sink: Arc<Sink>) -> Result<Self, String> {
        let cap = minimum.max(ALIGN);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout(cap)) };
        let ptr = NonNull::new(ptr).ok_or("out of memory")?;
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = ScanningMemory {
            id,
            ptr,
            len: minimum,
            cap,
            max,
            sink,
        };
        m.publish();
        Ok(m)
    }

    /// Records where the memory is now, for mid-call scans.
    fn publish(&self) {
        live().insert(
            self.id,
            Live {
                thread: std::thread::current().id(),
                ptr: self.ptr.as_ptr() as usize,
                len: self.len,
                sink: self.sink.clone(),
            },
        );
    }
}

/// A memory that exists now: where it is and which thread made it (the
/// thread its call runs on).
#[derive(Clone)]
struct Live {
    thread: std::thread::ThreadId,
    ptr: usize,
    len: usize,
    sink: Arc<Sink>,
}

static LIVE: OnceLock<Mutex<HashMap<u64, Live>>> = OnceLock::new();

fn live() -> std::sync::MutexGuard<'static, HashMap<u64, Live>> {
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Scans the memories of the guest call running on this thread, which is
/// inside a host import (the http capability has just signed a request).
fn scan_live_memories_of_this_thread() {
    let me = std::thread::current().id();
    let mine: Vec<Live> = live()
        .values()
        .filter(|l| l.thread == me)
        .cloned()
        .collect();
    for l in mine {
        // SAFETY: the memory was made by the call running on this thread,
        // which is now inside a host import: no guest code runs until the
        // import returns, the host does not write guest memory meanwhile
        // (the import's arguments were copied out), and the memory cannot
        // be freed or moved (that happens on this thread). `LIVE` has its
        // current place and size (updated on every growth).
        let mem = unsafe { std::slice::from_raw_parts(l.ptr as *const u8, l.len) };
        l.sink.record(mem, " (mid-call, request just signed)");
    }
}

// SAFETY: `as_ptr` points to `byte_capacity` bytes owned by this value, all
// initialised (zeroed when allocated, zeroed again past the old capacity on
// growth); growth within the capacity never moves it, growth beyond it may
// (the engine allows memories to move).
unsafe impl wasmtime::LinearMemory for ScanningMemory {
    fn byte_size(&self) -> usize {
        self.len
    }

    fn byte_capacity(&self) -> usize {
        self.cap
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if self.max.is_some_and(|m| new_size > m) {
            wasmtime::bail!("memory maximum exceeded");
        }
        if new_size > self.cap {
            let new_cap = new_size
                .max(self.cap.saturating_mul(2))
                .min(self.max.unwrap_or(usize::MAX));
            let new_cap = new_cap.max(new_size);
            // SAFETY: `ptr` was allocated with `layout(self.cap)`; the new
            // size is non-zero and fits the layout's rules (see `layout`).
            let p = unsafe {
                std::alloc::realloc(self.ptr.as_ptr(), layout(self.cap), new_cap.max(ALIGN))
            };
            let p = NonNull::new(p).ok_or_else(|| wasmtime::format_err!("out of memory"))?;
            // SAFETY: the bytes from the old capacity to the new one are
            // inside the new allocation.
            unsafe { std::ptr::write_bytes(p.as_ptr().add(self.cap), 0, new_cap - self.cap) };
            self.ptr = p;
            self.cap = new_cap;
        }
        self.len = new_size;
        self.publish();
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for ScanningMemory {
    fn drop(&mut self) {
        // SAFETY: the instance that used this memory is being torn down: no
        // guest code runs any more, and the first `len` bytes are
        // initialised and owned by this value.
        live().remove(&self.id);
        let mem = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        self.sink.record(mem, "");
        // SAFETY: allocated with this layout; never used after this.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout(self.cap)) };
    }
}

struct ScanningCreator(Arc<Sink>);

// SAFETY: every memory returned is a fresh zeroed `ScanningMemory` that
// upholds `LinearMemory`'s contract. The engine is configured with no
// reservation and no guard pages (so compiled code bounds-checks every
// access) and lets memories move, so `reserved_size_in_bytes` and
// `guard_size_in_bytes` (both 0 here) ask for nothing more.
unsafe impl wasmtime::MemoryCreator for ScanningCreator {
    fn new_memory(
        &self,
        _ty: wasmtime::MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, String> {
        if reserved_size_in_bytes.is_some_and(|r| r > 0) || guard_size_in_bytes > 0 {
            return Err("the scanning engine must have no memory reservation or guard".into());
        }
        Ok(Box::new(ScanningMemory::new(
            minimum,
            maximum,
            self.0.clone(),
        )?))
    }
}

/// The plugin's engine settings (component model, epoch deadlines with a
/// ticker), but every linear memory comes from [`ScanningCreator`].
fn scanning_engine(sink: Arc<Sink>) -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(false)
        .memory_reservation(0)
        .memory_guard_size(0)
        .memory_reservation_for_growth(0)
        .memory_may_move(true)
        .with_host_memory(Arc::new(ScanningCreator(sink)));
    let engine = wasmtime::Engine::new(&config).unwrap();
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    engine
}

// ---------------------------------------------------------------------------
// Keys: generated by ssh-keygen, taken apart into every encoding.

struct Key {
    /// Also the `secret` grant's name.
    name: &'static str,
    file: PathBuf,
    pem: String,
    /// What the simulator must see requests signed with.
    algorithm: &'static str,
    /// MD5 fingerprint of the public key, as ssh-keygen prints it.
    md5: String,
    key_id: String,
    forms: Vec<Form>,
}

struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> u32 {
        let (n, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_be_bytes(n.try_into().unwrap())
    }
    fn string(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        s
    }
    fn mpint(&mut self) -> Vec<u8> {
        let s = self.string();
        let start = s.iter().position(|&b| b != 0).unwrap_or(s.len());
        s[start..].to_vec()
    }
}

fn rsa_secrets(k: &rsa::RsaPrivateKey) -> Vec<(String, Vec<u8>)> {
    let p = &k.primes()[0];
    let q = &k.primes()[1];
    vec![
        ("private exponent d".into(), k.d().to_bytes_be()),
        ("prime p".into(), p.to_bytes_be()),
        ("prime q".into(), q.to_bytes_be()),
        ("CRT exponent dp".into(), k.dp().unwrap().to_bytes_be()),
        ("CRT exponent dq".into(), k.dq().unwrap().to_bytes_be()),
        (
            "CRT coefficient qinv".into(),
            k.crt_coefficient().unwrap().to_bytes_be(),
        ),
    ]
}

/// Ed25519 PKCS#8 v1 (RFC 8410): fixed prefix, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn make_key(dir: &Path, name: &'static str, keygen: &[&str]) -> Key {
    let file = dir.join(name);
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", ""])
            .args(keygen)
            .arg("-f")
            .arg(&file),
    );
    let pem = std::fs::read_to_string(&file).unwrap();
    let fp = checked(
        Command::new("ssh-keygen")
            .args(["-l", "-E", "md5", "-f"])
            .arg(file.with_extension("pub")),
    );
    let fp = String::from_utf8(fp.stdout).unwrap();
    let fp = fp
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .unwrap()
        .to_owned();

    let lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let body = B64.decode(lines.concat()).unwrap();
    let file_kind = if pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        "OpenSSH key blob"
    } else if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        "PKCS#1 DER (the file's body)"
    } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
        "PKCS#8 DER (the file's body)"
    } else {
        panic!("{name}: unexpected key file format:\n{pem}")
    };

    // The secret numbers, and composite encodings the host may build.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut derived: Vec<(String, Vec<u8>)> = Vec::new();
    let algorithm;
    if file_kind == "OpenSSH key blob" {
        let mut w = Wire(body.strip_prefix(b"openssh-key-v1\0".as_slice()).unwrap());
        assert_eq!(w.string(), b"none", "{name}: encrypted");
        let _kdf = w.string();
        let _kdf_options = w.string();
        assert_eq!(w.u32(), 1);
        let _public = w.string();
        let mut p = Wire(w.string());
        assert_eq!(p.u32(), p.u32());
        match p.string() {
            b"ssh-rsa" => {
                let (n, e, d, _iqmp, pp, q) = (
                    p.mpint(),
                    p.mpint(),
                    p.mpint(),
                    p.mpint(),
                    p.mpint(),
                    p.mpint(),
                );
                let big = rsa::BigUint::from_bytes_be;
                let k = rsa::RsaPrivateKey::from_components(
                    big(&n),
                    big(&e),
                    big(&d),
                    vec![big(&pp), big(&q)],
                )
                .unwrap();
                secrets = rsa_secrets(&k);
                derived.push((
                    "PKCS#1 DER".into(),
                    k.to_pkcs1_der().unwrap().as_bytes().to_vec(),
                ));
                derived.push((
                    "PKCS#8 DER".into(),
                    k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
                ));
                algorithm = "rsa-sha256";
            }
            b"ssh-ed25519" => {
                let _public = p.string();
                let both = p.string();
                assert_eq!(both.len(), 64);
                secrets.push(("Ed25519 seed".into(), both[..32].to_vec()));
                let mut der = ED25519_PKCS8_PREFIX.to_vec();
                der.extend_from_slice(&both[..32]);
                derived.push(("PKCS#8 DER".into(), der));
                algorithm = "ed25519-sha512";
            }
            b"ecdsa-sha2-nistp256" => {
                let _curve = p.string();
                let _point = p.string();
                let mut scalar = p.mpint();
                while scalar.len() < 32 {
                    scalar.insert(0, 0);
                }
                secrets.push(("ECDSA P-256 private scalar".into(), scalar));
                algorithm = "ecdsa-sha256";
            }
            other => panic!("{name}: key type {}", String::from_utf8_lossy(other)),
        }
    } else if file_kind.starts_with("PKCS#1") {
        let k = rsa::RsaPrivateKey::from_pkcs1_der(&body).unwrap();
        secrets = rsa_secrets(&k);
        derived.push((
            "PKCS#8 DER".into(),
            k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        ));
        algorithm = "rsa-sha256";
    } else {
        let k = rsa::RsaPrivateKey::from_pkcs8_der(&body).unwrap();
        secrets = rsa_secrets(&k);
        derived.push((
            "PKCS#1 DER".into(),
            k.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        ));
        algorithm = "rsa-sha256";
    }

    let mut forms = Vec::new();
    let file_form = Form::containing(format!("{name}: {file_kind}"), body.clone(), &secrets);
    let unwrapped = file_form.base64(format!("{name}: base64 of the {file_kind}, unwrapped"));
    for (i, line) in lines.iter().enumerate() {
        // Where this line starts in the unwrapped base64 text.
        let start: usize = lines[..i].iter().map(|l| l.len()).sum();
        assert_eq!(&unwrapped.bytes[start..start + line.len()], line.as_bytes());
        forms.push(Form {
            label: format!("{name}: PEM body line"),
            bytes: line.as_bytes().to_vec(),
            secret: unwrapped.secret[start..start + line.len()].to_vec(),
        });
    }
    forms.push(unwrapped);
    forms.push(file_form);
    for (what, der) in derived {
        let f = Form::containing(format!("{name}: {what}"), der, &secrets);
        forms.push(f.base64(format!("{name}: base64 of the {what}")));
        forms.push(f);
    }
    for (what, v) in &secrets {
        let mut le = v.clone();
        le.reverse();
        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(Form::all_secret(
            format!("{name}: {what}, big-endian"),
            v.clone(),
        ));
        forms.push(Form::all_secret(
            format!("{name}: {what}, little-endian"),
            le,
        ));
        forms.push(Form::all_secret(
            format!("{name}: {what}, hex"),
            hex.into_bytes(),
        ));
    }
    Key {
        name,
        file,
        pem,
        algorithm,
        key_id: format!("/{ACCOUNT}/keys/{fp}"),
        md5: fp,
        forms,
    }
}

// ---------------------------------------------------------------------------
// The simulator.

/// The simulator for [`ACCOUNT`], knowing every key.
fn start_sim(keys: &[Key]) -> SimProcess {
    let pubs: Vec<PathBuf> = keys.iter().map(|k| k.file.with_extension("pub")).collect();
    SimProcess::start(sim_binary("triton-key-memory"), ACCOUNT, &pubs)
}

// ---------------------------------------------------------------------------
// The lifecycles.

/// A task of its own allocation (Triton instance names derive from it).
fn task_config(id: &str, conf: &TaskConf) -> nomad_plugin_proto::drivers::TaskConfig {
    static ALLOCS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    nomad_plugin_proto::drivers::TaskConfig {
        id: id.into(),
        name: "web".into(),
        alloc_id: format!("{n:08x}-0000-4000-8000-000000000001"),
        job_name: "job".into(),
        task_group_name: "group".into(),
        msgpack_driver_config: rmp_serde::to_vec_named(conf).unwrap(),
        ..Default::default()
    }
}

fn cloud_conf() -> TaskConf {
    TaskConf {
        api_type: "cloud_api".into(),
        cloud_api: Some(CloudApi {
            image: CloudImage {
                name: Some("base-64-lts".into()),
                most_recent: Some(true),
                ..CloudImage::default()
            },
            networks: vec![Network {
                name: Some("My-Fabric-Network".into()),
                ..Network::default()
            }],
            ..CloudApi::default()
        }),
        tags: [("role".to_owned(), "web".to_owned())].into(),
        fwrules: [(
            "web".to_owned(),
            "FROM any TO tag role=web ALLOW tcp PORT 80".to_owned(),
        )]
        .into(),
        package: Package {
            name: Some("g4-highcpu-512M".into()),
            ..Package::default()
        },
        exit_strategy: Some("deleted".into()),
        ..TaskConf::default()
    }
}

fn docker_conf() -> TaskConf {
    TaskConf {
        tags: [("role".to_owned(), "batch".to_owned())].into(),
        package: Package {
            name: Some("g4-highcpu-512M".into()),
            ..Package::default()
        },
        ..docker_sleep_conf()
    }
}

fn plugin_conf(sim: &SimProcess, key: &str) -> Vec<u8> {
    rmp_serde::to_vec_named(&PluginConf {
        cloudapi_url: Some(sim.url.clone()),
        account: Some(ACCOUNT.into()),
        key: Some(key.into()),
        docker_url: Some(sim.url.clone()),
        ..PluginConf::default()
    })
    .unwrap()
}

/// Waits until the sink has scanned a `poll-task` call.
async fn await_poll(sink: &Sink, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if sink
            .scans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.call == "poll-task")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no poll-task call within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every guest call a Triton task makes, with `key` signing: config,
/// fingerprint, then a CloudAPI machine (start, polls, an unsupported
/// signal, stop, destroy) and an sdc-docker container tagged through
/// CloudAPI (start, polls, stats, signal, stop, destroy).
async fn lifecycle(driver: &Arc<Driver>, sim: &SimProcess, sink: &Sink, key: &Key) {
    use nomad_wasm_host::nomad::convert::task_config as wit_task;
    let r = driver.set_config(plugin_conf(sim, key.name), None).await;
    ok(sink, "set-config", r);
    let r = driver.fingerprint().await;
    ok(sink, "fingerprint", r);

    let cloud = format!("{}/web/cloud", key.name);
    let pb = task_config(&cloud, &cloud_conf());
    let r = driver.start_task(wit_task(&pb), pb.clone()).await;
    ok(sink, "cloud start", r);
    await_poll(sink, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = sim_request_async(&sim.url, "GET", "/__sim/state", "").await;
        let running = state["machines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "running");
        if running {
            break;
        }
        no_leak_so_far(sink);
        assert!(Instant::now() < deadline, "the machine never ran: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // CloudAPI has no signals: the guest refuses (still a call).
    let refused = driver.signal_task(&cloud, "SIGHUP".into()).await;
    no_leak_so_far(sink);
    assert!(refused.is_err(), "{refused:?}");
    stop_wait_destroy(driver, sink, key, "cloud", &cloud, Duration::from_secs(10)).await;

    let docker = format!("{}/web/docker", key.name);
    let pb = task_config(&docker, &docker_conf());
    let r = driver.start_task(wit_task(&pb), pb.clone()).await;
    ok(sink, "docker start", r);
    let r = driver.task_stats(&docker).await;
    assert!(ok(sink, "docker stats", r).is_some(), "docker stats");
    // SIGUSR1 does not end the simulator's container.
    let r = driver.signal_task(&docker, "SIGUSR1".into()).await;
    ok(sink, "docker signal", r);
    stop_wait_destroy(driver, sink, key, "docker", &docker, Duration::from_secs(5)).await;
}

/// Stops the `kind` task `id` with SIGTERM and the kill timeout `timeout`,
/// waits for its end (30 s at most) and destroys it, each step's result
/// checked by [`ok`] as `<kind> stop`, `<kind> wait`, `<kind> destroy`.
async fn stop_wait_destroy(
    driver: &Arc<Driver>,
    sink: &Sink,
    key: &Key,
    kind: &str,
    id: &str,
    timeout: Duration,
) {
    let r = driver.stop_task(id, timeout, "SIGTERM".into()).await;
    ok(sink, &format!("{kind} stop"), r);
    let r = tokio::time::timeout(Duration::from_secs(30), driver.wait_task(id)).await;
    let wait = format!("{kind} wait");
    let r = ok(sink, &wait, ok(sink, &wait, r));
    // How a stopped task ends is sim.rs's subject; here it must end, so
    // that the stop's and the following calls' memories are scanned.
    eprintln!("{}: {kind} task ended: {r:?}", key.name);
    let r = driver.destroy_task(id, false).await;
    ok(sink, &format!("{kind} destroy"), r);
}

/// Fails on key material in any memory scanned so far, first: a leak is
/// reported as such even when it also breaks the lifecycle.
fn no_leak_so_far(sink: &Sink) {
    for s in sink.scans.lock().unwrap().iter() {
        assert!(
            s.leaks.is_empty(),
            "KEY MATERIAL IN GUEST MEMORY after {}: {:?}",
            s.call,
            s.leaks
        );
    }
}

/// A lifecycle step's result, after checking for leaks.
fn ok<T, E: std::fmt::Debug>(sink: &Sink, step: &str, r: Result<T, E>) -> T {
    no_leak_so_far(sink);
    r.unwrap_or_else(|e| panic!("{step}: {e:?}"))
}

/// The call kinds every lifecycle must have had scanned.
const CALLS: [&str; 8] = [
    "set-config",
    "fingerprint",
    "start-task",
    "poll-task",
    "signal-task",
    "task-stats",
    "stop-task",
    "destroy-task",
];

/// The calls whose work is requests to the simulator.
const TALKING: [&str; 6] = [
    "start-task",
    "poll-task",
    "signal-task",
    "task-stats",
    "stop-task",
    "destroy-task",
];

fn summary(scans: &[Scan]) -> String {
    let mut by_call: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for s in scans {
        let e = by_call.entry(&s.call).or_default();
        e.0 += 1;
        e.1 += s.bytes;
    }
    by_call
        .iter()
        .map(|(c, (n, b))| format!("{c}: {n} memories, {b} bytes"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The plugin environment variable that holds the PEM text of the key
/// `rsa-pkcs8-env` (a `secret { env = ... }` grant). The guest may read
/// `TRITON_*` variables; the host never gives it a secret's source.
const KEY_VAR: &str = "TRITON_KEYMEM_PRIVATE_KEY";

#[test]
fn the_guest_memory_never_holds_the_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        make_key(dir.path(), "rsa-openssh", &["-t", "rsa", "-b", "2048"]),
        make_key(
            dir.path(),
            "rsa-pkcs1",
            &["-t", "rsa", "-b", "2048", "-m", "PEM"],
        ),
        make_key(dir.path(), "ed25519-openssh", &["-t", "ed25519"]),
        make_key(
            dir.path(),
            "ecdsa-p256-openssh",
            &["-t", "ecdsa", "-b", "256"],
        ),
        make_key(
            dir.path(),
            "rsa-pkcs8-env",
            &["-t", "rsa", "-b", "2048", "-m", "PKCS8"],
        ),
    ];
    // SAFETY: no other thread of this test binary runs yet (this is its
    // only test, and the async runtime, simulator reader and epoch ticker
    // start below), so nothing reads the environment concurrently.
    unsafe { std::env::set_var(KEY_VAR, &keys[4].pem) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(dir, keys));
}

async fn run(dir: tempfile::TempDir, keys: [Key; 5]) {
    install_call_names();
    let sim = start_sim(&keys);

    let sink = Arc::new(Sink::default());
    let forms: Vec<Form> = keys.iter().flat_map(|k| k.forms.clone()).collect();
    *sink.scanner.write().unwrap() = Some(Arc::new(Scanner::new(
        &forms,
        &[("account", ACCOUNT), ("request URL", &sim.url)],
    )));
    let engine = scanning_engine(sink.clone());

    let mut grants = Grants::default()
        .with_http_origin(&sim.url, None)
        .unwrap()
        .with_env("TRITON_*")
        .unwrap();
    for k in &keys {
        grants = if k.name.ends_with("-env") {
            grants.with_secret_env(k.name, KEY_VAR, None).unwrap()
        } else {
            grants.with_secret(k.name, k.file.clone(), None).unwrap()
        };
    }
    let host = HostContext::new("triton.wasm".into(), grants, dir.path().join("state"));
    let wasm = guest_wasm();
    assert!(
        wasm.exists(),
        "{} is missing: scripts/build.sh",
        wasm.display()
    );
    let guest = Arc::new(
        Guest::load(
            &engine,
            &wasm,
            Some(&repo().join("target/key-memory-cache")),
            host,
            CallLimits::default(),
        )
        .unwrap(),
    );
    let driver = Arc::new(Driver::new(guest.clone()).unwrap());
    let loading = sink.take();
    assert!(
        !loading.is_empty(),
        "the driver's manifest calls were not scanned"
    );
    for s in &loading {
        assert!(s.leaks.is_empty(), "{}: {:?}", s.call, s.leaks);
    }

    // This guest never calls http.describe-key; what it would get from it
    // (the host's answer, lowered into its memory as is) holds nothing of
    // the key either.
    let scanner = sink.scanner.read().unwrap().clone().unwrap();
    for k in &keys {
        let info = nomad_wasm_host::caps::http::describe(&guest.host().grants, k.name).unwrap();
        assert_eq!(info.md5_fingerprint, k.md5, "{}", k.name);
        let bytes = [info.md5_fingerprint, info.kind, info.default_algorithm].join("\n");
        let (leaks, _) = scanner.scan(bytes.as_bytes());
        assert!(leaks.is_empty(), "describe-key {}: {leaks:?}", k.name);
    }

    for key in &keys {
        lifecycle(&driver, &sim, &sink, key).await;
        let scans = sink.take();
        eprintln!("{}: {}", key.name, summary(&scans));
        for s in &scans {
            assert!(
                s.leaks.is_empty(),
                "KEY MATERIAL IN GUEST MEMORY after {} ({}): {:?}",
                s.call,
                key.name,
                s.leaks
            );
            assert!(s.bytes > 0, "{}: an empty memory was scanned", s.call);
            assert_ne!(
                s.call, "(outside any guest call)",
                "a memory outside any call"
            );
        }
        for call in CALLS {
            assert!(
                scans.iter().any(|s| s.call == call),
                "{}: no {call} was scanned ({})",
                key.name,
                summary(&scans)
            );
        }
        for call in TALKING {
            assert!(
                scans
                    .iter()
                    .any(|s| s.call == call && s.markers.contains("request URL")),
                "{}: no {call} memory held the request URL",
                key.name
            );
        }
        for call in ["set-config", "fingerprint", "start-task"] {
            assert!(
                scans
                    .iter()
                    .any(|s| s.call == call && s.markers.contains("account")),
                "{}: no {call} memory held the account",
                key.name
            );
        }
        // And while the calls that sign were inside the http import, right
        // after the host signed their request with this key.
        for call in ["start-task", "poll-task", "stop-task", "destroy-task"] {
            let mid = format!("{call} (mid-call, request just signed)");
            assert!(
                scans
                    .iter()
                    .any(|s| s.call == mid && s.markers.contains("request URL")),
                "{}: no scan of {call}'s memory as its request was signed",
                key.name
            );
        }
        // The key really signed requests while these memories were scanned.
        let log = sim_request_async(&sim.url, "GET", "/__sim/requests", "").await;
        let log = log.as_array().unwrap();
        let signed: Vec<&Value> = log
            .iter()
            .filter(|r| r["key_id"] == key.key_id.as_str())
            .collect();
        assert!(
            signed.len() >= 5,
            "{}: only {} requests signed with it",
            key.name,
            signed.len()
        );
        for r in &signed {
            assert_eq!(r["auth_ok"], true, "{r}");
            assert_eq!(r["algorithm"], key.algorithm, "{r}");
        }
    }

    // Positive control 1: every encoding of every key, handed to the guest
    // as set-config's argument (lowered into its memory like any argument).
    let control = Arc::new(Driver::new(guest.clone()).unwrap());
    sink.take();
    let mut planted = Vec::new();
    for f in &forms {
        planted.extend_from_slice(&f.bytes);
        planted.push(0xff);
    }
    assert!(control.set_config(planted, None).await.is_err());
    let scans = sink.take();
    let found: BTreeSet<String> = scans
        .iter()
        .filter(|s| s.call == "set-config")
        .flat_map(|s| s.leaks.iter().cloned())
        .collect();
    let labels: BTreeSet<String> = forms.iter().map(|f| f.label.clone()).collect();
    let missed: Vec<&String> = labels.difference(&found).collect();
    assert!(
        missed.is_empty(),
        "the scanner missed planted forms: {missed:?}"
    );
    eprintln!("control 1: all {} forms found", labels.len());

    // Positive control 2: a key's PEM text as an ordinary plugin config
    // string, which the guest keeps and is given back on every call
    // (`docker_cert`: free text to set-config, and CloudAPI calls ignore it).
    let pem_key = &keys[1];
    let conf = rmp_serde::to_vec_named(&PluginConf {
        cloudapi_url: Some(sim.url.clone()),
        account: Some(ACCOUNT.into()),
        key: Some(pem_key.name.into()),
        docker_cert: Some(pem_key.pem.clone()),
        ..PluginConf::default()
    })
    .unwrap();
    control.set_config(conf, None).await.unwrap();
    control.fingerprint().await.unwrap();
    let scans = sink.take();
    for call in ["set-config", "fingerprint"] {
        let s = scans.iter().find(|s| s.call == call).unwrap();
        let line = format!("{}: PEM body line", pem_key.name);
        assert!(
            s.leaks.contains(&line) && s.markers.contains("account"),
            "control 2: {call} memory: leaks {:?}, markers {:?}",
            s.leaks,
            s.markers
        );
    }
    eprintln!("control 2: the PEM in the plugin config was found after set-config and fingerprint");

    // Positive control 3, for the mid-call scan: a start with that config
    // signs its first request (the package lookup, which finds nothing)
    // with the PEM in the guest's memory.
    let mut conf = cloud_conf();
    conf.package.name = Some("no-such-package".into());
    let pb = task_config("control/web/cloud", &conf);
    let refused = control
        .start_task(
            nomad_wasm_host::nomad::convert::task_config(&pb),
            pb.clone(),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let scans = sink.take();
    let line = format!("{}: PEM body line", pem_key.name);
    let mid: Vec<&Scan> = scans
        .iter()
        .filter(|s| s.call == "start-task (mid-call, request just signed)")
        .collect();
    assert!(
        !mid.is_empty() && mid.iter().all(|s| s.leaks.contains(&line)),
        "control 3: {}",
        summary(&scans)
    );
    eprintln!(
        "control 3: found in {} mid-call scan(s) of start-task",
        mid.len()
    );
}
