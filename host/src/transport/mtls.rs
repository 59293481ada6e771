//! go-plugin AutoMTLS, server side.
//!
//! Nomad never turns this on (NOMAD-PROTOCOL.md §1.1: `PLUGIN_CLIENT_CERT` is
//! never set), but other go-plugin clients with `AutoMTLS: true` do. The
//! protocol, as go-plugin implements it (client.go, server.go, mtls.go):
//!
//! - the client creates a throw-away self-signed certificate and hands the
//!   plugin its PEM in the `PLUGIN_CLIENT_CERT` environment variable;
//! - the plugin creates its own throw-away self-signed certificate (ECDSA
//!   P-521, CN and DNS SAN `localhost`, a CA certificate usable for client and
//!   server auth, valid from 30 s ago for 262 980 h ≈ 30 years), serves TLS
//!   1.2+ with it, and requires a client certificate that verifies against a
//!   pool holding only the client's certificate;
//! - the plugin prints its certificate's DER, base64 *without padding* (Go's
//!   `RawStdEncoding`: the handshake line cannot carry PEM's newlines), as the
//!   6th field of the handshake line;
//! - the client trusts exactly that certificate and dials with server name
//!   `localhost`.
//!
//! Both certificates are CA certificates used as end-entity certificates, which
//! rustls' WebPKI verifier rejects (`CaUsedAsEndEntity`); so the client
//! certificate is pinned instead: the peer must present exactly the DER from
//! `PLUGIN_CLIENT_CERT` and prove it holds its key (the TLS CertificateVerify
//! signature). That is the identity check go-plugin's pool-of-one performs.
//! aws-lc-rs, not ring, is the crypto provider because go-plugin's keys are
//! P-521, which ring can neither verify nor sign with.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
    version,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// The variable a go-plugin client with `AutoMTLS` puts its certificate in.
pub const CLIENT_CERT_ENV: &str = "PLUGIN_CLIENT_CERT";

/// The name go-plugin clients verify the server certificate against.
const SERVER_NAME: &str = "localhost";

/// go-plugin's certificate lifetime: 262 980 hours (≈ 30 years).
const CERT_VALIDITY_HOURS: i64 = 262_980;

/// A local handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why AutoMTLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error(
        "{CLIENT_CERT_ENV} is set (go-plugin AutoMTLS) but does not hold a PEM X.509 certificate: {0}; \
         unset it to serve without TLS"
    )]
    BadClientCert(String),
    #[error("cannot create the AutoMTLS server certificate: {0}")]
    ServerCert(String),
    #[error("cannot set up AutoMTLS: {0}")]
    Tls(String),
}

/// Reads the certificate(s) from the `PLUGIN_CLIENT_CERT` PEM. Every
/// CERTIFICATE block must be a parseable X.509 certificate, and there must be
/// at least one.
pub fn parse_client_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, MtlsError> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = item.map_err(|e| MtlsError::BadClientCert(format!("invalid PEM ({e})")))?;
        ParsedCertificate::try_from(&der).map_err(|e| {
            MtlsError::BadClientCert(format!("a CERTIFICATE block is not X.509 DER ({e})"))
        })?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err(MtlsError::BadClientCert(
            "no PEM CERTIFICATE block found".into(),
        ));
    }
    Ok(certs)
}

/// A freshly generated, self-signed server certificate and its key.
#[derive(Debug)]
pub struct ServerCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ServerCert {
    /// Generates a certificate shaped like go-plugin's (see the module docs).
    pub fn generate() -> Result<Self, MtlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P521_SHA512,
            SerialNumber,
        };
        let err = |e: rcgen::Error| MtlsError::ServerCert(e.to_string());

        let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).map_err(err)?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, SERVER_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = now + time::Duration::hours(CERT_VALIDITY_HOURS);
        // A random positive serial below 2^128, as go-plugin does.
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));

        let cert = params.self_signed(&key).map_err(err)?;
        Ok(ServerCert {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// The certificate's DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The handshake line's 6th field: the DER in unpadded standard base64
    /// (go-plugin decodes it with `RawStdEncoding`, which rejects `=`).
    pub fn handshake_field(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.cert.as_ref())
    }
}

