//! The `query` command: a client of the collector's query API that prints rows as a table, JSON or CSV.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// Ask a fieldvitals collector for Core Web Vitals statistics.
#[derive(Debug, Parser)]
#[command(name = "query", version, about)]
pub struct Cli {
    /// The collector's base URL.
    #[arg(
        long,
        global = true,
        env = "FIELDVITALS_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Bearer token for the query API, when the collector requires one.
    #[arg(long, global = true, env = "FIELDVITALS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// What to ask.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table with the rating shares as percentages.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// p75 per group (CrUX's headline number).
    P75(Selection),
    /// Any quantiles per group.
    Quantiles {
        /// Quantiles, comma-separated, like 0.5,0.75,0.9.
        #[arg(long, default_value = "0.5,0.75,0.9,0.95,0.99")]
        q: String,
        /// What to select.
        #[command(flatten)]
        selection: Selection,
    },
}

/// The selection shared by every subcommand; names match the HTTP parameters.
#[derive(Debug, Args)]
pub struct Selection {
    /// Site id.
    #[arg(long)]
    pub site: String,
    /// LCP, INP, CLS, FCP or TTFB.
    #[arg(long)]
    pub metric: String,
    /// Group by any of page, device, release, nav (comma-separated).
    #[arg(long)]
    pub by: Option<String>,
    /// Only this page (like /products/:id).
    #[arg(long)]
    pub page: Option<String>,
    /// Only this device class.
    #[arg(long)]
    pub device: Option<String>,
    /// Only this release.
    #[arg(long)]
    pub release: Option<String>,
    /// Only this navigation type.
    #[arg(long)]
    pub nav: Option<String>,
    /// Start, RFC 3339 (default: 28 days before `to`).
    #[arg(long)]
    pub from: Option<String>,
    /// End, RFC 3339 (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Most rows.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl Cli {
    /// The API path and query parameters this invocation asks for.
    pub fn request(&self) -> (&'static str, Vec<(&'static str, String)>) {
        let (path, sel, q) = match &self.command {
            Command::P75(s) => ("/v1/p75", s, None),
            Command::Quantiles { q, selection } => ("/v1/quantiles", selection, Some(q.clone())),
        };
        let mut params = vec![("site", sel.site.clone()), ("metric", sel.metric.clone())];
        let optional = [
            ("by", &sel.by),
            ("page", &sel.page),
            ("device", &sel.device),
            ("release", &sel.release),
            ("nav", &sel.nav),
            ("from", &sel.from),
            ("to", &sel.to),
        ];
        params.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        );
        if let Some(l) = sel.limit {
            params.push(("limit", l.to_string()));
        }
        if let Some(q) = q {
            params.push(("q", q));
        }
        (path, params)
    }
}

/// Runs the command and returns what to print, or an error message.
pub async fn run(cli: &Cli) -> Result<String, String> {
    let (path, params) = cli.request();
    let url = format!("{}{}", cli.server.trim_end_matches('/'), path);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut req = client.get(&url).query(&params);
    if let Some(t) = &cli.token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach the collector at {}: {e}", cli.server))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| {
        format!(
            "the collector at {} answered {status} without JSON: {e}",
            cli.server
        )
    })?;
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        return Err(format!("the collector refused the query ({status}): {msg}"));
    }
    Ok(render(&body, cli.format))
}

/// Column names of the rows, in API order: the group keys, the statistics, then n and shares.
fn columns(rows: &[Value]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for (k, v) in r.as_object().into_iter().flatten() {
            let names: Vec<String> = match (k.as_str(), v) {
                ("quantiles", Value::Object(q)) => {
                    q.keys().map(|q| format!("p{}", q_label(q))).collect()
                }
                _ => vec![k.clone()],
            };
            for n in names {
                if !cols.contains(&n) {
                    cols.push(n);
                }
            }
        }
    }
    cols
}

/// `0.75` → `75`, `0.999` → `99.9`.
fn q_label(q: &str) -> String {
    q.parse::<f64>()
        .map(|f| format!("{}", (f * 1e6).round() / 1e4))
        .unwrap_or_else(|_| q.to_string())
}

