//! COMPRESS=DEFLATE (RFC 4978): once a client asks, both directions of the connection go
//! through raw deflate (RFC 1951, no zlib header), flate2's pure-Rust backend.
//!
//! [`ImapIo`] is the connection's stream with an optional deflate layer. Reads inflate into the
//! caller's buffer only (at most its size per call), so a small input that inflates hugely
//! costs no memory here: the framing limits see every byte. Writes deflate into a buffer that
//! is written out before more is taken, and a flush ends with a sync flush so that the client
//! can inflate every response it was sent (RFC 4978 §4).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::stream::Stream;
use crate::net::write_buffer::poll_write_out;

/// Compressed bytes read from the client per read.
const RAW_CHUNK: usize = 16 * 1024;

/// The deflate state of both directions.
struct Deflate {
    compress: Compress,
    decompress: Decompress,
    /// Deflated bytes not yet written to the stream, from `written`.
    out: Vec<u8>,
    written: usize,
    /// Data was deflated since the last sync flush.
    dirty: bool,
    /// Bytes read from the client not yet inflated, from `used`.
    input: Vec<u8>,
    used: usize,
    /// The client ended its deflate stream: nothing more is read.
    ended: bool,
}

/// The connection of one IMAP session: its stream, deflated after COMPRESS.
pub struct ImapIo {
    stream: Stream,
    deflate: Option<Box<Deflate>>,
}

fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl ImapIo {
    /// The connection, uncompressed.
    pub fn new(stream: Stream) -> ImapIo {
        ImapIo { stream, deflate: None }
    }

    /// The stream underneath (for STARTTLS, which comes before login and so before COMPRESS).
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Whether COMPRESS is active.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Starts deflating both ways; everything written before has been flushed by the caller.
    pub fn start_deflate(&mut self) {
        self.deflate = Some(Box::new(Deflate {
            compress: Compress::new(Compression::default(), false),
            decompress: Decompress::new(false),
            out: Vec::new(),
            written: 0,
            dirty: false,
            input: Vec::new(),
            used: 0,
            ended: false,
        }));
    }
}

/// Writes out what `d` holds deflated.
fn drain(d: &mut Deflate, stream: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    poll_write_out(stream, cx, &mut d.out, &mut d.written)
}

impl AsyncRead for ImapIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(d) = this.deflate.as_mut() else { return Pin::new(&mut this.stream).poll_read(cx, buf) };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if d.ended {
                return Poll::Ready(Ok(()));
            }
            if d.used < d.input.len() {
                let (before_in, before_out) = (d.decompress.total_in(), d.decompress.total_out());
                let status = d
                    .decompress
                    .decompress(&d.input[d.used..], buf.initialize_unfilled(), FlushDecompress::None)
                    .map_err(corrupt)?;
                // Both totals grow by at most the slices' lengths, which are usizes.
                let consumed = (d.decompress.total_in() - before_in) as usize;
                let produced = (d.decompress.total_out() - before_out) as usize;
                d.used += consumed;
                buf.advance(produced);
                d.ended = status == Status::StreamEnd;
                if produced > 0 || d.ended {
                    return Poll::Ready(Ok(()));
                }
                if consumed > 0 && d.used < d.input.len() {
                    continue;
                }
            }
            // All input is used up, or what is left is an incomplete piece: read more.
            d.input.drain(..d.used);
            d.used = 0;
            let mut raw = [0u8; RAW_CHUNK];
            let mut raw_buf = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut raw_buf))?;
            if raw_buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            d.input.extend_from_slice(raw_buf.filled());
        }
    }
}

impl AsyncWrite for ImapIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(d) = this.deflate.as_mut() else { return Pin::new(&mut this.stream).poll_write(cx, buf) };
        // What was deflated before goes out first: the buffer holds at most one write's worth.
        ready!(drain(d, &mut this.stream, cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // With room for all of `buf` and more, deflate takes some of it; the bound only keeps a
        // backend that would not from spinning.
        for room in [buf.len() + 64, 2 * buf.len() + 64 * 1024] {
            d.out.reserve(room);
            let before = d.compress.total_in();
            d.compress.compress_vec(buf, &mut d.out, FlushCompress::None).map_err(corrupt)?;
            let consumed = (d.compress.total_in() - before) as usize;
            if consumed > 0 {
                d.dirty = true;
                return Poll::Ready(Ok(consumed));
            }
        }
        Poll::Ready(Err(io::Error::other("deflate took no input")))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(d) = this.deflate.as_mut() {
            if d.dirty {
                // A sync flush puts out everything deflated so far; it is done when it left
                // room in the buffer.
                loop {
                    d.out.reserve(1024);
                    d.compress.compress_vec(&[], &mut d.out, FlushCompress::Sync).map_err(corrupt)?;
                    if d.out.len() < d.out.capacity() {
                        break;
                    }
                }
                d.dirty = false;
            }
            ready!(drain(d, &mut this.stream, cx))?;
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn pair() -> (ImapIo, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ImapIo::new(Stream::Plain(server)), client)
    }

    #[tokio::test]
    async fn both_directions_are_deflated_after_start() {
        let (mut io, mut client) = pair().await;
        io.write_all(b"a OK plain\r\n").await.unwrap();
        io.flush().await.unwrap();
        let mut plain = [0u8; 12];
        client.read_exact(&mut plain).await.unwrap();
        assert_eq!(&plain, b"a OK plain\r\n");
        io.start_deflate();
        assert!(io.is_compressed());

        // Server to client: a flush makes every byte inflatable.
        let text = b"* 1 FETCH (FLAGS (\\Seen))\r\n".repeat(100);
        io.write_all(&text).await.unwrap();
        io.flush().await.unwrap();
        let mut inflate = flate2::Decompress::new(false);
        let mut got = Vec::with_capacity(text.len() + 16);
        while got.len() < text.len() {
            let mut raw = [0u8; 4096];
            let n = client.read(&mut raw).await.unwrap();
            assert!(n > 0, "connection closed early");
            let mut input = &raw[..n];
            while !input.is_empty() {
                got.reserve(4096);
                let before = inflate.total_in();
                inflate.decompress_vec(input, &mut got, FlushDecompress::Sync).unwrap();
                input = &input[(inflate.total_in() - before) as usize..];
            }
        }
        assert_eq!(got, text);

        // Client to server, cut anywhere: the reads give back the bytes.
        let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
        deflate.write_all(b"b NOOP\r\n").unwrap();
        deflate.flush().unwrap();
        let sent = deflate.get_ref().clone();
        for piece in sent.chunks(3) {
            client.write_all(piece).await.unwrap();
        }
        let mut line = [0u8; 8];
        io.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"b NOOP\r\n");

        // Garbage is an error, not a hang.
        client.write_all(&[0xff; 8]).await.unwrap();
        let mut rest = [0u8; 8];
        assert!(io.read(&mut rest).await.is_err());
    }

    #[tokio::test]
    async fn a_bomb_is_inflated_a_buffer_at_a_time() {
        let (mut io, mut client) = pair().await;
        io.start_deflate();
        let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
        deflate.write_all(&vec![b'x'; 8 << 20]).unwrap();
        deflate.flush().unwrap();
        client.write_all(deflate.get_ref()).await.unwrap();
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0 && n <= 1024 && chunk[..n].iter().all(|&b| b == b'x'));
        let d = io.deflate.as_ref().unwrap();
        assert!(d.input.capacity() <= 2 * RAW_CHUNK, "input held: {}", d.input.capacity());
    }
}
