//! TLS for client listeners, with rustls, configured by Kafka's `ssl.*` settings.
//!
//! Key and trust material is PEM only (KIP-651): from files (`ssl.keystore.location`,
//! `ssl.truststore.location`) or given inline (`ssl.keystore.certificate.chain` with
//! `ssl.keystore.key`, `ssl.truststore.certificates`). JKS and PKCS12 stores are Java
//! formats; PEM is what every other tool produces, and what rustls reads.
//!
//! Every problem is reported with the config key that caused it, so a broker with a bad
//! TLS setting stops at start-up saying which one.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `ssl.client.auth`: whether the listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for; a client without one still connects (and is anonymous).
    Requested,
    /// A client without a certificate signed by the trust store is refused (mTLS).
    Required,
}

/// PEM text and the config key it comes from (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemInput {
    pub config: String,
    pub source: PemSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    /// The config value is the PEM text itself.
    Inline(String),
}

/// A listener's TLS settings, as read from its `ssl.*` configs.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificate chain, the broker's own certificate first.
    pub chain: PemInput,
    /// The private key (often the same file as the chain).
    pub key: PemInput,
    /// CA certificates that sign client certificates; needed unless `client_auth` is None.
    pub trust: Option<PemInput>,
    pub client_auth: ClientAuth,
    /// `ssl.enabled.protocols`: `TLSv1.2`, `TLSv1.3`.
    pub protocols: Vec<String>,
    /// `ssl.cipher.suites` by their IANA names; empty means rustls's defaults, all of
    /// which the JVM also enables by default.
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{config}: {reason}")]
pub struct TlsError {
    pub config: String,
    pub reason: String,
}

fn error(config: &str, reason: impl Into<String>) -> TlsError {
    TlsError {
        config: config.to_string(),
        reason: reason.into(),
    }
}

impl PemInput {
    fn text(&self) -> Result<Vec<u8>, TlsError> {
        match &self.source {
            PemSource::Inline(text) => Ok(text.as_bytes().to_vec()),
            PemSource::File(path) => std::fs::read(path)
                .map_err(|e| error(&self.config, format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let text = self.text()?;
        let certs = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(&self.config, format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(error(&self.config, "holds no CERTIFICATE block"));
        }
        Ok(certs)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let text = self.text()?;
        if text
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY")
        {
            return Err(error(
                &self.config,
                "the private key is encrypted; Odradek reads unencrypted PKCS#8, PKCS#1 or SEC1 keys only (no ssl.key.password)",
            ));
        }
        PrivateKeyDer::from_pem_slice(&text)
            .map_err(|e| error(&self.config, format!("holds no usable private key: {e}")))
    }
}

impl TlsSettings {
    /// Builds the rustls configuration: every file read and checked now, so mistakes stop
    /// start-up rather than the first client's handshake.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(self.provider()?);
        let versions = self.versions()?;
        let chain = self.chain.certificates()?;
        let key = self.key.private_key()?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| error("ssl.enabled.protocols", e.to_string()))?;
        let builder = match (self.client_auth, &self.trust) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(error(
                    "ssl.truststore.location",
                    "ssl.client.auth asks for client certificates, so a trust store of the CAs that sign them is needed",
                ));
            }
            (auth, Some(trust)) => {
                let mut roots = RootCertStore::empty();
                for cert in trust.certificates()? {
                    roots.add(cert).map_err(|e| {
                        error(&trust.config, format!("not a usable CA certificate: {e}"))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| error(&trust.config, e.to_string()))?,
                )
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            error(
                &self.key.config,
                format!("does not match the certificate: {e}"),
            )
        })?;
        Ok(Arc::new(config))
    }

