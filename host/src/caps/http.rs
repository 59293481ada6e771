//! The `http` import: outgoing HTTP(S) to origins the operator granted,
//! optionally signed (HTTP Signature over `date`) with a host-held key that
//! the guest names but never sees, and optionally with a host-held TLS
//! client certificate.
//!
//! Mechanism only: which requests to make, retries and back-off are the
//! guest's policy. The host checks grants, enforces timeouts and a response
//! size cap, follows redirects only within the granted origin, and reads
//! no proxy settings from its environment.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::httpsig::{self, Algorithm, SigningKey};
use crate::grants::{self, Grants, KeyMaterial, NotGranted, SecretGrant};
use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::http::{
    Host, HttpError, KeyInfo, Request, Response, Signing,
};

/// Timeout when the guest gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest timeout a guest may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest response body handed to a guest.
pub const MAX_RESPONSE_BODY: usize = 16 << 20;
/// The most redirects followed (all within the granted origin).
const MAX_REDIRECTS: usize = 5;

/// Headers the host sets itself.
const HOST_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

impl From<NotGranted> for HttpError {
    fn from(e: NotGranted) -> Self {
        HttpError::NotGranted(e.to_string())
    }
}

/// Reads the key of a granted secret: from its file, or from the PEM text
/// in the plugin's environment.
fn signing_key(grants: &Grants, name: &str) -> Result<SigningKey, HttpError> {
    let secret = grants.secret(name)?;
    let material = secret.key_material().map_err(HttpError::Key)?;
    parse_key(secret, material)
}

/// Parses a located key. Errors name the secret and where the key came
/// from, never the key.
fn parse_key(secret: &SecretGrant, material: KeyMaterial) -> Result<SigningKey, HttpError> {
    let key = match material {
        KeyMaterial::File(file) => SigningKey::load(&file),
        KeyMaterial::Pem(pem) => {
            let from = match &secret.key {
                grants::KeySource::Env(var) => var.as_str(),
                grants::KeySource::File(_) => "the environment",
            };
            SigningKey::parse(pem.as_bytes()).map_err(|e| format!("the PEM text in {from}: {e}"))
        }
    };
    key.map_err(|e| HttpError::Key(format!("secret {:?}: {e}", secret.name)))
}

/// Public facts about a granted key.
pub fn describe(grants: &Grants, name: &str) -> Result<KeyInfo, HttpError> {
    let key = signing_key(grants, name)?;
    Ok(KeyInfo {
        md5_fingerprint: key.md5_fingerprint(),
        kind: key.kind().name().to_string(),
        default_algorithm: key.kind().default_algorithm().name().to_string(),
    })
}

/// What a client is built for: one origin, its trust, its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    origin: String,
    ca_file: Option<PathBuf>,
    /// (key, cert file, their modification times) of the client identity.
    identity: Option<(KeyMaterial, PathBuf, Option<SystemTime>, Option<SystemTime>)>,
}

/// Clients are reused across calls (connection pools, TLS sessions). They
/// live for the whole process: a blocking client must not be dropped
/// inside an async context, and there are only as many as granted origins.
static CLIENTS: LazyLock<Mutex<HashMap<ClientKey, Client>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn client_for(key: &ClientKey, secret_name: Option<&str>) -> Result<Client, HttpError> {
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clients.get(key) {
        return Ok(c.clone());
    }
    let origin = key.origin.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let target = grants::origin_of(attempt.url());
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if target.as_deref() != Some(origin.as_str()) {
            let to = target.unwrap_or_else(|| attempt.url().to_string());
            attempt.error(format!(
                "redirect from {origin} to {to} refused: redirects are followed only within the granted origin"
            ))
        } else {
            attempt.follow()
        }
    });
    let mut builder = Client::builder()
        .no_proxy()
        .redirect(policy)
        .user_agent(concat!("nomad-driver-wasm/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(MAX_TIMEOUT);
    if let Some(ca) = &key.ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            HttpError::Key(format!("ca_file {} of {}: {e}", ca.display(), key.origin))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            HttpError::Key(format!("ca_file {} of {}: {e}", ca.display(), key.origin))
        })?;
        if certs.is_empty() {
            return Err(HttpError::Key(format!(
                "ca_file {} of {} holds no PEM certificate",
                ca.display(),
                key.origin
            )));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let Some((key_file, cert_file, _, _)) = &key.identity {
        let name = secret_name.unwrap_or_default();
        let mut pem = std::fs::read(cert_file).map_err(|e| {
            HttpError::Key(format!(
                "secret {name:?}: cert {}: {e}",
                cert_file.display()
            ))
        })?;
        let key_pem = match key_file {
            KeyMaterial::File(key_file) => std::fs::read(key_file).map_err(|e| {
                HttpError::Key(format!("secret {name:?}: file {}: {e}", key_file.display()))
            })?,
            KeyMaterial::Pem(pem) => pem.clone().into_bytes(),
        };
        pem.push(b'\n');
        pem.extend_from_slice(&key_pem);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            HttpError::Key(format!("secret {name:?} as a TLS client identity: {e}"))
        })?;
        builder = builder.identity(identity);
    }
    let client = builder
        .build()
        .map_err(|e| HttpError::Network(format!("cannot set up an HTTP client: {}", chain(&e))))?;
    clients.insert(key.clone(), client.clone());
    Ok(client)
}

