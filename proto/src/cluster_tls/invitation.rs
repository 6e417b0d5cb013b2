//! One-time tokens with which a new node joins the cluster plane: `sirms ctl nodes invite`
//! makes one, `sirms join` spends it at a router for the node's certificate.
//!
//! A token is `sirms1:NODE:SECRET`, SECRET 32 random bytes in hex. The directory keeps only
//! its SHA-256, so reading the directory (or a router's disk) gives no usable token.

use std::fmt;

use super::Identity;

const PREFIX: &str = "sirms1:";
const SECRET_BYTES: usize = 32;

/// An invitation token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The node id it admits.
    pub node: String,
    secret: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Token {
    /// A fresh token for `node`; `None` if the system has no randomness to give.
    pub fn new(node: &str) -> Option<Token> {
        let mut secret = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut secret).ok()?;
        Some(Token { node: node.to_string(), secret: hex(&secret) })
    }

    /// Reads a token as given to the admin; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Token> {
        let (node, secret) = text.trim().strip_prefix(PREFIX)?.rsplit_once(':')?;
        let node_ok = Identity::from_uri(&format!("{}node/{node}", super::IDENTITY_SCHEME)).is_some();
        let secret_ok = secret.len() == 2 * SECRET_BYTES && secret.bytes().all(|b| b.is_ascii_hexdigit());
        (node_ok && secret_ok).then(|| Token { node: node.to_string(), secret: secret.to_ascii_lowercase() })
    }

    /// The key the directory keeps the invitation under.
    pub fn hash(&self) -> String {
        hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.to_string().as_bytes()).as_ref())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}:{}", self.node, self.secret)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: tokens end up in logs through Debug.
        write!(f, "Token({})", self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let token = Token::new("node4").expect("randomness");
        let text = token.to_string();
        assert!(text.starts_with("sirms1:node4:"));
        assert_eq!(Token::parse(&text), Some(token.clone()));
        assert_eq!(Token::parse(&text).map(|t| t.hash()), Some(token.hash()));
        assert_ne!(Token::new("node4").map(|t| t.hash()), Some(token.hash()));
        let secret = "ab".repeat(32);
        for bad in [
            format!("sirms2:node4:{secret}"),
            format!("sirms1:node4:{}", &secret[2..]),
            format!("sirms1:no de:{secret}"),
            format!("sirms1::{secret}"),
            format!("sirms1:node4:{}zz", &secret[2..]),
            "sirms1:node4".to_string(),
        ] {
            assert_eq!(Token::parse(&bad), None, "{bad}");
        }
    }
}
