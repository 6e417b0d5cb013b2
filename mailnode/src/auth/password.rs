//! Stored passwords: argon2id hashes made and checked (with a `{plain}` form for
//! development), and the made-up hash an unknown login is checked against so that it costs
//! what a real one does.

use std::cell::RefCell;
use std::collections::BTreeMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// An argon2id hash with `hash_password`'s parameters, for unknown logins when the
/// directory gives nothing better to match (no users).
pub const DEFAULT_UNKNOWN_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2lybXMtZHVtbXktc2FsdA$1bM2g7kH0tqm1e3zW3ZQOqS0ImwHc0RtQ1VjgQvGV8o";
/// The salt of the hashes `unknown_hash_for` makes up.
const UNKNOWN_USER_SALT: &str = "c2lybXMtZHVtbXktc2FsdA";

/// Checks a password against a stored hash: an argon2 PHC string, or `{plain}secret`
/// (for development only; logged as a warning at load time).
pub fn verify_password(stored: &str, password: &str) -> bool {
    if let Some(plain) = stored.strip_prefix("{plain}") {
        return constant_time_eq(plain.as_bytes(), password.as_bytes());
    }
    match PasswordHash::new(stored) {
        Ok(hash) => verify_argon2(&hash, password.as_bytes()).unwrap_or(false),
        Err(_) => false,
    }
}

thread_local! {
    /// argon2's working memory (19 MiB with the default parameters), kept by each thread
    /// that checks passwords. `Argon2::verify_password` allocates it afresh for every check,
    /// and glibc (2.36) does not reuse such large aligned blocks once freed: a thread's heap
    /// grew by 19 MiB a check, up to about 200 MiB, and stayed there.
    static ARGON2_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// What `PasswordVerifier::verify_password` does for argon2 (the hash's algorithm, version,
/// parameters and salt; a constant-time comparison), in this thread's working memory.
/// `None` if the hash cannot be used.
fn verify_argon2(hash: &PasswordHash<'_>, password: &[u8]) -> Option<bool> {
    let (salt, expected) = (hash.salt?, hash.hash?);
    let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
    let version = hash.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
    let params = Params::try_from(hash).ok()?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).ok()?;
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    ARGON2_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            *memory = vec![Block::default(); blocks];
        }
        argon2.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks]).ok()
    })?;
    Some(constant_time_eq(&out, expected.as_bytes()))
}

/// Hashes a password into an argon2id PHC string for the config or the directory.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What decides the cost of checking a stored hash: `{plain}`, or an argon2 PHC string's
/// algorithm, version and parameters with the length of its hash part. `None` for a hash
/// no password can match.
pub(crate) fn cost_class(stored: &str) -> Option<(&str, usize)> {
    if stored.starts_with("{plain}") {
        return Some(("{plain}", 0));
    }
    let parsed = PasswordHash::new(stored).ok()?;
    parsed.salt?;
    let hash_len = parsed.hash?.b64_len();
    let mut parts = stored.rsplitn(3, '$');
    let (_hash, _salt, prefix) = (parts.next()?, parts.next()?, parts.next()?);
    Some((prefix, hash_len))
}

/// A made-up hash in the cost class most of `hashes` share (ties: the first in order), so an
/// unknown login costs what a real one does: an argon2 hash with their parameters, or a
/// plain-text compare for a directory of `{plain}` passwords. No password matches it, and
/// its verdict is never used.
pub(crate) fn unknown_hash_for<'a>(hashes: impl Iterator<Item = &'a str>) -> String {
    let mut classes: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for hash in hashes {
        if let Some(class) = cost_class(hash) {
            *classes.entry(class).or_default() += 1;
        }
    }
    let most = classes.iter().max_by(|(a, n), (b, m)| n.cmp(m).then_with(|| b.cmp(a))).map(|(class, _)| *class);
    let made_up = match most {
        None => return DEFAULT_UNKNOWN_USER_HASH.to_string(),
        Some(("{plain}", _)) => "{plain}no user has this password".to_string(),
        Some((prefix, hash_len)) => format!("{prefix}${UNKNOWN_USER_SALT}${}", "A".repeat(hash_len)),
    };
    if cost_class(&made_up).is_some() { made_up } else { DEFAULT_UNKNOWN_USER_HASH.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret") && !verify_password(&h, "other"));
        assert!(!verify_password("garbage", "x"));
        assert!(verify_password("{plain}pw", "pw") && !verify_password("{plain}pw", "pw2"));
    }

    /// The same verdicts as the argon2 crate's own verifier, for every algorithm and
    /// version, in one working memory that is reused from check to check.
    #[test]
    fn argon2_verdicts_match_the_crate_and_memory_is_reused() {
        use argon2::PasswordVerifier;
        let mut hashes = vec![hash_password("right").unwrap()];
        for (algorithm, version) in [
            (Algorithm::Argon2i, Version::V0x10),
            (Algorithm::Argon2d, Version::V0x13),
            (Algorithm::Argon2id, Version::V0x13),
        ] {
            let params = Params::new(64, 3, 2, Some(24)).unwrap();
            let salt = SaltString::generate(&mut OsRng);
            let argon2 = Argon2::new(algorithm, version, params);
            hashes.push(argon2.hash_password(b"right", &salt).unwrap().to_string());
        }
        let mut memory = None;
        for hash in &hashes {
            for password in ["right", "wrong", "", "right "] {
                let theirs = Argon2::default().verify_password(password.as_bytes(), &PasswordHash::new(hash).unwrap());
                assert_eq!(verify_password(hash, password), theirs.is_ok(), "{hash} {password:?}");
            }
            // The default parameters need the most memory: allocated once, then reused.
            let now = ARGON2_MEMORY.with_borrow(|m| m.as_ptr());
            assert_eq!(*memory.get_or_insert(now), now, "argon2 memory was allocated again");
        }
        assert!(!verify_password("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ", "right"), "no hash part");
        assert!(!verify_password("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA", "right"), "output too short");
        assert!(!verify_password("$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA", "right"));
    }
}
