//! The Prometheus text exposition format (0.0.4): [`PromWriter`] and the values it
//! writes ([`PromValue`]).

use std::{collections::HashMap, fmt::Write as _};

use tracing::warn;

/// The `Content-Type` of a text exposition: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample value in the exposition format.
pub trait PromValue {
    /// Appends the value as Prometheus writes it.
    fn write_value(&self, out: &mut String);
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl PromValue for $t {
            fn write_value(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_values!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl PromValue for f64 {
    fn write_value(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            // Debug keeps it short (1e300, not 300 digits) and Go parses it.
            let _ = write!(out, "{self:?}");
        }
    }
}

impl PromValue for f32 {
    fn write_value(&self, out: &mut String) {
        f64::from(*self).write_value(out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: String,
}

/// Builds a Prometheus text exposition (format 0.0.4).
///
/// Samples of one metric may be written in any order, interleaved with others
/// (e.g. every metric of shard 0, then of shard 1): each metric's `# HELP` and
/// `# TYPE` are written once, its samples grouped under them, metrics in the order
/// first seen. Label values are escaped (`\\`, `\"`, `\n`). A sample with an
/// invalid metric or label name, or a metric written once as a counter and once as
/// a gauge, is left out with a warning: the output is always valid. By convention
/// counter names end in `_total`.
#[derive(Debug, Default)]
pub struct PromWriter {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl PromWriter {
    /// An empty exposition.
    pub fn new() -> PromWriter {
        PromWriter::default()
    }

    /// Writes one sample of counter `name` (a value that only goes up).
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl PromValue,
    ) {
        self.sample(Kind::Counter, name, help, labels, &value);
    }

    /// Writes one sample of gauge `name` (a value that goes up and down).
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl PromValue,
    ) {
        self.sample(Kind::Gauge, name, help, labels, &value);
    }

    /// Writes one histogram `name` (labelled `labels`): `counts[i]` observations
    /// fell in bucket `i` — at most `bounds[i]` and above `bounds[i - 1]` — and
    /// `counts[bounds.len()]`, if given, above the last bound; `sum` is the sum
    /// of every observation. Written as Prometheus expects: cumulative
    /// `name_bucket{le="…"}` samples ending with `le="+Inf"`, then `name_sum` and
    /// `name_count` (the `+Inf` value). Bounds must be finite and increasing, and
    /// `counts` as long as `bounds` or one longer, and `le` is not a label the
    /// caller may use; otherwise the histogram is left out with a warning.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let increasing =
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]);
        let sized = counts.len() == bounds.len() || counts.len() == bounds.len() + 1;
        if !increasing || !sized || labels.iter().any(|(l, _)| *l == "le") {
            warn!(name, "metrics: malformed histogram; left out");
            return;
        }
        let Some(i) = self.family(Kind::Histogram, name, help, labels) else {
            return;
        };
        let s = &mut self.families[i].samples;
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (j, bound) in bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts[j]);
            le.clear();
            bound.write_value(&mut le);
            write_sample(s, &bucket, labels, Some(&le), &cumulative);
        }
        if let Some(above) = counts.get(bounds.len()) {
            cumulative = cumulative.saturating_add(*above);
        }
        write_sample(s, &bucket, labels, Some("+Inf"), &cumulative);
        write_sample(s, &format!("{name}_sum"), labels, None, &sum);
        write_sample(s, &format!("{name}_count"), labels, None, &cumulative);
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::with_capacity(
            self.families
                .iter()
                .map(|f| f.samples.len() + f.help.len() + 2 * f.name.len() + 24)
                .sum(),
        );
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            for c in f.help.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push_str(match f.kind {
                Kind::Counter => " counter\n",
                Kind::Gauge => " gauge\n",
                Kind::Histogram => " histogram\n",
            });
            out.push_str(&f.samples);
        }
        out
    }

    fn sample(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: &dyn PromValue,
    ) {
        if let Some(i) = self.family(kind, name, help, labels) {
            write_sample(&mut self.families[i].samples, name, labels, None, value);
        }
    }

    /// The family `name` of `kind` (created if new), or `None` with a warning if
    /// a name is invalid or `name` is already another kind.
    fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Option<usize> {
        if !valid_metric_name(name) {
            warn!(name, "metrics: invalid metric name; sample left out");
            return None;
        }
        if let Some((label, _)) = labels.iter().find(|(l, _)| !valid_label_name(l)) {
            warn!(name, label, "metrics: invalid label name; sample left out");
            return None;
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: String::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        if self.families[i].kind != kind {
            warn!(
                name,
                "metrics: written as two kinds (counter, gauge, histogram); sample left out"
            );
            return None;
        }
        Some(i)
    }
}

