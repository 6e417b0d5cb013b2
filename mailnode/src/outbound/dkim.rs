//! DKIM (RFC 6376): keys for our domains and the signature put on outbound mail.
//!
//! Keys are RSA-2048 (what every verifier supports), kept as PKCS#8 PEM in the cluster
//! directory (`sirms ctl dkim add`); signatures are rsa-sha256 with relaxed/relaxed
//! canonicalisation over the headers that identify a message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};

/// Headers signed when present (RFC 6376 §5.4.1's recommendation, without the trace ones).
pub(crate) const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Why a key or a signature could not be made.
#[derive(Debug, thiserror::Error)]
#[error("DKIM: {0}")]
pub struct DkimError(String);

fn err(e: impl std::fmt::Display) -> DkimError {
    DkimError(e.to_string())
}

fn pkcs8_der(pem: &str) -> Result<PrivatePkcs8KeyDer<'static>, DkimError> {
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| err(format!("not a PKCS#8 PEM key: {e}")))
}

/// A new RSA-2048 key as PKCS#8 PEM.
pub fn generate_key() -> Result<String, DkimError> {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(err)?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(err)?;
    let body = BASE64.encode(der.as_ref());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    Ok(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
}

/// The TXT record that publishes a key: `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>`.
pub fn dns_record(pem: &str) -> Result<String, DkimError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8_der(pem)?.secret_pkcs8_der()).map_err(err)?;
    let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).map_err(err)?;
    Ok(format!("v=DKIM1; k=rsa; p={}", BASE64.encode(spki.as_ref())))
}

/// The signing key a PKCS#8 PEM holds (DKIM signatures and ARC seals alike).
pub(crate) fn signing_key(pem: &str) -> Result<RsaKey<Sha256>, DkimError> {
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(pkcs8_der(pem)?)).map_err(err)
}

/// The `DKIM-Signature:` header line(s) for `message`, signed as `domain` with `selector`.
pub fn signature(message: &[u8], domain: &str, selector: &str, pem: &str) -> Result<Vec<u8>, DkimError> {
    let signed = DkimSigner::from_key(signing_key(pem)?)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .sign(message)
        .map_err(err)?;
    Ok(signed.to_header().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_records_and_signatures() {
        let pem = generate_key().unwrap();
        let record = dns_record(&pem).unwrap();
        assert!(record.starts_with("v=DKIM1; k=rsa; p=MII"), "{record}");
        let header = signature(b"From: a@ours.test\r\nSubject: x\r\n\r\nbody\r\n", "ours.test", "s1", &pem).unwrap();
        let header = String::from_utf8(header).unwrap();
        assert!(header.starts_with("DKIM-Signature: "), "{header}");
        assert!(header.contains("d=ours.test") && header.contains("s=s1") && header.contains("a=rsa-sha256"));
        assert!(header.ends_with("\r\n"));
        assert!(dns_record("not a key").is_err());
        assert!(signature(b"x", "d", "s", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }
}
