//! One TLS setup and one WebSocket connector for every client of the broker: the phone, the
//! relying-party client (`bzt-rp-client`), the opening hall and the load generator.
//!
//! `https:` and `wss:` trust the Web PKI roots plus any CA certificates added with
//! [`ClientTls::with_ca_pem`] (a broker behind a platform's own CA, or a test's self-signed
//! front). The same roots serve the HTTP client ([`ClientTls::http_client`]) and the WebSocket
//! ([`connect_ws`]), so a broker reachable over one is reachable over the other. The socket is
//! tokio-tungstenite's own connector with a rustls configuration built here (ring, as reqwest's
//! rustls uses it); nothing of TLS is written by hand.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A WebSocket to the broker, over TCP or TLS.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What can go wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A CA file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA text holds no usable certificate.
    #[error("CA certificates: {0}")]
    BadCa(String),
    /// rustls or reqwest refused the configuration.
    #[error("TLS setup: {0}")]
    Config(String),
}

/// The roots a client trusts for `https:` and `wss:`: the Web PKI plus extra CA certificates.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// DER of each extra CA certificate.
    extra_roots: Vec<Vec<u8>>,
}

impl ClientTls {
    /// The Web PKI roots only.
    pub fn web_pki() -> Self {
        Self::default()
    }

    /// Also trusts every `CERTIFICATE` block of `pem` (text around them ignored).
    pub fn with_ca_pem(mut self, pem: &str) -> Result<Self, TlsSetupError> {
        let blocks =
            bzt_crypto::pem::pem_blocks(pem).map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
        let before = self.extra_roots.len();
        self.extra_roots.extend(
            blocks
                .into_iter()
                .filter(|b| b.label == "CERTIFICATE")
                .map(|b| b.der),
        );
        if self.extra_roots.len() == before {
            return Err(TlsSetupError::BadCa("no CERTIFICATE block".into()));
        }
        Ok(self)
    }

    /// [`ClientTls::with_ca_pem`] on a file's contents.
    pub fn with_ca_file(self, path: &std::path::Path) -> Result<Self, TlsSetupError> {
        let pem = std::fs::read_to_string(path).map_err(|source| TlsSetupError::Io {
            path: path.to_owned(),
            source,
        })?;
        self.with_ca_pem(&pem)
    }

    /// A reqwest client builder that trusts these roots (add timeouts and build it).
    pub fn http_builder(&self) -> Result<reqwest::ClientBuilder, TlsSetupError> {
        let mut builder = reqwest::Client::builder();
        for der in &self.extra_roots {
            let cert = reqwest::Certificate::from_der(der)
                .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder)
    }

    /// A reqwest client that trusts these roots.
    pub fn http_client(&self) -> Result<reqwest::Client, TlsSetupError> {
        self.http_builder()?
            .build()
            .map_err(|e| TlsSetupError::Config(e.to_string()))
    }

    /// The rustls client configuration for `wss:`.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &self.extra_roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// Opens a WebSocket to `url` (`ws:` or `wss:`), Nagle off (small, latency-bound frames).
///
/// An upgrade the broker refuses is `tungstenite::Error::Http` with the answer, body included,
/// so callers can read the protocol's error.
pub async fn connect_ws(
    url: &str,
    tls: &ClientTls,
    config: WebSocketConfig,
) -> Result<(WsStream, Response), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::Error;
    let request = url.into_client_request()?;
    let connector = if url.starts_with("wss:") {
        let config = tls
            .rustls_config()
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        Some(Connector::Rustls(config))
    } else {
        None
    };
    tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector).await
}
