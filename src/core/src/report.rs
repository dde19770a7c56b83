//! A self-contained HTML report: one page with inline CSS and inline SVG charts, to be mailed,
//! attached to a ticket or opened offline. It has no script and loads nothing, so it is safe to
//! open anywhere; query texts and every other string from the database are user data and are
//! HTML-escaped on the way in (`escape_html`).

/// What the report shows. Strings are shown as given (escaped), numbers are formatted here.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub database: String,
    /// Already formatted timestamp text.
    pub generated_at: String,
    /// Already formatted, e.g. "last 7 days".
    pub range: String,
    pub bottlenecks: Vec<Bottleneck>,
    /// Latency percentile trends per top statement.
    pub trends: Vec<Trend>,
    /// Latency histogram of the top statement (or of all statements).
    pub histogram: Histogram,
    pub errors: Vec<ErrorRate>,
    pub health: Vec<HealthItem>,
    /// Health metrics over time (e.g. connections, cache hit %).
    pub health_series: Vec<Series>,
    pub alerts: Vec<AlertRow>,
    pub freshness: Vec<Freshness>,
}

#[derive(Debug, Clone, Default)]
pub struct Bottleneck {
    pub query_id: i64,
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub p95_ms: Option<f64>,
    pub reason: String,
    pub confidence: String,
    pub recommendations: Vec<Recommendation>,
}

#[derive(Debug, Clone, Default)]
pub struct Recommendation {
    pub id: i64,
    pub kind: String,
    pub ddl: String,
    pub confidence: String,
    pub gain_pct: Option<f64>,
    pub cost_before: Option<f64>,
    pub cost_after: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Trend {
    pub query_id: i64,
    pub label: String,
    pub points: Vec<TrendPoint>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrendPoint {
    pub at_epoch_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub title: String,
    pub buckets: Vec<Bucket>,
}

/// `upper_ms` is the bucket's exclusive upper bound; buckets ascend and the last may be
/// unbounded (`f64::INFINITY`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    pub upper_ms: f64,
    pub count: u64,
}

/// `calls` counts successful executions and `errors` failed ones, as in optidb's latency
/// views: the rate shown is errors / (calls + errors).
#[derive(Debug, Clone, Default)]
pub struct ErrorRate {
    pub query_id: i64,
    pub label: String,
    pub calls: i64,
    pub errors: i64,
}

#[derive(Debug, Clone, Default)]
pub struct HealthItem {
    pub item: String,
    pub value: Option<f64>,
    pub unit: String,
    /// "ok", "warning", "critical" or "unknown" (anything else is shown as unknown).
    pub status: String,
    pub details: String,
}

#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub unit: String,
    /// (epoch seconds, value).
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct AlertRow {
    pub rule: String,
    pub severity: String,
    pub fired_at: String,
    pub resolved_at: Option<String>,
    pub value: Option<f64>,
    pub details: String,
}

#[derive(Debug, Clone, Default)]
pub struct Freshness {
    pub view: String,
    pub refreshed_at: Option<String>,
    pub age_s: Option<f64>,
}

/// The whole page.
pub fn render(data: &ReportData) -> String {
    let bodies = [
        bottlenecks_body(&data.bottlenecks),
        trends_body(&data.trends),
        histogram_body(&data.histogram),
        errors_body(&data.errors),
        health_body(&data.health),
        health_trends_body(&data.health_series),
        alerts_body(&data.alerts),
        freshness_body(&data.freshness),
    ];
    let sections: String = SECTIONS
        .iter()
        .zip(&bodies)
        .map(|(&(id, title), body)| section(id, title, body))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n{}<body>\n{}<main>\n{sections}</main>\n{FOOTER}</body>\n</html>\n",
        head(&data.database),
        page_header(data),
    )
}

/// `s` with `& < > " '` replaced by entities: safe in element text and in quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Page frame

/// Section ids and titles, in page order (the nav and `render` both walk it).
const SECTIONS: [(&str, &str); 8] = [
    ("bottlenecks", "Bottlenecks"),
    ("trends", "Latency trends"),
    ("histogram", "Latency histogram"),
    ("errors", "Error rates"),
    ("health", "Health"),
    ("health-trends", "Health trends"),
    ("alerts", "Alerts"),
    ("freshness", "Data freshness"),
];

/// Statement texts in the bottleneck table are cut to this many characters; the full text
/// (up to `FULL_TEXT_CHARS`) sits in a collapsed `<details>` below.
const SHORT_TEXT_CHARS: usize = 300;
const FULL_TEXT_CHARS: usize = 20_000;

/// Freshness rows older than this are marked stale.
const STALE_AFTER_S: f64 = 3600.0;

const DASH: &str = "–";
const NO_DATA: &str = "<p class=\"empty\">no data yet</p>\n";
const FOOTER: &str = "<footer>Generated by optidb. This page is self-contained: no scripts, no \
                      external resources.</footer>\n";

