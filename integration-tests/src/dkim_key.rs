//! An RSA key for the signers of a test (dkimpy's DKIM and ARC signatures, a node's own DKIM
//! key), made by openssl in the test's directory, with the public half as a DNS record wants it.

use std::path::Path;
use std::process::{Command, Stdio};

/// One key, in the forms its users read.
pub struct TestKey {
    /// The private key, PKCS#1 PEM (what dkimpy signs with).
    pub pem: String,
    /// The same key, PKCS#8 PEM (what `sirms ctl dkim add --key-file` takes).
    pub pkcs8: String,
    /// The public key (SubjectPublicKeyInfo DER), base64: a DKIM record's `p=`.
    pub public: String,
}

impl TestKey {
    /// A new RSA-2048 key whose files go in `dir`.
    pub fn new(dir: &Path) -> TestKey {
        let pem = dir.join("dkim.pem");
        let pkcs8 = dir.join("dkim.p8.pem");
        openssl(&["genrsa", "-traditional", "-out", path(&pem), "2048"]);
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", path(&pem), "-out", path(&pkcs8)]);
        let public = openssl(&["rsa", "-pubout", "-outform", "DER", "-in", path(&pem)]);
        TestKey { pem: path(&pem).to_string(), pkcs8: path(&pkcs8).to_string(), public: base64(&public) }
    }

    /// The TXT record data publishing the key, split in strings of at most 200 bytes (a TXT
    /// string holds 255) for a zone file: `( "v=DKIM1; k=rsa; p=…" "…" )`.
    pub fn zone_txt(&self) -> String {
        let record = format!("v=DKIM1; k=rsa; p={}", self.public);
        let strings: Vec<String> =
            record.as_bytes().chunks(200).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
        format!("( {} )", strings.join(" "))
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs openssl with `args`; its standard output.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).stderr(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
