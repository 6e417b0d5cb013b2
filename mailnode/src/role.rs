//! The `sirms node` role: builds the directory, the store and TLS, then runs every listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sirms_storage::{LocalStore, MailStore, RemoteStore, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::NodeConfig;
use crate::delivery::Delivery;
use crate::directory::{DirectoryError, StaticDirectory};
use crate::net::listener::{self, ListenerSettings};
use crate::net::tls::{self, TlsError};
use crate::pop3::SessionConfig as Pop3Config;
use crate::pop3::connection::{MaildropLocks, Pop3Service};
use crate::smtp::connection::SmtpService;
use crate::smtp::session::SessionConfig;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr, source })
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let directory = Arc::new(StaticDirectory::new(&config.directory)?);
    for user in directory.plain_password_users() {
        tracing::warn!(%user, "password stored in plain text; use `sirms hash-password`");
    }
    let mut local = None;
    let store: Arc<dyn MailStore> = match &config.store.remote {
        Some(endpoint) => {
            let token = config.store.token.clone().unwrap_or_else(|| sirms_storage::role::DEV_TOKEN.to_string());
            Arc::new(RemoteStore::connect(endpoint, token)?)
        }
        None => {
            let store = LocalStore::open(config.data_dir.join("store"))?;
            local = Some(store.clone());
            Arc::new(store)
        }
    };
    let acceptor = tls::acceptor(&config.tls, &config.hostname)?;
    let authenticator = Authenticator::new(directory.clone());
    let delivery = Delivery::new(store.clone());
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let trusted = Arc::new(config.trusted_proxies.clone());
    let limits = &config.limits;
    let (stop, stopped) = watch::channel(false);

    let smtp_session = |submission: bool| {
        Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            submission,
            tls_available: true,
            allow_plaintext_auth: config.allow_plaintext_auth,
            max_message_size: limits.max_message_size,
            max_recipients: limits.max_recipients,
            max_errors: limits.max_errors,
            max_auth_failures: limits.max_auth_failures,
        })
    };
    let smtp_service = |submission: bool| {
        Arc::new(SmtpService {
            config: smtp_session(submission),
            directory: directory.clone(),
            authenticator: authenticator.clone(),
            delivery: delivery.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.smtp_idle_secs),
            id_prefix: format!("{started:x}."),
        })
    };
    let settings = |service: &'static str, implicit_tls: bool, busy_reply: &'static [u8]| ListenerSettings {
        service,
        max_connections: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
        trusted_proxies: trusted.clone(),
        implicit_tls: implicit_tls.then(|| acceptor.clone()),
        busy_reply,
    };
    const SMTP_BUSY: &[u8] = b"421 4.7.0 too many connections, try again later\r\n";

    let smtp_listeners = [
        ("smtp", config.listen.smtp, false, false),
        ("submission", config.listen.submission, true, false),
        ("submissions", config.listen.submissions, true, true),
    ];
    for (name, addr, submission, implicit_tls) in smtp_listeners {
        let listener = bind(addr).await?;
        let service = smtp_service(submission);
        tracing::info!(service = name, %addr, hostname = %config.hostname, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings(name, implicit_tls, SMTP_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    const POP3_BUSY: &[u8] = b"-ERR [SYS/TEMP] too many connections, try again later\r\n";
    let locks = Arc::new(MaildropLocks::default());
    for (name, addr, implicit_tls) in [("pop3", config.listen.pop3, false), ("pop3s", config.listen.pop3s, true)] {
        let listener = bind(addr).await?;
        let mut session = Pop3Config::new(config.hostname.clone());
        session.plaintext_without_tls = config.allow_plaintext_auth;
        session.max_auth_failures = limits.max_auth_failures;
        let service = Arc::new(Pop3Service {
            config: session,
            authenticator: authenticator.clone(),
            store: store.clone(),
            locks: locks.clone(),
            tls: Some(acceptor.clone()),
            idle_timeout: Duration::from_secs(limits.pop3_idle_secs),
        });
        tracing::info!(service = name, %addr, "listening");
        tokio::spawn(listener::serve(
            listener,
            settings(name, implicit_tls, POP3_BUSY),
            move |conn| service.clone().handle(conn),
            stopped.clone(),
        ));
    }

    shutdown.await;
    tracing::info!("node stopping");
    let _ = stop.send(true);
    if let Some(store) = local {
        store.flush().await?;
    }
    Ok(())
}