/// A CSP as a second line of defence: even an escaping bug could not run a script or fetch
/// anything.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = r##"
:root{color-scheme:light dark;--fg:#1d2430;--muted:#5b6575;--bg:#f5f6f8;--card:#fff;--line:#dde1e7;--accent:#2f6fdf;--ok:#2e8540;--warn:#c77700;--crit:#c62828;--unknown:#7a8291}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8ee;--muted:#9aa4b2;--bg:#14171c;--card:#1c2027;--line:#303741;--accent:#6ea1ff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1120px;margin:0 auto;padding:0 20px}
header{padding-top:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 12px}
h3,figcaption{font-size:14px;font-weight:600;margin:0 0 6px}
.meta,.note,.qid,footer{color:var(--muted)}
.meta{margin:0}
nav{display:flex;flex-wrap:wrap;gap:4px 16px;margin-top:10px}
nav a{color:var(--accent);text-decoration:none}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0;overflow-x:auto}
footer{font-size:12px;padding-bottom:24px}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,pre{font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
pre{margin:6px 0 0;max-height:320px;overflow:auto}
.qid{display:block;font-size:11px}
details summary{cursor:pointer;color:var(--accent);font-size:12px}
tr.recs td{border-bottom-width:2px}
ul.recs{margin:0;padding-left:18px}
ul.recs li{margin:2px 0}
.tag{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;background:var(--line)}
.gain{color:var(--ok);font-weight:600}
.empty{color:var(--muted);font-style:italic;margin:0}
figure{margin:0 0 18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.minis{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px}
.minis svg.chart{max-width:400px}
.card{border:1px solid var(--line);border-left:5px solid var(--unknown);border-radius:6px;padding:10px 12px}
.card .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card p{margin:4px 0 0;color:var(--muted);font-size:12px}
.status-ok{border-left-color:var(--ok)}
.status-warning{border-left-color:var(--warn)}
.status-critical{border-left-color:var(--crit)}
.status-ok .status{color:var(--ok)}
.status-warning .status{color:var(--warn)}
.status-critical .status{color:var(--crit)}
.status{font-size:12px;font-weight:600;text-transform:uppercase;float:right}
.rate{width:120px;height:10px;background:var(--line);border-radius:5px;overflow:hidden}
.rate span{display:block;height:100%;background:var(--crit)}
.sev-critical{background:var(--crit);color:#fff}
.sev-warning{background:var(--warn);color:#fff}
.open{color:var(--crit);font-weight:600}
tr.stale td,tr.never td{color:var(--warn)}
svg.chart{display:block;width:100%;max-width:760px;height:auto}
svg.chart text{fill:var(--muted);font-size:11px}
svg.chart .axis{stroke:var(--muted);stroke-width:1}
svg.chart .gridline{stroke:var(--line);stroke-dasharray:3 3}
svg.chart .bar{fill:var(--accent)}
svg.chart polyline{fill:none;stroke-width:1.8;stroke-linejoin:round}
"##;

fn head(database: &str) -> String {
    format!(
        "<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>optidb report: {}</title>\n<style>{STYLE}</style>\n</head>\n",
        escape_html(database)
    )
}

fn page_header(data: &ReportData) -> String {
    let nav: String = SECTIONS
        .iter()
        .map(|(id, title)| format!("<a href=\"#{id}\">{title}</a>"))
        .collect();
    format!(
        "<header>\n<h1>optidb report: {}</h1>\n\
         <p class=\"meta\">Range: {} · Generated: {}</p>\n<nav>{nav}</nav>\n</header>\n",
        escape_html(&data.database),
        escape_html(&data.range),
        escape_html(&data.generated_at),
    )
}

fn section(id: &str, title: &str, body: &str) -> String {
    format!("<section id=\"{id}\">\n<h2>{title}</h2>\n{body}</section>\n")
}

// ---------------------------------------------------------------------------------------------
// Tables

/// A column header; numeric columns are right-aligned.
struct Column(&'static str, bool);

fn table(columns: &[Column], rows: &str) -> String {
    let head: String = columns
        .iter()
        .map(|Column(name, numeric)| {
            let class = if *numeric { " class=\"num\"" } else { "" };
            format!("<th{class}>{name}</th>")
        })
        .collect();
    format!("<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n")
}

/// A text cell; `text` is escaped.
fn td(text: &str) -> String {
    format!("<td>{}</td>", escape_html(text))
}

/// A right-aligned number cell; `text` is escaped.
fn td_num(text: &str) -> String {
    format!("<td class=\"num\">{}</td>", escape_html(text))
}

/// A pill showing `text`, with a class derived from it (e.g. `sev-critical`) for colour.
fn tag(prefix: &str, text: &str) -> String {
    format!(
        "<span class=\"tag {prefix}-{}\">{}</span>",
        css_token(text),
        escape_html(text)
    )
}

/// Lower-case ASCII letters, digits and dashes of `s`: a class name that data cannot break out
/// of, whatever it holds.
fn css_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Sections

const BOTTLENECK_COLUMNS: [Column; 7] = [
    Column("Statement", false),
    Column("Calls", true),
    Column("Total", true),
    Column("Mean", true),
    Column("p95", true),
    Column("Reason", false),
    Column("Confidence", false),
];

fn bottlenecks_body(items: &[Bottleneck]) -> String {
    if items.is_empty() {
        return NO_DATA.to_owned();
    }
    let rows: String = items.iter().map(bottleneck_rows).collect();
    table(&BOTTLENECK_COLUMNS, &rows)
}

/// The statement's row, then its recommendations in a full-width row below.
fn bottleneck_rows(b: &Bottleneck) -> String {
    let mut rows = format!(
        "<tr class=\"bottleneck\">{}{}{}{}{}{}<td>{}</td></tr>\n",
        statement_cell(b.query_id, &b.query),
        td_num(&fmt_count(b.calls)),
        td_num(&fmt_ms(b.total_ms)),
        td_num(&fmt_ms(b.mean_ms)),
        td_num(&b.p95_ms.map_or_else(|| DASH.to_owned(), fmt_ms)),
        td(&b.reason),
        tag("conf", &b.confidence),
    );
    if !b.recommendations.is_empty() {
        let items: String = b.recommendations.iter().map(recommendation_item).collect();
        rows += &format!(
            "<tr class=\"recs\"><td colspan=\"{}\"><ul class=\"recs\">{items}</ul></td></tr>\n",
            BOTTLENECK_COLUMNS.len()
        );
    }
    rows
}

/// The statement on one line, cut to `SHORT_TEXT_CHARS`; when cut, the full text (formatting
/// kept) in a collapsed `<details>`, which needs no script to open.
fn statement_cell(query_id: i64, query: &str) -> String {
    let (short, cut) = shorten(&collapse_whitespace(query), SHORT_TEXT_CHARS);
    let full = if cut {
        format!(
            "<details><summary>full text</summary><pre>{}</pre></details>",
            escape_html(&shorten(query, FULL_TEXT_CHARS).0)
        )
    } else {
        String::new()
    };
    format!(
        "<td class=\"stmt\"><code>{}</code><span class=\"qid\">query_id {query_id}</span>{full}</td>",
        escape_html(&short)
    )
}

fn recommendation_item(r: &Recommendation) -> String {
    let gain = r.gain_pct.map_or_else(String::new, |g| {
        format!(" <span class=\"gain\">simulated gain {}</span>", fmt_pct(g))
    });
    let cost = cost_text(r.cost_before, r.cost_after).map_or_else(String::new, |c| {
        format!(" <span class=\"cost\">{}</span>", escape_html(&c))
    });
    format!(
        "<li><span class=\"tag\">{}</span> <code>{}</code> {}{gain}{cost}</li>",
        escape_html(&r.kind),
        escape_html(&r.ddl),
        tag("conf", &r.confidence),
    )
}

/// "cost 1,234 → 56" from the simulated plan costs, or whichever side is known.
fn cost_text(before: Option<f64>, after: Option<f64>) -> Option<String> {
    match (before, after) {
        (Some(b), Some(a)) => Some(format!("cost {} → {}", fmt_num(b), fmt_num(a))),
        (Some(b), None) => Some(format!("cost before {}", fmt_num(b))),
        (None, Some(a)) => Some(format!("cost after {}", fmt_num(a))),
        (None, None) => None,
    }
}

fn trends_body(trends: &[Trend]) -> String {
    if trends.is_empty() {
        return NO_DATA.to_owned();
    }
    let figures: String = trends.iter().map(trend_figure).collect();
    format!("{figures}<p class=\"note\">Times in UTC.</p>\n")
}

fn trend_figure(t: &Trend) -> String {
    let series = |name, color, pick: fn(&TrendPoint) -> f64| Line {
        name,
        color,
        points: t.points.iter().map(|p| (p.at_epoch_s, pick(p))).collect(),
    };
    let chart = line_chart(&LineChart {
        title: &format!("Latency percentiles of {}", t.label),
        frame: WIDE,
        lines: vec![
            series("p50", COLORS[0], |p| p.p50_ms),
            series("p95", COLORS[1], |p| p.p95_ms),
            series("p99", COLORS[2], |p| p.p99_ms),
        ],
        format_y: &fmt_ms,
        zero_based: true,
    });
    format!(
        "<figure class=\"trend\"><figcaption>{} <span class=\"qid\">query_id {}</span></figcaption>\n{chart}</figure>\n",
        escape_html(&t.label),
        t.query_id
    )
}

/// Charts stay readable with this many bars at most: adjacent buckets are merged beyond.
const MAX_BARS: usize = 48;

fn histogram_body(h: &Histogram) -> String {
    let buckets = merge_buckets(trim_empty(&h.buckets), MAX_BARS);
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    if total == 0 {
        return NO_DATA.to_owned();
    }
    let bars: Vec<(String, u64)> = bucket_labels(&buckets)
        .into_iter()
        .zip(buckets.iter().map(|b| b.count))
        .collect();
    let title = if h.title.is_empty() {
        "Latency histogram".to_owned()
    } else {
        h.title.clone()
    };
    format!(
        "<figure><figcaption>{} <span class=\"qid\">{} executions</span></figcaption>\n{}</figure>\n",
        escape_html(&title),
        fmt_count(i64::try_from(total).unwrap_or(i64::MAX)),
        bar_chart(&title, &bars)
    )
}

/// Buckets from the first to the last non-empty one: empty tails only squeeze the bars.
fn trim_empty(buckets: &[Bucket]) -> &[Bucket] {
    let first = buckets.iter().position(|b| b.count > 0);
    let last = buckets.iter().rposition(|b| b.count > 0);
    match (first, last) {
        (Some(first), Some(last)) => &buckets[first..=last],
        _ => &[],
    }
}

/// At most `max` buckets, merging runs of neighbours: a merged bucket keeps the last upper
/// bound, so its "<x" label stays true.
fn merge_buckets(buckets: &[Bucket], max: usize) -> Vec<Bucket> {
    let run = buckets.len().div_ceil(max.max(1)).max(1);
    buckets
        .chunks(run)
        .map(|chunk| Bucket {
            upper_ms: chunk[chunk.len() - 1].upper_ms,
            count: chunk.iter().map(|b| b.count).sum(),
        })
        .collect()
}

/// "<1 ms", "<10 ms", ..., and "≥1 s" for an unbounded last bucket.
fn bucket_labels(buckets: &[Bucket]) -> Vec<String> {
    let mut previous = None;
    buckets
        .iter()
        .map(|b| {
            let label = match (b.upper_ms, previous) {
                (u, _) if u.is_finite() => format!("<{}", fmt_ms(u)),
                (u, Some(p)) if u == f64::INFINITY => format!("≥{}", fmt_ms(p)),
                (u, None) if u == f64::INFINITY => "all".to_owned(),
                _ => "?".to_owned(),
            };
            previous = Some(b.upper_ms).filter(|u| u.is_finite()).or(previous);
            label
        })
        .collect()
}

const ERROR_COLUMNS: [Column; 5] = [
    Column("Statement", false),
    Column("Calls", true),
    Column("Errors", true),
    Column("Error rate", true),
    Column("", false),
];

fn errors_body(rows: &[ErrorRate]) -> String {
    if rows.is_empty() {
        return NO_DATA.to_owned();
    }
    let rows: String = rows.iter().map(error_row).collect();
    table(&ERROR_COLUMNS, &rows)
}

fn error_row(e: &ErrorRate) -> String {
    let rate = error_rate_pct(e.calls, e.errors);
    format!(
        "<tr><td>{}<span class=\"qid\">query_id {}</span></td>{}{}{}<td>{}</td></tr>\n",
        escape_html(&e.label),
        e.query_id,
        td_num(&fmt_count(e.calls)),
        td_num(&fmt_count(e.errors)),
        td_num(&rate.map_or_else(|| DASH.to_owned(), fmt_pct)),
        rate_bar(rate.unwrap_or(0.0)),
    )
}

/// errors / (calls + errors) in percent, None before any execution.
fn error_rate_pct(calls: i64, errors: i64) -> Option<f64> {
    let (calls, errors) = (calls.max(0) as f64, errors.max(0) as f64);
    let total = calls + errors;
    (total > 0.0).then(|| 100.0 * errors / total)
}

/// A CSS bar rather than an SVG: it is a table decoration, not a chart.
fn rate_bar(pct: f64) -> String {
    let width = if pct.is_finite() {
        pct.clamp(0.0, 100.0)
    } else {
        0.0
    };
    format!("<div class=\"rate\"><span style=\"width:{width:.1}%\"></span></div>")
}

fn health_body(items: &[HealthItem]) -> String {
    if items.is_empty() {
        return NO_DATA.to_owned();
    }
    let cards: String = items.iter().map(health_card).collect();
    format!("<div class=\"grid\">\n{cards}</div>\n")
}

fn health_card(h: &HealthItem) -> String {
    let status = status_class(&h.status);
    let value = h
        .value
        .map_or_else(|| DASH.to_owned(), |v| fmt_with_unit(v, &h.unit));
    format!(
        "<div class=\"card status-{status}\"><span class=\"status\">{status}</span>\
         <div>{}</div><div class=\"value\">{}</div><p>{}</p></div>\n",
        escape_html(&h.item),
        escape_html(&value),
        escape_html(&h.details),
    )
}

/// One of the four status classes the stylesheet knows.
fn status_class(status: &str) -> &'static str {
    match status.trim().to_ascii_lowercase().as_str() {
        "ok" => "ok",
        "warning" => "warning",
        "critical" => "critical",
        _ => "unknown",
    }
}

fn health_trends_body(series: &[Series]) -> String {
    if series.is_empty() {
        return NO_DATA.to_owned();
    }
    let figures: String = series.iter().map(series_figure).collect();
    format!("<div class=\"minis\">\n{figures}</div>\n<p class=\"note\">Times in UTC.</p>\n")
}

fn series_figure(s: &Series) -> String {
    let title = match s.unit.trim() {
        "" => s.name.clone(),
        unit => format!("{} ({unit})", s.name),
    };
    let chart = line_chart(&LineChart {
        title: &title,
        frame: SMALL,
        lines: vec![Line {
            name: &s.name,
            color: COLORS[0],
            points: s.points.clone(),
        }],
        format_y: &|v| fmt_with_unit(v, &s.unit),
        zero_based: false,
    });
    format!(
        "<figure><figcaption>{}</figcaption>\n{chart}</figure>\n",
        escape_html(&title)
    )
}

const ALERT_COLUMNS: [Column; 6] = [
    Column("Rule", false),
    Column("Severity", false),
    Column("Fired", false),
    Column("Resolved", false),
    Column("Value", true),
    Column("Details", false),
];

fn alerts_body(alerts: &[AlertRow]) -> String {
    if alerts.is_empty() {
        return NO_DATA.to_owned();
    }
    let rows: String = alerts.iter().map(alert_row).collect();
    table(&ALERT_COLUMNS, &rows)
}

fn alert_row(a: &AlertRow) -> String {
    let resolved = match &a.resolved_at {
        Some(at) => td(at),
        None => "<td><span class=\"open\">open</span></td>".to_owned(),
    };
    let class = if a.resolved_at.is_none() {
        " class=\"open-alert\""
    } else {
        ""
    };
    format!(
        "<tr{class}>{}<td>{}</td>{}{resolved}{}{}</tr>\n",
        td(&a.rule),
        tag("sev", &a.severity),
        td(&a.fired_at),
        td_num(&a.value.map_or_else(|| DASH.to_owned(), fmt_num)),
        td(&a.details),
    )
}

const FRESHNESS_COLUMNS: [Column; 3] = [
    Column("View", false),
    Column("Refreshed at", false),
    Column("Age", true),
];

fn freshness_body(rows: &[Freshness]) -> String {
    if rows.is_empty() {
        return NO_DATA.to_owned();
    }
    let rows: String = rows.iter().map(freshness_row).collect();
    table(&FRESHNESS_COLUMNS, &rows)
}

fn freshness_row(f: &Freshness) -> String {
    let class = match (&f.refreshed_at, f.age_s) {
        (None, _) => " class=\"never\"",
        (_, Some(age)) if age > STALE_AFTER_S => " class=\"stale\"",
        _ => "",
    };
    format!(
        "<tr{class}>{}{}{}</tr>\n",
        td(&f.view),
        td(f.refreshed_at.as_deref().unwrap_or("never")),
        td_num(&f.age_s.map_or_else(|| DASH.to_owned(), fmt_age)),
    )
}

// ---------------------------------------------------------------------------------------------
// SVG charts

/// Series colours (p50, p95, p99), set as attributes so a chart copied out keeps them.
const COLORS: [&str; 3] = ["#2f6fdf", "#e08a00", "#c62828"];

/// Canvas size in viewBox units and the margins around the plot area.
#[derive(Debug, Clone, Copy)]
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    /// Time labels along the x axis (start, [middle,] end).
    x_ticks: usize,
}

impl Frame {
    fn x_span(&self) -> (f64, f64) {
        (self.left, self.width - self.right)
    }

    /// Bottom first: SVG y grows downwards, values upwards.
    fn y_span(&self) -> (f64, f64) {
        (self.height - self.bottom, self.top)
    }
}

const WIDE: Frame = Frame {
    width: 720.0,
    height: 240.0,
    left: 64.0,
    right: 16.0,
    top: 28.0,
    bottom: 30.0,
    x_ticks: 3,
};

const SMALL: Frame = Frame {
    width: 360.0,
    height: 140.0,
    left: 60.0,
    right: 12.0,
    top: 10.0,
    bottom: 26.0,
    x_ticks: 2,
};

/// Linear map from data [lo, hi] to canvas [from, to]; a single value maps to the middle.
#[derive(Debug, Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Scale {
    fn map(&self, v: f64) -> f64 {
        if self.hi > self.lo {
            self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
        } else {
            (self.from + self.to) / 2.0
        }
    }

    /// `n` evenly spaced values from lo to hi, or just lo when the range is a point.
    fn ticks(&self, n: usize) -> Vec<f64> {
        // Scales are built from finite values only, so this is the "single value" case.
        if self.hi <= self.lo || n < 2 {
            return vec![self.lo];
        }
        // lo (1 - t) + hi t: exact at both ends and finite even when hi - lo overflows.
        (0..n)
            .map(|i| i as f64 / (n - 1) as f64)
            .map(|t| self.lo * (1.0 - t) + self.hi * t)
            .collect()
    }
}

struct Line<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

struct LineChart<'a> {
    title: &'a str,
    frame: Frame,
    lines: Vec<Line<'a>>,
    format_y: &'a dyn Fn(f64) -> String,
    /// Start the y axis at zero (latencies) rather than at the smallest value (a cache hit
    /// ratio between 99 and 100).
    zero_based: bool,
}

/// Lines over time with y labels at min, middle and max and time labels; a one-point line is
/// a dot. Non-finite points are dropped; no finite point at all gives the "no data" note.
fn line_chart(chart: &LineChart) -> String {
    let lines: Vec<Line> = chart.lines.iter().map(finite_sorted).collect();
    let Some((x, y)) = scales(&lines, chart.frame, chart.zero_based) else {
        return NO_DATA.to_owned();
    };
    let mut svg = svg_open(chart.title, chart.frame);
    svg += &y_axis(chart.frame, &y, chart.format_y);
    svg += &time_axis(chart.frame, &x);
    for line in &lines {
        svg += &plot_line(line, &x, &y);
    }
    if lines.len() > 1 {
        svg += &legend(&lines, chart.frame);
    }
    svg + "</svg>\n"
}

/// The line's finite points in time order (a polyline follows the given order).
fn finite_sorted<'a>(line: &Line<'a>) -> Line<'a> {
    let mut points: Vec<(f64, f64)> = line
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Line {
        name: line.name,
        color: line.color,
        points,
    }
}

