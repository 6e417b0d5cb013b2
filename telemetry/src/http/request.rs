//! One HTTP/1.1 request read from bytes (RFC 9112): a pure function, so it is unit-tested and
//! fuzzed without a socket (`fuzz/fuzz_targets/http_request.rs`).
//!
//! Only what our endpoints need: a request line, a `Host`, a body of `Content-Length` bytes.
//! Everything is bounded by [`Limits`] before it is buffered: a head without its blank line
//! within `max_head` is 431, a declared body over `max_body` is 413, and a transfer coding
//! (chunked) is 501, because a body of unknown length could not be bounded up front.

/// Sizes a request may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and header fields, blank line included).
    pub max_head: usize,
    /// Largest body (`Content-Length`).
    pub max_body: usize,
}

/// A request as our handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`… as sent (methods are case-sensitive).
    pub method: String,
    /// The target's path, undecoded (`/metrics`).
    pub path: String,
    /// The target's query, undecoded, without the `?` (empty if none).
    pub query: String,
    /// The `Host` field, lower case, without a port (`None` if absent).
    pub host: Option<String>,
    /// The `Authorization` field as sent (`None` if absent), for a page behind a credential.
    pub authorization: Option<String>,
    /// The body: exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

/// What a buffer holds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed (and may come: the limits are not reached).
    Incomplete,
    /// A whole request.
    Complete(Request),
    /// Not a request we take; answer with this status and close.
    Refused(Refusal),
}

/// Why a request is refused before any handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not an HTTP/1.x request, or a malformed or contradictory header field.
    BadRequest,
    /// 413: `Content-Length` over `max_body`.
    TooLarge,
    /// 431: no end of the head within `max_head`.
    HeadTooLarge,
    /// 501: a `Transfer-Encoding` (chunked bodies are not taken).
    NotImplemented,
}

impl Refusal {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::TooLarge => 413,
            Refusal::HeadTooLarge => 431,
            Refusal::NotImplemented => 501,
        }
    }
}

/// Where the request head ends (just past the blank line), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    // Bare LF line ends are tolerated, as most servers do (RFC 9112 §2.2); the earlier of the
    // two blank lines ends the head.
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads the request at the start of `buf`.
pub fn parse(buf: &[u8], limits: Limits) -> Parsed {
    let Some(end) = head_end(buf) else {
        return if buf.len() >= limits.max_head { Parsed::Refused(Refusal::HeadTooLarge) } else { Parsed::Incomplete };
    };
    if end > limits.max_head {
        return Parsed::Refused(Refusal::HeadTooLarge);
    }
    let head = match Head::parse(&buf[..end]) {
        Ok(head) => head,
        Err(refusal) => return Parsed::Refused(refusal),
    };
    if head.content_length > limits.max_body {
        return Parsed::Refused(Refusal::TooLarge);
    }
    let Some(body) = buf.get(end..end + head.content_length) else { return Parsed::Incomplete };
    Parsed::Complete(Request {
        method: head.method,
        path: head.path,
        query: head.query,
        host: head.host,
        authorization: head.authorization,
        body: body.to_vec(),
    })
}

/// The head's parts that matter.
struct Head {
    method: String,
    path: String,
    query: String,
    host: Option<String>,
    authorization: Option<String>,
    content_length: usize,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Head, Refusal> {
        let text = std::str::from_utf8(head).map_err(|_| Refusal::BadRequest)?;
        let mut lines = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
        let (method, target) = request_line(lines.next().unwrap_or_default())?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (mut host, mut authorization, mut content_length) = (None, None, None);
        for line in lines.take_while(|line| !line.is_empty()) {
            let (name, value) = line.split_once(':').ok_or(Refusal::BadRequest)?;
            // No whitespace before the colon (RFC 9112 §5.1): a classic smuggling vector.
            if name.is_empty() || name.bytes().any(|b| !is_token(b)) {
                return Err(Refusal::BadRequest);
            }
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("host") {
                if host.is_some() {
                    return Err(Refusal::BadRequest);
                }
                host = Some(host_name(value)?);
            } else if name.eq_ignore_ascii_case("content-length") {
                let length = content_length_value(value)?;
                // Repeated fields must agree (RFC 9110 §8.6).
                if content_length.is_some_and(|seen| seen != length) {
                    return Err(Refusal::BadRequest);
                }
                content_length = Some(length);
            } else if name.eq_ignore_ascii_case("authorization") {
                // One credential: two could be checked one way and used another.
                if authorization.is_some() {
                    return Err(Refusal::BadRequest);
                }
                authorization = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(Refusal::NotImplemented);
            }
        }
        Ok(Head {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            host,
            authorization,
            content_length: content_length.unwrap_or(0),
        })
    }
}

