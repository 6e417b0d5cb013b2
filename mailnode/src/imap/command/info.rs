//! CAPABILITY, ENABLE (RFC 5161), ID (RFC 2971) and NAMESPACE (RFC 2342).

use imap_types::extensions::enable::CapabilityEnable;
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandResult, Done};
use crate::imap::session::{Session, Sink};

impl Session {
    pub(crate) async fn capability(&mut self, out: &mut Sink<'_>) -> CommandResult {
        out.write_all(format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes()).await?;
        Ok(Done::ok("CAPABILITY completed"))
    }

    pub(crate) async fn enable(&mut self, wanted: &[CapabilityEnable<'_>], out: &mut Sink<'_>) -> CommandResult {
        let mut enabled = Vec::new();
        for capability in wanted {
            // The codec has no variant of its own for QRESYNC: it comes as another atom.
            let qresync = capability.to_string().eq_ignore_ascii_case("QRESYNC");
            if qresync && !self.qresync {
                // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
                self.enable_condstore(out).await?;
                self.qresync = true;
                enabled.push("QRESYNC");
            } else if matches!(capability, CapabilityEnable::CondStore) && !self.condstore {
                self.enable_condstore(out).await?;
                enabled.push("CONDSTORE");
            } else if capability.to_string().eq_ignore_ascii_case("IMAP4rev2") && !self.rev2 {
                // Not advertised yet (docs/ARCHITECTURE.md lists what rev2 still lacks), but
                // what is done is there for a client that asks.
                self.rev2 = true;
                enabled.push("IMAP4rev2");
            }
        }
        let mut line = String::from("* ENABLED");
        for name in enabled {
            line.push(' ');
            line.push_str(name);
        }
        line.push_str("\r\n");
        out.write_all(line.as_bytes()).await?;
        Ok(Done::ok("ENABLE completed"))
    }

    pub(crate) async fn id(&mut self, out: &mut Sink<'_>) -> CommandResult {
        let version = env!("CARGO_PKG_VERSION");
        out.write_all(format!("* ID (\"name\" \"SIRMS\" \"version\" \"{version}\")\r\n").as_bytes()).await?;
        Ok(Done::ok("ID completed"))
    }

    pub(crate) async fn namespace(&mut self, out: &mut Sink<'_>) -> CommandResult {
        out.write_all(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n").await?;
        Ok(Done::ok("NAMESPACE completed"))
    }
}