/// Appends one sample line: `name{labels,le="…"} value`.
fn write_sample(
    s: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &dyn PromValue,
) {
    s.push_str(name);
    let extra = le.map(|v| ("le", v));
    if !labels.is_empty() || extra.is_some() {
        s.push('{');
        for (j, (label, v)) in labels.iter().chain(extra.iter()).enumerate() {
            if j > 0 {
                s.push(',');
            }
            s.push_str(label);
            s.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    '"' => s.push_str("\\\""),
                    '\n' => s.push_str("\\n"),
                    c => s.push(c),
                }
            }
            s.push('"');
        }
        s.push('}');
    }
    s.push(' ');
    value.write_value(s);
    s.push('\n');
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    !name.starts_with("__")
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_with_one_help_and_type() {
        let mut w = PromWriter::new();
        w.counter("a_total", "A things.", &[("shard", "0")], 1u64);
        w.gauge("b", "B now.", &[("shard", "0")], -2i64);
        w.counter("a_total", "A things.", &[("shard", "1")], 3u64);
        w.gauge("c", "Line\\one\ntwo", &[], 0.5f64);
        assert_eq!(
            w.finish(),
            "# HELP a_total A things.\n# TYPE a_total counter\n\
             a_total{shard=\"0\"} 1\na_total{shard=\"1\"} 3\n\
             # HELP b B now.\n# TYPE b gauge\nb{shard=\"0\"} -2\n\
             # HELP c Line\\\\one\\ntwo\n# TYPE c gauge\nc 0.5\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = PromWriter::new();
        w.gauge("g", "G.", &[("k", "a\"b\\c\nd"), ("e", "")], 1u8);
        let text = w.finish();
        assert!(
            text.ends_with("g{k=\"a\\\"b\\\\c\\nd\",e=\"\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn invalid_names_and_kind_clashes_are_left_out() {
        let mut w = PromWriter::new();
        w.counter("1bad", "", &[], 1u64);
        w.counter("bad-name", "", &[], 1u64);
        w.counter("", "", &[], 1u64);
        w.counter("ok_total", "", &[("bad-label", "x")], 1u64);
        w.counter("ok_total", "", &[("__reserved", "x")], 1u64);
        assert!(w.is_empty());
        w.counter("ok_total", "", &[("good", "x")], 1u64);
        w.gauge("ok_total", "", &[("good", "y")], 2u64);
        let text = w.finish();
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
        assert!(text.contains("ok_total{good=\"x\"} 1\n"), "{text}");
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_sum_and_count() {
        let mut w = PromWriter::new();
        let bounds = [0.1, 0.5, 1.0];
        w.histogram(
            "lat_seconds",
            "Latency.",
            &[("shard", "0")],
            &bounds,
            &[2, 0, 3, 1],
            4.25,
        );
        w.histogram(
            "lat_seconds",
            "Latency.",
            &[("shard", "1")],
            &bounds,
            &[1, 1, 0],
            0.5,
        );
        assert_eq!(
            w.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{shard=\"0\",le=\"0.1\"} 2\n\
             lat_seconds_bucket{shard=\"0\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{shard=\"0\",le=\"1.0\"} 5\n\
             lat_seconds_bucket{shard=\"0\",le=\"+Inf\"} 6\n\
             lat_seconds_sum{shard=\"0\"} 4.25\n\
             lat_seconds_count{shard=\"0\"} 6\n\
             lat_seconds_bucket{shard=\"1\",le=\"0.1\"} 1\n\
             lat_seconds_bucket{shard=\"1\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{shard=\"1\",le=\"1.0\"} 2\n\
             lat_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{shard=\"1\"} 0.5\n\
             lat_seconds_count{shard=\"1\"} 2\n"
        );
    }

    #[test]
    fn malformed_histograms_are_left_out() {
        let mut w = PromWriter::new();
        w.histogram("h", "", &[], &[1.0, 0.5], &[1, 1], 1.0);
        w.histogram("h", "", &[], &[1.0, f64::INFINITY], &[1, 1], 1.0);
        w.histogram("h", "", &[], &[1.0], &[1, 1, 1], 1.0);
        w.histogram("h", "", &[("le", "x")], &[1.0], &[1], 1.0);
        assert!(w.is_empty());
        w.counter("c_total", "", &[], 1u64);
        w.histogram("c_total", "", &[], &[1.0], &[1], 1.0);
        assert!(!w.finish().contains("histogram"));
    }

    #[test]
    fn special_float_values() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 2.0] {
            v.write_value(&mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 1e300 2.0 ");
    }
}