/// The error and its sources, joined: reqwest's top-level text alone
/// rarely says what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn invalid(msg: impl Into<String>) -> HttpError {
    HttpError::InvalidRequest(msg.into())
}

/// Validates a request and sends it. Blocking.
pub fn send(grants: &Grants, req: Request) -> Result<Response, HttpError> {
    let url =
        reqwest::Url::parse(&req.url).map_err(|e| invalid(format!("url {:?}: {e}", req.url)))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "url {:?}: credentials in the URL are not allowed",
            req.url
        )));
    }
    let grant = grants.check_http(&url)?;
    let method = match req.method.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "PATCH" | "OPTIONS") => {
            reqwest::Method::from_bytes(m.as_bytes()).map_err(|e| invalid(e.to_string()))?
        }
        other => {
            return Err(invalid(format!(
                "method {other:?} is not supported; expected GET, POST, PUT, DELETE, HEAD, PATCH or OPTIONS"
            )));
        }
    };
    let timeout = match req.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms if Duration::from_millis(ms.into()) > MAX_TIMEOUT => {
            return Err(invalid(format!(
                "timeout-ms {ms} is over the host's limit of {}",
                MAX_TIMEOUT.as_millis()
            )));
        }
        ms => Duration::from_millis(ms.into()),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let lname = name.to_ascii_lowercase();
        if HOST_HEADERS.contains(&lname.as_str()) {
            return Err(invalid(format!("header {name:?} is set by the host")));
        }
        if req.sign.is_some() && (lname == "date" || lname == "authorization") {
            return Err(invalid(format!(
                "header {name:?} is set by the host when it signs the request"
            )));
        }
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(format!(
                "header name {name:?} is not a valid HTTP header name"
            ))
        })?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "header {name:?}: value has characters HTTP does not allow"
            ))
        })?;
        headers.append(n, v);
    }
    if let Some(signing) = &req.sign {
        sign_headers(grants, signing, &mut headers)?;
        // Names only the grant. Off unless a subscriber enables trace; tests
        // scan the calling guest's memory here, right after its key was used
        // (guests/triton/tests/key_memory.rs).
        tracing::trace!(key = %signing.key, "http request signed");
    }

    let identity = match &req.client_cert {
        Some(name) => {
            let secret = grants.secret(name)?;
            let Some(cert) = &secret.cert else {
                return Err(HttpError::NotGranted(format!(
                    "using the secret {name:?} as a TLS client certificate is not granted to this \
                     guest: give its secret block a `cert = \"/path/to/cert.pem\"`"
                )));
            };
            let key = secret.key_material().map_err(HttpError::Key)?;
            let key_mtime = match &key {
                KeyMaterial::File(f) => mtime(f),
                KeyMaterial::Pem(_) => None,
            };
            Some((key, cert.clone(), key_mtime, mtime(cert)))
        }
        None => None,
    };
    let key = ClientKey {
        origin: grant.origin.clone(),
        ca_file: grant.ca_file.clone(),
        identity,
    };
    let client = client_for(&key, req.client_cert.as_deref())?;
    let response = client
        .request(method, url)
        .headers(headers)
        .body(req.body)
        .timeout(timeout)
        .send()
        .map_err(|e| classify(&e))?;
    read_response(response)
}

/// Adds `date` and `authorization` for a signed request.
fn sign_headers(
    grants: &Grants,
    signing: &Signing,
    headers: &mut HeaderMap,
) -> Result<(), HttpError> {
    let key = signing_key(grants, &signing.key)?;
    let alg = match &signing.algorithm {
        Some(a) => Algorithm::parse(a).map_err(invalid)?,
        None => key.kind().default_algorithm(),
    };
    let key_id = match &signing.key_id {
        Some(id) => {
            if id.is_empty() || id.contains(['"', '\\']) || id.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "signing.key-id {id:?} must be non-empty, without '\"', '\\' or control characters"
                )));
            }
            id.clone()
        }
        None => httpsig::key_id(
            &signing.account,
            signing.user.as_deref(),
            &key.md5_fingerprint(),
        )
        .map_err(invalid)?,
    };
    let date = httpdate::fmt_http_date(SystemTime::now());
    let authorization = key.authorization(&key_id, alg, &date).map_err(invalid)?;
    headers.insert(
        reqwest::header::DATE,
        HeaderValue::from_str(&date).map_err(|e| invalid(e.to_string()))?,
    );
    let mut value = HeaderValue::from_str(&authorization).map_err(|e| invalid(e.to_string()))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(())
}

