//! Text put into the XML documents (Thunderbird's, Autodiscover's and the Apple plist): one
//! escaping, so no name or address from a request or the config can open an element.

/// `s` as XML character data or an attribute value: the five special characters escaped, and
/// characters XML 1.0 cannot carry at all (controls other than tab and line ends) dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `<name>value</name>` on its own line at `indent` spaces, the value escaped.
pub fn element(out: &mut String, indent: usize, name: &str, value: &str) {
    out.push_str(&format!("{:indent$}<{name}>{}</{name}>\n", "", escape(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_carry() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{0}y\u{1b}z\tw"), "xyz\tw");
        let mut out = String::new();
        element(&mut out, 2, "Server", "</Server><Evil/>");
        assert_eq!(out, "  <Server>&lt;/Server&gt;&lt;Evil/&gt;</Server>\n");
    }
}
