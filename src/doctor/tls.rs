//! The TLS files: readable, a usable key and chain, and how long until the
//! certificates expire.

use std::path::Path;

use super::*;

pub(super) fn tls(config: &Config) -> Vec<Finding> {
    const NAME: &str = "tls";
    let Some(files) = &config.tls else {
        return vec![Finding::new(NAME, Status::Skip, "not configured: both listeners speak plain text", None)];
    };
    if let Err(e) = crate::tls::server_configs(files) {
        return vec![tls_refused(&e.to_string())];
    }
    let mut out = Vec::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expiry = |what: &str, path: &Path, first_only: bool| {
        let certs = match read_certs(path) {
            Ok(certs) => certs,
            Err(e) => {
                out.push(Finding::new(NAME, Status::Fail, format!("{}: {e}", path.display()), None));
                return;
            }
        };
        let soonest =
            certs.iter().take(if first_only { 1 } else { usize::MAX }).filter_map(|c| crate::tls::not_after(c)).min();
        let Some(at) = soonest else {
            out.push(Finding::new(
                NAME,
                Status::Warn,
                format!("{}: cannot read its expiry date", path.display()),
                None,
            ));
            return;
        };
        let days = (at - now).div_euclid(86_400);
        let date = time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let check = format!("{NAME} {what}");
        if at <= now {
            out.push(Finding::new(
                &check,
                Status::Fail,
                format!("{}: expired on {date}", path.display()),
                Some("renew it and restart gatehouse"),
            ));
        } else if days < CERTIFICATE_MARGIN_DAYS {
            out.push(Finding::new(
                &check,
                Status::Fail,
                format!("{}: expires in {days} days ({date})", path.display()),
                Some("renew it and restart gatehouse (certificates are read at start-up)"),
            ));
        } else {
            out.push(Finding::new(&check, Status::Ok, format!("{}: valid for {days} more days", path.display()), None));
        }
    };
    expiry("certificate", &files.cert_file, true);
    if let Some(ca) = &files.client_ca_file {
        expiry("client CA", ca, false);
    }
    if out.iter().all(|f| f.status == Status::Ok) {
        out.insert(0, Finding::new(NAME, Status::Ok, "certificate, key and client CA load; the key matches", None));
    }
    out
}

pub(super) fn tls_refused(error: &str) -> Finding {
    Finding::new(
        "tls",
        Status::Fail,
        error,
        Some(
            "GATEHOUSE_TLS_CERT_FILE needs the PEM chain, GATEHOUSE_TLS_KEY_FILE the private key of its first \
             certificate, GATEHOUSE_TLS_CLIENT_CA_FILE PEM CA certificates",
        ),
    )
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| e.to_string()))
        .collect()
}