fn classify(e: &reqwest::Error) -> HttpError {
    let text = chain(e);
    if e.is_redirect() && text.contains("granted origin") {
        HttpError::NotGranted(text)
    } else if e.is_timeout() {
        HttpError::Timeout(text)
    } else if e.is_builder() {
        HttpError::InvalidRequest(text)
    } else {
        HttpError::Network(text)
    }
}

fn read_response(response: reqwest::blocking::Response) -> Result<Response, HttpError> {
    let status = response.status().as_u16();
    if let Some(len) = response.content_length()
        && len > MAX_RESPONSE_BODY as u64
    {
        return Err(HttpError::TooLarge(format!(
            "response body of {len} bytes is over the host's limit of {MAX_RESPONSE_BODY}"
        )));
    }
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    response
        .take(MAX_RESPONSE_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            let timed_out = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<reqwest::Error>())
                .is_some_and(reqwest::Error::is_timeout);
            if timed_out || e.kind() == std::io::ErrorKind::TimedOut {
                HttpError::Timeout(format!("reading the response body: {}", chain(&e)))
            } else {
                HttpError::Network(format!("reading the response body: {}", chain(&e)))
            }
        })?;
    if body.len() > MAX_RESPONSE_BODY {
        return Err(HttpError::TooLarge(format!(
            "response body is over the host's limit of {MAX_RESPONSE_BODY} bytes"
        )));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

impl Host for CallState {
    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let host: Arc<_> = self.host.clone();
        self.blocking(|_| send(&host.grants, request))
    }

    fn describe_key(&mut self, key: String) -> Result<KeyInfo, HttpError> {
        let host: Arc<_> = self.host.clone();
        self.blocking(|_| describe(&host.grants, &key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::caps::httpsig::tests::pem;

    fn ed25519_pem() -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        pem("PRIVATE KEY", pkcs8.as_ref())
    }

    fn from_env(var_value: &str) -> Result<SigningKey, HttpError> {
        let g = Grants::default()
            .with_secret_env("triton", "TRITON_KEY_MATERIAL", None)
            .unwrap();
        let secret = g.secret("triton").unwrap();
        let value = var_value.to_owned();
        let material = secret
            .key_material_from(|v| (v == "TRITON_KEY_MATERIAL").then(|| value.clone().into()))
            .map_err(HttpError::Key)?;
        parse_key(secret, material)
    }

    fn key_error(r: Result<SigningKey, HttpError>) -> String {
        match r {
            Err(HttpError::Key(m)) => m,
            Err(e) => panic!("expected a key error, got {e:?}"),
            Ok(_) => panic!("expected a key error, got a key"),
        }
    }

    #[test]
    fn a_key_from_the_environment_signs_like_the_same_key_from_a_file() {
        let text = ed25519_pem();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, &text).unwrap();
        let by_file = describe(
            &Grants::default()
                .with_secret("triton", file.clone(), None)
                .unwrap(),
            "triton",
        )
        .unwrap();
        let by_pem = from_env(&text).unwrap();
        assert_eq!(by_pem.md5_fingerprint(), by_file.md5_fingerprint);
        assert_eq!(by_pem.kind().name(), by_file.kind);
        // The variable may hold the file's path instead.
        let by_path = from_env(file.to_str().unwrap()).unwrap();
        assert_eq!(by_path.md5_fingerprint(), by_file.md5_fingerprint);
    }

    #[test]
    fn keys_from_the_environment_that_cannot_sign_are_refused_clearly() {
        let e = key_error(from_env(&pem("ENCRYPTED PRIVATE KEY", b"0123456789")));
        assert!(
            e.starts_with(
                "secret \"triton\": the PEM text in TRITON_KEY_MATERIAL: the key is encrypted"
            ),
            "{e}"
        );
        assert!(e.contains("Store it decrypted"), "{e}");
        let e = key_error(from_env("/nonexistent/id_rsa"));
        assert!(
            e.starts_with("secret \"triton\": cannot read /nonexistent/id_rsa"),
            "{e}"
        );
        let e = key_error(from_env(""));
        assert!(
            e.contains("the environment variable TRITON_KEY_MATERIAL is not set"),
            "{e}"
        );
    }
}