/// x and y scales covering every point, None without points.
fn scales(lines: &[Line], frame: Frame, zero_based: bool) -> Option<(Scale, Scale)> {
    let points = || lines.iter().flat_map(|l| l.points.iter());
    let (x_lo, x_hi) = min_max(points().map(|p| p.0))?;
    let (mut y_lo, mut y_hi) = min_max(points().map(|p| p.1))?;
    if zero_based {
        (y_lo, y_hi) = (y_lo.min(0.0), y_hi.max(0.0));
    }
    let (from, to) = frame.x_span();
    let x = Scale {
        lo: x_lo,
        hi: x_hi,
        from,
        to,
    };
    let (from, to) = frame.y_span();
    let y = Scale {
        lo: y_lo,
        hi: y_hi,
        from,
        to,
    };
    Some((x, y))
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `<svg>` with its accessible name; `title` is escaped.
fn svg_open(title: &str, frame: Frame) -> String {
    let title = escape_html(title);
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{title}\"><title>{title}</title>\n",
        px(frame.width),
        px(frame.height)
    )
}

/// Horizontal grid lines with value labels, and the two axis lines.
fn y_axis(frame: Frame, y: &Scale, format: &dyn Fn(f64) -> String) -> String {
    let (x0, x1) = frame.x_span();
    let (y0, _) = frame.y_span();
    let mut out = String::new();
    for v in y.ticks(3) {
        let at = y.map(v);
        out += &hline(x0, x1, at, "gridline");
        out += &text(x0 - 6.0, at + 4.0, "end", &format(v));
    }
    out += &hline(x0, x1, y0, "axis");
    out += &format!(
        "<line class=\"axis\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n",
        px(x0),
        px(frame.top),
        px(x0),
        px(y0)
    );
    out
}

