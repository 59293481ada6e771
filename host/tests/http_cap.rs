//! The `http` capability against independent implementations:
//!
//! - signatures made with host-held keys are verified by the Triton
//!   simulator (`tests/triton-sim`, Go's crypto) the way CloudAPI verifies
//!   them, and by `openssl` on the raw signatures;
//! - MD5 key fingerprints (the keyId) are compared with `ssh-keygen -l -E md5`;
//! - keys come from `ssh-keygen` (OpenSSH and PEM formats) and `openssl`;
//! - grants, redirects, timeouts, size caps and mutual TLS are exercised
//!   over real sockets on 127.0.0.1.
//!
//! Needs `go`, `openssl` and `ssh-keygen` (installed by scripts/setup.sh).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nomad_wasm_host::caps::http::{describe, send};
use nomad_wasm_host::caps::httpsig::{Algorithm, SigningKey, signing_string};
use nomad_wasm_host::grants::Grants;
use nomad_wasm_host::runtime::bindings::nomad::driver::http::{HttpError, Request, Signing};

const ACCOUNT: &str = "acme";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds the simulator once per test binary.
fn sim_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = repo().join("target/triton-sim-for-host-tests");
        run(Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo().join("tests/triton-sim"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GO111MODULE", "on")
            .env("GOCACHE", repo().join("target/triton-sim-gocache"))
            .env("GOPATH", repo().join("target/triton-sim-gopath")));
        out
    })
}

struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(sim_binary())
            .args([
                "-listen",
                "127.0.0.1:0",
                "-account",
                ACCOUNT,
                "-delay",
                "20ms",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("http"), "simulator printed {url:?}");
        Sim { child, url }
    }

    fn origin(&self) -> &str {
        &self.url
    }

    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let grants = Grants::default().with_http_origin(&self.url, None).unwrap();
        let r = send(
            &grants,
            request(method, &format!("{}{path}", self.url), body.unwrap_or("")),
        )
        .unwrap();
        String::from_utf8(r.body).unwrap()
    }

    /// The request log entries for CloudAPI/docker calls.
    fn log(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.admin("GET", "/__sim/requests", None)).unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(method: &str, url: &str, body: &str) -> Request {
    Request {
        method: method.into(),
        url: url.into(),
        headers: vec![("accept-version".into(), "~9||~8".into())],
        body: body.as_bytes().to_vec(),
        timeout_ms: 0,
        sign: None,
        client_cert: None,
    }
}

fn signing(key: &str) -> Signing {
    Signing {
        key: key.into(),
        key_id: None,
        account: ACCOUNT.into(),
        user: None,
        algorithm: None,
    }
}

/// `ssh-keygen -l -E md5` of a key file: the independent fingerprint.
fn ssh_md5(path: &Path) -> String {
    let out = String::from_utf8(run(Command::new("ssh-keygen")
        .args(["-l", "-E", "md5", "-f"])
        .arg(path)))
    .unwrap();
    out.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches("MD5:")
        .to_string()
}

struct Keys {
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        Keys {
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// An OpenSSH-format key from ssh-keygen (`extra`: e.g. `-m PEM`).
    fn ssh(&self, name: &str, kind: &str, extra: &[&str]) -> PathBuf {
        let p = self.dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
            .arg(&p)
            .args(extra));
        p
    }

    /// A PKCS#8 key from openssl (`algo`: RSA, EC, ED25519).
    fn openssl(&self, name: &str, args: &[&str]) -> PathBuf {
        let p = self.dir.join(name);
        run(Command::new("openssl")
            .args(["genpkey", "-out"])
            .arg(&p)
            .args(args));
        p
    }

    fn pubout(&self, key: &Path) -> PathBuf {
        let p = key.with_extension("pub.pem");
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(key)
            .arg("-out")
            .arg(&p));
        p
    }
}

