//! Host-held signing keys and HTTP Signatures (draft-cavage, as Triton
//! CloudAPI and Manta verify them).
//!
//! A key is read from the file its `secret` grant names, parsed here and
//! used here; neither the key nor anything derived from its private half
//! except signatures ever leaves this module. Signing is done by aws-lc-rs
//! (the provider rustls already uses in this host); the `rsa` crate only
//! turns the RSA components of OpenSSH-format files into PKCS#1.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::Engine as _;
use md5::{Digest as _, Md5};

/// The key types Triton accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::EcdsaP521 => "ecdsa-p521",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// The algorithm used when the guest names none.
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RsaSha256,
            KeyKind::EcdsaP256 => Algorithm::EcdsaSha256,
            KeyKind::EcdsaP384 => Algorithm::EcdsaSha384,
            KeyKind::EcdsaP521 => Algorithm::EcdsaSha512,
            KeyKind::Ed25519 => Algorithm::Ed25519Sha512,
        }
    }
}

/// A signature algorithm as named in the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    RsaSha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    Ed25519Sha512,
}

impl Algorithm {
    pub fn parse(name: &str) -> Result<Algorithm, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "rsa-sha256" => Algorithm::RsaSha256,
            "rsa-sha512" => Algorithm::RsaSha512,
            "ecdsa-sha256" => Algorithm::EcdsaSha256,
            "ecdsa-sha384" => Algorithm::EcdsaSha384,
            "ecdsa-sha512" => Algorithm::EcdsaSha512,
            "ed25519-sha512" | "ed25519" => Algorithm::Ed25519Sha512,
            other => {
                return Err(format!(
                    "signing algorithm {other:?} is not supported; expected rsa-sha256, \
                     rsa-sha512, ecdsa-sha256, ecdsa-sha384, ecdsa-sha512 or ed25519-sha512"
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::RsaSha512 => "rsa-sha512",
            Algorithm::EcdsaSha256 => "ecdsa-sha256",
            Algorithm::EcdsaSha384 => "ecdsa-sha384",
            Algorithm::EcdsaSha512 => "ecdsa-sha512",
            Algorithm::Ed25519Sha512 => "ed25519-sha512",
        }
    }
}

enum Inner {
    Rsa(sig::RsaKeyPair),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

/// A private key held by the host. Its `Debug` shows only public facts.
pub struct SigningKey {
    kind: KeyKind,
    inner: Inner,
    /// The OpenSSH wire encoding of the public key.
    public_blob: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind.name())
            .field("md5_fingerprint", &self.md5_fingerprint())
            .finish_non_exhaustive()
    }
}

fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An SSH mpint from a big-endian unsigned magnitude.
fn ssh_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let trimmed: &[u8] = {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        &magnitude[start..]
    };
    if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
        out.extend_from_slice(&((trimmed.len() + 1) as u32).to_be_bytes());
        out.push(0);
        out.extend_from_slice(trimmed);
    } else {
        ssh_string(out, trimmed);
    }
}

