//! LOGIN and AUTHENTICATE PLAIN (with SASL-IR, RFC 4959).

use std::io;

use imap_types::auth::AuthMechanism;
use tokio::io::AsyncWriteExt;

use crate::auth::Verdict;
use crate::imap::response::{self, Code, Status};
use crate::imap::session::{Next, Session, Sink};

/// The identity and password of a SASL PLAIN message (RFC 4616).
fn decode_plain(message: &[u8]) -> Option<(String, String)> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (authzid, user, password) =
        (std::str::from_utf8(authzid).ok()?, std::str::from_utf8(authcid).ok()?, std::str::from_utf8(password).ok()?);
    // Acting as another user is an administrator feature we do not offer.
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

impl Session {
    pub(crate) async fn login(
        &mut self,
        tag: &str,
        user: &str,
        password: &str,
        out: &mut Sink<'_>,
    ) -> io::Result<Next> {
        if !self.plaintext_allowed() {
            let reply = response::status(
                Some(tag),
                Status::No,
                Some(&Code::PrivacyRequired),
                "LOGIN is disabled without TLS: use STARTTLS first",
            );
            out.write_all(&reply).await?;
            return Ok(Next::Continue);
        }
        self.verify(tag, user, password, out).await
    }

    pub(crate) async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
        out: &mut Sink<'_>,
    ) -> io::Result<Next> {
        if *mechanism != AuthMechanism::Plain {
            out.write_all(&response::status(Some(tag), Status::No, None, "unsupported SASL mechanism")).await?;
            return Ok(Next::Continue);
        }
        if !self.plaintext_allowed() {
            let reply = response::status(Some(tag), Status::No, Some(&Code::PrivacyRequired), "use STARTTLS first");
            out.write_all(&reply).await?;
            return Ok(Next::Continue);
        }
        match initial {
            Some(message) => self.plain(tag, &message, out).await,
            None => {
                out.write_all(&response::continuation("")).await?;
                Ok(Next::Authenticate { tag: tag.to_string() })
            }
        }
    }

    /// Checks a PLAIN message.
    pub(crate) async fn plain(&mut self, tag: &str, message: &[u8], out: &mut Sink<'_>) -> io::Result<Next> {
        match decode_plain(message) {
            Some((user, password)) => self.verify(tag, &user, &password, out).await,
            None => {
                out.write_all(&response::status(Some(tag), Status::Bad, None, "malformed SASL PLAIN message")).await?;
                Ok(Next::Continue)
            }
        }
    }

    async fn verify(&mut self, tag: &str, user: &str, password: &str, out: &mut Sink<'_>) -> io::Result<Next> {
        match self.authenticator.verify(self.client, user, password).await {
            Verdict::Granted(login) => {
                tracing::info!(client = %self.client, user = %login, "imap login");
                self.user = Some(login);
                let code = Code::Capability(self.capabilities());
                out.write_all(&response::status(Some(tag), Status::Ok, Some(&code), "logged in")).await?;
                Ok(Next::Continue)
            }
            Verdict::Denied => {
                self.auth_failures = self.auth_failures.saturating_add(1);
                tracing::info!(client = %self.client, "imap login failed");
                let reply = response::status(
                    Some(tag),
                    Status::No,
                    Some(&Code::AuthenticationFailed),
                    "invalid user name or password",
                );
                out.write_all(&reply).await?;
                if self.auth_failures >= self.config.max_auth_failures.max(1) {
                    out.write_all(&response::status(None, Status::Bye, None, "too many failed logins")).await?;
                    return Ok(Next::Close);
                }
                Ok(Next::Continue)
            }
            verdict @ (Verdict::Throttled | Verdict::Unavailable) => {
                let text = if verdict == Verdict::Throttled {
                    "too many failed logins; try again later"
                } else {
                    "authentication temporarily unavailable"
                };
                out.write_all(&response::status(Some(tag), Status::No, Some(&Code::Unavailable), text)).await?;
                Ok(Next::Continue)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_plain;

    #[test]
    fn plain_messages() {
        assert_eq!(decode_plain(b"\0tim\0pw"), Some(("tim".into(), "pw".into())));
        assert_eq!(decode_plain(b"tim\0tim\0pw"), Some(("tim".into(), "pw".into())));
        assert_eq!(decode_plain(b"root\0tim\0pw"), None);
        assert_eq!(decode_plain(b"\0tim"), None);
        assert_eq!(decode_plain(b"\0\0pw"), None);
    }
}
