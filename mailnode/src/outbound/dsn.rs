//! Delivery status notifications (RFC 3464): what a sender gets back when mail could not
//! be delivered (or is late), or was delivered when the sender asked to know (RFC 3461), as
//! multipart/report with a human part, the machine-readable `message/delivery-status`, and the
//! original message's header (the whole message for a failure the sender asked `RET=FULL` of).

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

/// What happened to the recipients, per RFC 3464 §2.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    /// Put into the recipient's mailbox.
    Delivered,
    /// Passed to a next hop that does not speak DSN: no further notice will come.
    Relayed,
}

/// One recipient's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub recipient: String,
    /// What the remote server (or our routing) said, e.g. `550 5.1.1 no such user`.
    pub diagnostic: String,
    /// The address the sender's `ORCPT` named, if it gave one.
    pub original: Option<String>,
}

impl RecipientReport {
    /// A recipient and what became of it (the `ORCPT`, if any, is filled in later).
    pub fn new(recipient: impl Into<String>, diagnostic: impl Into<String>) -> RecipientReport {
        RecipientReport { recipient: recipient.into(), diagnostic: diagnostic.into(), original: None }
    }
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
    /// The original message; its header goes into the report, or all of it with `full`.
    pub original: &'a [u8],
    /// The sender's `ENVID`, echoed.
    pub envid: Option<&'a str>,
    /// The sender asked for the whole message back (`RET=FULL`); only a failure returns it.
    pub full: bool,
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
        (Some(code), Action::Delivered | Action::Relayed) if code.starts_with('2') => code.to_string(),
        (_, Action::Failed) => "5.0.0".to_string(),
        (_, Action::Delayed) => "4.0.0".to_string(),
        (_, Action::Delivered | Action::Relayed) => "2.0.0".to_string(),
    }
}

/// The original's header block, at most 64 KiB of it.
fn returned_header(message: &[u8]) -> &[u8] {
    let header = crate::header_block::of(message);
    &header[..header.len().min(64 * 1024)]
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
        Action::Delivered => (
            "Successful Mail Delivery Report",
            "Your message was delivered to the recipients below, as you asked to know.",
        ),
        Action::Relayed => (
            "Relayed Mail Report",
            "Your message was passed on for the recipients below to a mail system that does not report \
             delivery: no further notice will come for them.",
        ),
    };
    let mut human = format!("This is the mail system at {}.\r\n\r\n{intro}\r\n\r\n", report.reporting_mta);
    for r in report.recipients {
        human.push_str(&format!("<{}>: {}\r\n", r.recipient, r.diagnostic));
    }
    let action = match report.action {
        Action::Failed => "failed",
        Action::Delayed => "delayed",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed",
    };
    // Values from the network are kept to one line of printable text.
    let clean = |text: &str| -> String { text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect() };
    let mut status = String::new();
    if let Some(envid) = report.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", clean(envid)));
    }
    status.push_str(&format!(
        "Reporting-MTA: dns; {}\r\nX-SIRMS-Queue-ID: {}\r\n",
        report.reporting_mta, report.queue_id
    ));
    for r in report.recipients {
        status.push_str("\r\n");
        if let Some(original) = &r.original {
            status.push_str(&format!("Original-Recipient: rfc822; {}\r\n", clean(original)));
        }
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\n",
            r.recipient,
            status_code(&r.diagnostic, report.action),
        ));
        if !r.diagnostic.is_empty() {
            status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", clean(&r.diagnostic)));
        }
    }
    let returned = if report.full && report.action == Action::Failed {
        // A message/rfc822 part is never base64 or quoted-printable (RFC 2046 §5.2.1): as it is.
        let encoding = if report.original.is_ascii() { "7bit" } else { "8bit" };
        MimePart::new(ContentType::new("message/rfc822"), BodyPart::Binary(report.original.to_vec().into()))
            .transfer_encoding(encoding)
    } else {
        MimePart::new(
            ContentType::new("text/rfc822-headers"),
            BodyPart::Text(String::from_utf8_lossy(returned_header(report.original)).into_owned().into()),
        )
    };
    let body = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new(ContentType::new("message/delivery-status"), BodyPart::Text(status.into())),
            returned,
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
            RecipientReport {
                recipient: "b@far.test".into(),
                diagnostic: "550 5.1.1 no such user".into(),
                original: None,
            },
            RecipientReport { recipient: "c@far.test".into(), diagnostic: "connection refused".into(), original: None },
        ];
        let original = b"Subject: hello\r\nFrom: a@ours.test\r\n\r\nsecret body\r\n";
        let report = Report {
            reporting_mta: "node1.ours.test",
            to: "a@ours.test",
            queue_id: "q1",
            action: Action::Failed,
            recipients: &recipients,
            original,
            envid: None,
            full: false,
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
    fn success_notices_and_what_the_sender_gave_echoed() {
        let recipients = [RecipientReport {
            recipient: "bob@ours.test".into(),
            diagnostic: String::new(),
            original: Some("Bob@ours.test".into()),
        }];
        let original = b"Subject: hello\r\n\r\nsecret body\r\n";
        let report = |action, full| Report {
            reporting_mta: "node1.ours.test",
            to: "a@ours.test",
            queue_id: "q1",
            action,
            recipients: &recipients,
            original,
            envid: Some("QQ314"),
            full,
        };
        let text = String::from_utf8(build(&report(Action::Delivered, true)).unwrap()).unwrap();
        assert!(text.contains("Original-Envelope-Id: QQ314\r\nReporting-MTA: dns; node1.ours.test\r\n"), "{text}");
        assert!(
            text.contains("Original-Recipient: rfc822; Bob@ours.test\r\nFinal-Recipient: rfc822; bob@ours.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"),
            "{text}"
        );
        assert!(!text.contains("secret body"), "RET=FULL returns the message with a failure only");
        let text = String::from_utf8(build(&report(Action::Failed, true)).unwrap()).unwrap();
        assert!(text.contains("message/rfc822") && text.contains("secret body"), "{text}");
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