impl SigningKey {
    /// Reads and parses the key file of a secret. Errors name the file and
    /// what is wrong, never its contents.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        SigningKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a PEM private key: PKCS#1 (`RSA PRIVATE KEY`), PKCS#8
    /// (`PRIVATE KEY`: RSA, ECDSA P-256/384/521, Ed25519), SEC 1
    /// (`EC PRIVATE KEY`) or OpenSSH (`OPENSSH PRIVATE KEY`). Encrypted keys
    /// are refused.
    pub fn parse(text: &[u8]) -> Result<SigningKey, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not a PEM text file".to_string())?;
        let (label, headers, der) = pem_block(text)?;
        if label == "ENCRYPTED PRIVATE KEY" || headers.iter().any(|h| h.contains("ENCRYPTED")) {
            return Err(encrypted());
        }
        match label.as_str() {
            "OPENSSH PRIVATE KEY" => from_openssh(text),
            "RSA PRIVATE KEY" => {
                let kp = sig::RsaKeyPair::from_der(&der).map_err(|e| rsa_rejected("PKCS#1", &e))?;
                SigningKey::rsa(kp)
            }
            "EC PRIVATE KEY" => {
                for (kind, alg) in EC_CURVES {
                    if let Ok(kp) = sig::EcdsaKeyPair::from_private_key_der(alg, &der) {
                        return Ok(SigningKey::ecdsa(kind, kp));
                    }
                }
                Err("not a usable SEC 1 EC key on P-256, P-384 or P-521".into())
            }
            "PRIVATE KEY" => {
                match sig::RsaKeyPair::from_pkcs8(&der) {
                    Ok(kp) => return SigningKey::rsa(kp),
                    Err(e) if is_too_small(&e) => return Err(rsa_rejected("PKCS#8", &e)),
                    Err(_) => {}
                }
                for (kind, alg) in EC_CURVES {
                    if let Ok(kp) = sig::EcdsaKeyPair::from_pkcs8(alg, &der) {
                        return Ok(SigningKey::ecdsa(kind, kp));
                    }
                }
                if let Ok(kp) = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
                    return Ok(SigningKey::ed25519(kp));
                }
                Err("PKCS#8 key is not RSA, ECDSA P-256/384/521 or Ed25519".into())
            }
            other => Err(format!(
                "PEM block {other:?} is not a private key (expected RSA PRIVATE KEY, PRIVATE KEY, \
                 EC PRIVATE KEY or OPENSSH PRIVATE KEY)"
            )),
        }
    }

    fn rsa(kp: sig::RsaKeyPair) -> Result<SigningKey, String> {
        if kp.public_modulus_len() < 2048 / 8 {
            return Err(format!(
                "RSA key of {} bits is too short; use at least 2048",
                kp.public_modulus_len() * 8
            ));
        }
        let mut blob = Vec::new();
        ssh_string(&mut blob, b"ssh-rsa");
        ssh_mpint(
            &mut blob,
            kp.public_key().exponent().big_endian_without_leading_zero(),
        );
        ssh_mpint(
            &mut blob,
            kp.public_key().modulus().big_endian_without_leading_zero(),
        );
        Ok(SigningKey {
            kind: KeyKind::Rsa,
            inner: Inner::Rsa(kp),
            public_blob: blob,
        })
    }

    fn ecdsa(kind: KeyKind, kp: sig::EcdsaKeyPair) -> SigningKey {
        let curve: &[u8] = match kind {
            KeyKind::EcdsaP384 => b"nistp384",
            KeyKind::EcdsaP521 => b"nistp521",
            _ => b"nistp256",
        };
        let mut blob = Vec::new();
        ssh_string(&mut blob, &[b"ecdsa-sha2-".as_slice(), curve].concat());
        ssh_string(&mut blob, curve);
        ssh_string(&mut blob, kp.public_key().as_ref());
        SigningKey {
            kind,
            inner: Inner::Ecdsa(kp),
            public_blob: blob,
        }
    }

    fn ed25519(kp: sig::Ed25519KeyPair) -> SigningKey {
        let mut blob = Vec::new();
        ssh_string(&mut blob, b"ssh-ed25519");
        ssh_string(&mut blob, kp.public_key().as_ref());
        SigningKey {
            kind: KeyKind::Ed25519,
            inner: Inner::Ed25519(kp),
            public_blob: blob,
        }
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The OpenSSH wire encoding of the public key (what `ssh-keygen`
    /// fingerprints).
    pub fn public_blob(&self) -> &[u8] {
        &self.public_blob
    }

    /// MD5 of the public key blob, colon-separated lower-case hex (Triton's
    /// key fingerprint, `ssh-keygen -l -E md5`).
    pub fn md5_fingerprint(&self) -> String {
        let digest = Md5::digest(&self.public_blob);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The OpenSSH public key line (`ssh-rsa AAAA...`).
    pub fn openssh_public(&self) -> String {
        let kind = match self.kind {
            KeyKind::Rsa => "ssh-rsa",
            KeyKind::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyKind::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyKind::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyKind::Ed25519 => "ssh-ed25519",
        };
        format!(
            "{kind} {}",
            base64::engine::general_purpose::STANDARD.encode(&self.public_blob)
        )
    }

    /// Signs `data` with `alg`, which must fit the key: PKCS#1 v1.5 for
    /// RSA, ASN.1 DER (r, s) for ECDSA, plain Ed25519.
    pub fn sign(&self, alg: Algorithm, data: &[u8]) -> Result<Vec<u8>, String> {
        let unfit = || {
            format!(
                "algorithm {} does not fit this {} key (use {})",
                alg.name(),
                self.kind.name(),
                self.kind.default_algorithm().name()
            )
        };
        match (&self.inner, alg) {
            (Inner::Rsa(kp), Algorithm::RsaSha256 | Algorithm::RsaSha512) => {
                let padding: &'static dyn sig::RsaEncoding = if alg == Algorithm::RsaSha256 {
                    &sig::RSA_PKCS1_SHA256
                } else {
                    &sig::RSA_PKCS1_SHA512
                };
                let mut out = vec![0u8; kp.public_modulus_len()];
                kp.sign(padding, &SystemRandom::new(), data, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(out)
            }
            (Inner::Ecdsa(kp), _) => {
                let fits = matches!(
                    (self.kind, alg),
                    (KeyKind::EcdsaP256, Algorithm::EcdsaSha256)
                        | (KeyKind::EcdsaP384, Algorithm::EcdsaSha384)
                        | (KeyKind::EcdsaP521, Algorithm::EcdsaSha512)
                );
                if !fits {
                    return Err(unfit());
                }
                let s = kp
                    .sign(&SystemRandom::new(), data)
                    .map_err(|_| "ECDSA signing failed".to_string())?;
                Ok(s.as_ref().to_vec())
            }
            (Inner::Ed25519(kp), Algorithm::Ed25519Sha512) => Ok(kp.sign(data).as_ref().to_vec()),
            _ => Err(unfit()),
        }
    }

    /// The `Authorization` value for a request whose `date` header is
    /// `date`: `Signature keyId="…",algorithm="…",headers="date",signature="…"`.
    pub fn authorization(
        &self,
        key_id: &str,
        alg: Algorithm,
        date: &str,
    ) -> Result<String, String> {
        let signature = self.sign(alg, signing_string(date).as_bytes())?;
        Ok(format!(
            "Signature keyId=\"{key_id}\",algorithm=\"{}\",headers=\"date\",signature=\"{}\"",
            alg.name(),
            base64::engine::general_purpose::STANDARD.encode(signature)
        ))
    }
}

/// The signing string for `headers="date"`.
pub fn signing_string(date: &str) -> String {
    format!("date: {date}")
}

/// The keyId CloudAPI expects: `/<account>[/users/<user>]/keys/<fp>`.
pub fn key_id(account: &str, user: Option<&str>, fingerprint: &str) -> Result<String, String> {
    let check = |what: &str, v: &str| {
        if v.is_empty() || v.contains(['/', '"', '\\']) || v.chars().any(char::is_control) {
            Err(format!(
                "signing.{what} {v:?} must be a non-empty login without '/', '\"' or control characters"
            ))
        } else {
            Ok(())
        }
    };
    check("account", account)?;
    match user {
        Some(u) => {
            check("user", u)?;
            Ok(format!("/{account}/users/{u}/keys/{fingerprint}"))
        }
        None => Ok(format!("/{account}/keys/{fingerprint}")),
    }
}

const EC_CURVES: [(KeyKind, &sig::EcdsaSigningAlgorithm); 3] = [
    (KeyKind::EcdsaP256, &sig::ECDSA_P256_SHA256_ASN1_SIGNING),
    (KeyKind::EcdsaP384, &sig::ECDSA_P384_SHA384_ASN1_SIGNING),
    (KeyKind::EcdsaP521, &sig::ECDSA_P521_SHA512_ASN1_SIGNING),
];

fn is_too_small(e: &aws_lc_rs::error::KeyRejected) -> bool {
    e.to_string().contains("TooSmall")
}

fn rsa_rejected(format: &str, e: &aws_lc_rs::error::KeyRejected) -> String {
    if is_too_small(e) {
        "RSA key is too short; use at least 2048 bits".into()
    } else {
        format!("not a usable {format} RSA key: {e}")
    }
}

fn encrypted() -> String {
    "the key is encrypted; the host cannot ask for a passphrase. Store it decrypted \
     (`ssh-keygen -p -N '' -f FILE` or `openssl pkey -in FILE -out NEW`) in a file only the \
     Nomad client can read"
        .into()
}

/// The first PEM block: its label, its header lines and its decoded body.
fn pem_block(text: &str) -> Result<(String, Vec<String>, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        let Some(line) = lines.next() else {
            return Err("no PEM block (-----BEGIN ...-----) found".into());
        };
        if let Some(rest) = line.strip_prefix("-----BEGIN ")
            && let Some(label) = rest.strip_suffix("-----")
        {
            break label.to_string();
        }
    };
    let mut headers = Vec::new();
    let mut body = String::new();
    for line in lines.by_ref() {
        if line.starts_with("-----END ") {
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("PEM block {label:?} is not valid base64: {e}"))?;
            return Ok((label, headers, der));
        }
        if line.contains(':') {
            headers.push(line.to_string());
        } else {
            body.push_str(line);
        }
    }
    Err(format!("PEM block {label:?} has no END line"))
}

