//! Prometheus text exposition format, version 0.0.4: what a scraper reads from a `/metrics`
//! endpoint. Names come from code but label values from the database (query texts, relation
//! names), so everything is sanitized or escaped here and any input yields a parseable page.

use std::fmt::Write;

/// Metric type, printed on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Gauge,
    Counter,
}

/// One metric family: its HELP and TYPE lines, then one line per sample. Family names must be
/// unique within a page (after sanitizing): the caller groups samples by name.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// One sample: label pairs in the order given, and the value.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The exposition text of `families`, in the order given. Every line ends with a newline, so
/// the page does too (an empty slice gives an empty page, which scrapers accept).
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        render_family(&mut out, family);
    }
    out
}

/// A label value fit for a metric: whitespace runs collapsed to one space, trimmed, and cut to
/// at most `max_chars` characters (never inside a UTF-8 sequence). Keeps query-text labels
/// short, so series stay small and a reformatted query keeps its series.
pub fn bounded_label(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .split_whitespace()
        .flat_map(|word| " ".chars().chain(word.chars()))
        .skip(1) // the space before the first word
        .take(max_chars)
        .collect();
    // A cut right after a separator would leave a trailing space.
    out.truncate(out.trim_end().len());
    out
}

fn render_family(out: &mut String, family: &Family) {
    let name = sanitize_metric_name(&family.name);
    let help = escape_help(&family.help);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind_name(family.kind));
    for sample in &family.samples {
        render_sample(out, &name, sample);
    }
}

fn render_sample(out: &mut String, name: &str, sample: &Sample) {
    out.push_str(name);
    if !sample.labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in sample.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let label = sanitize_label_name(label);
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(sample.value));
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: other characters become `_`, a leading digit gets a `_` before it.
fn sanitize_metric_name(name: &str) -> String {
    sanitize_name(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, as for metric names but without colons.
fn sanitize_label_name(name: &str) -> String {
    sanitize_name(name, |c| c.is_ascii_alphanumeric() || c == '_')
}

fn sanitize_name(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    // Empty names are invalid too: `_` is the smallest valid one.
    if name.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if allowed(c) { c } else { '_' }));
    out
}

