//! An Apple configuration profile (`.mobileconfig`) with one `com.apple.mail.managed` payload,
//! for iOS, iPadOS and macOS Mail, which have no autoconfiguration lookup of their own: the
//! user opens `https://HOST/apple/mobileconfig?emailaddress=…` and installs what it returns.
//! The profile is unsigned (the device says "not verified") and carries no password (the
//! device asks for it). Apple's reference: "Mail" and "TopLevel" in Device Management's
//! profile-specific payload keys.

use super::offer::{Offer, Protocol};
use super::xml::element;

/// The request path that gets a profile.
pub const PATH: &str = "/apple/mobileconfig";

/// The media type Apple devices install profiles from.
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config; charset=utf-8";

/// The profile for `address` on `domain`: IMAP in, submission out, both the preferred
/// endpoint, the login being the address.
pub fn profile(offer: &Offer, address: &str, domain: &str) -> String {
    let name = offer.display_name(domain);
    // Installing a profile with the same identifier replaces the old one, so both are derived
    // from the account: asking again gives the same profile, not a second account.
    let identifier = format!("{}.mobileconfig.{}", reversed(&offer.hostname), &digest_hex(address)[..16]);
    let mut mail = Plist::default();
    mail.string("EmailAccountDescription", &format!("{name} ({address})"));
    mail.string("EmailAccountType", "EmailTypeIMAP");
    mail.string("EmailAddress", address);
    for (direction, protocol) in [("Incoming", Protocol::Imap), ("Outgoing", Protocol::Smtp)] {
        let Some(endpoint) = offer.preferred(protocol) else { continue };
        mail.string(&format!("{direction}MailServerAuthentication"), "EmailAuthPassword");
        mail.string(&format!("{direction}MailServerHostName"), &offer.hostname);
        mail.integer(&format!("{direction}MailServerPortNumber"), endpoint.port);
        // Apple's UseSSL means "TLS on this port": implicit on an implicit-TLS port, STARTTLS
        // on a cleartext one. Every endpoint offered has TLS one way or the other.
        mail.boolean(&format!("{direction}MailServerUseSSL"), true);
        mail.string(&format!("{direction}MailServerUsername"), address);
    }
    mail.boolean("OutgoingPasswordSameAsIncomingPassword", true);
    mail.string("PayloadDescription", &format!("Mail account {address}"));
    mail.string("PayloadDisplayName", name);
    mail.string("PayloadIdentifier", &format!("{identifier}.mail"));
    mail.string("PayloadType", "com.apple.mail.managed");
    mail.string("PayloadUUID", &uuid(&format!("mail {address}")));
    mail.integer("PayloadVersion", 1);

    let mut top = Plist::default();
    top.raw("PayloadContent", &format!("<array>\n<dict>\n{}</dict>\n</array>", mail.0));
    top.string("PayloadDescription", &format!("Sets up {address} in Mail"));
    top.string("PayloadDisplayName", &format!("{name} mail"));
    top.string("PayloadIdentifier", &identifier);
    top.boolean("PayloadRemovalDisallowed", false);
    top.string("PayloadType", "Configuration");
    top.string("PayloadUUID", &uuid(&format!("profile {address}")));
    top.integer("PayloadVersion", 1);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n{}</dict>\n</plist>\n",
        top.0
    )
}

/// The entries of a plist `<dict>`, each key and value on their own lines, values escaped.
#[derive(Default)]
struct Plist(String);

impl Plist {
    fn string(&mut self, key: &str, value: &str) {
        element(&mut self.0, 0, "key", key);
        element(&mut self.0, 0, "string", value);
    }

    fn integer(&mut self, key: &str, value: impl std::fmt::Display) {
        element(&mut self.0, 0, "key", key);
        element(&mut self.0, 0, "integer", &value.to_string());
    }

    fn boolean(&mut self, key: &str, value: bool) {
        element(&mut self.0, 0, "key", key);
        self.0.push_str(if value { "<true/>\n" } else { "<false/>\n" });
    }

    /// A value that is already plist markup.
    fn raw(&mut self, key: &str, markup: &str) {
        element(&mut self.0, 0, "key", key);
        self.0.push_str(markup);
        self.0.push('\n');
    }
}

/// `mail.example.com` → `com.example.mail`: the reverse-DNS style of payload identifiers.
fn reversed(hostname: &str) -> String {
    hostname.split('.').rev().collect::<Vec<_>>().join(".")
}

fn digest_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// A UUID made from `seed` (name-based, in the manner of RFC 9562's version 8): the same
/// account always gets the same UUIDs.
fn uuid(seed: &str) -> String {
    let hex = digest_hex(seed);
    let mut chars: Vec<char> = hex[..32].chars().collect();
    chars[12] = '8';
    // The variant bits (10xx): one of 8, 9, A, B.
    chars[16] = ['8', '9', 'A', 'B'][usize::from(hex.as_bytes()[16]) % 4];
    let s: String = chars.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicListen;

    #[test]
    fn a_mail_payload_for_the_account_stable_across_requests() {
        let offer = Offer::new("mail.example.com", None, &PublicListen::default());
        let plist = profile(&offer, "alice@example.com", "example.com");
        assert!(plist.contains("<key>PayloadType</key>\n<string>com.apple.mail.managed</string>"));
        assert!(plist.contains("<key>IncomingMailServerPortNumber</key>\n<integer>2993</integer>"));
        assert!(plist.contains("<key>OutgoingMailServerPortNumber</key>\n<integer>2465</integer>"));
        assert!(plist.contains("<key>IncomingMailServerUsername</key>\n<string>alice@example.com</string>"));
        assert!(plist.contains("<string>com.example.mail.mobileconfig."));
        assert_eq!(plist, profile(&offer, "alice@example.com", "example.com"));
        assert_ne!(plist, profile(&offer, "bob@example.com", "example.com"));
        assert!(profile(&offer, "a&b@example.com", "example.com").contains("<string>a&amp;b@example.com</string>"));
    }

    #[test]
    fn uuids_are_well_formed() {
        let u = uuid("x");
        assert_eq!(u.len(), 36);
        assert_eq!(u.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert_eq!(&u[14..15], "8");
        assert!("89AB".contains(&u[19..20]));
    }
}
