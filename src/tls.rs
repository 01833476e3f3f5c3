//! TLS for the listeners (rustls with the ring provider): a certificate chain
//! and key from PEM files for both listeners and, on the gRPC listener
//! only, client certificates required and verified against a CA (mTLS from
//! Envoy). Handshakes run in their own tasks, so a slow or silent client
//! cannot hold up the accept loop. The files are read again when they change
//! (checked every [`RELOAD_INTERVAL`]) or on SIGHUP, and new connections get
//! the new certificate; files that do not load are refused and the running
//! configuration stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Where the PEM files are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, gRPC clients must present a certificate this CA signed.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// The server configurations: (gRPC, HTTP).
pub fn server_configs(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| file_error(&files.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert_file, e))?;
    if certs.is_empty() {
        return Err(file_error(&files.cert_file, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| file_error(&files.key_file, e))?;
    match not_after(&certs[0]) {
        Some(at) => {
            metrics::gauge!("gatehouse_tls_certificate_expiry_timestamp_seconds", "certificate" => "server")
                .set(at as f64);
        }
        None => tracing::warn!(file = %files.cert_file.display(), "cannot read the certificate's expiry date"),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions();

    let client_auth = match &files.client_ca_file {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let mut earliest: Option<i64> = None;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                let cert = cert.map_err(|e| file_error(path, e))?;
                earliest = match (earliest, not_after(&cert)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
            if let Some(at) = earliest {
                metrics::gauge!("gatehouse_tls_certificate_expiry_timestamp_seconds", "certificate" => "client_ca")
                    .set(at as f64);
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?
        }
    };
    let mut grpc =
        builder()?.with_client_cert_verifier(client_auth).with_single_cert(certs.clone(), key.clone_key())?;
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = builder()?.with_no_client_auth().with_single_cert(certs, key)?;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(grpc), Arc::new(http)))
}

/// A DER certificate's `notAfter`, in Unix seconds (`None` if it does not
/// parse as X.509). Walks `Certificate.tbsCertificate` to `validity` only.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    // One TLV: (tag, contents, rest). Definite lengths only, as DER has them.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[n..];
            len
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = tlv(cert)? else { return None };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else { return None };
    let mut fields = tbs;
    // [0] version, when present.
    if fields.first() == Some(&0xa0) {
        fields = tlv(fields)?.2;
    }
    let (_, _, fields) = tlv(fields)?; // serialNumber
    let (_, _, fields) = tlv(fields)?; // signature
    let (_, _, fields) = tlv(fields)?; // issuer
    let (SEQUENCE, validity, _) = tlv(fields)? else { return None };
    let (_, _, validity) = tlv(validity)?; // notBefore
    let (tag, value, _) = tlv(validity)?;
    let text = std::str::from_utf8(value).ok()?;
    let text = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950-2049 (RFC 5280).
        0x17 if text.len() == 13 => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 if text.len() == 15 => text.to_owned(),
        _ => return None,
    };
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |range: std::ops::Range<usize>| digits[range].parse::<u16>().ok();
    let date = time::Date::from_calendar_date(
        i32::from(n(0..4)?),
        time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?,
        u8::try_from(n(6..8)?).ok()?,
    )
    .ok()?;
    let at = date
        .with_hms(u8::try_from(n(8..10)?).ok()?, u8::try_from(n(10..12)?).ok()?, u8::try_from(n(12..14)?).ok()?)
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// A listener's TLS configuration, replaced in place on reload.
pub type SharedConfig = Arc<ArcSwap<ServerConfig>>;

/// How often the files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Both listeners' configurations from `files`, kept current with them.
#[derive(Clone)]
pub struct Reloading {
    files: TlsFiles,
    pub grpc: SharedConfig,
    pub http: SharedConfig,
}

impl Reloading {
    pub fn load(files: &TlsFiles) -> Result<Reloading, TlsError> {
        let (grpc, http) = server_configs(files)?;
        Ok(Reloading { files: files.clone(), grpc: Arc::new(ArcSwap::new(grpc)), http: Arc::new(ArcSwap::new(http)) })
    }

    /// The files' contents, to notice a change (a Kubernetes Secret update
    /// swaps a symlink, which a file watcher on the old path would miss).
    async fn contents(&self) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        for path in [Some(&self.files.cert_file), Some(&self.files.key_file), self.files.client_ca_file.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push(tokio::fs::read(path).await.ok());
        }
        out
    }

    /// Loads the files again and swaps the configurations in; on error the
    /// running ones stay.
    pub fn reload(&self, trigger: &str) -> bool {
        match server_configs(&self.files) {
            Ok((grpc, http)) => {
                self.grpc.store(grpc);
                self.http.store(http);
                metrics::counter!("gatehouse_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(trigger, cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("gatehouse_tls_reloads_total", "result" => "error").increment(1);
                tracing::error!(trigger, error = %e, "TLS files rejected; the running certificate stays in force");
                false
            }
        }
    }

    /// Reloads when the files' contents change, or on SIGHUP, until `stop`.
    pub async fn run(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut last = self.contents().await;
        tokio::pin!(stop);
        loop {
            let forced = tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            let current = self.contents().await;
            if !forced && current == last {
                continue;
            }
            last = current;
            self.reload(if forced { "SIGHUP" } else { "file changed" });
        }
    }
}

/// Longest a client may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections on `listener` and yields those whose TLS
/// handshake succeeded (with `TCP_NODELAY`), each with the configuration
/// current when it connected. Failed handshakes are logged at debug and
/// dropped.
pub fn accept(listener: TcpListener, config: SharedConfig) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (TlsAcceptor::from(config.load_full()), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// An axum listener over [`accept`].
pub struct HttpsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    pub fn new(listener: TcpListener, config: SharedConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(HttpsListener { connections: accept(listener, config), local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task ends only with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn loads_certificates_and_refuses_bad_files() {
        let good = TlsFiles {
            cert_file: fixture("tls-server.pem"),
            key_file: fixture("tls-server.key"),
            client_ca_file: Some(fixture("tls-ca.pem")),
        };
        let (grpc, http) = server_configs(&good).unwrap();
        assert_eq!(grpc.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(http.alpn_protocols.len(), 2);
        let missing = TlsFiles { cert_file: fixture("nope.pem"), ..good.clone() };
        assert!(server_configs(&missing).unwrap_err().to_string().contains("nope.pem"));
        let swapped = TlsFiles { cert_file: fixture("tls-server.key"), ..good.clone() };
        assert!(server_configs(&swapped).is_err());
        let wrong_key = TlsFiles { key_file: fixture("tls-client.key"), ..good };
        assert!(server_configs(&wrong_key).is_err());
    }

    #[test]
    fn reads_a_certificates_expiry() {
        let cert = CertificateDer::from_pem_file(fixture("tls-server.pem")).unwrap();
        // openssl x509 -enddate: notAfter=Oct 31 18:24:47 2126 GMT (GeneralizedTime).
        assert_eq!(not_after(&cert), Some(4_949_144_687));
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&cert[..cert.len() / 2]), None);
    }
}
