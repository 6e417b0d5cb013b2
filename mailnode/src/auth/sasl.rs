//! SASL PLAIN (RFC 4616) as POP3 AUTH (RFC 5034) and ManageSieve AUTHENTICATE (RFC 5804) carry it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

use crate::pop3::Secret;

/// The identity and password a PLAIN message carries.
#[derive(Debug)]
pub(crate) struct PlainCredentials {
    pub(crate) user: String,
    pub(crate) password: Secret,
}

/// Why a PLAIN response was refused; the `Display` text is what follows `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum PlainError {
    #[error("invalid base64 in SASL response")]
    Base64,
    #[error("malformed SASL PLAIN message")]
    Malformed,
    #[error("authorization identity must be empty or the same as the user name")]
    AuthzidMismatch,
}

/// Decodes a base64 client response (`=` meaning empty, RFC 5034 §4) into PLAIN credentials.
pub(crate) fn decode_plain(response: &[u8]) -> Result<PlainCredentials, PlainError> {
    // An empty response is well-formed base64 but never a valid PLAIN message.
    let decoded =
        if response == b"=" { Vec::new() } else { STANDARD.decode(response).map_err(|_| PlainError::Base64)? };
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    let utf8 = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| PlainError::Malformed);
    let (authzid, user, password) = (utf8(authzid)?, utf8(authcid)?, utf8(password)?);
    if user.is_empty() || password.is_empty() {
        return Err(PlainError::Malformed);
    }
    // Acting as another user is an administrator feature we do not offer over POP3.
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(PlainCredentials { user, password: Secret::new(password) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(raw: &[u8]) -> Vec<u8> {
        STANDARD.encode(raw).into_bytes()
    }

    #[test]
    fn valid_without_authzid() {
        let creds = decode_plain(&encode(b"\0tim\0tanstaaftanstaaf"));
        let creds = creds.map(|c| (c.user, c.password.expose().to_owned()));
        assert_eq!(creds, Ok(("tim".to_owned(), "tanstaaftanstaaf".to_owned())));
    }

    #[test]
    fn valid_with_matching_authzid() {
        let creds = decode_plain(&encode(b"tim\0tim\0pw")).map(|c| c.user);
        assert_eq!(creds, Ok("tim".to_owned()));
    }

    #[test]
    fn other_authzid_is_refused() {
        assert_eq!(decode_plain(&encode(b"root\0tim\0pw")).err(), Some(PlainError::AuthzidMismatch));
    }

    #[test]
    fn malformed_messages() {
        for raw in [&b""[..], b"tim", b"\0tim", b"\0tim\0", b"\0\0pw", b"\0tim\0pw\0", b"\0t\xffm\0pw"] {
            assert_eq!(decode_plain(&encode(raw)).err(), Some(PlainError::Malformed), "{raw:?}");
        }
        assert_eq!(decode_plain(b"=").err(), Some(PlainError::Malformed));
    }

    #[test]
    fn invalid_base64() {
        for bad in [&b"!!!"[..], b"AHRpbQB0aW0", b"AHRp bQ==", b"\0"] {
            assert_eq!(decode_plain(bad).err(), Some(PlainError::Base64), "{bad:?}");
        }
    }

    #[test]
    fn password_may_contain_spaces_and_utf8() {
        let creds = decode_plain(&encode("\0jörg\0pass wört".as_bytes()));
        assert_eq!(creds.map(|c| c.password.expose().to_owned()), Ok("pass wört".to_owned()));
    }
}
