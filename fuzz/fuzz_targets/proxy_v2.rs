//! Fuzzes the PROXY protocol v2 decoder (`sirms_proto::proxy_v2`).
//!
//! The input is the byte stream a mail node reads from a (supposed) router. Checked:
//!
//! - `ProxyHeader::decode` never panics; `Complete { consumed }` has
//!   `16 <= consumed <= min(input, MAX_HEADER_LEN)`, and decoding just those bytes (or them
//!   plus anything) gives the same header; `Incomplete { needed }` asks for more than zero and
//!   never past `MAX_HEADER_LEN`, nor past the end of the header the full input holds;
//! - errors are final: no prefix is rejected if the whole input decodes, and every prefix of an
//!   accepted header is `Incomplete`;
//! - `read_header` over the same bytes delivered in random fragments returns the header iff
//!   `decode` does and never reads a byte past it (the proxied protocol's first bytes stay put);
//! - round trips: every decoded header re-encodes to bytes that decode to it, and
//!   `ProxyHeader::tcp(src, dst)` built from the input (IPv4, IPv6, IPv4-mapped, scope ids)
//!   survives encode → decode exactly.

#![no_main]

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use sirms_proto::proxy_v2::{Decoded, MAX_HEADER_LEN, ProxyHeader, ReadHeaderError, SIGNATURE, read_header};
use tokio::io::{AsyncRead, ReadBuf};

/// A reader that hands out the input in fragments of sizes taken from `sizes`.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let size = match self.sizes.get(self.turn % self.sizes.len().max(1)) {
            Some(&s) if s != 0 => usize::from(s),
            _ => usize::MAX,
        };
        self.turn += 1;
        let n = (self.data.len() - self.pos).min(buf.remaining()).min(size);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        // Trickle is always ready, so read_header never waits.
        Poll::Pending => panic!("read_header pending on a ready reader"),
    }
}

fn roundtrip(header: ProxyHeader) {
    let encoded = header.encode();
    let bytes = encoded.as_bytes();
    assert!(bytes.starts_with(&SIGNATURE));
    assert_eq!(
        ProxyHeader::decode(bytes),
        Ok(Decoded::Complete { header, consumed: bytes.len() }),
        "encode/decode of {header:?}"
    );
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(b"EHLO x\r\n");
    assert_eq!(ProxyHeader::decode(&longer), Ok(Decoded::Complete { header, consumed: bytes.len() }));
}

fn ip(bytes: &[u8], kind: u8) -> IpAddr {
    let mut v6 = [0u8; 16];
    v6.copy_from_slice(&bytes[..16]);
    match kind % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        1 => IpAddr::V6(Ipv6Addr::from(v6)),
        _ => IpAddr::V6(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_ipv6_mapped()),
    }
}

fn socket(bytes: &[u8], kind: u8) -> SocketAddr {
    let port = u16::from_be_bytes([bytes[16], bytes[17]]);
    match ip(bytes, kind) {
        IpAddr::V6(v6) if kind & 0x80 != 0 => {
            // Flow info and scope id have no place in the header: `tcp` drops them.
            let extra = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            SocketAddr::V6(SocketAddrV6::new(v6, port, extra, extra.rotate_left(7)))
        }
        ip => SocketAddr::new(ip, port),
    }
}

fuzz_target!(|data: &[u8]| {
    // Fragment sizes for read_header come from the tail; decode sees everything.
    let sizes = data.get(data.len().saturating_sub(4)..).unwrap_or(&[]);
    let full = ProxyHeader::decode(data);
    match full {
        Ok(Decoded::Complete { header, consumed }) => {
            assert!((16..=MAX_HEADER_LEN).contains(&consumed) && consumed <= data.len(), "consumed {consumed}");
            assert_eq!(ProxyHeader::decode(&data[..consumed]), full, "header alone decodes differently");
            roundtrip(header);
        }
        Ok(Decoded::Incomplete { needed }) => {
            assert!(needed > 0, "Incomplete needing nothing");
            assert!(data.len() + needed <= MAX_HEADER_LEN, "asks for {needed} more after {}", data.len());
        }
        Err(_) => {}
    }

    // Every prefix: errors are final, and a header is never asked past its end.
    for len in 0..data.len().min(MAX_HEADER_LEN + 1) {
        let prefix = ProxyHeader::decode(&data[..len]);
        match (prefix, full) {
            (Err(e), Ok(whole)) => panic!("prefix of {len} bytes rejected ({e:?}) but the input decodes to {whole:?}"),
            (Err(e), Err(whole)) => assert_eq!(e, whole, "prefix of {len} bytes fails differently"),
            (Ok(Decoded::Complete { consumed, .. }), _) => {
                assert_eq!(prefix, full, "prefix of {len} bytes completes differently");
                assert!(consumed <= len);
            }
            (Ok(Decoded::Incomplete { needed }), Ok(Decoded::Complete { consumed, .. })) => {
                assert!(len + needed <= consumed, "prefix of {len} asks for {needed}, header is {consumed}");
            }
            (Ok(Decoded::Incomplete { needed }), _) => {
                assert!(needed > 0 && len + needed <= MAX_HEADER_LEN);
            }
        }
    }

    // The async reader, with the bytes arriving in fragments.
    let mut reader = Trickle { data, pos: 0, sizes, turn: 0 };
    let read = block_on(read_header(&mut reader));
    match (&read, full) {
        (Ok(header), Ok(Decoded::Complete { header: want, consumed })) => {
            assert_eq!(*header, want);
            assert_eq!(reader.pos, consumed, "read_header read past the header");
        }
        (Err(ReadHeaderError::Invalid(e)), Err(want)) => assert_eq!(*e, want),
        (Err(ReadHeaderError::Io(e)), Ok(Decoded::Incomplete { .. })) => {
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(reader.pos, data.len());
        }
        (read, full) => panic!("read_header gave {read:?} where decode gave {full:?}"),
    }

    // Headers the router would write, built from the input.
    if data.len() >= 38 {
        let kind = data[36];
        let src = socket(&data[..18], kind);
        let dst = socket(&data[18..36], kind.rotate_right(2) ^ data[37]);
        let header = ProxyHeader::tcp(src, dst);
        let ProxyHeader::Tcp { source, destination } = header else { panic!("tcp() gave {header:?}") };
        assert_eq!((source.port(), destination.port()), (src.port(), dst.port()));
        assert_eq!(source.ip().to_canonical(), src.ip().to_canonical(), "source address changed");
        assert_eq!(destination.ip().to_canonical(), dst.ip().to_canonical(), "destination address changed");
        roundtrip(header);
    }
    roundtrip(ProxyHeader::Local);
    roundtrip(ProxyHeader::Unspecified);
});
