//! Certificates of the cluster CA: what one that speaks for an identity contains, and how it
//! is signed, for `sirms ctl ca` (with the CA's key, on the admin's machine) and for routers
//! admitting an invited node (with the issuing CA's key, an intermediate the CA signed).
//!
//! The chain is CA → issuer → joined node. A certificate the CA signed directly may hold any
//! role; one that needs the issuer to verify is accepted for a node or storage node only
//! ([`super::peer`]): a stolen router key can admit a rogue node, never an administrator.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::{Identity, Role};

/// Years a certificate made by `sirms ctl ca issue` is valid.
pub const ISSUED_YEARS: u64 = 2;
/// Years the CA and the issuer are valid.
pub const CA_YEARS: u64 = 10;
/// Days a certificate a router issues (to a joining or renewing node) is valid by default.
/// Nodes renew theirs when a third of its lifetime is left.
pub const JOINED_DAYS: u64 = 90;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct CaError {
    what: &'static str,
    reason: String,
}

fn failed(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |e| CaError { what, reason: e.to_string() }
}

/// Makes `params` valid for `lifetime`, from a little before now (clocks differ: an hour, or
/// a tenth of a short lifetime so that a third of it is still ahead).
fn valid_for(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - (lifetime / 10).min(Duration::from_secs(3600))).into();
    params.not_after = (now + lifetime).into();
}

/// A lifetime of `years` years.
pub fn years(years: u64) -> Duration {
    Duration::from_secs(years * 365 * 86_400)
}

/// A lifetime of `days` days.
pub fn days(days: u64) -> Duration {
    Duration::from_secs(days * 86_400)
}

/// Parameters of a certificate that speaks for `identity` and serves at `hosts`.
pub fn leaf(identity: &Identity, hosts: &[String], lifetime: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, identity.to_string());
    let uri = identity.uri().try_into().map_err(failed("identity"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(failed("host name"))?),
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    valid_for(&mut params, lifetime);
    Ok(params)
}

/// Parameters of a CA certificate named `name` that may sign `below` more CAs under it.
pub fn authority(name: &str, below: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(below));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid_for(&mut params, years(CA_YEARS));
    params
}

/// A fresh key pair.
pub fn key() -> Result<KeyPair, CaError> {
    KeyPair::generate().map_err(failed("key"))
}

/// The CA (or issuer) that signs with `key_pem`, whose certificate is `cert_pem`.
pub fn issuer(cert_pem: &str, key_pem: &str) -> Result<Issuer<'static, KeyPair>, CaError> {
    let key = KeyPair::from_pem(key_pem).map_err(failed("CA key"))?;
    Issuer::from_ca_cert_pem(cert_pem, key).map_err(failed("CA certificate"))
}

/// Signs `params` for `key` with `issuer`; the certificate's PEM.
pub fn sign(params: &CertificateParams, key: &KeyPair, issuer: &Issuer<'_, KeyPair>) -> Result<String, CaError> {
    Ok(params.signed_by(key, issuer).map_err(failed("certificate"))?.pem())
}

/// A certificate signing request for `identity` with a fresh key: (request PEM, key PEM).
/// The signer decides what the certificate says; the request only carries the public key and
/// proves its holder has the private one.
pub fn request(identity: &Identity) -> Result<(String, String), CaError> {
    let key = key()?;
    let params = leaf(identity, &[], days(1))?;
    let csr = params.serialize_request(&key).map_err(failed("signing request"))?;
    Ok((csr.pem().map_err(failed("signing request"))?, key.serialize_pem()))
}

/// Signs the key in `csr_pem` as a certificate for `identity` at `hosts`, whatever the
/// request itself asked for; returns the certificate's PEM.
pub fn sign_request(
    csr_pem: &str,
    identity: &Identity,
    hosts: &[String],
    lifetime: Duration,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<String, CaError> {
    if !matches!(identity.role, Role::Node | Role::Storage) {
        return Err(CaError {
            what: "identity",
            reason: format!("routers issue certificates to nodes only, not {identity}"),
        });
    }
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(failed("signing request"))?;
    csr.params = leaf(identity, hosts, lifetime)?;
    Ok(csr.signed_by(issuer).map_err(failed("certificate"))?.pem())
}

/// The host names and addresses a DER certificate serves at.
pub fn hosts(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(names)) = cert.subject_alternative_name() else { return Vec::new() };
    (names.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(host) => Some(host.to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip).ok().map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip).ok().map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// When the first certificate in `pem` expires, and how long it was valid in all.
pub fn validity(pem: &[u8]) -> Option<(SystemTime, Duration)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    validity_der(der.as_ref())
}

/// When the DER certificate `der` expires, and how long it was valid in all.
pub fn validity_der(der: &[u8]) -> Option<(SystemTime, Duration)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let expires = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).ok()?);
    Some((expires, Duration::from_secs(u64::try_from(not_after - not_before).ok()?)))
}
