//! The `Received:` trace header (RFC 5321 §4.4).

use crate::calendar::rfc5322_date;

/// How the message came in, for the `with` clause (RFC 3848).
pub fn protocol(esmtp: bool, tls: bool, authenticated: bool) -> &'static str {
    match (esmtp, tls, authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    }
}

/// What the trace header says about a message's arrival.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    pub by_host: &'a str,
    pub protocol: &'static str,
    pub id: &'a str,
    /// The recipient, named only when there is exactly one (privacy for the others).
    pub for_rcpt: Option<&'a str>,
    pub now: i64,
}

impl Trace<'_> {
    /// The header, folded, ending in CRLF. The HELO name is cleaned of anything that
    /// could break the header.
    pub fn header(&self) -> String {
        let helo: String =
            self.helo.chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>().replace(['(', ')'], "");
        let ip = match self.client_ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut h = format!(
            "Received: from {} ([{}])\r\n\tby {} (SIRMS) with {} id {}",
            if helo.is_empty() { "unknown" } else { &helo },
            ip,
            self.by_host,
            self.protocol,
            self.id
        );
        if let Some(rcpt) = self.for_rcpt {
            h.push_str(&format!("\r\n\tfor <{rcpt}>"));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(self.now)));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape() {
        let t = Trace {
            helo: "client (evil)\r\nX-Injected: 1",
            client_ip: "192.0.2.1".parse().unwrap(),
            by_host: "node1.example.test",
            protocol: protocol(true, true, false),
            id: "abc.1",
            for_rcpt: Some("a@example.test"),
            now: 0,
        };
        let h = t.header();
        assert!(h.starts_with("Received: from clientevilX-Injected:1 ([192.0.2.1])\r\n\tby node1.example.test (SIRMS) with ESMTPS id abc.1\r\n\tfor <a@example.test>;\r\n\t"));
        assert!(h.ends_with("+0000\r\n"));
        assert_eq!(h.matches("\r\n").count(), 4);
    }
}
