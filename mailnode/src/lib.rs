//! The mail node: SMTP (MX and submission), IMAP, POP3 and the outbound queue, all over a `MailStore`.
