//! TLS to the stores, all through rustls with ring: the CA files the settings name, and telling
//! a certificate this process refused from a store that is merely down.
//!
//! Each driver takes TLS from its URL (`sslmode=` for Postgres, `rediss://`, `tls=true` for
//! MongoDB, `amqps://`) and trusts the public CAs by default; a `*_CA_FILE` setting adds a
//! private CA (a managed service's own, or a test's). A CA file that cannot be read, and a
//! server certificate that the CA does not sign, stop the process at start with the store's
//! name: neither heals by retrying, unlike an outage.

use std::{
    error::Error,
    path::{Path, PathBuf},
};

use rustls::pki_types::{CertificateDer, pem::PemObject};
use thiserror::Error;

/// Makes ring the process's rustls provider. Every driver here builds its TLS configuration
/// from the process default, and rustls refuses to pick one when a dependency ever brings a
/// second provider in; installing it is idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, Error)]
pub enum CaFileError {
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting}: {} holds no PEM certificate", path.display())]
    NoCertificate {
        setting: &'static str,
        path: PathBuf,
    },
}

/// The PEM text of the CA file `setting` names, once it is known to hold a certificate.
pub fn read_ca_file(setting: &'static str, path: &Path) -> Result<String, CaFileError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CaFileError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter(Result::is_ok)
        .count();
    if certificates == 0 {
        return Err(CaFileError::NoCertificate {
            setting,
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// Whether `e`, or an error behind it, is this process refusing the server's certificate
/// (an unknown issuer, a name that does not match, an expired certificate).
///
/// The drivers wrap rustls's error in `io::Error`s, whose `source()` skips the error they
/// carry, so each `io::Error` is opened by hand; a driver that keeps only the text still
/// says rustls's words.
pub fn certificate_rejected(e: &(dyn Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if is_rejection(e) {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_rejection(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn is_rejection(e: &(dyn Error + 'static)) -> bool {
    match e.downcast_ref::<rustls::Error>() {
        Some(e) => matches!(
            e,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        ),
        None => e.to_string().contains("invalid peer certificate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("orderly-ca-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = read_ca_file("ORDERLY_REDIS_CA_FILE", &missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ORDERLY_REDIS_CA_FILE: cannot read")
        );

        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = read_ca_file("ORDERLY_AMQP_CA_FILE", &junk).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_certificate_is_found_behind_io_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        assert!(certificate_rejected(&wrapped));
        let outage = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!certificate_rejected(&outage));
    }
}