/// `METHOD SP target SP HTTP/1.x` (RFC 9112 §3), origin form only.
fn request_line(line: &str) -> Result<(&str, &str), Refusal> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    let version_ok = version.strip_prefix("HTTP/1.").is_some_and(|minor| minor.len() == 1 && is_digit(minor));
    let target_ok = target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic());
    if !version_ok || method.is_empty() || !method.bytes().all(is_token) || !target_ok {
        return Err(Refusal::BadRequest);
    }
    Ok((method, target))
}

fn is_digit(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// A token character (RFC 9110 §5.6.2): what method and field names are made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `Content-Length` value: digits only, no sign, no list.
fn content_length_value(value: &str) -> Result<usize, Refusal> {
    if value.is_empty() || !is_digit(value) {
        return Err(Refusal::BadRequest);
    }
    // Too many digits to fit is too large to take, not malformed.
    Ok(value.parse().unwrap_or(usize::MAX))
}

/// A `Host` value's name: lower case, port dropped; `[v6]` literals kept with brackets.
fn host_name(value: &str) -> Result<String, Refusal> {
    let name = match value.strip_prefix('[') {
        Some(rest) => {
            let close = rest.find(']').ok_or(Refusal::BadRequest)?;
            &value[..close + 2]
        }
        None => value.split(':').next().unwrap_or_default(),
    };
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b);
    if !name.bytes().all(allowed) {
        return Err(Refusal::BadRequest);
    }
    Ok(name.to_ascii_lowercase())
}

impl Request {
    /// The first value of query parameter `name`, percent-decoded (`+` is a space, as HTML
    /// forms send it); `None` if absent or not UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key)? == name).then(|| percent_decode(value)).flatten()
        })
    }
}

/// `%XX` escapes and `+` undone; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // from_str_radix alone would take a sign ("%+1").
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 256, max_body: 16 };

    fn complete(buf: &[u8]) -> Request {
        match parse(buf, LIMITS) {
            Parsed::Complete(request) => request,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn reads_a_get_with_host_and_query() {
        let r = complete(
            b"GET /mail/config-v1.1.xml?emailaddress=a%40b.test HTTP/1.1\r\nHost: AutoConfig.B.test:443\r\n\r\n",
        );
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/mail/config-v1.1.xml"));
        assert_eq!(r.host.as_deref(), Some("autoconfig.b.test"));
        assert_eq!(r.query_param("emailaddress").as_deref(), Some("a@b.test"));
        assert_eq!(r.query_param("other"), None);
        assert!(r.body.is_empty());
        assert_eq!(r.authorization, None);
        let authorized = complete(b"GET / HTTP/1.1\r\nAuthorization:  Basic YTpi \r\n\r\n");
        assert_eq!(authorized.authorization.as_deref(), Some("Basic YTpi"));
        let bare = complete(b"HEAD / HTTP/1.0\n\n");
        assert_eq!((bare.method.as_str(), bare.host), ("HEAD", None));
        assert_eq!(complete(b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n").host.as_deref(), Some("[::1]"));
    }

    #[test]
    fn reads_a_body_of_content_length() {
        let post = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..post.len() {
            assert_eq!(parse(&post[..cut], LIMITS), Parsed::Incomplete, "cut at {cut}");
        }
        assert_eq!(complete(post).body, b"hello");
        // Bytes past the body (a pipelined request) are not part of it.
        assert_eq!(complete(b"POST /x HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nhiGET").body, b"hi");
    }

    #[test]
    fn refuses_what_it_cannot_bound_or_read() {
        let refused = |buf: &[u8]| match parse(buf, LIMITS) {
            Parsed::Refused(r) => r,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        };
        assert_eq!(refused(b"POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n"), Refusal::TooLarge);
        assert_eq!(refused(b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), Refusal::TooLarge);
        assert_eq!(refused(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Refusal::NotImplemented);
        assert_eq!(refused(&[b'a'; 256]), Refusal::HeadTooLarge);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend([b'a'; 300]);
        long.extend(b"\r\n\r\n");
        assert_eq!(refused(&long), Refusal::HeadTooLarge);
        for bad in [
            &b"GET  /x HTTP/1.1\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/2\r\n\r\n",
            b"GET /x HTTP/1.1 extra\r\n\r\n",
            b"G(T /x HTTP/1.1\r\n\r\n",
            b"\x00\xff\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length : 1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n",
            b"GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert_eq!(refused(bad), Refusal::BadRequest, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody\r\n\r\n"), Some(16), "the first blank line");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b+c").as_deref(), Some("a@b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }
}
