//! Prometheus's text exposition format (version 0.0.4), written from values the node and
//! the controller already keep for `status`: each scrape renders a fresh snapshot, so
//! there is no registry to keep in step with the state. (A registry crate such as
//! `prometheus-client` would need a collector per family that does the same walk; the
//! format itself is a page of rules, written here once for both.)

use std::fmt::Write;

/// The content type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of metrics being written: [`Exposition::family`] then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    family: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Every sample until the next family
    /// belongs to it. `name` is a valid metric name (a constant in the caller).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        name.clone_into(&mut self.family);
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let family = std::mem::take(&mut self.family);
        self.named_sample(&family, labels, value);
        self.family = family;
        self
    }

    /// One sample named `name` (a histogram's `_bucket`, `_sum`, `_count`).
    pub fn named_sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// A histogram sample set: cumulative `buckets` as (upper bound, count), then the sum
    /// and the count of all observations.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        let family = std::mem::take(&mut self.family);
        let bucket = format!("{family}_bucket");
        for (bound, n) in buckets {
            let le = number(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.named_sample(&bucket, &with_le, *n as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.named_sample(&bucket, &with_le, count as f64);
        self.named_sample(&format!("{family}_sum"), labels, sum);
        self.named_sample(&format!("{family}_count"), labels, count as f64);
        self.family = family;
        self
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Integers without a fraction, the rest as Rust prints them; NaN and infinities spelled
/// as Prometheus reads them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_written_as_prometheus_reads_them() {
        let mut e = Exposition::new();
        e.family(
            "meshd_peer_sent_bytes_total",
            Kind::Counter,
            "Bytes sent.\nTo a peer.",
        )
        .sample(&[("peer", "89e92ceee5"), ("name", "a \"b\"\\c\nd")], 1234.0)
        .sample(&[], 0.5);
        e.family("meshd_push_seconds", Kind::Histogram, "Push latency.")
            .histogram(&[("replica", "1")], &[(0.01, 2), (0.1, 3)], 0.25, 4);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP meshd_peer_sent_bytes_total Bytes sent.\\nTo a peer.\n\
             # TYPE meshd_peer_sent_bytes_total counter\n\
             meshd_peer_sent_bytes_total{peer=\"89e92ceee5\",name=\"a \\\"b\\\"\\\\c\\nd\"} 1234\n\
             meshd_peer_sent_bytes_total 0.5\n\
             # HELP meshd_push_seconds Push latency.\n\
             # TYPE meshd_push_seconds histogram\n\
             meshd_push_seconds_bucket{replica=\"1\",le=\"0.01\"} 2\n\
             meshd_push_seconds_bucket{replica=\"1\",le=\"0.1\"} 3\n\
             meshd_push_seconds_bucket{replica=\"1\",le=\"+Inf\"} 4\n\
             meshd_push_seconds_sum{replica=\"1\"} 0.25\n\
             meshd_push_seconds_count{replica=\"1\"} 4\n"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
