//! Reading from a connection without a buffer of one's own while waiting.
//!
//! A session reads into a buffer; if that buffer lives in the session (on the heap, or on the
//! stack of an `async fn`, which is the task's heap allocation too), every session waiting for
//! its client holds it: 16 KiB for each of 100,000 sessions in IMAP IDLE is 1.6 GB. Here the read
//! goes into a buffer of the thread that polls it, within one poll, and only what arrived is
//! handed back.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// The most one read returns.
pub const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Reads what `reader` has, at most `limit` octets (and [`READ_CHUNK`]); empty at end of input.
pub async fn read_some<R: AsyncRead + Unpin>(reader: &mut R, limit: usize) -> io::Result<Vec<u8>> {
    let limit = limit.min(READ_CHUNK);
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(&mut scratch[..limit]);
            ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
            Poll::Ready(Ok(buf.filled().to_vec()))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn returns_what_arrived_then_nothing_at_the_end() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"a NOOP\r\n").await.unwrap();
        assert_eq!(read_some(&mut server, usize::MAX).await.unwrap(), b"a NOOP\r\n");
        client.write_all(&[7; 100]).await.unwrap();
        assert_eq!(read_some(&mut server, 30).await.unwrap(), vec![7; 30], "never past the limit");
        assert_eq!(read_some(&mut server, usize::MAX).await.unwrap(), vec![7; 70]);
        drop(client);
        assert!(read_some(&mut server, usize::MAX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let read = read_some(&mut server, usize::MAX);
        assert!(std::mem::size_of_val(&read) < 256, "{} octets", std::mem::size_of_val(&read));
    }
}
