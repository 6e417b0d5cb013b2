//! Outlook's Autodiscover, the "POX" (plain old XML) form: a POST to
//! `https://autodiscover.DOMAIN/autodiscover/autodiscover.xml` with the address in an
//! `<EMailAddress>`, answered in the Outlook response schema with one `<Protocol>` per type
//! (IMAP, POP3, SMTP): Outlook takes one per type, so each gets the preferred endpoint.
//! [MS-OXDSCLI] describes both schemas.

use super::offer::{Offer, Protocol, Security};
use super::xml::element;

/// The request paths that get this document (Outlook capitalises them; others do not).
pub const PATHS: [&str; 2] = ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"];

/// The one response schema answered. Mobile clients asking for ActiveSync's
/// (`…/mobilesync/responseschema/2006`) get a 404 instead and try their next method.
pub const OUTLOOK_SCHEMA: &str = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// Why a request body is not one we answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no <EMailAddress> in the request")]
    NoAddress,
    #[error("the request's XML is not readable: {0}")]
    Malformed(&'static str),
    #[error("response schema {0:?} is not offered (only Outlook's)")]
    Schema(String),
}

/// The address a request asks about, checked against the schema it accepts.
pub fn email_address(body: &[u8]) -> Result<String, RequestError> {
    let body = std::str::from_utf8(body).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    if let Some(schema) = element_text(body, "AcceptableResponseSchema")?
        && schema.trim() != OUTLOOK_SCHEMA
    {
        return Err(RequestError::Schema(schema.trim().to_string()));
    }
    let address = element_text(body, "EMailAddress")?.ok_or(RequestError::NoAddress)?;
    Ok(address.trim().to_string())
}

/// The text of the first element called `name` (with or without a namespace prefix), its
/// predefined entities undone. Requests are small and flat, so a scan is enough: no DTDs,
/// no nesting inside the element, nothing fetched.
fn element_text(body: &str, name: &str) -> Result<Option<String>, RequestError> {
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else { return Err(RequestError::Malformed("unclosed tag")) };
        let tag = &rest[..close];
        let tag_name = tag.split(|c: char| c.is_ascii_whitespace() || c == '/').next().unwrap_or_default();
        let local = tag_name.rsplit(':').next().unwrap_or_default();
        if local != name || tag.ends_with('/') {
            continue;
        }
        let content = &rest[close + 1..];
        let end = content.find('<').ok_or(RequestError::Malformed("unclosed element"))?;
        if !content[end..].starts_with(&format!("</{tag_name}>")) {
            return Err(RequestError::Malformed("element holds markup"));
        }
        return unescape(&content[..end]).map(Some);
    }
    Ok(None)
}

/// XML's five predefined entities undone; any other reference is refused.
fn unescape(text: &str) -> Result<String, RequestError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let semi = after.find(';').ok_or(RequestError::Malformed("bad entity"))?;
        out.push(match &after[..=semi] {
            "&amp;" => '&',
            "&lt;" => '<',
            "&gt;" => '>',
            "&quot;" => '"',
            "&apos;" => '\'',
            _ => return Err(RequestError::Malformed("unknown entity")),
        });
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The response for `address`: its account settings, the login being the address.
pub fn response(offer: &Offer, address: &str, domain: &str) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n",
    );
    out.push_str(&format!("  <Response xmlns=\"{OUTLOOK_SCHEMA}\">\n"));
    out.push_str("    <User>\n");
    element(&mut out, 6, "DisplayName", offer.display_name(domain));
    out.push_str("    </User>\n    <Account>\n");
    element(&mut out, 6, "AccountType", "email");
    element(&mut out, 6, "Action", "settings");
    for (protocol, kind) in [(Protocol::Imap, "IMAP"), (Protocol::Pop3, "POP3"), (Protocol::Smtp, "SMTP")] {
        let Some(endpoint) = offer.preferred(protocol) else { continue };
        out.push_str("      <Protocol>\n");
        element(&mut out, 8, "Type", kind);
        element(&mut out, 8, "Server", &offer.hostname);
        element(&mut out, 8, "Port", &endpoint.port.to_string());
        element(&mut out, 8, "DomainRequired", "off");
        element(&mut out, 8, "LoginName", address);
        element(&mut out, 8, "SPA", "off");
        // `Encryption` overrides `SSL` where Outlook knows it: TLS is STARTTLS, SSL implicit.
        element(&mut out, 8, "SSL", "on");
        element(&mut out, 8, "Encryption", encryption(endpoint.security));
        element(&mut out, 8, "AuthRequired", "on");
        if protocol == Protocol::Smtp {
            // The same login as for reading mail.
            element(&mut out, 8, "UsePOPAuth", "on");
            element(&mut out, 8, "SMTPLast", "off");
        }
        out.push_str("      </Protocol>\n");
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

/// The schema's name for how a port is protected.
fn encryption(security: Security) -> &'static str {
    match security {
        Security::Tls => "SSL",
        Security::StartTls => "TLS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicListen;

    const REQUEST: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
        <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\n\
        <Request>\n<EMailAddress>Alice@Example.com</EMailAddress>\n\
        <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>\n\
        </Request>\n</Autodiscover>\n";

    #[test]
    fn reads_the_address_from_outlooks_request() {
        assert_eq!(email_address(REQUEST.as_bytes()), Ok("Alice@Example.com".to_string()));
        assert_eq!(email_address(b"<a:EMailAddress> b&amp;c@d.test </a:EMailAddress>"), Ok("b&c@d.test".to_string()));
        assert_eq!(email_address(b"<Request><EMailAddress/></Request>"), Err(RequestError::NoAddress));
        assert_eq!(email_address(b"<Request></Request>"), Err(RequestError::NoAddress));
        let mobile = REQUEST.replace("outlook/responseschema/2006a", "mobilesync/responseschema/2006");
        assert!(matches!(email_address(mobile.as_bytes()), Err(RequestError::Schema(_))));
        for bad in [
            &b"<EMailAddress>a@b"[..],
            b"<EMailAddress",
            b"<EMailAddress><x/>a@b</EMailAddress>",
            b"<EMailAddress>&xxe;</EMailAddress>",
            b"<EMailAddress>a&amp</EMailAddress>",
            b"<EMailAddress>\xff</EMailAddress>",
        ] {
            assert!(
                matches!(email_address(bad), Err(RequestError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn answers_one_protocol_per_type_in_outlooks_schema() {
        let offer = Offer::new("mail.example.com", None, &PublicListen::default());
        let xml = response(&offer, "a<b@example.com", "example.com");
        assert!(xml.contains(&format!("<Response xmlns=\"{OUTLOOK_SCHEMA}\">")));
        assert_eq!(xml.matches("<Protocol>").count(), 3);
        assert!(
            xml.contains("<Type>IMAP</Type>\n        <Server>mail.example.com</Server>\n        <Port>2993</Port>")
        );
        assert!(
            xml.contains("<Type>SMTP</Type>\n        <Server>mail.example.com</Server>\n        <Port>2465</Port>")
        );
        assert!(xml.contains("<LoginName>a&lt;b@example.com</LoginName>"));
    }
}