/// Time labels under the plot: first, middle and last instants (seconds shown on short spans).
fn time_axis(frame: Frame, x: &Scale) -> String {
    let ticks = x.ticks(frame.x_ticks);
    let seconds = x.hi - x.lo < 3600.0;
    let baseline = frame.height - frame.bottom + 16.0;
    let last = ticks.len() - 1;
    ticks
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            // Outer labels grow inwards so they stay inside the viewBox.
            let anchor = match i {
                _ if last == 0 => "middle",
                0 => "start",
                i if i == last => "end",
                _ => "middle",
            };
            text(x.map(t), baseline, anchor, &fmt_epoch(t, seconds))
        })
        .collect()
}

fn plot_line(line: &Line, x: &Scale, y: &Scale) -> String {
    let name = escape_html(line.name);
    match line.points.as_slice() {
        [] => String::new(),
        [(vx, vy)] => format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\"><title>{name}</title></circle>\n",
            px(x.map(*vx)),
            px(y.map(*vy)),
            line.color
        ),
        points => {
            let coords: Vec<String> = points
                .iter()
                .map(|&(vx, vy)| format!("{},{}", px(x.map(vx)), px(y.map(vy))))
                .collect();
            format!(
                "<polyline stroke=\"{}\" points=\"{}\"><title>{name}</title></polyline>\n",
                line.color,
                coords.join(" ")
            )
        }
    }
}

