//! Fuzzes the request-head handling of the metrics endpoint
//! (`sirms_telemetry::http::{head_end, route}`) with arbitrary bytes.
//!
//! Checked: nothing panics; `head_end` points inside the input, just past a blank line;
//! a head is routed to the page only for a `GET`/`HEAD` request line naming `/metrics` or
//! `/` over HTTP/1.x; routing depends on the request line only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_telemetry::http::{Route, head_end, route};

fuzz_target!(|data: &[u8]| {
    if let Some(end) = head_end(data) {
        assert!(end <= data.len());
        assert!(data[..end].ends_with(b"\n\n") || data[..end].ends_with(b"\r\n\r\n"));
    }
    let routed = route(data);
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Route::Metrics { head_only } = routed {
        let method = if head_only { &b"HEAD "[..] } else { &b"GET "[..] };
        assert!(line.starts_with(method), "{:?}", String::from_utf8_lossy(line));
        let target = line[method.len()..].split(|&b| b == b' ').next().unwrap_or_default();
        let path = target.split(|&b| b == b'?').next().unwrap_or_default();
        assert!(path == b"/metrics" || path == b"/", "{:?}", String::from_utf8_lossy(line));
        assert!(line.windows(7).any(|w| w == b"HTTP/1."));
    }
    // Whatever follows the request line changes nothing.
    let mut other = line.to_vec();
    other.extend_from_slice(b"\r\nX: y\r\n\r\n");
    assert_eq!(route(&other), routed);
});
