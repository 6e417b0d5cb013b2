//! `sirms ctl ca`: the cluster CA and the certificates of the cluster plane's mutual TLS.
//!
//! `init` makes the CA and the administrator's certificate; `issue` makes one for a router,
//! node or storage node, naming it (`sirms://ROLE/NAME`, see `sirms_proto::cluster_tls`) and
//! the host names and addresses others reach it at. Everything happens in a directory on the
//! admin's machine; the CA key never leaves it and no node holds the admin certificate.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use sirms_proto::cluster_tls::{Identity, Role};

use super::CtlError;

/// Years a certificate is valid (to the end of the year): renew by issuing a new one.
const VALID_YEARS: i32 = 2;

/// `sirms ctl ca …`
#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Make the cluster CA and the administrator's certificate in DIR.
    Init {
        /// Where to write ca.pem, ca.key, admin.pem and admin.key.
        #[arg(long, default_value = "sirms-ca")]
        dir: PathBuf,
    },
    /// Make a certificate for a router, node or storage node, signed by the CA in DIR.
    Issue {
        /// router, node, storage, or etcd (a server certificate for an etcd member).
        role: String,
        /// The node id (or router name) the certificate speaks for.
        name: String,
        /// Host names and addresses others connect to it by (the name itself is always in).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// The CA's directory; NAME.pem and NAME.key are written there too.
        #[arg(long, default_value = "sirms-ca")]
        dir: PathBuf,
    },
}

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> CtlError + '_ {
    move |e| CtlError::Input(format!("{what}: {e}"))
}

/// Writes `contents` to `path`, readable by its owner only when it is a key.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), CtlError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        CtlError::Input(format!("cannot create {}: {e} (certificates are never overwritten)", path.display()))
    })?;
    file.write_all(contents.as_bytes()).map_err(|e| CtlError::Input(format!("cannot write {}: {e}", path.display())))
}

/// Parameters of a certificate that speaks for `identity` at `hosts`.
fn leaf(identity: &Identity, hosts: &[String]) -> Result<CertificateParams, CtlError> {
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
    valid_for(&mut params, VALID_YEARS);
    Ok(params)
}

/// Makes `params` valid from 2024 to December 31st, `years` years from now.
fn valid_for(params: &mut CertificateParams, years: i32) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // A mean Gregorian year; off by a day at most around New Year, which does not matter here.
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 12, 31);
}

/// Signs `params` with the CA in `dir`; writes NAME.pem and NAME.key.
fn sign(dir: &Path, name: &str, params: &CertificateParams) -> Result<(), CtlError> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|e| {
            CtlError::Input(format!("cannot read {}: {e} (run `sirms ctl ca init` first)", dir.join(file).display()))
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?).map_err(failed("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).map_err(failed("CA certificate"))?;
    let key = KeyPair::generate().map_err(failed("key"))?;
    let cert = params.signed_by(&key, &issuer).map_err(failed("certificate"))?;
    write(&dir.join(format!("{name}.pem")), &cert.pem(), false)?;
    write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)
}

/// Runs a `ca` command; returns what to print.
pub(super) fn run(cmd: CaCmd) -> Result<String, CtlError> {
    match cmd {
        CaCmd::Init { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CtlError::Input(format!("cannot create {}: {e}", dir.display())))?;
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, "SIRMS cluster CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            valid_for(&mut params, 10);
            let key = KeyPair::generate().map_err(failed("CA key"))?;
            let cert = params.self_signed(&key).map_err(failed("CA certificate"))?;
            write(&dir.join("ca.pem"), &cert.pem(), false)?;
            write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
            let admin = Identity { role: Role::Admin, name: "admin".into() };
            sign(&dir, "admin", &leaf(&admin, &[])?)?;
            Ok(format!(
                "cluster CA in {0}/ca.pem (its key, {0}/ca.key, stays here); administrator's certificate {0}/admin.pem\n",
                dir.display()
            ))
        }
        CaCmd::Issue { role, name, hosts, dir } => {
            let role = match Role::from_name(&role) {
                Some(Role::Admin) | None => {
                    return Err(CtlError::Input(format!("role {role:?}: use router, node, storage or etcd")));
                }
                Some(role) => role,
            };
            let identity = Identity { role, name: name.clone() };
            if Identity::from_uri(&identity.uri()).is_none() {
                return Err(CtlError::Input(format!("invalid name {name:?}")));
            }
            let mut all_hosts = vec![name.clone()];
            all_hosts.extend(hosts);
            sign(&dir, &name, &leaf(&identity, &all_hosts)?)?;
            Ok(format!("{} in {}/{name}.pem and {name}.key\n", identity, dir.display()))
        }
    }
}