/// Colour swatches with the line names, along the top edge.
fn legend(lines: &[Line], frame: Frame) -> String {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let x = frame.left + 70.0 * i as f64;
            format!(
                "<rect x=\"{}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{}\"/>{}",
                px(x),
                line.color,
                text(x + 14.0, 17.0, "start", line.name)
            )
        })
        .collect()
}

/// Vertical bars with a label under every few bars, each with a tooltip title; no bars or no
/// counts give the "no data" note.
fn bar_chart(title: &str, bars: &[(String, u64)]) -> String {
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0);
    if max == 0 {
        return NO_DATA.to_owned();
    }
    let frame = WIDE;
    let (x0, x1) = frame.x_span();
    let (from, to) = frame.y_span();
    let y = Scale {
        lo: 0.0,
        hi: max as f64,
        from,
        to,
    };
    let slot = (x1 - x0) / bars.len() as f64;
    // About one label per 60 units, so labels never overlap.
    let label_every = (bars.len() as f64 * 60.0 / (x1 - x0)).ceil().max(1.0) as usize;
    let mut svg = svg_open(title, frame);
    svg += &y_axis(frame, &y, &|v| fmt_num(v.round()));
    for (i, (label, count)) in bars.iter().enumerate() {
        let left = x0 + slot * i as f64;
        svg += &bar(left + slot * 0.1, slot * 0.8, &y, label, *count);
        if i % label_every == 0 {
            svg += &text(
                left + slot / 2.0,
                frame.height - frame.bottom + 16.0,
                "middle",
                label,
            );
        }
    }
    svg + "</svg>\n"
}

fn bar(x: f64, width: f64, y: &Scale, label: &str, count: u64) -> String {
    let top = y.map(count as f64);
    format!(
        "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}: {}</title></rect>\n",
        px(x),
        px(top),
        px(width),
        px(y.from - top),
        escape_html(label),
        fmt_count(i64::try_from(count).unwrap_or(i64::MAX)),
    )
}

fn hline(x0: f64, x1: f64, y: f64, class: &str) -> String {
    format!(
        "<line class=\"{class}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n",
        px(x0),
        px(y),
        px(x1),
        px(y)
    )
}

/// An SVG text element; `content` is escaped.
fn text(x: f64, y: f64, anchor: &str, content: &str) -> String {
    format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>\n",
        px(x),
        px(y),
        escape_html(content)
    )
}

/// A coordinate with one decimal; anything non-finite becomes 0 so no "NaN" reaches the SVG.
fn px(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Number and time formatting (plain text; callers escape)

/// Three significant digits or so, trailing zeros dropped: "1.2", "12.5", "123", "0.42".
fn compact(x: f64) -> String {
    let a = x.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 1.0 {
        1
    } else {
        2
    };
    let text = format!("{x:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    // A tiny negative rounds to "-0".
    if text == "-0" {
        "0".to_owned()
    } else {
        text
    }
}

/// A duration in milliseconds in the largest fitting unit: "420 µs", "1.2 ms", "3.4 s".
fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return DASH.to_owned();
    }
    let a = ms.abs();
    let (value, unit) = if a == 0.0 {
        (0.0, "ms")
    } else if a < 1.0 {
        (ms * 1000.0, "µs")
    } else if a < 1000.0 {
        (ms, "ms")
    } else if a < 60_000.0 {
        (ms / 1000.0, "s")
    } else if a < 3_600_000.0 {
        (ms / 60_000.0, "min")
    } else {
        (ms / 3_600_000.0, "h")
    };
    format!("{} {unit}", compact(value))
}

/// Bytes in binary units as PostgreSQL prints them: "512 kB", "1.5 GB".
fn fmt_bytes(bytes: f64) -> String {
    if !bytes.is_finite() {
        return DASH.to_owned();
    }
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", compact(value), UNITS[unit])
}

fn fmt_pct(pct: f64) -> String {
    if pct.is_finite() {
        format!("{}%", compact(pct))
    } else {
        DASH.to_owned()
    }
}