fn cell(row: &Value, col: &str, table: bool) -> String {
    let v = row.get(col).cloned().or_else(|| {
        let q = row.get("quantiles")?.as_object()?;
        q.iter()
            .find(|(k, _)| format!("p{}", q_label(k)) == col)
            .map(|(_, v)| v.clone())
    });
    match v {
        None | Some(Value::Null) => if table { "-" } else { "" }.to_string(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if table && matches!(col, "good" | "ni" | "poor") => {
            format!("{:.1}%", n.as_f64().unwrap_or(0.0) * 100.0)
        }
        Some(Value::Number(n)) if table && n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f}")
            }
        }
        Some(other) => other.to_string(),
    }
}

/// Renders an API answer.
pub fn render(body: &Value, format: Format) -> String {
    let rows = body
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match format {
        Format::Json => serde_json::to_string_pretty(body).unwrap_or_default() + "\n",
        Format::Csv => {
            let cols = columns(&rows);
            let mut out = cols.join(",") + "\n";
            for r in &rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| csv_escape(&cell(r, c, false)))
                    .collect();
                out += &(cells.join(",") + "\n");
            }
            out
        }
        Format::Table => {
            let metric = body.get("metric").and_then(Value::as_str).unwrap_or("");
            let mut out = format!(
                "{} {} from {} to {}\n",
                body.get("site").and_then(Value::as_str).unwrap_or(""),
                metric,
                body.get("from").and_then(Value::as_str).unwrap_or(""),
                body.get("to").and_then(Value::as_str).unwrap_or("")
            );
            if rows.is_empty() {
                out += "no samples in this range\n";
                return out;
            }
            let cols = columns(&rows);
            let grid: Vec<Vec<String>> = rows
                .iter()
                .map(|r| cols.iter().map(|c| cell(r, c, true)).collect())
                .collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    grid.iter()
                        .map(|g| g[i].chars().count())
                        .max()
                        .unwrap_or(0)
                        .max(c.len())
                })
                .collect();
            // Text columns align left, numbers right.
            let numeric = |c: &str| !matches!(c, "page" | "device" | "release" | "nav");
            let line = |cells: Vec<String>| -> String {
                let parts: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .zip(&cols)
                    .map(|((s, w), c)| {
                        if numeric(c) {
                            format!("{s:>w$}")
                        } else {
                            format!("{s:<w$}")
                        }
                    })
                    .collect();
                parts.join("  ").trim_end().to_string() + "\n"
            };
            out += &line(cols.iter().map(|c| c.to_uppercase()).collect());
            for g in grid {
                out += &line(g);
            }
            if body.get("truncated").and_then(Value::as_bool) == Some(true) {
                out += "(more rows: raise --limit)\n";
            }
            out
        }
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"site":"demo","metric":"LCP","from":"2026-10-27T10:00:00Z","to":"2026-11-24T10:01:00Z","truncated":false,
            "rows":[{"page":"/products/:id","device":"phone","p75":2410.0,"n":1532,"good":0.61,"ni":0.27,"poor":0.12},
                    {"page":"/a,b","device":"desktop","p75":1234.5,"n":7,"good":1.0,"ni":0.0,"poor":0.0}]})
    }

    #[test]
    fn table_is_aligned_with_percent_shares() {
        let t = render(&body(), Format::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "demo LCP from 2026-10-27T10:00:00Z to 2026-11-24T10:01:00Z"
        );
        assert_eq!(
            lines[1],
            "PAGE           DEVICE      P75     N    GOOD     NI   POOR"
        );
        assert_eq!(
            lines[2],
            "/products/:id  phone      2410  1532   61.0%  27.0%  12.0%"
        );
        assert_eq!(
            lines[3],
            "/a,b           desktop  1234.5     7  100.0%   0.0%   0.0%"
        );
    }

    #[test]
    fn csv_escapes_and_quantile_columns() {
        assert_eq!(
            render(&body(), Format::Csv),
            "page,device,p75,n,good,ni,poor\n/products/:id,phone,2410.0,1532,0.61,0.27,0.12\n\"/a,b\",desktop,1234.5,7,1.0,0.0,0.0\n"
        );
        let q = json!({"rows":[{"device":"phone","quantiles":{"0.5":1.0,"0.999":2.0},"n":2,"good":1.0,"ni":0.0,"poor":0.0}]});
        assert_eq!(
            render(&q, Format::Csv),
            "device,p50,p99.9,n,good,ni,poor\nphone,1.0,2.0,2,1.0,0.0,0.0\n"
        );
    }
}
