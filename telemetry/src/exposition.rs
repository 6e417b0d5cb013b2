//! The Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE` and one line
//! per sample, label values escaped.

use std::fmt::Write as _;

use crate::metric::Histogram;

/// Label names and values of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// A counter family with one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.line(name, "", labels, None, &value.to_string());
        }
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, i64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.line(name, "", labels, None, &value.to_string());
        }
    }

    /// A histogram family with one histogram per label set.
    pub fn histogram(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, &Histogram)]) {
        self.header(name, help, "histogram");
        for (labels, histogram) in samples {
            let (buckets, count, sum) = histogram.snapshot();
            for (bound, cumulative) in buckets {
                let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
                self.line(name, "_bucket", labels, Some(&le), &cumulative.to_string());
            }
            self.line(name, "_sum", labels, None, &sum.to_string());
            self.line(name, "_count", labels, None, &count.to_string());
        }
    }

    /// The finished page.
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, suffix: &str, labels: Labels<'_>, le: Option<&str>, value: &str) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let le = le.map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            self.out.push('{');
            for (i, (key, value)) in all.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn text_format() {
        let mut page = Exposition::new();
        page.counter("x_total", "Things.", &[(&[("kind", "a\"b\\c\nd")], 3), (&[], 1)]);
        page.gauge("y", "Now.", &[(&[("p", "imap")], -2)]);
        let h = Histogram::new(&[0.5]);
        h.observe(Duration::from_millis(250));
        page.histogram("z_seconds", "Time.", &[(&[("op", "get")], &h)]);
        assert_eq!(
            page.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{kind=\"a\\\"b\\\\c\\nd\"} 3\nx_total 1\n\
             # HELP y Now.\n# TYPE y gauge\ny{p=\"imap\"} -2\n\
             # HELP z_seconds Time.\n# TYPE z_seconds histogram\n\
             z_seconds_bucket{op=\"get\",le=\"0.5\"} 1\nz_seconds_bucket{op=\"get\",le=\"+Inf\"} 1\n\
             z_seconds_sum{op=\"get\"} 0.25\nz_seconds_count{op=\"get\"} 1\n"
        );
    }
}
