//! A minimal HTTPS client for the gateway (one request per connection),
//! trusting only the CA it is given. The quickstart calls its endpoint with
//! it; it is not a general-purpose client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

use crate::ServeError;

#[derive(Clone)]
pub struct GatewayClient {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient").field("addr", &self.addr).finish()
    }
}

impl GatewayClient {
    /// A client for `addr` that trusts only the CA certificate(s) in `ca_pem`.
    pub fn new(addr: SocketAddr, ca_pem: &Path) -> Result<GatewayClient, ServeError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in
            CertificateDer::pem_file_iter(ca_pem).map_err(|e| ServeError::Tls(format!("{}: {e}", ca_pem.display())))?
        {
            let c = c.map_err(|e| ServeError::Tls(format!("{}: {e}", ca_pem.display())))?;
            roots.add(c).map_err(|e| ServeError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(GatewayClient { addr, tls: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// Sends one request; returns the status and the body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ServeError> {
        let io = |e: std::io::Error| ServeError::Io(e.to_string());
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(io)?;
        let name = ServerName::try_from("localhost").map_err(|e| ServeError::Tls(e.to_string()))?;
        let tls = self.tls.connect(name, tcp).await.map_err(io)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| ServeError::Io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req =
            req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| ServeError::Io(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| ServeError::Io(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| ServeError::Io(e.to_string()))?.to_bytes();
        Ok((status, bytes.to_vec()))
    }
}
