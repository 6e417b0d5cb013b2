//! Fuzzes the request parsing of our HTTP endpoints (`sirms_telemetry::http::request::parse`:
//! the metrics page and the router's autoconfiguration) and the metrics routing, with
//! arbitrary bytes. It replaced `metrics_http`, which read only the request line.
//!
//! Input: the bytes a client sends, parsed under small limits (256-byte head, 64-byte body)
//! so that both limits are reached often.
//!
//! Checked: nothing panics; a complete request's head ends within `max_head` at a blank line,
//! its body is exactly the `Content-Length` bytes after the head and at most `max_body`, its
//! method is a token and its path starts with `/`; without a blank line, only a buffer of
//! `max_head` or more is refused; whatever follows a complete or refused request changes
//! nothing (no answer depends on bytes not yet needed); the metrics page only for `GET`/`HEAD`
//! of `/metrics` or `/`; query parameters decode without panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_telemetry::http::metrics::{Route, route};
use sirms_telemetry::http::request::{Limits, Parsed, Refusal, head_end, parse, percent_decode};

const LIMITS: Limits = Limits { max_head: 256, max_body: 64 };

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data, LIMITS);
    let end = head_end(data);
    if let Some(end) = end {
        assert!(end <= data.len());
        assert!(data[..end].ends_with(b"\n\n") || data[..end].ends_with(b"\r\n\r\n"));
    }
    match &parsed {
        Parsed::Incomplete => {
            if end.is_none() {
                assert!(data.len() < LIMITS.max_head);
            }
        }
        Parsed::Refused(refusal) => {
            if end.is_none() {
                assert_eq!(*refusal, Refusal::HeadTooLarge);
            }
        }
        Parsed::Complete(request) => {
            let end = end.expect("a complete request has a head");
            assert!(end <= LIMITS.max_head);
            assert!(request.body.len() <= LIMITS.max_body);
            assert_eq!(&data[end..end + request.body.len()], &request.body[..]);
            assert!(!request.method.is_empty() && request.method.bytes().all(|b| b.is_ascii_graphic()));
            assert!(request.path.starts_with('/'));
            let _ = request.query_param("emailaddress");
            let _ = percent_decode(&request.query);
            if route(request) == Route::Metrics {
                assert!(request.method == "GET" || request.method == "HEAD");
                assert!(request.path == "/metrics" || request.path == "/");
            }
        }
    }
    // A decision, once made, does not wait for or depend on more bytes.
    if !matches!(parsed, Parsed::Incomplete) {
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&more, LIMITS), parsed);
    }
});
