//! Thunderbird's autoconfig document (`config-v1.1.xml`, the format of Mozilla's ISP database:
//! <https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat>), asked for at
//! `https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=…` and at
//! `https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml`. K-9 Mail and others read it too.

use super::offer::{Offer, Protocol, Security};
use super::xml::{element, escape};

/// The request paths that get this document.
pub const PATHS: [&str; 2] = ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"];

/// The document for `domain`: every endpoint, preferred first, the login being the address
/// (`%EMAILADDRESS%`, which the client fills in).
pub fn config(offer: &Offer, domain: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n");
    out.push_str(&format!("  <emailProvider id=\"{}\">\n", escape(domain)));
    element(&mut out, 4, "domain", domain);
    element(&mut out, 4, "displayName", offer.display_name(domain));
    element(&mut out, 4, "displayShortName", offer.display_name(domain));
    let servers = [(Protocol::Imap, "incomingServer", "imap"), (Protocol::Pop3, "incomingServer", "pop3")];
    for (protocol, tag, kind) in servers.into_iter().chain([(Protocol::Smtp, "outgoingServer", "smtp")]) {
        for endpoint in offer.of(protocol) {
            out.push_str(&format!("    <{tag} type=\"{kind}\">\n"));
            element(&mut out, 6, "hostname", &offer.hostname);
            element(&mut out, 6, "port", &endpoint.port.to_string());
            element(&mut out, 6, "socketType", socket_type(endpoint.security));
            element(&mut out, 6, "authentication", "password-cleartext");
            element(&mut out, 6, "username", "%EMAILADDRESS%");
            out.push_str(&format!("    </{tag}>\n"));
        }
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

/// The format's name for how a port is protected.
fn socket_type(security: Security) -> &'static str {
    match security {
        Security::Tls => "SSL",
        Security::StartTls => "STARTTLS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicListen;

    #[test]
    fn lists_every_endpoint_with_the_address_as_login() {
        let offer = Offer::new("mail.example.com", Some("Example & Co"), &PublicListen::default());
        let xml = config(&offer, "example.com");
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n"));
        assert!(xml.contains("<emailProvider id=\"example.com\">"));
        assert!(xml.contains("<displayName>Example &amp; Co</displayName>"));
        assert_eq!(xml.matches("<incomingServer type=\"imap\">").count(), 2);
        assert_eq!(xml.matches("<incomingServer type=\"pop3\">").count(), 2);
        assert_eq!(xml.matches("<outgoingServer type=\"smtp\">").count(), 2);
        assert_eq!(xml.matches("<username>%EMAILADDRESS%</username>").count(), 6);
        let first_imap = xml.find("<port>2993</port>").expect("imaps");
        assert!(first_imap < xml.find("<port>2143</port>").expect("imap"), "implicit TLS first");
        assert!(xml.contains("<port>2465</port>\n      <socketType>SSL</socketType>"));
        assert!(xml.contains("<port>2587</port>\n      <socketType>STARTTLS</socketType>"));
        assert!(!xml.contains("plain"), "no cleartext: {xml}");
    }
}
