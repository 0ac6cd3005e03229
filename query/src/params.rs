//! Query-string parameters of the stats endpoints, parsed into a request or a message naming the parameter.

use chrono::{DateTime, Utc};
use storage::{Filters, GroupBy};
use vitals::{DeviceClass, Metric, NavType, Quantile};

/// Default range: the last 28 days, as CrUX.
pub const DEFAULT_RANGE_DAYS: i64 = 28;
/// Default and largest row counts.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 100_000;
/// At most this many quantiles per request.
pub const MAX_QUANTILES: usize = 16;

/// A parsed stats request.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRequest {
    /// Site.
    pub site: String,
    /// Metric.
    pub metric: Metric,
    /// Grouping.
    pub by: GroupBy,
    /// Filters.
    pub filters: Filters,
    /// Start (inclusive); default `to` minus 28 days.
    pub from: Option<DateTime<Utc>>,
    /// End (exclusive); default now.
    pub to: Option<DateTime<Utc>>,
    /// Quantiles, as written by the caller and parsed.
    pub quantiles: Vec<(String, Quantile)>,
    /// Most rows returned (largest `n` first).
    pub limit: usize,
}

/// Which endpoint the parameters are for: `/v1/p75` takes no `q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/p75`.
    P75,
    /// `/v1/quantiles`.
    Quantiles,
}

/// Parses `key=value` pairs (already percent-decoded).
pub fn parse(pairs: &[(String, String)], endpoint: Endpoint) -> Result<StatsRequest, String> {
    let mut site = None;
    let mut metric = None;
    let mut by = GroupBy::default();
    let mut filters = Filters::default();
    let (mut from, mut to) = (None, None);
    let mut quantiles = Vec::new();
    let mut limit = DEFAULT_LIMIT;
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if seen.contains(&k.as_str()) {
            return Err(format!("{k}: given more than once"));
        }
        seen.push(k);
        match k.as_str() {
            "site" => {
                site = Some(
                    vitals::SiteId::parse(v)
                        .ok_or_else(|| format!("site: {v:?} is not a site id"))?,
                );
            }
            "metric" => {
                metric = Some(Metric::parse(v).ok_or_else(|| {
                    format!(
                        "metric: unknown metric {v:?}; expected one of LCP, INP, CLS, FCP, TTFB"
                    )
                })?)
            }
            "by" => by = parse_by(v)?,
            "page" => filters.page = Some(v.clone()),
            "device" => {
                filters.device = Some(DeviceClass::parse(v).ok_or_else(|| {
                    format!("device: unknown device class {v:?}; expected phone, tablet or desktop")
                })?)
            }
            "release" => filters.release = Some(v.clone()),
            "nav" => {
                filters.nav = Some(
                    NavType::parse(v)
                        .ok_or_else(|| format!("nav: unknown navigation type {v:?}"))?,
                )
            }
            "from" => from = Some(parse_time("from", v)?),
            "to" => to = Some(parse_time("to", v)?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| format!("limit: must be a whole number from 1 to {MAX_LIMIT}"))?
            }
            "q" if endpoint == Endpoint::Quantiles => {
                for part in v.split(',') {
                    let part = part.trim();
                    let q = Quantile::parse(part).map_err(|e| format!("q: {e}"))?;
                    if !quantiles.iter().any(|(s, _)| s == part) {
                        quantiles.push((part.to_string(), q));
                    }
                }
                if quantiles.len() > MAX_QUANTILES {
                    return Err(format!("q: at most {MAX_QUANTILES} quantiles"));
                }
            }
            other => return Err(format!("{other}: unknown parameter")),
        }
    }
    let site = site.ok_or("site: missing")?;
    let metric = metric.ok_or("metric: missing")?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err("from: must be before to".into());
        }
    }
    match endpoint {
        Endpoint::P75 => quantiles.push(("0.75".into(), Quantile::P75)),
        Endpoint::Quantiles if quantiles.is_empty() => {
            return Err("q: missing (like q=0.5,0.75,0.9)".into())
        }
        Endpoint::Quantiles => {}
    }
    Ok(StatsRequest {
        site: site.as_str().to_string(),
        metric,
        by,
        filters,
        from,
        to,
        quantiles,
        limit,
    })
}