/// The aws-lc-rs provider, chosen explicitly rather than through a
/// process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::aws_lc_rs::default_provider())
}

/// Accepts exactly the client certificate(s) from `PLUGIN_CLIENT_CERT`.
#[derive(Debug)]
struct PinnedClientCert {
    certs: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a Go client then offers its (only) certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, tokio_rustls::rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(CertificateError::UnknownIssuer.into())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server half of go-plugin AutoMTLS: a TLS acceptor plus the handshake
/// field announcing its certificate.
#[derive(Debug)]
pub struct AutoMtls {
    config: Arc<ServerConfig>,
    handshake_field: String,
}

impl AutoMtls {
    /// Sets up AutoMTLS for the client certificate PEM from
    /// `PLUGIN_CLIENT_CERT`.
    pub fn new(client_cert_pem: &str) -> Result<Self, MtlsError> {
        let client_certs = parse_client_certs(client_cert_pem)?;
        let server = ServerCert::generate()?;
        let handshake_field = server.handshake_field();
        let config = server_config(client_certs, server)?;
        Ok(AutoMtls {
            config: Arc::new(config),
            handshake_field,
        })
    }

    /// The handshake line's 6th field.
    pub fn handshake_field(&self) -> &str {
        &self.handshake_field
    }

    /// Accepts connections on `listener` and yields those that complete the
    /// mutual-TLS handshake. Handshakes run concurrently, so a stalled peer
    /// does not hold up others; failed ones are logged and dropped.
    pub fn incoming(
        &self,
        listener: UnixListener,
    ) -> ReceiverStream<io::Result<TlsStream<UnixStream>>> {
        let (tx, rx) = mpsc::channel(16);
        let acceptor = TlsAcceptor::from(self.config.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    r = listener.accept() => r,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send(Ok(tls)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::warn!(
                                        error = %e,
                                        "AutoMTLS handshake failed (the client must present the certificate \
                                         from PLUGIN_CLIENT_CERT); connection dropped"
                                    );
                                }
                                Err(_) => tracing::warn!(
                                    "AutoMTLS handshake timed out; connection dropped"
                                ),
                            }
                        });
                    }
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        // Do not spin on a persistent accept error (e.g. EMFILE).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// TLS 1.2+ with the pinned-client-certificate verifier and h2 over ALPN.
fn server_config(
    client_certs: Vec<CertificateDer<'static>>,
    server: ServerCert,
) -> Result<ServerConfig, MtlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedClientCert {
        certs: client_certs,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| MtlsError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.cert], PrivateKeyDer::Pkcs8(server.key))
        .map_err(|e| MtlsError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, ProtocolVersion};

    fn pem(der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    #[test]
    fn server_cert_is_x509_for_localhost() {
        let cert = ServerCert::generate().unwrap();
        let parsed = ParsedCertificate::try_from(cert.der()).unwrap();
        // The certificate carries a DNS SAN `localhost` and nothing else.
        let localhost = ServerName::try_from("localhost").unwrap();
        tokio_rustls::rustls::client::verify_server_name(&parsed, &localhost).unwrap();
        let other = ServerName::try_from("example.com").unwrap();
        assert!(tokio_rustls::rustls::client::verify_server_name(&parsed, &other).is_err());
        // The key is P-521, as go-plugin's.
        let der = cert.der().as_ref();
        let p521_oid = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35 (secp521r1)
        assert!(der.windows(p521_oid.len()).any(|w| w == p521_oid));
        // Each call makes a new certificate.
        assert_ne!(ServerCert::generate().unwrap().der(), cert.der());
    }

    #[test]
    fn handshake_field_is_unpadded_standard_base64_of_the_der() {
        let cert = ServerCert::generate().unwrap();
        let field = cert.handshake_field();
        assert!(
            field.len() > 50,
            "go-plugin ignores a 6th field of 50 characters or fewer"
        );
        assert!(!field.contains('=') && !field.contains('\n') && !field.contains('|'));
        assert!(
            !field.contains('-') && !field.contains('_'),
            "standard, not URL-safe, alphabet"
        );
        let der = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&field)
            .unwrap();
        assert_eq!(der, cert.der().as_ref());
    }

    #[test]
    fn client_pem_is_parsed() {
        let cert = ServerCert::generate().unwrap();
        let certs = parse_client_certs(&pem(cert.der())).unwrap();
        assert_eq!(certs, vec![cert.der().clone()]);
    }

    #[test]
    fn bad_client_pem_is_a_clear_error() {
        for bad in [
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
        ] {
            let err = parse_client_certs(bad).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(CLIENT_CERT_ENV) && msg.contains("AutoMTLS"),
                "{msg}"
            );
            assert!(AutoMtls::new(bad).is_err());
        }
    }

    /// A test client that, like go-plugin's, trusts exactly one server
    /// certificate.
    #[derive(Debug)]
    struct PinnedServer(CertificateDer<'static>, WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for PinnedServer {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
            assert_eq!(server_name, &ServerName::try_from("localhost").unwrap());
            if end_entity.as_ref() == self.0.as_ref() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(CertificateError::UnknownIssuer.into())
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
            crypto::verify_tls12_signature(m, c, d, &self.1)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
            crypto::verify_tls13_signature(m, c, d, &self.1)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.1.supported_schemes()
        }
    }

    fn client_config(
        client: &ServerCert,
        server_der: &CertificateDer<'static>,
        v: ProtocolVersion,
    ) -> ClientConfig {
        let provider = provider();
        let algs = provider.signature_verification_algorithms;
        let versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion] = match v {
            ProtocolVersion::TLSv1_2 => &[&version::TLS12],
            _ => &[&version::TLS13],
        };
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer(server_der.clone(), algs)))
            .with_client_auth_cert(
                vec![client.der().clone()],
                PrivateKeyDer::Pkcs8(client.key.clone_key()),
            )
            .unwrap()
    }

    /// Runs one connection through `AutoMtls::incoming` and echoes a byte.
    async fn handshake(mtls: &AutoMtls, config: ClientConfig) -> io::Result<u8> {
        use tokio_stream::StreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut incoming = mtls.incoming(UnixListener::bind(&path).unwrap());
        let server = tokio::spawn(async move {
            let mut tls = incoming.next().await.unwrap().unwrap();
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
            let b = tls.read_u8().await.unwrap();
            tls.write_u8(b + 1).await.unwrap();
            tls.flush().await.unwrap();
        });
        let mut config = config;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = UnixStream::connect(&path).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_u8(41).await?;
        tls.flush().await?;
        let got = tokio::time::timeout(Duration::from_secs(5), tls.read_u8()).await??;
        server.abort();
        Ok(got)
    }

    #[tokio::test]
    async fn mutual_tls_with_the_pinned_client_succeeds_on_tls12_and_tls13() {
        // A go-plugin-shaped client certificate (P-521, CA, self-signed).
        let client = ServerCert::generate().unwrap();
        let mtls = AutoMtls::new(&pem(client.der())).unwrap();
        let server_der: CertificateDer<'static> = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(mtls.handshake_field())
            .unwrap()
            .into();
        for v in [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2] {
            let got = handshake(&mtls, client_config(&client, &server_der, v))
                .await
                .unwrap();
            assert_eq!(got, 42, "{v:?}");
        }
    }

    #[tokio::test]
    async fn a_different_client_certificate_is_refused() {
        let expected = ServerCert::generate().unwrap();
        let intruder = ServerCert::generate().unwrap();
        let mtls = AutoMtls::new(&pem(expected.der())).unwrap();
        let server_der: CertificateDer<'static> = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(mtls.handshake_field())
            .unwrap()
            .into();
        let r = handshake(
            &mtls,
            client_config(&intruder, &server_der, ProtocolVersion::TLSv1_3),
        )
        .await;
        assert!(
            r.is_err(),
            "an unknown client certificate must not get through"
        );
    }
}