    fn provider(&self) -> Result<CryptoProvider, TlsError> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if !self.cipher_suites.is_empty() {
            let known = provider.cipher_suites.clone();
            let mut chosen = Vec::new();
            for name in &self.cipher_suites {
                let suite = known
                    .iter()
                    .find(|s| iana_name(s).eq_ignore_ascii_case(name.trim()))
                    .ok_or_else(|| {
                        let offered: Vec<String> = known.iter().map(iana_name).collect();
                        error(
                            "ssl.cipher.suites",
                            format!("{name} is not offered; these are: {}", offered.join(", ")),
                        )
                    })?;
                chosen.push(*suite);
            }
            provider.cipher_suites = chosen;
        }
        Ok(provider)
    }

    fn versions(&self) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
        let mut versions = Vec::new();
        for protocol in &self.protocols {
            versions.push(match protocol.trim() {
                "TLSv1.2" => &rustls::version::TLS12,
                "TLSv1.3" => &rustls::version::TLS13,
                other => {
                    return Err(error(
                        "ssl.enabled.protocols",
                        format!("{other} is not served; TLSv1.2 and TLSv1.3 are"),
                    ));
                }
            });
        }
        if versions.is_empty() {
            return Err(error("ssl.enabled.protocols", "names no protocol"));
        }
        Ok(versions)
    }
}

/// A cipher suite's IANA name, as Kafka's `ssl.cipher.suites` (and the JVM) spell it:
/// rustls names the TLS 1.3 suites `TLS13_…` where IANA says `TLS_…`.
fn iana_name(suite: &rustls::SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Material {
        ca: String,
        cert: String,
        key: String,
    }

    fn material() -> Material {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Material {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn inline(config: &str, text: &str) -> PemInput {
        PemInput {
            config: config.into(),
            source: PemSource::Inline(text.into()),
        }
    }

    fn settings(m: &Material) -> TlsSettings {
        TlsSettings {
            chain: inline("ssl.keystore.certificate.chain", &m.cert),
            key: inline("ssl.keystore.key", &m.key),
            trust: Some(inline("ssl.truststore.certificates", &m.ca)),
            client_auth: ClientAuth::Required,
            protocols: vec!["TLSv1.2".into(), "TLSv1.3".into()],
            cipher_suites: vec![],
        }
    }

    #[test]
    fn a_good_keystore_and_truststore_build_a_config() {
        let m = material();
        settings(&m).server_config().unwrap();
        let named = TlsSettings {
            cipher_suites: vec![
                "TLS_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into(),
            ],
            ..settings(&m)
        };
        let config = named.server_config().unwrap();
        assert_eq!(config.crypto_provider().cipher_suites.len(), 2);
    }

    #[test]
    fn each_mistake_names_its_config_key() {
        let m = material();
        let other = material();
        let cases = [
            (
                TlsSettings {
                    key: inline("ssl.keystore.key", &other.key),
                    ..settings(&m)
                },
                "ssl.keystore.key",
            ),
            (
                TlsSettings {
                    chain: inline("ssl.keystore.certificate.chain", "not pem"),
                    ..settings(&m)
                },
                "ssl.keystore.certificate.chain",
            ),
            (
                TlsSettings {
                    trust: None,
                    ..settings(&m)
                },
                "ssl.truststore.location",
            ),
            (
                TlsSettings {
                    protocols: vec!["TLSv1.1".into()],
                    ..settings(&m)
                },
                "ssl.enabled.protocols",
            ),
            (
                TlsSettings {
                    cipher_suites: vec!["TLS_RSA_WITH_RC4_128_MD5".into()],
                    ..settings(&m)
                },
                "ssl.cipher.suites",
            ),
            (
                TlsSettings {
                    key: PemInput {
                        config: "ssl.keystore.location".into(),
                        source: PemSource::File("/nonexistent/broker.pem".into()),
                    },
                    ..settings(&m)
                },
                "ssl.keystore.location",
            ),
        ];
        for (bad, key) in cases {
            let err = bad.server_config().unwrap_err();
            assert_eq!(err.config, key, "{err}");
        }
    }
}