fn parse_by(v: &str) -> Result<GroupBy, String> {
    let mut by = GroupBy::default();
    for key in v.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        match key {
            "page" => by.page = true,
            "device" => by.device = true,
            "release" => by.release = true,
            "nav" => by.nav = true,
            other => {
                return Err(format!(
                    "by: unknown key {other:?}; expected any of page, device, release, nav"
                ))
            }
        }
    }
    Ok(by)
}

fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{name}: {v:?} is not an RFC 3339 time like 2026-11-24T10:00:00Z ({e})")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, e: Endpoint) -> Result<StatsRequest, String> {
        let pairs: Vec<(String, String)> = s
            .split('&')
            .filter(|x| !x.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        parse(&pairs, e)
    }

    #[test]
    fn parses_the_contract_examples() {
        let r = p(
            "site=demo&metric=LCP&by=page,device&release=R&device=phone&page=/products/:id",
            Endpoint::P75,
        )
        .unwrap();
        assert_eq!(r.metric, Metric::Lcp);
        assert!(r.by.page && r.by.device && !r.by.release && !r.by.nav);
        assert_eq!(r.filters.device, Some(DeviceClass::Phone));
        assert_eq!(r.filters.page.as_deref(), Some("/products/:id"));
        assert_eq!(r.quantiles, vec![("0.75".to_string(), Quantile::P75)]);
        let r = p(
            "site=demo&metric=INP&q=0.5,0.75,0.9,0.95,0.99",
            Endpoint::Quantiles,
        )
        .unwrap();
        assert_eq!(
            r.quantiles.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
            ["0.5", "0.75", "0.9", "0.95", "0.99"]
        );
    }

    #[test]
    fn refusals_name_the_parameter() {
        let cases = [
            ("metric=LCP", Endpoint::P75, "site: missing"),
            ("site=demo", Endpoint::P75, "metric: missing"),
            (
                "site=demo&metric=FID",
                Endpoint::P75,
                "metric: unknown metric \"FID\"",
            ),
            (
                "site=demo&metric=LCP&by=page,country",
                Endpoint::P75,
                "by: unknown key \"country\"",
            ),
            (
                "site=demo&metric=LCP&from=yesterday",
                Endpoint::P75,
                "from: \"yesterday\" is not an RFC 3339 time",
            ),
            (
                "site=demo&metric=LCP&from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
                Endpoint::P75,
                "from: must be before to",
            ),
            (
                "site=demo&metric=LCP&device=watch",
                Endpoint::P75,
                "device: unknown device class",
            ),
            (
                "site=demo&metric=LCP&relase=1",
                Endpoint::P75,
                "relase: unknown parameter",
            ),
            (
                "site=demo&metric=LCP&q=0.5",
                Endpoint::P75,
                "q: unknown parameter",
            ),
            ("site=demo&metric=LCP", Endpoint::Quantiles, "q: missing"),
            (
                "site=demo&metric=LCP&q=0.5,2",
                Endpoint::Quantiles,
                "q: quantile \"2\" must be",
            ),
            (
                "site=demo&metric=LCP&limit=0",
                Endpoint::P75,
                "limit: must be",
            ),
            (
                "site=demo&site=x&metric=LCP",
                Endpoint::P75,
                "site: given more than once",
            ),
            (
                "site=a%20b&metric=LCP",
                Endpoint::P75,
                "site: \"a%20b\" is not a site id",
            ),
        ];
        for (q, e, want) in cases {
            let got = p(q, e).expect_err(q);
            assert!(got.starts_with(want), "{q}: got {got:?}, want {want:?}");
        }
    }
}
