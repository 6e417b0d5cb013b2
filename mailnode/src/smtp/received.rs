//! The `Received:` trace header (RFC 5321 §4.4) and RFC 5322 dates, with no date crate.

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

/// Formats seconds since the epoch as an RFC 5322 date in UTC, e.g. `Tue, 24 Nov 2026 13:05:09 +0000`.
pub fn rfc5322_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_611_909), "Wed, 25 Nov 2026 13:05:09 +0000");
    }

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