/// An age in seconds in human units: "45 s", "12 min", "3.5 h", "2.1 d".
fn fmt_age(seconds: f64) -> String {
    if !seconds.is_finite() {
        return DASH.to_owned();
    }
    // A refresh stamped slightly in the future (clock skew) is simply fresh.
    let s = seconds.max(0.0);
    let (value, unit) = if s < 60.0 {
        (s, "s")
    } else if s < 3600.0 {
        (s / 60.0, "min")
    } else if s < 86_400.0 {
        (s / 3600.0, "h")
    } else {
        (s / 86_400.0, "d")
    };
    format!("{} {unit}", compact(value))
}

/// `s` cut to at most `max` characters, the last an ellipsis when cut; and whether it was cut.
fn shorten(s: &str, max: usize) -> (String, bool) {
    if s.chars().count() <= max {
        return (s.to_owned(), false);
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    (out, true)
}

/// Whitespace runs (newlines, indentation) as one space: a statement reads on one line.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A plain number: compact when small, digit-grouped when large, exponent when huge.
fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        DASH.to_owned()
    } else if a >= 1e15 {
        format!("{x:.2e}")
    } else if a >= 10_000.0 {
        group_digits(&format!("{x:.0}"))
    } else {
        compact(x)
    }
}

fn fmt_count(n: i64) -> String {
    group_digits(&n.to_string())
}

/// "1234567" -> "1,234,567" (an integer's digits, optionally signed).
fn group_digits(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value in its unit: durations and sizes scaled, other units appended as given.
fn fmt_with_unit(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return DASH.to_owned();
    }
    match unit.trim() {
        "ms" => fmt_ms(value),
        "s" => fmt_ms(value * 1000.0),
        "bytes" | "B" => fmt_bytes(value),
        "%" => fmt_pct(value),
        "" => fmt_num(value),
        other => format!("{} {other}", fmt_num(value)),
    }
}

