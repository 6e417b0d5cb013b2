//! A response and its bytes on the wire: every status line and the fields every answer
//! carries, in one place.

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (its reason phrase comes from [`reason`]).
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// More header fields (`Content-Disposition`, `Allow`…).
    pub headers: Vec<(&'static str, String)>,
    /// The body; a HEAD answer sends its length but not the bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A 200 with `body` of type `content_type`.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status: 200, content_type, headers: Vec::new(), body: body.into() }
    }

    /// An error or other status with a one-line plain-text explanation.
    pub fn text(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{message}\n").into_bytes(),
        }
    }

    /// The same with one more header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes to send: status line, fields, and the body unless `head_only` (a HEAD).
    /// One request per connection, so every answer says `Connection: close`.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            // Values are ours, but a stray line break would split the head: drop it.
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The reason phrase of the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_head_and_body() {
        let r = Response::ok("text/plain", "hi").with_header("X-A", "b\r\nInjected: yes");
        let bytes = String::from_utf8(r.encode(false)).expect("utf-8");
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\
             X-A: bInjected: yes\r\n\r\nhi"
        );
        assert!(String::from_utf8(r.encode(true)).expect("utf-8").ends_with("\r\n\r\n"));
        assert!(Response::text(404, "no").encode(false).starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    }
}
