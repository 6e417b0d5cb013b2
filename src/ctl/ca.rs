//! `sirms ctl ca`: the cluster CA and the certificates of the cluster plane's mutual TLS.
//!
//! `init` makes the CA, the administrator's certificate and the issuer (an intermediate CA
//! routers hold to admit invited nodes); `issue` makes a certificate for a router, node or
//! storage node, naming it (`sirms://ROLE/NAME`, see `sirms_proto::cluster_tls`) and the host
//! names and addresses others reach it at. Everything happens in a directory on the admin's
//! machine; the CA key never leaves it and no node holds the admin certificate.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use sirms_proto::cluster_tls::ca::{self, CaError};
use sirms_proto::cluster_tls::{Identity, Role};

use super::CtlError;

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
    /// `init` if DIR has no CA yet, then `issue` each certificate DIR does not have yet: a
    /// whole cluster's certificates in one step that can be run again (containers, scripts).
    Bootstrap {
        /// ROLE:NAME or ROLE:NAME:HOST,HOST… (e.g. node:node1:10.0.0.11).
        #[arg(required = true)]
        certificates: Vec<String>,
        #[arg(long, default_value = "sirms-ca")]
        dir: PathBuf,
    },
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

/// Signs `params` with the CA in `dir` for a fresh key; writes NAME.pem and NAME.key.
fn sign(dir: &Path, name: &str, params: &rcgen::CertificateParams) -> Result<(), CtlError> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|e| {
            CtlError::Input(format!("cannot read {}: {e} (run `sirms ctl ca init` first)", dir.join(file).display()))
        })
    };
    let issuer = ca::issuer(&read("ca.pem")?, &read("ca.key")?).map_err(input)?;
    let key = ca::key().map_err(input)?;
    write(&dir.join(format!("{name}.pem")), &ca::sign(params, &key, &issuer).map_err(input)?, false)?;
    write(&dir.join(format!("{name}.key")), &key.serialize_pem(), true)
}

fn input(e: CaError) -> CtlError {
    CtlError::Input(e.to_string())
}

/// Runs a `ca` command; returns what to print.
pub(super) fn run(cmd: CaCmd) -> Result<String, CtlError> {
    match cmd {
        CaCmd::Bootstrap { certificates, dir } => {
            let mut out = String::new();
            if !dir.join("ca.pem").exists() {
                out += &run(CaCmd::Init { dir: dir.clone() })?;
            }
            for spec in certificates {
                let mut parts = spec.splitn(3, ':');
                let (Some(role), Some(name)) = (parts.next(), parts.next()) else {
                    return Err(CtlError::Input(format!("{spec:?}: use ROLE:NAME or ROLE:NAME:HOST,HOST")));
                };
                if dir.join(format!("{name}.pem")).exists() {
                    continue;
                }
                let hosts = parts.next().map(|h| h.split(',').map(str::to_string).collect()).unwrap_or_default();
                out += &run(CaCmd::Issue { role: role.into(), name: name.into(), hosts, dir: dir.clone() })?;
            }
            Ok(out)
        }
        CaCmd::Init { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| CtlError::Input(format!("cannot create {}: {e}", dir.display())))?;
            // One level of CA below the root: the issuer routers hold.
            let key = ca::key().map_err(input)?;
            let cert =
                ca::authority("SIRMS cluster CA", 1).self_signed(&key).map_err(|e| CtlError::Input(e.to_string()))?;
            write(&dir.join("ca.pem"), &cert.pem(), false)?;
            write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
            let admin = Identity { role: Role::Admin, name: "admin".into() };
            sign(&dir, "admin", &ca::leaf(&admin, &[], ca::years(ca::ISSUED_YEARS)).map_err(input)?)?;
            sign(&dir, "issuer", &ca::authority("SIRMS cluster issuer", 0))?;
            Ok(format!(
                "cluster CA in {0}/ca.pem (its key, {0}/ca.key, stays here); administrator's certificate {0}/admin.pem; \
                 issuer for routers that admit invited nodes {0}/issuer.pem and issuer.key ([issuer] in router.toml)\n",
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
            sign(&dir, &name, &ca::leaf(&identity, &all_hosts, ca::years(ca::ISSUED_YEARS)).map_err(input)?)?;
            Ok(format!("{} in {}/{name}.pem and {name}.key\n", identity, dir.display()))
        }
    }
}
