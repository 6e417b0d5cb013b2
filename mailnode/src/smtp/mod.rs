//! SMTP: MX (port 25) and submission (587 with STARTTLS, 465 with implicit TLS).

pub mod connection;
pub mod dsn;
pub mod hops;
pub mod rate;
pub mod received;
pub mod reply;
pub mod session;
