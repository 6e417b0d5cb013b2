//! `sirms ctl dkim`: the keys outbound mail is signed with, and the DNS records they need.
//! Keys are made and their records derived with the mail node's DKIM code.

use clap::Subcommand;
use sirms_mailnode::outbound::dkim::{dns_record, generate_key};
use sirms_proto::cluster::{DkimKey, Empty, Name};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum DkimCmd {
    /// Domains with a key, and the DNS record each needs.
    List,
    /// Give DOMAIN a key (a new RSA-2048 one unless --key-file names a PKCS#8 PEM) and print
    /// the TXT record to publish.
    Add {
        domain: String,
        #[arg(long, default_value = "sirms")]
        selector: String,
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// Stop signing DOMAIN's mail.
    #[command(alias = "rm")]
    Remove { domain: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: DkimCmd) -> Result<String, CtlError> {
    match cmd {
        DkimCmd::List => {
            let keys = c.get_directory(Empty {}).await?.into_inner().dkim_keys;
            let records = keys
                .iter()
                .map(|k| DkimRecord::new(&k.domain, &k.selector, &k.private_key_pem))
                .collect::<Result<Vec<_>, _>>()?;
            show(json, &records, |r| r.iter().map(|r| format!("{} IN TXT \"{}\"\n", r.name, r.txt)).collect())
        }
        DkimCmd::Add { domain, selector, key_file } => {
            let pem = match key_file {
                Some(path) => {
                    std::fs::read_to_string(&path).map_err(|e| CtlError::Input(format!("{}: {e}", path.display())))?
                }
                None => generate_key().map_err(|e| CtlError::Input(e.to_string()))?,
            };
            let record = DkimRecord::new(&domain.to_lowercase(), &selector, &pem)?;
            c.put_dkim_key(DkimKey { domain, selector, private_key_pem: pem }).await?;
            show(json, &record, |r| {
                format!("publish this record, then mail is signed:\n{} IN TXT \"{}\"", r.name, r.txt)
            })
        }
        DkimCmd::Remove { domain } => acked(json, c.remove_dkim_key(Name { name: domain }).await),
    }
}

/// The DNS record a DKIM key needs.
#[derive(serde::Serialize)]
struct DkimRecord {
    domain: String,
    selector: String,
    /// `SELECTOR._domainkey.DOMAIN`.
    name: String,
    txt: String,
}

impl DkimRecord {
    /// The record publishing the public half of `pem`, a PKCS#8 PEM private key.
    fn new(domain: &str, selector: &str, pem: &str) -> Result<DkimRecord, CtlError> {
        let txt = dns_record(pem).map_err(|e| CtlError::Input(e.to_string()))?;
        Ok(DkimRecord {
            domain: domain.to_string(),
            selector: selector.to_string(),
            name: format!("{selector}._domainkey.{domain}"),
            txt,
        })
    }
}
