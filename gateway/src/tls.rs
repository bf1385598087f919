//! TLS on the gRPC port and the organisation a client certificate names.
//!
//! With `[tls]` the port speaks TLS only. With `tls.client_ca_file` as well,
//! clients present a certificate that chains to one of those CAs; one that
//! does not is refused in the handshake. The handshake lets a client without
//! a certificate in, so that health checks work without one, and every other
//! call refuses it (see [`crate::auth::Authenticate`]).
//!
//! A Norwegian enterprise certificate (virksomhetssertifikat) names its
//! organisation in the subject: as `organizationIdentifier` (OID 2.5.4.97)
//! `NTRNO-<orgnr>` in the newer profile (SEID 2), or as `serialNumber`
//! (OID 2.5.4.5) holding the 9-digit organisation number in the older one
//! (SEID 1). Both are read; the number must pass the mod-11 check.

use crate::{config::TlsConfig, domain::orgnr::Orgnr};
use anyhow::Context;
use std::{path::Path, time::Duration};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

const ORGANIZATION_IDENTIFIER: &str = "2.5.4.97";
const SERIAL_NUMBER: &str = "2.5.4.5";
/// How long a client may take over the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings from `[tls]`, checked now so that a bad file
/// stops the start rather than every connection.
pub fn server_config(config: &TlsConfig) -> anyhow::Result<ServerTlsConfig> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).with_context(|| {
            format!("cannot read tls.{key} {}; check the path and that the gateway may read it", path.display())
        })
    };
    let identity = Identity::from_pem(read("cert_file", &config.cert_file)?, read("key_file", &config.key_file)?);
    let mut tls = ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &config.client_ca_file {
        // Optional in the handshake, required by every call but health.
        tls = tls.client_ca_root(Certificate::from_pem(read("client_ca_file", ca)?)).client_auth_optional(true);
    }
    Server::builder().tls_config(tls.clone()).map_err(anyhow::Error::from).with_context(|| {
        format!(
            "tls.cert_file {}, tls.key_file {}{}: not a usable certificate and key (PEM, the key matching the certificate){}",
            config.cert_file.display(),
            config.key_file.display(),
            config.client_ca_file.as_ref().map(|p| format!(", tls.client_ca_file {}", p.display())).unwrap_or_default(),
            if config.client_ca_file.is_some() { " or CA certificates" } else { "" },
        )
    })?;
    Ok(tls)
}

/// Why a client certificate names no organisation.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the client certificate cannot be read")]
    Unreadable,
    #[error("the client certificate names no valid organisation number")]
    NoOrganisation,
}

/// The organisation number in a client certificate's subject (DER).
pub fn organisation(der: &[u8]) -> Result<Orgnr, CertificateError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, certificate) = X509Certificate::from_der(der).map_err(|_| CertificateError::Unreadable)?;
    let (mut identifier, mut serial) = (None, None);
    for attribute in certificate.subject().iter_attributes() {
        let Ok(value) = attribute.as_str() else { continue };
        match attribute.attr_type().to_id_string().as_str() {
            ORGANIZATION_IDENTIFIER => identifier = Some(value),
            SERIAL_NUMBER => serial = Some(value),
            _ => {}
        }
    }
    // Where the newer attribute is present it decides; the serial number of
    // such a certificate need not be an organisation number.
    let number = match identifier {
        Some(id) => id.strip_prefix("NTRNO-"),
        None => serial,
    };
    number.and_then(|n| Orgnr::parse(n).ok()).ok_or(CertificateError::NoOrganisation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    /// A self-signed certificate with `attributes` (OID, value) in its
    /// subject besides a common name.
    fn certificate(attributes: &[(&[u64], &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "TESTVIRKSOMHET AS");
        for (oid, value) in attributes {
            params.distinguished_name.push(DnType::CustomDnType(oid.to_vec()), *value);
        }
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    const ORG_ID: &[u64] = &[2, 5, 4, 97];
    const SERIAL: &[u64] = &[2, 5, 4, 5];

    #[test]
    fn the_organisation_comes_from_either_profile_and_must_pass_mod_11() {
        let org = |attributes: &[(&[u64], &str)]| organisation(&certificate(attributes)).map(|o| o.to_string());
        assert_eq!(org(&[(SERIAL, "900000049")]).as_deref(), Ok("900000049"), "SEID 1: serialNumber");
        assert_eq!(org(&[(ORG_ID, "NTRNO-900000014")]).as_deref(), Ok("900000014"), "SEID 2: organizationIdentifier");
        assert_eq!(
            org(&[(ORG_ID, "NTRNO-900000014"), (SERIAL, "900000049")]).as_deref(),
            Ok("900000014"),
            "the organisation identifier wins"
        );
        assert_eq!(org(&[(SERIAL, "900000015")]), Err(CertificateError::NoOrganisation), "mod 11");
        assert_eq!(org(&[(ORG_ID, "VATNO-900000014")]), Err(CertificateError::NoOrganisation), "not NTRNO");
        assert_eq!(
            org(&[(ORG_ID, "NTRNO-12345"), (SERIAL, "900000049")]),
            Err(CertificateError::NoOrganisation),
            "a bad identifier is not made good by the serial number"
        );
        assert_eq!(org(&[]), Err(CertificateError::NoOrganisation));
        assert_eq!(organisation(b"not a certificate"), Err(CertificateError::Unreadable));
    }

    #[test]
    fn unusable_files_stop_the_start_and_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (cert_file, key_file, ca_file) =
            (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.crt"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&ca_file, cert.pem()).unwrap();
        let config = TlsConfig { cert_file: cert_file.clone(), key_file: key_file.clone(), client_ca_file: None };
        server_config(&config).expect("a matching certificate and key");
        server_config(&TlsConfig { client_ca_file: Some(ca_file), ..config.clone() }).expect("with a client CA");

        let missing = TlsConfig { key_file: dir.path().join("nowhere.key"), ..config.clone() };
        let err = format!("{:#}", server_config(&missing).unwrap_err());
        assert!(err.contains("tls.key_file") && err.contains("nowhere.key"), "{err}");

        std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let err = format!("{:#}", server_config(&config).unwrap_err());
        assert!(err.contains("tls.cert_file") && err.contains("not a usable certificate and key"), "{err}");

        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let no_ca = dir.path().join("empty.pem");
        std::fs::write(&no_ca, "").unwrap();
        let err = format!("{:#}", server_config(&TlsConfig { client_ca_file: Some(no_ca), ..config }).unwrap_err());
        assert!(err.contains("tls.client_ca_file"), "{err}");
    }
}
