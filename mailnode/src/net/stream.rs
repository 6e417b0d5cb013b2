//! A client connection that starts plain and may be upgraded to TLS in place (STARTTLS, STLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has for its TLS handshake, on implicit-TLS ports and after STARTTLS/STLS
/// alike (the idle timeouts cover reads between commands, not the handshake); the listener
/// gives a trusted router as long for its PROXY header.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain or TLS connection to a client.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Left behind while the connection is being upgraded (or after a failed upgrade).
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection gone")
}

impl Stream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Runs the TLS handshake on a plain connection.
    pub async fn start_tls(self, acceptor: &TlsAcceptor) -> io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => Ok(Stream::Tls(Box::new(acceptor.accept(tcp).await?))),
            Stream::Tls(_) => Err(io::Error::other("TLS already active")),
            Stream::Gone => Err(gone()),
        }
    }

    /// Upgrades this connection to TLS in place (STARTTLS, STLS), giving the client at most
    /// `limit` for the handshake; on failure or timeout it is left `Gone`.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        let plain = std::mem::replace(self, Stream::Gone);
        *self = tokio::time::timeout(limit, plain.start_tls(acceptor))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(())
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sirms_proto::public_tls::{self as tls, TlsConfig};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Connected (server side, client side) plain sockets on loopback.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Stream::Plain(server), client)
    }

    #[tokio::test]
    async fn upgrade_gives_up_on_a_client_that_never_handshakes() {
        let acceptor = tls::acceptor(&TlsConfig::default(), "stream.test").unwrap().0;
        let (mut stream, mut client) = pair().await;
        // Half a TLS record header, then silence: a STARTTLS slowloris.
        client.write_all(&[0x16, 0x03]).await.unwrap();
        let started = std::time::Instant::now();
        let err = stream.upgrade(&acceptor, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(stream, Stream::Gone));
    }

    #[tokio::test]
    async fn upgrade_refuses_garbage_at_once() {
        let acceptor = tls::acceptor(&TlsConfig::default(), "stream.test").unwrap().0;
        let (mut stream, mut client) = pair().await;
        client.write_all(b"EHLO not-tls.example\r\n").await.unwrap();
        let err = stream.upgrade(&acceptor, Duration::from_secs(30)).await.unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::TimedOut);
    }
}