#[test]
fn fingerprints_match_ssh_keygen_for_every_format() {
    let k = Keys::new();
    let files = [
        k.ssh("id_rsa", "rsa", &["-b", "2048"]),
        k.ssh("id_rsa_pem", "rsa", &["-b", "2048", "-m", "PEM"]),
        k.ssh("id_ecdsa", "ecdsa", &["-b", "256"]),
        k.ssh("id_ecdsa384", "ecdsa", &["-b", "384"]),
        k.ssh("id_ecdsa521", "ecdsa", &["-b", "521"]),
        k.ssh("id_ecdsa_pem", "ecdsa", &["-b", "256", "-m", "PEM"]),
        k.ssh("id_ed25519", "ed25519", &[]),
        k.openssl(
            "rsa.pem",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        k.openssl(
            "ec.pem",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
    ];
    for f in &files {
        let key = SigningKey::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(key.md5_fingerprint(), ssh_md5(f), "{}", f.display());
    }
    // Ed25519 as PKCS#8 from openssl: ssh-keygen cannot read that file, so
    // compare against the fingerprint of the OpenSSH line we derive.
    let ed = k.openssl("ed.pem", &["-algorithm", "ED25519"]);
    let key = SigningKey::load(&ed).unwrap();
    let line = k.dir.join("ed.pem.pub");
    std::fs::write(&line, key.openssh_public()).unwrap();
    assert_eq!(key.md5_fingerprint(), ssh_md5(&line));
}

#[test]
fn encrypted_and_short_keys_are_refused() {
    let k = Keys::new();
    let enc = k.dir.join("enc");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&enc));
    assert!(SigningKey::load(&enc).unwrap_err().contains("encrypted"));
    let enc8 = k.openssl(
        "enc8.pem",
        &[
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:x",
        ],
    );
    assert!(SigningKey::load(&enc8).unwrap_err().contains("encrypted"));
    let short = k.openssl(
        "short.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    assert!(SigningKey::load(&short).unwrap_err().contains("too short"));
}

/// Raw signatures checked by openssl (`dgst -verify` for RSA/ECDSA,
/// `pkeyutl -verify -rawin` for Ed25519).
#[test]
fn openssl_verifies_our_signatures() {
    let k = Keys::new();
    let data = signing_string("Wed, 25 Nov 2026 12:00:00 GMT");
    let data_file = k.dir.join("data");
    std::fs::write(&data_file, &data).unwrap();
    let cases = [
        (
            k.openssl(
                "rsa.pem",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            Algorithm::RsaSha256,
            "-sha256",
        ),
        (k.dir.join("rsa.pem"), Algorithm::RsaSha512, "-sha512"),
        (
            k.openssl(
                "p256.pem",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            Algorithm::EcdsaSha256,
            "-sha256",
        ),
        (
            k.openssl(
                "p384.pem",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            Algorithm::EcdsaSha384,
            "-sha384",
        ),
        (
            k.openssl(
                "p521.pem",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
            ),
            Algorithm::EcdsaSha512,
            "-sha512",
        ),
    ];
    for (i, (key_file, alg, digest)) in cases.iter().enumerate() {
        let key = SigningKey::load(key_file).unwrap();
        let sig = key.sign(*alg, data.as_bytes()).unwrap();
        let sig_file = k.dir.join(format!("sig{i}"));
        std::fs::write(&sig_file, &sig).unwrap();
        let public = k.pubout(key_file);
        let ok = |sig_path: &Path| {
            Command::new("openssl")
                .args(["dgst", digest, "-verify"])
                .arg(&public)
                .arg("-signature")
                .arg(sig_path)
                .arg(&data_file)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(
            ok(&sig_file),
            "openssl rejected {} {:?}",
            key_file.display(),
            alg
        );
        // A flipped bit must fail: the check can fail.
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let bad_file = k.dir.join(format!("bad{i}"));
        std::fs::write(&bad_file, &bad).unwrap();
        assert!(!ok(&bad_file), "openssl accepted a corrupted signature");
    }
    // Ed25519 from an OpenSSH key file (ssh-keygen), verified by openssl
    // with the public key re-encoded as SubjectPublicKeyInfo.
    let ed = k.ssh("id_ed25519", "ed25519", &[]);
    let key = SigningKey::load(&ed).unwrap();
    let sig = key.sign(Algorithm::Ed25519Sha512, data.as_bytes()).unwrap();
    std::fs::write(k.dir.join("edsig"), &sig).unwrap();
    let raw = &key.public_blob()[key.public_blob().len() - 32..];
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(raw);
    use base64::Engine as _;
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    std::fs::write(k.dir.join("ed.pub.pem"), pem).unwrap();
    run(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(k.dir.join("ed.pub.pem"))
        .arg("-rawin")
        .arg("-in")
        .arg(&data_file)
        .arg("-sigfile")
        .arg(k.dir.join("edsig")));
}

/// Every key format and algorithm, signed by the host and verified by the
/// simulator exactly as CloudAPI would (keyId, date, signature).
#[test]
fn simulator_accepts_signed_requests_from_every_key_type() {
    let k = Keys::new();
    let rsa = k.ssh("id_rsa", "rsa", &["-b", "2048"]);
    let rsa_pem = k.ssh("id_rsa_pem", "rsa", &["-b", "3072", "-m", "PEM"]);
    let ecdsa = k.ssh("id_ecdsa", "ecdsa", &["-b", "256"]);
    let ecdsa521 = k.ssh("id_ecdsa521", "ecdsa", &["-b", "521"]);
    let ed = k.ssh("id_ed25519", "ed25519", &[]);
    let p384 = k.openssl(
        "p384.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let bob = k.ssh("bob", "ed25519", &[]);
    let mut args: Vec<String> = Vec::new();
    for f in [&rsa, &rsa_pem, &ecdsa, &ecdsa521, &ed] {
        args.push("-key".into());
        args.push(format!("{}.pub", f.display()));
    }
    args.extend(["-key".into(), p384.display().to_string()]);
    args.extend(["-user-key".into(), format!("bob={}.pub", bob.display())]);
    let sim = Sim::start(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut grants = Grants::default()
        .with_http_origin(sim.origin(), None)
        .unwrap();
    for (name, f) in [
        ("rsa", &rsa),
        ("rsa_pem", &rsa_pem),
        ("ecdsa", &ecdsa),
        ("ecdsa521", &ecdsa521),
        ("ed", &ed),
        ("p384", &p384),
        ("bob", &bob),
    ] {
        grants = grants.with_secret(name, f.clone(), None).unwrap();
    }
    let cases: [(&str, &Path, Option<&str>, &str); 7] = [
        ("rsa", &rsa, None, "rsa-sha256"),
        ("rsa", &rsa, Some("rsa-sha512"), "rsa-sha512"),
        ("rsa_pem", &rsa_pem, None, "rsa-sha256"),
        ("ecdsa", &ecdsa, None, "ecdsa-sha256"),
        ("ecdsa521", &ecdsa521, None, "ecdsa-sha512"),
        ("ed", &ed, None, "ed25519-sha512"),
        ("bob", &bob, None, "ed25519-sha512"),
    ];
    for (name, file, alg, want_alg) in cases {
        let mut s = signing(name);
        s.algorithm = alg.map(String::from);
        if name == "bob" {
            s.user = Some("bob".into());
        }
        let mut req = request("GET", &format!("{}/my/machines", sim.url), "");
        req.sign = Some(s);
        let r = send(&grants, req).unwrap();
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let entry = sim.log().pop().unwrap();
        let fp = ssh_md5(&PathBuf::from(format!("{}.pub", file.display())));
        let want_id = if name == "bob" {
            format!("/{ACCOUNT}/users/bob/keys/{fp}")
        } else {
            format!("/{ACCOUNT}/keys/{fp}")
        };
        assert_eq!(entry["key_id"], want_id.as_str(), "{name}");
        assert_eq!(entry["algorithm"], want_alg, "{name}");
        assert_eq!(entry["auth_ok"], true, "{name}");
        assert_eq!(entry["headers"]["accept-version"], "~9||~8");
        let date = entry["headers"]["date"].as_str().unwrap();
        let sent = httpdate::parse_http_date(date).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(sent)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "date {date}");
    }
    // A P-384 key signs with SHA-384, which CloudAPI's verifier (node
    // http-signature) does not know: the simulator refuses it the same way.
    let mut req = request("GET", &format!("{}/my/machines", sim.url), "");
    req.sign = Some(signing("p384"));
    let r = send(&grants, req).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, &body["code"]),
        (400, &serde_json::json!("InvalidHeader")),
        "{body}"
    );
    assert_eq!(
        sim.log().pop().unwrap()["key_id"],
        format!("/{ACCOUNT}/keys/{}", ssh_md5(&p384))
    );
    // describe-key reports the same fingerprint ssh-keygen computes.
    let info = describe(&grants, "ecdsa").unwrap();
    assert_eq!(
        info.md5_fingerprint,
        ssh_md5(&PathBuf::from(format!("{}.pub", ecdsa.display())))
    );
    assert_eq!(info.kind, "ecdsa-p256");
    assert_eq!(info.default_algorithm, "ecdsa-sha256");

    // A signed POST with a JSON body reaches the API intact.
    let mut req = request(
        "POST",
        &format!("{}/{ACCOUNT}/machines", sim.url),
        r#"{"name":"web-1","image":"1f32508c-e6e9-11e6-9e40-5c3fbc8a2b5d","package":"g4-highcpu-512M","metadata.cloud-init:user-data":"x"}"#,
    );
    req.headers
        .push(("content-type".into(), "application/json".into()));
    req.sign = Some(signing("ed"));
    let r = send(&grants, req).unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(m["state"], "provisioning");
    assert_eq!(m["metadata"]["cloud-init:user-data"], "x");
}

#[test]
fn simulator_refuses_unknown_or_mismatched_keys() {
    let k = Keys::new();
    let known = k.ssh("known", "ed25519", &[]);
    let stranger = k.ssh("stranger", "ed25519", &[]);
    let sim = Sim::start(&["-key", &format!("{}.pub", known.display())]);
    let grants = Grants::default()
        .with_http_origin(sim.origin(), None)
        .unwrap()
        .with_secret("known", known.clone(), None)
        .unwrap()
        .with_secret("stranger", stranger, None)
        .unwrap();
    let call = |s: Signing| {
        let mut req = request("GET", &format!("{}/my/machines", sim.url), "");
        req.sign = Some(s);
        let r = send(&grants, req).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (
            r.status,
            body["code"].as_str().unwrap_or("").to_string(),
            body["message"].as_str().unwrap_or("").to_string(),
        )
    };
    // A key the account does not have.
    let (status, code, msg) = call(signing("stranger"));
    assert_eq!((status, code.as_str()), (401, "InvalidCredentials"));
    assert!(msg.starts_with("Invalid key "), "{msg}");
    // The stranger's signature under the known key's id: a wrong key.
    let mut s = signing("stranger");
    s.key_id = Some(format!(
        "/{ACCOUNT}/keys/{}",
        ssh_md5(&PathBuf::from(format!("{}.pub", known.display())))
    ));
    let (status, code, msg) = call(s);
    assert_eq!((status, code.as_str()), (401, "InvalidCredentials"));
    assert!(
        msg.contains("signature we calculated does not match"),
        "{msg}"
    );
    // Another account.
    let mut s = signing("known");
    s.account = "someone-else".into();
    let (status, _, msg) = call(s);
    assert_eq!(status, 401);
    assert!(msg.contains("Invalid account someone-else"), "{msg}");
    // The right key works (the refusals above are about the key).
    assert_eq!(call(signing("known")).0, 200);
}

#[test]
fn every_refusal_names_what_is_missing() {
    let k = Keys::new();
    let key = k.ssh("id", "ed25519", &[]);
    let grants = Grants::default()
        .with_http_origin("http://127.0.0.1:9", None)
        .unwrap()
        .with_secret("id", key, None)
        .unwrap();
    let err = |req: Request| send(&grants, req).unwrap_err();
    match err(request("GET", "http://127.0.0.1:10/x", "")) {
        HttpError::NotGranted(m) => assert!(
            m.contains("HTTP to http://127.0.0.1:10")
                && m.contains("http \"http://127.0.0.1:10\" {}"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    match err(request("GET", "https://127.0.0.1:9/x", "")) {
        HttpError::NotGranted(m) => assert!(m.contains("https://127.0.0.1:9"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut r = request("GET", "http://127.0.0.1:9/x", "");
    r.sign = Some(signing("nope"));
    match err(r) {
        HttpError::NotGranted(m) => assert!(m.contains("secret \"nope\""), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut r = request("GET", "http://127.0.0.1:9/x", "");
    r.client_cert = Some("id".into());
    match err(r) {
        HttpError::NotGranted(m) => assert!(
            m.contains("TLS client certificate") && m.contains("cert ="),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let invalid = |req: Request, want: &str| match send(&grants, req) {
        Err(HttpError::InvalidRequest(m)) => assert!(m.contains(want), "{m} (want {want})"),
        other => panic!("want invalid-request {want}, got {other:?}"),
    };
    invalid(
        request("FETCH", "http://127.0.0.1:9/", ""),
        "method \"FETCH\"",
    );
    invalid(request("GET", "not a url", ""), "url \"not a url\"");
    invalid(request("GET", "http://u:p@127.0.0.1:9/", ""), "credentials");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    r.headers.push(("Host".into(), "evil".into()));
    invalid(r, "\"Host\" is set by the host");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    r.headers.push(("Date".into(), "yesterday".into()));
    r.sign = Some(signing("id"));
    invalid(r, "set by the host when it signs");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    r.headers.push(("x-bad".into(), "a\nb".into()));
    invalid(r, "x-bad");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    r.timeout_ms = 600_001;
    invalid(r, "timeout-ms 600001");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    let mut s = signing("id");
    s.algorithm = Some("rsa-sha256".into());
    r.sign = Some(s);
    invalid(r, "does not fit this ed25519 key");
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    let mut s = signing("id");
    s.account = "a/b".into();
    r.sign = Some(s);
    invalid(r, "signing.account");
    // A secret whose file is gone: a key error naming the secret and file.
    let gone = Grants::default()
        .with_http_origin("http://127.0.0.1:9", None)
        .unwrap()
        .with_secret("gone", PathBuf::from("/nonexistent/id_rsa"), None)
        .unwrap();
    let mut r = request("GET", "http://127.0.0.1:9/", "");
    r.sign = Some(signing("gone"));
    match send(&gone, r) {
        Err(HttpError::Key(m)) => assert!(
            m.contains("\"gone\"") && m.contains("/nonexistent/id_rsa"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

/// A one-shot HTTP server on 127.0.0.1 that answers each connection with
/// the next canned response.
fn canned_server(responses: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for resp in responses {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    addr
}

#[test]
fn redirects_stay_within_the_granted_origin() {
    let other = canned_server(vec![
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nother".into(),
    ]);
    let home = canned_server(vec![
        "HTTP/1.1 302 Found\r\nlocation: /there\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .into(),
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nhome".into(),
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {other}/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
    ]);
    // Both origins granted: a redirect from one to the other is still refused.
    let grants = Grants::default()
        .with_http_origin(&home, None)
        .unwrap()
        .with_http_origin(&other, None)
        .unwrap();
    let r = send(&grants, request("GET", &format!("{home}/here"), "")).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, b"home".as_slice()));
    match send(&grants, request("GET", &format!("{home}/away"), "")) {
        Err(HttpError::NotGranted(m)) => {
            assert!(m.contains("refused") && m.contains(&other[7..]), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn timeouts_network_errors_size_cap_and_faults() {
    let k = Keys::new();
    let key = k.ssh("id", "ed25519", &[]);
    let sim = Sim::start(&["-key", &format!("{}.pub", key.display())]);
    let grants = Grants::default()
        .with_http_origin(sim.origin(), None)
        .unwrap()
        .with_secret("id", key, None)
        .unwrap();
    // Injected latency beyond the request's timeout.
    sim.admin("POST", "/__sim/faults", Some(r#"{"latency_ms": 1500}"#));
    let mut r = request("GET", &format!("{}/--ping", sim.url), "");
    r.timeout_ms = 300;
    let start = Instant::now();
    match send(&grants, r) {
        Err(HttpError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );
    // 503 with Retry-After is a response the guest sees whole.
    sim.admin(
        "POST",
        "/__sim/faults",
        Some(r#"{"errors": [{"status": 503, "retry_after": 2}]}"#),
    );
    let mut r = request("GET", &format!("{}/{ACCOUNT}/packages", sim.url), "");
    r.sign = Some(signing("id"));
    let resp = send(&grants, r).unwrap();
    assert_eq!(resp.status, 503);
    assert!(
        resp.headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "2")
    );
    // A dropped connection is a network error.
    sim.admin(
        "POST",
        "/__sim/faults",
        Some(r#"{"errors": [{"reset": true}]}"#),
    );
    match send(
        &grants,
        request("GET", &format!("{}/{ACCOUNT}/packages", sim.url), ""),
    ) {
        Err(HttpError::Network(_)) => {}
        other => panic!("{other:?}"),
    }
    // Nobody listening: a network error.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let g = Grants::default().with_http_origin(&closed, None).unwrap();
    match send(&g, request("GET", &closed, "")) {
        Err(HttpError::Network(m)) => assert!(!m.is_empty()),
        other => panic!("{other:?}"),
    }
    // A body over the cap, announced or not.
    let big = canned_server(vec![
        "HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\nconnection: close\r\n\r\n".into(),
        format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{}",
            "x".repeat((16 << 20) + 10)
        ),
    ]);
    let g = Grants::default().with_http_origin(&big, None).unwrap();
    for _ in 0..2 {
        match send(&g, request("GET", &big, "")) {
            Err(HttpError::TooLarge(m)) => assert!(m.contains("limit"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.status)),
        }
    }
}

/// sdc-docker's mutual TLS: the simulator requires a client certificate
/// signed by its CA on docker routes; the host presents the one a secret
/// grant names and trusts the server through the origin's `ca_file`.
#[test]
fn mutual_tls_with_a_host_held_client_certificate() {
    let k = Keys::new();
    let d = &k.dir;
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(d));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=sim-ca",
        "-days",
        "2",
    ]);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    let key = k.ssh("id", "ed25519", &[]);
    let sim = Sim::start(&[
        "-key",
        &format!("{}.pub", key.display()),
        "-tls-cert",
        d.join("server.pem").to_str().unwrap(),
        "-tls-key",
        d.join("server.key").to_str().unwrap(),
        "-docker-client-ca",
        d.join("ca.pem").to_str().unwrap(),
    ]);
    assert!(sim.url.starts_with("https://127.0.0.1:"), "{}", sim.url);
    let grants = Grants::default()
        .with_http_origin(&sim.url, Some(d.join("ca.pem")))
        .unwrap()
        .with_secret("docker", d.join("client.key"), Some(d.join("client.pem")))
        .unwrap()
        .with_secret("id", key, None)
        .unwrap();
    let mut r = request("GET", &format!("{}/v1.24/containers/json", sim.url), "");
    r.client_cert = Some("docker".into());
    let resp = send(&grants, r).unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.body, b"[]");
    // Without the client certificate sdc-docker (the simulator) refuses.
    let resp = send(
        &grants,
        request("GET", &format!("{}/v1.24/containers/json", sim.url), ""),
    )
    .unwrap();
    assert_eq!(resp.status, 401);
    // CloudAPI over the same TLS listener with a signature.
    let mut r = request("GET", &format!("{}/my/machines", sim.url), "");
    r.sign = Some(signing("id"));
    assert_eq!(send(&grants, r).unwrap().status, 200);
    // Without the CA the server certificate is not trusted.
    let untrusting = Grants::default().with_http_origin(&sim.url, None).unwrap();
    match send(
        &untrusting,
        request("GET", &format!("{}/--ping", sim.url), ""),
    ) {
        Err(HttpError::Network(m)) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// The node `http-signature` package (what CloudAPI verifies with), as
/// installed by scripts/setup.sh into target/node-http-signature.
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("NODE_HTTP_SIGNATURE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/node-http-signature/node_modules"));
    assert!(
        dir.join("http-signature").is_dir(),
        "{} has no http-signature package: run scripts/setup.sh (npm install --prefix \
         target/node-http-signature http-signature@1.4.0)",
        dir.display()
    );
    dir
}

/// Signed requests checked by node's http-signature + sshpk, CloudAPI's own
/// verifier: parseRequest (date present, signed, within 300 s) and
/// verifySignature against the OpenSSH public key.
#[test]
fn node_http_signature_verifies_our_requests() {
    let modules = node_modules();
    let k = Keys::new();
    let rsa = k.ssh("id_rsa", "rsa", &["-b", "2048"]);
    let rsa8 = k.openssl(
        "rsa8.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let p256 = k.ssh("id_p256", "ecdsa", &["-b", "256"]);
    let p384 = k.ssh("id_p384", "ecdsa", &["-b", "384"]);
    let p521 = k.ssh("id_p521", "ecdsa", &["-b", "521"]);
    let ed = k.ssh("id_ed25519", "ed25519", &[]);
    let stranger = k.ssh("stranger", "ed25519", &[]);
    let mut grants = Grants::default();
    let mut key_ids = serde_json::Map::new();
    for (name, file) in [
        ("rsa", &rsa),
        ("rsa8", &rsa8),
        ("p256", &p256),
        ("p384", &p384),
        ("p521", &p521),
        ("ed", &ed),
    ] {
        grants = grants.with_secret(name, file.clone(), None).unwrap();
        let public = if name == "rsa8" {
            std::fs::read_to_string(k.pubout(file)).unwrap()
        } else {
            std::fs::read_to_string(format!("{}.pub", file.display())).unwrap()
        };
        let key_id = format!("/{ACCOUNT}/keys/{}", ssh_md5(file));
        key_ids.insert(key_id, serde_json::Value::String(public));
    }
    grants = grants.with_secret("stranger", stranger, None).unwrap();
    let keys_file = k.dir.join("keys.json");
    std::fs::write(&keys_file, serde_json::to_vec(&key_ids).unwrap()).unwrap();

    let mut child = Command::new("node")
        .arg(repo().join("tests/httpsig-node/verify-server.js"))
        .arg(&keys_file)
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(child);
    assert!(url.starts_with("http://127.0.0.1:"), "node printed {url:?}");
    grants = grants.with_http_origin(&url, None).unwrap();

    let call = |key: &str, alg: Option<&str>, key_id: Option<String>| {
        let mut s = signing(key);
        s.algorithm = alg.map(String::from);
        s.key_id = key_id;
        let mut req = request("GET", &format!("{url}/my/machines"), "");
        req.sign = Some(s);
        let r = send(&grants, req).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, body)
    };
    for (key, alg, want) in [
        ("rsa", None, "rsa-sha256"),
        ("rsa", Some("rsa-sha512"), "rsa-sha512"),
        ("rsa8", None, "rsa-sha256"),
        ("p256", None, "ecdsa-sha256"),
        ("p521", None, "ecdsa-sha512"),
        ("ed", None, "ed25519-sha512"),
    ] {
        let (status, body) = call(key, alg, None);
        assert_eq!(status, 200, "{key} {alg:?}: {body}");
        // parseRequest reports the algorithm upper-cased.
        assert_eq!(
            body["algorithm"].as_str().unwrap().to_ascii_lowercase(),
            want,
            "{key}"
        );
    }
    // node's http-signature knows only sha1/sha256/sha512 hashes: a P-384
    // key (which aws-lc-rs signs with SHA-384 only) is refused by it. This
    // pins down that limit (wit/README.md says to use another key type).
    let (status, body) = call("p384", None, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ecdsa-sha384 is not supported"),
        "{body}"
    );
    // A signature by another key under a known keyId does not verify.
    let known = format!("/{ACCOUNT}/keys/{}", ssh_md5(&ed));
    let (status, body) = call("stranger", None, Some(known));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "signature does not verify");
}