/// "YYYY-MM-DD HH:MM[:SS]" in UTC from epoch seconds.
fn fmt_epoch(epoch_s: f64, seconds: bool) -> String {
    // Past year 9999 (or before year 0) it is no date anyone means.
    if !epoch_s.is_finite() || epoch_s.abs() > 253_402_300_799.0 {
        return DASH.to_owned();
    }
    let secs = epoch_s.floor() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let day_s = secs.rem_euclid(86_400);
    let (h, min, s) = (day_s / 3600, day_s % 3600 / 60, day_s % 60);
    if seconds {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}")
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01, counting in
/// 400-year eras of 146097 days that start on March 1st (so the leap day ends a year).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    const HOSTILE: &str =
        "SELECT '<script>alert(1)</script>' AS \"x\" FROM t WHERE a = 'it''s' & b";

    fn points(n: usize) -> Vec<TrendPoint> {
        (0..n)
            .map(|i| TrendPoint {
                at_epoch_s: 1_700_000_000.0 + 600.0 * i as f64,
                p50_ms: 1.0 + i as f64,
                p95_ms: 5.0 + 2.0 * i as f64,
                p99_ms: 9.0 + 3.0 * i as f64,
            })
            .collect()
    }

    fn example() -> ReportData {
        ReportData {
            database: "app<db>".to_owned(),
            generated_at: "2024-05-01 12:00 UTC".to_owned(),
            range: "last 7 days".to_owned(),
            bottlenecks: vec![Bottleneck {
                query_id: -42,
                query: HOSTILE.to_owned(),
                calls: 1_234_567,
                total_ms: 3_400_000.0,
                mean_ms: 2.76,
                p95_ms: Some(12.5),
                reason: "seq scan on \"orders\" <big>".to_owned(),
                confidence: "high".to_owned(),
                recommendations: vec![Recommendation {
                    id: 7,
                    kind: "index".to_owned(),
                    ddl: "CREATE INDEX ON orders (customer_id) WHERE note <> '<b>'".to_owned(),
                    confidence: "medium".to_owned(),
                    gain_pct: Some(42.0),
                    cost_before: Some(12_345.0),
                    cost_after: Some(56.7),
                }],
            }],
            trends: vec![
                Trend {
                    query_id: 1,
                    label: "<script>alert('t')</script>".to_owned(),
                    points: points(50),
                },
                Trend {
                    query_id: 2,
                    label: "one point".to_owned(),
                    points: points(1),
                },
            ],
            histogram: Histogram {
                title: "All statements".to_owned(),
                buckets: vec![
                    Bucket {
                        upper_ms: 1.0,
                        count: 10,
                    },
                    Bucket {
                        upper_ms: 10.0,
                        count: 50,
                    },
                    Bucket {
                        upper_ms: 100.0,
                        count: 7,
                    },
                    Bucket {
                        upper_ms: 1000.0,
                        count: 1,
                    },
                    Bucket {
                        upper_ms: f64::INFINITY,
                        count: 2,
                    },
                ],
            },
            errors: vec![ErrorRate {
                query_id: 3,
                label: "INSERT <x>".to_owned(),
                calls: 90,
                errors: 10,
            }],
            health: vec![
                HealthItem {
                    item: "cache hit".to_owned(),
                    value: Some(99.5),
                    unit: "%".to_owned(),
                    status: "ok".to_owned(),
                    details: "fine & dandy".to_owned(),
                },
                HealthItem {
                    item: "connections".to_owned(),
                    value: None,
                    unit: String::new(),
                    status: "\" onmouseover=\"alert(1)".to_owned(),
                    details: String::new(),
                },
            ],
            health_series: vec![Series {
                name: "connections".to_owned(),
                unit: String::new(),
                points: vec![(1_700_000_000.0, 10.0), (1_700_003_600.0, 25.0)],
            }],
            alerts: vec![AlertRow {
                rule: "slow <query>".to_owned(),
                severity: "critical\" onclick=\"x".to_owned(),
                fired_at: "2024-05-01 10:00".to_owned(),
                resolved_at: None,
                value: Some(1500.0),
                details: "p95 > 1 s".to_owned(),
            }],
            freshness: vec![
                Freshness {
                    view: "optidb.latency_1h".to_owned(),
                    refreshed_at: Some("2024-05-01 09:00".to_owned()),
                    age_s: Some(7200.0),
                },
                Freshness {
                    view: "optidb.latency_5m".to_owned(),
                    refreshed_at: Some("2024-05-01 11:59".to_owned()),
                    age_s: Some(60.0),
                },
                Freshness {
                    view: "optidb.never".to_owned(),
                    refreshed_at: None,
                    age_s: None,
                },
            ],
        }
    }

    fn sections() -> impl Iterator<Item = &'static str> {
        SECTIONS.iter().map(|(id, _)| *id)
    }

    /// The body of section `id` in `page`.
    fn section_of<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("<section id=\"{id}\">")).unwrap();
        let end = page[start..].find("</section>").unwrap();
        &page[start..start + end]
    }

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain é"), "plain é");
    }

    #[test]
    fn user_text_never_appears_raw() {
        let page = render(&example());
        assert!(!page.contains("<script"), "raw script tag");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;"));
        assert!(page.contains("<title>optidb report: app&lt;db&gt;</title>"));
        assert!(!page.contains("<big>") && !page.contains("<b>") && !page.contains("<x>"));
    }

    #[test]
    fn quotes_cannot_break_out_of_attributes() {
        let page = render(&example());
        // No event-handler attribute anywhere, even where data went into a class or title.
        let handler = Regex::new(r"(?i)<[^>]*\son[a-z]+\s*=").unwrap();
        assert!(!handler.is_match(&page));
        assert!(page.contains("status-unknown"));
        assert!(page.contains("tag sev-criticalonclickx"));
        // Every aria-label is one well-formed quoted attribute with escaped content.
        let label = Regex::new(r#"aria-label="([^"]*)""#).unwrap();
        let labels: Vec<_> = label
            .captures_iter(&page)
            .map(|c| c[1].to_owned())
            .collect();
        assert!(labels.contains(
            &"Latency percentiles of &lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;".to_owned()
        ));
        assert!(labels.iter().all(|l| !l.contains('<') && !l.contains('\'')));
    }

    #[test]
    fn page_is_self_contained() {
        for data in [example(), ReportData::default()] {
            let page = render(&data);
            assert!(page.starts_with("<!DOCTYPE html>"));
            assert!(page.ends_with("</html>\n"));
            let lower = page.to_ascii_lowercase();
            for banned in [
                "<script",
                "http://",
                "https://",
                "javascript:",
                "<link",
                "<img",
                "url(",
            ] {
                assert!(!lower.contains(banned), "{banned}");
            }
            assert!(page.contains("<style>"));
        }
    }

    #[test]
    fn every_section_is_present() {
        let page = render(&example());
        for id in sections() {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
            assert!(page.contains(&format!("href=\"#{id}\"")), "{id}");
        }
        assert!(page.contains("app&lt;db&gt;") && page.contains("last 7 days"));
        assert!(page.contains("2024-05-01 12:00 UTC"));
    }

    #[test]
    fn empty_data_shows_notes_instead_of_charts() {
        let page = render(&ReportData::default());
        for id in sections() {
            assert!(section_of(&page, id).contains("no data yet"), "{id}");
        }
        assert!(!page.contains("<svg"));
        let empty_series = ReportData {
            trends: vec![Trend::default()],
            histogram: Histogram {
                title: "h".to_owned(),
                buckets: vec![Bucket {
                    upper_ms: 1.0,
                    count: 0,
                }],
            },
            health_series: vec![Series::default()],
            ..ReportData::default()
        };
        let page = render(&empty_series);
        for id in ["trends", "histogram", "health-trends"] {
            assert!(section_of(&page, id).contains("no data yet"), "{id}");
        }
        assert!(!page.contains("<svg"));
    }

    #[test]
    fn one_chart_per_trend_histogram_and_series() {
        let page = render(&example());
        assert_eq!(page.matches("class=\"chart\"").count(), 2 + 1 + 1);
        assert_eq!(page.matches("<svg").count(), 4);
        assert_eq!(section_of(&page, "trends").matches("<polyline").count(), 3);
        assert_eq!(section_of(&page, "trends").matches("<circle").count(), 3);
        assert_eq!(
            section_of(&page, "histogram")
                .matches("<rect class=\"bar\"")
                .count(),
            5
        );
    }

    fn chart_of(n: usize) -> String {
        trend_figure(&Trend {
            query_id: 1,
            label: "q".to_owned(),
            points: points(n),
        })
    }

    #[test]
    fn line_chart_for_zero_one_and_many_points() {
        let none = chart_of(0);
        assert!(none.contains("no data yet") && !none.contains("<svg"));

        let one = chart_of(1);
        assert!(one.contains("<svg class=\"chart\" viewBox=\"0 0 720.0 240.0\" role=\"img\""));
        assert!(one.contains("<title>Latency percentiles of q</title>"));
        assert_eq!(one.matches("<circle").count(), 3);
        assert!(!one.contains("<polyline"));

        let many = chart_of(200);
        assert_eq!(many.matches("<polyline").count(), 3);
        assert_eq!(many.matches(',').count(), 3 * 200, "one x,y pair per point");
        for name in ["p50", "p95", "p99"] {
            assert!(many.contains(&format!(">{name}</text>")), "legend {name}");
        }
        // Min (0, zero-based) and max (p99 of the last point) labels, start and end times.
        assert!(many.contains(">0 ms</text>") && many.contains(">606 ms</text>"));
        assert!(many.contains(">2023-11-14 22:13</text>"));
        assert!(many.contains(">2023-11-16 07:23</text>"));
    }

    #[test]
    fn non_finite_values_never_reach_the_svg() {
        let line = |points| Line {
            name: "l",
            color: COLORS[0],
            points,
        };
        let chart = |points| {
            line_chart(&LineChart {
                title: "t",
                frame: SMALL,
                lines: vec![line(points)],
                format_y: &fmt_ms,
                zero_based: false,
            })
        };
        let mixed = chart(vec![
            (0.0, f64::NAN),
            (1.0, 2.0),
            (f64::INFINITY, 3.0),
            (2.0, f64::NEG_INFINITY),
            (f64::NAN, 1.0),
            (3.0, 4.0),
        ]);
        assert!(mixed.contains("<polyline"));
        assert_eq!(mixed.matches(',').count(), 2);
        let only_bad = chart(vec![(f64::NAN, f64::NAN), (1.0, f64::INFINITY)]);
        assert!(only_bad.contains("no data yet"));
        let huge = chart(vec![(-1e308, -1.7e308), (1e308, 1.7e308), (0.0, 0.0)]);
        let flat = chart(vec![(5.0, 7.0), (5.0, 7.0)]);
        for svg in [mixed, only_bad, huge, flat] {
            let lower = svg.to_ascii_lowercase();
            assert!(!lower.contains("nan") && !lower.contains("inf"), "{svg}");
        }
        let bars = bar_chart("b", &[("<1 ms".to_owned(), 3), ("<2 ms".to_owned(), 0)]);
        assert!(!bars.contains("NaN") && bars.contains("&lt;1 ms"));
    }

    #[test]
    fn histogram_labels_and_merging() {
        let b = |upper_ms, count| Bucket { upper_ms, count };
        let labels = bucket_labels(&[
            b(0.1, 1),
            b(1.0, 1),
            b(10.0, 1),
            b(1000.0, 1),
            b(f64::INFINITY, 1),
        ]);
        assert_eq!(labels, ["<100 µs", "<1 ms", "<10 ms", "<1 s", "≥1 s"]);
        assert_eq!(bucket_labels(&[b(f64::INFINITY, 1)]), ["all"]);
        assert_eq!(bucket_labels(&[b(f64::NAN, 1)]), ["?"]);

        let buckets = [b(1.0, 0), b(2.0, 3), b(3.0, 0), b(4.0, 1), b(5.0, 0)];
        assert_eq!(trim_empty(&buckets), [b(2.0, 3), b(3.0, 0), b(4.0, 1)]);
        assert!(trim_empty(&[b(1.0, 0)]).is_empty());

        let many: Vec<Bucket> = (1..=1114).map(|i| b(i as f64, 1)).collect();
        let merged = merge_buckets(&many, MAX_BARS);
        assert!(merged.len() <= MAX_BARS);
        assert_eq!(merged.iter().map(|b| b.count).sum::<u64>(), 1114);
        assert_eq!(merged.last().unwrap().upper_ms, 1114.0);
        assert_eq!(merge_buckets(&many[..3], MAX_BARS).len(), 3);
    }

    #[test]
    fn bottleneck_rows_show_numbers_and_recommendations() {
        let page = render(&example());
        let section = section_of(&page, "bottlenecks");
        assert!(section.contains(">1,234,567</td>"));
        assert!(section.contains(">56.7 min</td>") && section.contains(">2.8 ms</td>"));
        assert!(section.contains(">12.5 ms</td>"));
        assert!(section.contains("query_id -42"));
        assert!(section.contains("simulated gain 42%"));
        assert!(section.contains("cost 12,345 → 56.7"));
        assert!(section.contains(
            "<code>CREATE INDEX ON orders (customer_id) WHERE note &lt;&gt; &#39;&lt;b&gt;&#39;</code>"
        ));
        assert!(section.contains("tag conf-high") && section.contains("tag conf-medium"));
    }

    #[test]
    fn long_statements_are_shortened() {
        let query = format!("SELECT\n  {} FROM t", "col, ".repeat(200));
        let cell = statement_cell(1, &query);
        let code = Regex::new(r"<code>([^<]*)</code>").unwrap();
        let short = &code.captures(&cell).unwrap()[1];
        assert!(short.ends_with('…'));
        assert!(short.chars().count() <= SHORT_TEXT_CHARS);
        assert!(short.starts_with("SELECT col, col,"));
        assert!(cell.contains("<details><summary>full text</summary><pre>SELECT\n  col,"));
        assert!(!statement_cell(1, "SELECT 1").contains("<details>"));
        assert_eq!(shorten("héllo", 3), ("hé…".to_owned(), true));
        assert_eq!(shorten("héllo", 5), ("héllo".to_owned(), false));
    }

    #[test]
    fn error_rates_and_bars() {
        let page = render(&example());
        let section = section_of(&page, "errors");
        assert!(section.contains(">10%</td>") && section.contains("width:10.0%"));
        assert!(section.contains("INSERT &lt;x&gt;"));
        assert_eq!(error_rate_pct(0, 0), None);
        assert_eq!(error_rate_pct(0, 5), Some(100.0));
        assert_eq!(rate_bar(f64::NAN), rate_bar(0.0));
        assert!(rate_bar(250.0).contains("width:100.0%"));
    }

    #[test]
    fn health_cards_and_alerts() {
        let page = render(&example());
        let health = section_of(&page, "health");
        assert!(health.contains("card status-ok") && health.contains(">99.5%</div>"));
        assert!(health.contains("fine &amp; dandy"));
        let alerts = section_of(&page, "alerts");
        assert!(alerts.contains("<span class=\"open\">open</span>"));
        assert!(alerts.contains(">1500</td>"));
        assert!(alerts.contains("slow &lt;query&gt;") && alerts.contains("p95 &gt; 1 s"));
    }

    #[test]
    fn stale_and_never_refreshed_views_are_marked() {
        let page = render(&example());
        let section = section_of(&page, "freshness");
        assert!(section.contains("<tr class=\"stale\"><td>optidb.latency_1h</td>"));
        assert!(section.contains(">2 h</td>"));
        assert!(section.contains("<tr><td>optidb.latency_5m</td>"));
        assert!(section.contains("<tr class=\"never\"><td>optidb.never</td><td>never</td>"));
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_ms(1.2), "1.2 ms");
        assert_eq!(fmt_ms(3400.0), "3.4 s");
        assert_eq!(fmt_ms(0.42), "420 µs");
        assert_eq!(fmt_ms(0.0), "0 ms");
        assert_eq!(fmt_ms(1.0), "1 ms");
        assert_eq!(fmt_ms(250.0), "250 ms");
        assert_eq!(fmt_ms(90_000.0), "1.5 min");
        assert_eq!(fmt_ms(7_200_000.0), "2 h");
        assert_eq!(fmt_ms(f64::NAN), DASH);
        assert_eq!(fmt_bytes(524_288.0), "512 kB");
        assert_eq!(fmt_bytes(100.0), "100 bytes");
        assert_eq!(fmt_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GB");
        assert_eq!(fmt_pct(12.345), "12.3%");
        assert_eq!(fmt_age(45.0), "45 s");
        assert_eq!(fmt_age(720.0), "12 min");
        assert_eq!(fmt_age(12_600.0), "3.5 h");
        assert_eq!(fmt_age(181_440.0), "2.1 d");
        assert_eq!(fmt_age(-5.0), "0 s");
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(-1_000), "-1,000");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_num(12_345.6), "12,346");
        assert_eq!(fmt_num(0.123), "0.12");
        assert_eq!(fmt_num(-0.001), "0");
        assert_eq!(fmt_num(2e20), "2.00e20");
        assert_eq!(fmt_with_unit(2.5, "s"), "2.5 s");
        assert_eq!(fmt_with_unit(3.0, "conns"), "3 conns");
        assert_eq!(fmt_with_unit(f64::INFINITY, "ms"), DASH);
    }

    #[test]
    fn formats_epochs_in_utc() {
        assert_eq!(fmt_epoch(0.0, false), "1970-01-01 00:00");
        assert_eq!(fmt_epoch(1_700_000_000.0, true), "2023-11-14 22:13:20");
        assert_eq!(fmt_epoch(951_782_400.0, false), "2000-02-29 00:00");
        assert_eq!(fmt_epoch(-1.0, true), "1969-12-31 23:59:59");
        assert_eq!(fmt_epoch(f64::NAN, false), DASH);
        assert_eq!(fmt_epoch(1e300, false), DASH);
    }
}
