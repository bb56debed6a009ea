//! TLS: rustls with TLS 1.3 and 1.2 only (older hellos are refused by the
//! library), certificates reloaded from disk when their files change,
//! optional client certificates verified against a CA and mapped to
//! principals by their SHA-256 fingerprint.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::ServeError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, ServeError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("reading certificate {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ServeError::Tls(format!("{} holds no certificate", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Tls(format!("private key {}: {e}", key.display())))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| ServeError::Tls(format!("private key {}: {e}", key.display())))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| ServeError::Tls(format!("{} does not belong to {}: {e}", key.display(), cert.display())))?;
    Ok(Arc::new(ck))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The serving certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, ServeError> {
        let ck = load_pair(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((ck, mtime(cert), mtime(key))),
        }))
    }

    /// Reloads when either file's modification time changed. A pair that
    /// does not load (a half-written renewal) keeps the current one.
    pub fn refresh(&self) -> Result<bool, ServeError> {
        let (c, k) = (mtime(&self.cert), mtime(&self.key));
        {
            let cur = self.current.read().map_err(|_| ServeError::Tls("certificate lock poisoned".into()))?;
            if cur.1 == c && cur.2 == k {
                return Ok(false);
            }
        }
        let ck = load_pair(&self.cert, &self.key)?;
        *self.current.write().map_err(|_| ServeError::Tls("certificate lock poisoned".into()))? = (ck, c, k);
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// Builds the server config. `client_ca`: verify client certificates against
/// it (optional for the client unless `require_client_cert`).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
    require_client_cert: bool,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| ServeError::Tls(format!("client CA {}: {e}", ca.display())))?
            {
                let c = c.map_err(|e| ServeError::Tls(format!("client CA {}: {e}", ca.display())))?;
                roots.add(c).map_err(|e| ServeError::Tls(format!("client CA {}: {e}", ca.display())))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if require_client_cert { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build().map_err(|e| ServeError::Tls(e.to_string()))?)
        }
        None if require_client_cert => {
            return Err(ServeError::Tls("requiring client certificates needs a client CA".into()));
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate for localhost into `dir` (for `--dev-self-signed`).
pub fn dev_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| ServeError::Io(e.to_string()))?;
    let (cert, key) = (dir.join("dev-cert.pem"), dir.join("dev-key.pem"));
    let write = |p: &Path, body: String, mode: u32| -> Result<(), ServeError> {
        let tmp = p.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| ServeError::Io(format!("{}: {e}", tmp.display())))?;
        std::io::Write::write_all(&mut f, body.as_bytes()).map_err(|e| ServeError::Io(e.to_string()))?;
        f.sync_all().map_err(|e| ServeError::Io(e.to_string()))?;
        std::fs::rename(&tmp, p).map_err(|e| ServeError::Io(e.to_string()))
    };
    write(&key, generated.signing_key.serialize_pem(), 0o600)?;
    write(&cert, generated.cert.pem(), 0o644)?;
    Ok((cert, key))
}

/// The SHA-256 fingerprint (hex) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    citadel_types::Digest::of(der).to_string()
}

/// A TLS client (1.2 and 1.3, aws-lc-rs) that trusts only the certificates
/// of one PEM file, for Citadel's own outbound connections (a SIEM).
#[derive(Clone)]
pub struct TlsClient(tokio_rustls::TlsConnector);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Connects to `host:port` and verifies its certificate names `host`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ServeError> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| ServeError::Io(format!("connecting to {host}:{port}: {e}")))?;
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| ServeError::Tls(format!("{host} is not a host name for TLS")))?;
        self.0.connect(name, tcp).await.map_err(|e| ServeError::Tls(format!("TLS with {host}:{port}: {e}")))
    }
}

/// A [`TlsClient`] trusting the certificates of the PEM file `ca`.
pub fn client_connector(ca: &Path) -> Result<TlsClient, ServeError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).map_err(|e| ServeError::Tls(format!("reading CA {}: {e}", ca.display())))?
    {
        let c = c.map_err(|e| ServeError::Tls(format!("CA {}: {e}", ca.display())))?;
        roots.add(c).map_err(|e| ServeError::Tls(format!("CA {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(ServeError::Tls(format!("{} holds no certificate", ca.display())));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsClient(tokio_rustls::TlsConnector::from(Arc::new(config))))
}