/// HELP text escapes only backslash and newline (quotes are literal there).
fn escape_help(help: &str) -> String {
    escape(help, false)
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(value: &str) -> String {
    escape(value, true)
}

fn escape(s: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out
}

/// Go's ParseFloat syntax: `NaN`, `+Inf`, `-Inf`, else Rust's shortest round-trip form
/// (`{:?}` switches to exponent notation for huge and tiny values, `{}` never does).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn family(name: &str, kind: Kind, samples: Vec<Sample>) -> Family {
        Family {
            name: name.to_owned(),
            help: format!("{name} help"),
            kind,
            samples,
        }
    }

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    /// Every line of `page` is a HELP, TYPE or sample line of the 0.0.4 grammar.
    fn assert_parses(page: &str) {
        let name = r"[a-zA-Z_:][a-zA-Z0-9_:]*";
        let label = r"[a-zA-Z_][a-zA-Z0-9_]*";
        let value = r#""(?:[^"\\\n]|\\[\\"n])*""#;
        let help = Regex::new(&format!(r"^# HELP {name} (?:[^\\\n]|\\[\\n])*$")).unwrap();
        let kind = Regex::new(&format!(r"^# TYPE {name} (?:gauge|counter)$")).unwrap();
        let sample = Regex::new(&format!(
            r"^{name}(?:\{{{label}={value}(?:,{label}={value})*\}})? (\S+)$"
        ))
        .unwrap();
        assert!(page.is_empty() || page.ends_with('\n'), "{page:?}");
        for line in page.lines() {
            if help.is_match(line) || kind.is_match(line) {
                continue;
            }
            let caps = sample
                .captures(line)
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let v = &caps[1];
            assert!(
                ["NaN", "+Inf", "-Inf"].contains(&v) || v.parse::<f64>().is_ok(),
                "bad value {v:?}"
            );
        }
    }

    #[test]
    fn renders_help_type_and_samples() {
        let page = render(&[
            family(
                "optidb_calls_total",
                Kind::Counter,
                vec![
                    sample(&[("queryid", "42"), ("db", "app")], 7.0),
                    sample(&[("queryid", "43"), ("db", "app")], 0.5),
                ],
            ),
            family("optidb_up", Kind::Gauge, vec![sample(&[], 1.0)]),
        ]);
        let expected = "# HELP optidb_calls_total optidb_calls_total help\n\
                        # TYPE optidb_calls_total counter\n\
                        optidb_calls_total{queryid=\"42\",db=\"app\"} 7.0\n\
                        optidb_calls_total{queryid=\"43\",db=\"app\"} 0.5\n\
                        # HELP optidb_up optidb_up help\n\
                        # TYPE optidb_up gauge\n\
                        optidb_up 1.0\n";
        assert_eq!(page, expected);
        assert_parses(&page);
    }

    #[test]
    fn family_without_samples_keeps_help_and_type() {
        let page = render(&[family("optidb_empty", Kind::Gauge, vec![])]);
        assert_eq!(
            page,
            "# HELP optidb_empty optidb_empty help\n# TYPE optidb_empty gauge\n"
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn escapes_help_and_label_values() {
        let mut f = family(
            "m",
            Kind::Gauge,
            vec![sample(&[("q", "a\\b \"c\"\nd")], 1.0)],
        );
        f.help = "back\\slash \"quoted\"\nsecond line".to_owned();
        let page = render(&[f]);
        assert!(page.contains("# HELP m back\\\\slash \"quoted\"\\nsecond line\n"));
        assert!(page.contains("m{q=\"a\\\\b \\\"c\\\"\\nd\"} 1.0\n"));
        assert_eq!(page.lines().count(), 3);
        assert_parses(&page);
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(
            sanitize_metric_name("optidb:calls_total"),
            "optidb:calls_total"
        );
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_metric_name("a-b.c d/é"), "a_b_c_d__");
        assert_eq!(sanitize_metric_name(""), "_");
        assert_eq!(sanitize_label_name("query:id"), "query_id");
        assert_eq!(sanitize_label_name("1st"), "_1st");
        assert_eq!(sanitize_label_name(""), "_");
        let page = render(&[family(
            "2 bad-name",
            Kind::Counter,
            vec![sample(&[("bad label", "v"), ("0", "w")], 3.0)],
        )]);
        assert!(page.contains("_2_bad_name{bad_label=\"v\",_0=\"w\"} 3.0\n"));
        assert_parses(&page);
    }

    #[test]
    fn formats_special_and_extreme_values() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(3.0), "3.0");
        assert_eq!(format_value(-0.25), "-0.25");
        for v in [
            1e300,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            123456789.0,
            -7.5e-9,
        ] {
            let text = format_value(v);
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
        let samples = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 0.0]
            .into_iter()
            .map(|v| sample(&[], v))
            .collect();
        assert_parses(&render(&[family("v", Kind::Gauge, samples)]));
    }

    #[test]
    fn bounded_label_collapses_whitespace_and_cuts_on_char_boundary() {
        assert_eq!(
            bounded_label("  SELECT\n\t*   FROM t  ", 100),
            "SELECT * FROM t"
        );
        assert_eq!(bounded_label("SELECT * FROM t", 8), "SELECT *");
        // The cut lands on the separator: no trailing space.
        assert_eq!(bounded_label("SELECT   *", 7), "SELECT");
        assert_eq!(bounded_label("héllo wörld", 7), "héllo w");
        assert_eq!(bounded_label("日本語のテキスト", 3), "日本語");
        assert_eq!(bounded_label("abc", 0), "");
        assert_eq!(bounded_label(" \n ", 5), "");
        let label = bounded_label(&"x\u{2003}".repeat(1000), 10);
        assert_eq!(label.chars().count(), 9);
        assert_eq!(label, "x x x x x");
    }

    #[test]
    fn hostile_label_values_still_parse() {
        let text = "SELECT '}\"' \\ FROM \"t\"\n-- ,x=\"y\"}";
        let page = render(&[family(
            "optidb_mean_ms",
            Kind::Gauge,
            vec![sample(
                &[("query", &bounded_label(text, 60)), ("raw", text)],
                1.5,
            )],
        )]);
        assert_parses(&page);
        assert_eq!(page.lines().count(), 3);
    }
}
