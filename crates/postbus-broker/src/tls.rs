//! TLS for the STOMP and HTTP listeners (rustls: TLS 1.2 and 1.3 only): certificate and key
//! from PEM files, optional client certificates verified against a CA (whose subject can be
//! the principal), and reloading the files without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Whether clients must show a certificate (only with a client CA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may show one; without, it authenticates with a token.
    Optional,
    /// Every client must show one the CA signed.
    Required,
}

/// Where the TLS files are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// The TLS state of the listeners: the configuration in force, swapped on reload.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// When the server certificate in force expires (epoch seconds).
    not_after: RwLock<i64>,
}

impl Tls {
    /// Loads the files; the error says which file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, String> {
        let (config, not_after) = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
            not_after: RwLock::new(not_after),
        }))
    }

    /// Reads the files again (a renewed certificate); on failure the old ones stay in force.
    pub fn reload(&self) -> Result<(), String> {
        let (config, not_after) = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *self.not_after.write().unwrap_or_else(|p| p.into_inner()) = not_after;
        Ok(())
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// The server certificate's expiry, epoch seconds.
    pub fn not_after(&self) -> i64 {
        *self.not_after.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn build(files: &TlsFiles) -> Result<(ServerConfig, i64), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| {
            format!(
                "cannot read the TLS certificate {}: {e}",
                files.cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the TLS certificate {} is not PEM: {e}",
                files.cert.display()
            )
        })?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "the TLS certificate file {} holds no certificate",
            files.cert.display()
        ));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| {
            format!(
                "the TLS certificate {} cannot be parsed: {e}",
                files.cert.display()
            )
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read the TLS key {} (PEM, PKCS#8 or RSA/EC): {e}",
            files.key.display()
        )
    })?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read the client CA {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("the client CA {} is not PEM: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("the client CA {} cannot be used: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = match files.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("the client CA {} cannot be used: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS key does not fit the certificate or cannot be used: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, not_after))
}

/// The principal a verified client certificate names: its subject's common name, else the
/// whole subject.
pub fn peer_principal(conn: &ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = parsed.subject();
    subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .or_else(|| Some(subject.to_string()))
}