/// Reads OpenSSH's private key format (PROTOCOL.key): unencrypted keys of
/// type ssh-rsa, ssh-ed25519 and ecdsa-sha2-nistp256/384/521. (Parsed here
/// rather than with the ssh-key crate, whose 0.6 release mis-converts RSA
/// keys and rejects some P-521 keys.)
fn from_openssh(text: &str) -> Result<SigningKey, String> {
    let (_, _, blob) = pem_block(text)?;
    let rest = blob
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .ok_or("OpenSSH key: missing the openssh-key-v1 magic")?;
    let mut r = Wire(rest);
    let cipher = r.string()?;
    let _kdf = r.string()?;
    let _kdf_options = r.string()?;
    if cipher != b"none" {
        return Err(encrypted());
    }
    if r.u32()? != 1 {
        return Err("OpenSSH key files with more than one key are not supported".into());
    }
    let _public = r.string()?;
    let mut p = Wire(r.string()?);
    if p.u32()? != p.u32()? {
        return Err("OpenSSH key: check values differ (corrupt or encrypted)".into());
    }
    let kind = p.string()?;
    match kind {
        b"ssh-rsa" => {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            let mut int = || p.string().map(rsa::BigUint::from_bytes_be);
            let (n, e, d, _iqmp, pp, q) = (int()?, int()?, int()?, int()?, int()?, int()?);
            // The rsa crate fills in the CRT values OpenSSH does not store;
            // aws-lc-rs then signs.
            let key = rsa::RsaPrivateKey::from_components(n, e, d, vec![pp, q])
                .map_err(|e| format!("OpenSSH RSA key is not usable: {e}"))?;
            let der = key
                .to_pkcs1_der()
                .map_err(|e| format!("OpenSSH RSA key cannot be converted: {e}"))?;
            let kp = sig::RsaKeyPair::from_der(der.as_bytes())
                .map_err(|e| rsa_rejected("OpenSSH", &e))?;
            SigningKey::rsa(kp)
        }
        b"ssh-ed25519" => {
            let public = p.string()?;
            let both = p.string()?;
            if public.len() != 32 || both.len() != 64 {
                return Err("OpenSSH Ed25519 key has the wrong length".into());
            }
            let kp = sig::Ed25519KeyPair::from_seed_and_public_key(&both[..32], public)
                .map_err(|e| format!("OpenSSH Ed25519 key is not usable: {e}"))?;
            Ok(SigningKey::ed25519(kp))
        }
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
            let (kind, alg, size) = match kind {
                b"ecdsa-sha2-nistp256" => (EC_CURVES[0].0, EC_CURVES[0].1, 32),
                b"ecdsa-sha2-nistp384" => (EC_CURVES[1].0, EC_CURVES[1].1, 48),
                _ => (EC_CURVES[2].0, EC_CURVES[2].1, 66),
            };
            let _curve = p.string()?;
            let point = p.string()?;
            let scalar = p.string()?;
            let start = scalar.iter().position(|&b| b != 0).unwrap_or(scalar.len());
            let scalar = &scalar[start..];
            if scalar.len() > size {
                return Err("OpenSSH ECDSA key: private scalar too long".into());
            }
            let mut padded = zeroize::Zeroizing::new(vec![0u8; size]);
            padded[size - scalar.len()..].copy_from_slice(scalar);
            let kp = sig::EcdsaKeyPair::from_private_key_and_public_key(alg, &padded, point)
                .map_err(|e| format!("OpenSSH ECDSA key is not usable: {e}"))?;
            Ok(SigningKey::ecdsa(kind, kp))
        }
        other => Err(format!(
            "OpenSSH key type {:?} is not supported; use RSA, ECDSA or Ed25519",
            String::from_utf8_lossy(other)
        )),
    }
}

