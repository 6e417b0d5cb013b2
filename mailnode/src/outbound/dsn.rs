//! Delivery status notifications (RFC 3464): what a sender gets back when mail could not
//! be delivered (or is late), as multipart/report with a human part, the machine-readable
//! `message/delivery-status`, and the original message's header.

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

/// Failure or delay, per RFC 3464 §2.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
}

/// One recipient's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub recipient: String,
    /// What the remote server (or our routing) said, e.g. `550 5.1.1 no such user`.
    pub diagnostic: String,
}

/// Everything a report needs.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our node's name (Reporting-MTA, and the MAILER-DAEMON address's domain).
    pub reporting_mta: &'a str,
    /// Who gets the report: the original reverse path.
    pub to: &'a str,
    pub queue_id: &'a str,
    pub action: Action,
    pub recipients: &'a [RecipientReport],
    /// The original message; only its header goes into the report.
    pub original: &'a [u8],
}

/// The enhanced status code in a diagnostic (`5.1.1`), or a generic one for the action.
fn status_code(diagnostic: &str, action: Action) -> String {
    let found = diagnostic.split_whitespace().nth(1).filter(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..].iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match (found, action) {
        (Some(code), Action::Failed) if code.starts_with('5') => code.to_string(),
        (Some(code), Action::Delayed) if code.starts_with('4') => code.to_string(),
        (_, Action::Failed) => "5.0.0".to_string(),
        (_, Action::Delayed) => "4.0.0".to_string(),
    }
}

/// The original's header block (up to the empty line), at most 64 KiB.
fn header_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(message.len());
    &message[..end.min(64 * 1024)]
}

/// Builds the report message (to be delivered with the null reverse path).
pub fn build(report: &Report<'_>) -> std::io::Result<Vec<u8>> {
    let (subject, intro) = match report.action {
        Action::Failed => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to the recipients below. This is a permanent error; \
             it will not be retried.",
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered to the recipients below yet. Delivery will be retried; \
             you do not need to send it again.",
        ),
    };
    let mut human = format!("This is the mail system at {}.\r\n\r\n{intro}\r\n\r\n", report.reporting_mta);
    for r in report.recipients {
        human.push_str(&format!("<{}>: {}\r\n", r.recipient, r.diagnostic));
    }
    let action = match report.action {
        Action::Failed => "failed",
        Action::Delayed => "delayed",
    };
    let mut status =
        format!("Reporting-MTA: dns; {}\r\nX-SIRMS-Queue-ID: {}\r\n", report.reporting_mta, report.queue_id);
    for r in report.recipients {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\n",
            r.recipient,
            status_code(&r.diagnostic, report.action),
            r.diagnostic
        ));
    }
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new(ContentType::new("message/delivery-status"), BodyPart::Text(status.into())),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                BodyPart::Text(String::from_utf8_lossy(header_of(report.original)).into_owned().into()),
            ),
        ],
    );
    let daemon = format!("MAILER-DAEMON@{}", report.reporting_mta);
    MessageBuilder::new()
        .from(("Mail Delivery System", daemon.as_str()))
        .to(report.to)
        .subject(subject)
        // RFC 3834: automatic replies must not answer this one.
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(body)
        .write_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounce_is_a_delivery_status_report() {
        let recipients = [
            RecipientReport { recipient: "b@far.test".into(), diagnostic: "550 5.1.1 no such user".into() },
            RecipientReport { recipient: "c@far.test".into(), diagnostic: "connection refused".into() },
        ];
        let original = b"Subject: hello\r\nFrom: a@ours.test\r\n\r\nsecret body\r\n";
        let report = Report {
            reporting_mta: "node1.ours.test",
            to: "a@ours.test",
            queue_id: "q1",
            action: Action::Failed,
            recipients: &recipients,
            original,
        };
        let bytes = build(&report).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("multipart/report"), "{text}");
        assert!(text.contains("report-type=\"delivery-status\"") || text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; b@far.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"), "{text}");
        assert!(text.contains("Final-Recipient: rfc822; c@far.test\r\nAction: failed\r\nStatus: 5.0.0\r\n"), "{text}");
        assert!(text.contains("Subject: hello"), "the original header is attached");
        assert!(!text.contains("secret body"), "the original body is not");
        assert!(text.contains("Auto-Submitted: auto-replied"));
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.parts.len(), 4, "report + three parts");
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_code("550 5.7.1 denied", Action::Failed), "5.7.1");
        assert_eq!(status_code("451 4.4.1 later", Action::Delayed), "4.4.1");
        assert_eq!(status_code("451 4.4.1 later", Action::Failed), "5.0.0");
        assert_eq!(status_code("550 denied", Action::Failed), "5.0.0");
        assert_eq!(status_code("", Action::Delayed), "4.0.0");
    }
}
