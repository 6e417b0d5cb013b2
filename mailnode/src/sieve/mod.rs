//! Sieve (RFC 5228) on this node: where users' scripts are kept ([`scripts`]) and running
//! the active one on each message delivered to them.

pub mod deliver;
pub mod scripts;

use crate::managesieve::SessionConfig;

/// Largest script a user may store.
pub const MAX_SCRIPT_SIZE: usize = 64 * 1024;
/// Most redirects one run of a script may do.
const MAX_REDIRECTS: u32 = 4;
/// Most scripts per user.
pub const MAX_SCRIPTS: usize = 32;

/// ManageSieve's settings: what delivery runs, and the limits it holds scripts to.
pub fn managesieve_config(hostname: &str, plaintext_without_tls: bool, max_auth_failures: u32) -> SessionConfig {
    SessionConfig {
        hostname: hostname.to_string(),
        tls_available: true,
        plaintext_without_tls,
        max_script_size: MAX_SCRIPT_SIZE,
        max_scripts: MAX_SCRIPTS,
        max_auth_failures,
        extensions: extensions(),
        max_redirects: MAX_REDIRECTS,
        validate,
    }
}

/// Parses `script` as delivery will (with the default limits); the error names its line.
pub fn validate(script: &[u8]) -> Result<(), String> {
    let source = std::str::from_utf8(script).map_err(|_| "line 1: a script is UTF-8 text".to_string())?;
    let limits = sirms_sieve::Limits { max_script_size: MAX_SCRIPT_SIZE, ..sirms_sieve::Limits::default() };
    sirms_sieve::parse(source, &limits).map(drop).map_err(|e| e.to_string())
}

/// The `SIEVE` capability: every extension the interpreter runs.
fn extensions() -> String {
    sirms_sieve::EXTENSIONS.join(" ")
}
