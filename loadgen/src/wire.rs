//! A client's TCP connection: line reads of bounded length, and a deadline on every read and
//! write, so a slow or hostile server can stall one step for at most `--timeout`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::error::Error;

/// Bytes read from the socket at most at once; a buffer holds at least this much.
const READ_CHUNK: usize = 64 * 1024;

/// A connection with a read buffer.
pub struct Wire {
    stream: TcpStream,
    /// Unread bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Wire {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Wire {
        Wire { stream, buf: vec![0; READ_CHUNK], start: 0, end: 0 }
    }

    /// Writes all of `data` before `deadline`.
    pub async fn send(&mut self, data: &[u8], deadline: Instant) -> Result<(), Error> {
        match timeout_at(deadline, self.stream.write_all(data)).await {
            Err(_) => Err(Error::Timeout("sending to the server")),
            Ok(result) => Ok(result?),
        }
    }

    /// The next line without its line end (LF or CRLF); a line longer than `max` bytes is an
    /// error, and so is a connection closed before the line ends.
    pub async fn read_line(&mut self, max: usize, deadline: Instant) -> Result<&[u8], Error> {
        // Bytes already searched for a line end, so a long line is scanned once.
        let mut scanned = 0;
        loop {
            if let Some(at) = self.buf[self.start + scanned..self.end].iter().position(|&b| b == b'\n') {
                let begin = self.start;
                let newline = begin + scanned + at;
                self.start = newline + 1;
                let end = if newline > begin && self.buf[newline - 1] == b'\r' { newline - 1 } else { newline };
                if end - begin > max {
                    return Err(Error::TooLong(max));
                }
                return Ok(&self.buf[begin..end]);
            }
            scanned = self.end - self.start;
            // Room for the line's CRLF beyond `max`.
            if scanned > max + 1 {
                return Err(Error::TooLong(max));
            }
            self.fill(deadline).await?;
        }
    }

    /// Reads and drops `n` bytes (an IMAP literal whose content is not needed).
    pub async fn skip(&mut self, mut n: u64, deadline: Instant) -> Result<(), Error> {
        loop {
            let have = (self.end - self.start) as u64;
            if have >= n {
                self.start += n as usize;
                return Ok(());
            }
            n -= have;
            self.start = self.end;
            self.fill(deadline).await?;
        }
    }

    /// Reads more bytes after the unread ones, making room first: moves the unread bytes to
    /// the front, or grows the buffer when they fill it (a long line).
    async fn fill(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK / 4 {
                self.buf.resize(self.buf.len() + READ_CHUNK, 0);
            }
        }
        match timeout_at(deadline, self.stream.read(&mut self.buf[self.end..])).await {
            Err(_) => Err(Error::Timeout("waiting for the server")),
            Ok(Err(e)) => Err(Error::Io(e)),
            Ok(Ok(0)) => Err(Error::Closed),
            Ok(Ok(n)) => {
                self.end += n;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    /// A wire connected to a loopback server that sends `script` (then waits for `linger`).
    async fn serve(script: Vec<u8>, linger: Duration) -> Wire {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(&script).await.expect("write");
            tokio::time::sleep(linger).await;
        });
        Wire::new(TcpStream::connect(addr).await.expect("connect"))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn lines_literals_and_limits() {
        let mut script = b"one\r\ntwo\nthree {5}\r\nHELLOrest\r\n".to_vec();
        script.extend(vec![b'x'; 200_000]);
        script.extend(b"\r\nlast\r\n");
        let mut w = serve(script, Duration::ZERO).await;
        assert_eq!(w.read_line(100, soon()).await.unwrap(), b"one");
        assert_eq!(w.read_line(100, soon()).await.unwrap(), b"two");
        assert_eq!(w.read_line(100, soon()).await.unwrap(), b"three {5}");
        w.skip(5, soon()).await.unwrap();
        assert_eq!(w.read_line(100, soon()).await.unwrap(), b"rest");
        assert_eq!(w.read_line(300_000, soon()).await.unwrap().len(), 200_000);
        assert_eq!(w.read_line(100, soon()).await.unwrap(), b"last");
        assert!(matches!(w.read_line(100, soon()).await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused_before_it_ends() {
        let mut w = serve(vec![b'y'; 10_000], Duration::from_secs(5)).await;
        assert!(matches!(w.read_line(1000, soon()).await, Err(Error::TooLong(1000))));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let mut w = serve(b"partial".to_vec(), Duration::from_secs(5)).await;
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(matches!(w.read_line(100, deadline).await, Err(Error::Timeout(_))));
    }
}