/// A reader of SSH wire-format fields.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or("OpenSSH key is truncated")?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err("OpenSSH key is truncated".into());
        }
        let (v, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::signature::UnparsedPublicKey;

    /// A PEM block of `der` (also used by the http capability's tests).
    pub(crate) fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    #[test]
    fn mpint_encoding_follows_rfc4251() {
        let enc = |m: &[u8]| {
            let mut v = Vec::new();
            ssh_mpint(&mut v, m);
            v
        };
        assert_eq!(enc(&[]), vec![0, 0, 0, 0]);
        assert_eq!(enc(&[0, 0]), vec![0, 0, 0, 0]);
        assert_eq!(enc(&[0x01, 0x00, 0x01]), vec![0, 0, 0, 3, 1, 0, 1]);
        assert_eq!(enc(&[0x80]), vec![0, 0, 0, 2, 0, 0x80]);
        assert_eq!(enc(&[0, 0xff, 1]), vec![0, 0, 0, 3, 0, 0xff, 1]);
    }

    #[test]
    fn key_ids_are_built_and_checked() {
        assert_eq!(key_id("acme", None, "aa:bb").unwrap(), "/acme/keys/aa:bb");
        assert_eq!(
            key_id("acme", Some("bob"), "aa:bb").unwrap(),
            "/acme/users/bob/keys/aa:bb"
        );
        assert!(
            key_id("", None, "x")
                .unwrap_err()
                .contains("signing.account")
        );
        assert!(
            key_id("a/b", None, "x")
                .unwrap_err()
                .contains("signing.account")
        );
        assert!(
            key_id("a", Some("b\"c"), "x")
                .unwrap_err()
                .contains("signing.user")
        );
    }

    #[test]
    fn algorithms_parse_and_unknown_ones_are_named() {
        assert_eq!(
            Algorithm::parse("RSA-SHA256").unwrap(),
            Algorithm::RsaSha256
        );
        assert_eq!(
            Algorithm::parse("ed25519").unwrap(),
            Algorithm::Ed25519Sha512
        );
        let err = Algorithm::parse("rsa-sha1").unwrap_err();
        assert!(err.contains("\"rsa-sha1\" is not supported"), "{err}");
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let rng = SystemRandom::new();
        // Ed25519, PKCS#8.
        let ed = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = SigningKey::parse(pem("PRIVATE KEY", ed.as_ref()).as_bytes()).unwrap();
        assert_eq!(key.kind(), KeyKind::Ed25519);
        let public = &key.public_blob()[key.public_blob().len() - 32..];
        let s = key.sign(Algorithm::Ed25519Sha512, b"date: x").unwrap();
        UnparsedPublicKey::new(&sig::ED25519, public)
            .verify(b"date: x", &s)
            .unwrap();
        assert!(
            key.sign(Algorithm::RsaSha256, b"x")
                .unwrap_err()
                .contains("does not fit")
        );
        // ECDSA P-256 and P-384, PKCS#8.
        for (alg, verify, kind, sig_alg) in [
            (
                &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                &sig::ECDSA_P256_SHA256_ASN1,
                KeyKind::EcdsaP256,
                Algorithm::EcdsaSha256,
            ),
            (
                &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                &sig::ECDSA_P384_SHA384_ASN1,
                KeyKind::EcdsaP384,
                Algorithm::EcdsaSha384,
            ),
        ] {
            let doc = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            let key = SigningKey::parse(pem("PRIVATE KEY", doc.as_ref()).as_bytes()).unwrap();
            assert_eq!(key.kind(), kind);
            let kp = sig::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap();
            let s = key.sign(sig_alg, b"date: y").unwrap();
            UnparsedPublicKey::new(verify, kp.public_key().as_ref())
                .verify(b"date: y", &s)
                .unwrap();
            assert!(key.sign(Algorithm::EcdsaSha512, b"y").is_err());
        }
    }

    #[test]
    fn authorization_header_has_the_cloudapi_shape() {
        let rng = SystemRandom::new();
        let ed = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = SigningKey::parse(pem("PRIVATE KEY", ed.as_ref()).as_bytes()).unwrap();
        let date = "Wed, 25 Nov 2026 12:00:00 GMT";
        let h = key
            .authorization("/acme/keys/aa", Algorithm::Ed25519Sha512, date)
            .unwrap();
        let prefix = "Signature keyId=\"/acme/keys/aa\",algorithm=\"ed25519-sha512\",headers=\"date\",signature=\"";
        assert!(h.starts_with(prefix), "{h}");
        let b64 = h[prefix.len()..h.len() - 1].to_string();
        let s = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let public = &key.public_blob()[key.public_blob().len() - 32..];
        UnparsedPublicKey::new(&sig::ED25519, public)
            .verify(signing_string(date).as_bytes(), &s)
            .unwrap();
        // Debug output never shows more than public facts.
        let dbg = format!("{key:?}");
        assert!(
            dbg.contains("md5_fingerprint") && !dbg.contains("inner"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        let err = |t: &str| SigningKey::parse(t.as_bytes()).unwrap_err();
        assert!(err("hello").contains("no PEM block"));
        assert!(err("-----BEGIN PRIVATE KEY-----\nAAAA\n").contains("no END line"));
        assert!(
            err("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n").contains("base64")
        );
        assert!(err(&pem("CERTIFICATE", b"x")).contains("is not a private key"));
        assert!(err(&pem("ENCRYPTED PRIVATE KEY", b"x")).contains("encrypted"));
        assert!(
            err("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n")
                .contains("encrypted")
        );
        assert!(err(&pem("PRIVATE KEY", b"garbage")).contains("PKCS#8"));
        assert!(err(&pem("RSA PRIVATE KEY", b"garbage")).contains("PKCS#1"));
        assert!(err(&pem("OPENSSH PRIVATE KEY", b"garbage")).contains("magic"));
        assert!(err(&pem("OPENSSH PRIVATE KEY", b"openssh-key-v1\0\0\0")).contains("truncated"));
        let missing = SigningKey::load(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(missing.contains("/nonexistent/key.pem"), "{missing}");
    }
}
