//! The versioned beacon wire format, parsed strictly into domain types.
//!
//! Version 1 (one JSON object per page view, sent as `text/plain` by `sendBeacon`):
//! ```json
//! {"v":1,"site":"demo","url":"https://shop.example/products/123?utm_source=x#top","release":"2026.11.2",
//!  "nav":"navigate","metrics":[{"name":"LCP","value":2310.5,"id":"v1-1732430000000-123"},{"name":"CLS","value":0.031}]}
//! ```
//! Unknown top-level and per-metric fields are ignored so that newer beacons keep working with older collectors.
//! Everything else is checked, and an error names the field at fault (`metrics[1].value: ...`).

use crate::metric::Metric;
use crate::page::{PageUrl, RouteRules, UrlError};
use serde_json::{Map, Value};

mod scanner;

/// The only wire version this collector reads.
pub const WIRE_VERSION: u64 = 1;
/// Longest `site`.
pub const MAX_SITE_BYTES: usize = 64;
/// Longest `release`.
pub const MAX_RELEASE_BYTES: usize = 64;
/// Longest metric `id`.
pub const MAX_ID_BYTES: usize = 128;
/// Longest `url` accepted (before its query string is dropped).
pub const MAX_URL_BYTES: usize = 8192;
/// Most keys in one metric's `attribution` object.
pub const MAX_ATTRIBUTION_KEYS: usize = 16;
/// Longest attribution key.
pub const MAX_ATTRIBUTION_KEY_BYTES: usize = 32;
/// Longest attribution string value; longer ones are cut (at a character boundary), not refused, because
/// selectors and URLs of real pages are long and the sample itself is still good.
pub const MAX_ATTRIBUTION_VALUE_BYTES: usize = 256;

/// A site identifier: 1–64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(String);

impl SiteId {
    /// Parses a site identifier.
    pub fn parse(s: &str) -> Option<SiteId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_SITE_BYTES
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        ok.then(|| SiteId(s.to_string()))
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A release label: 1–64 printable ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Release(String);

impl Release {
    /// Parses a release label.
    pub fn parse(s: &str) -> Option<Release> {
        let ok = !s.is_empty()
            && s.len() <= MAX_RELEASE_BYTES
            && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Release(s.to_string()))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the page view started, named as web-vitals names `navigationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NavType {
    /// A normal navigation (the default when a beacon does not say).
    Navigate,
    /// A reload.
    Reload,
    /// Back/forward without the bfcache.
    BackForward,
    /// Restored from the back/forward cache.
    BackForwardCache,
    /// A prerendered page that was activated.
    Prerender,
    /// Restored after the browser discarded the tab.
    Restore,
}

impl NavType {
    /// Every navigation type.
    pub const ALL: [NavType; 6] = [
        NavType::Navigate,
        NavType::Reload,
        NavType::BackForward,
        NavType::BackForwardCache,
        NavType::Prerender,
        NavType::Restore,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NavType::Navigate => "navigate",
            NavType::Reload => "reload",
            NavType::BackForward => "back-forward",
            NavType::BackForwardCache => "back-forward-cache",
            NavType::Prerender => "prerender",
            NavType::Restore => "restore",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<NavType> {
        NavType::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// A small integer code, stable on disk and in ClickHouse (the index in [`NavType::ALL`]).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The inverse of [`NavType::code`].
    pub fn from_code(code: u8) -> Option<NavType> {
        NavType::ALL.get(code as usize).copied()
    }
}

/// One validated metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which metric.
    pub metric: Metric,
    /// The value in the metric's unit: finite, at least 0, at most [`Metric::max_value`].
    pub value: f64,
    /// web-vitals' metric id, when sent.
    pub id: Option<String>,
    /// Attribution as a compact JSON object (keys and string lengths capped), when sent.
    pub attribution: Option<String>,
}

/// One validated page-view beacon.
#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    /// The site.
    pub site: SiteId,
    /// The normalised URL.
    pub url: PageUrl,
    /// The release, when sent.
    pub release: Option<Release>,
    /// The navigation type.
    pub nav: NavType,
    /// One to five samples, no metric twice.
    pub metrics: Vec<Sample>,
}

/// Why a beacon was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WireError {
    /// The field at fault, as a JSON path (`site`, `metrics[2].value`), or `body`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> WireError {
    WireError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Parses and validates a beacon body.
pub fn decode_beacon(body: &[u8]) -> Result<Beacon, WireError> {
    decode_beacon_with(body, &crate::page::NoRules)
}

/// What a decode keeps of each sample besides its metric and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleDetail {
    /// The `id` and the compacted `attribution` too.
    Full,
    /// Neither: both are checked exactly as for [`SampleDetail::Full`] (a beacon is accepted or refused alike),
    /// but not copied. The ingest path keeps only metric and value; copying ids and compacting attribution
    /// objects was a third of decoding a beacon.js beacon.
    ValuesOnly,
}

/// Parses and validates a beacon body, grouping pages with the site's route rules.
pub fn decode_beacon_with(body: &[u8], rules: &dyn RouteRules) -> Result<Beacon, WireError> {
    decode_beacon_detail(body, rules, SampleDetail::Full)
}

/// Parses and validates a beacon body, keeping `detail` of its samples.
///
/// Well-formed beacons take a borrowing scan ([`decode_fast`]); anything it does not accept as-is (errors, escaped
/// strings, `null` fields, duplicate keys) is parsed again by the general decoder, which alone produces errors.
/// Both give the same [`Beacon`] for every body the fast one accepts (property tests check it).
pub fn decode_beacon_detail(
    body: &[u8],
    rules: &dyn RouteRules,
    detail: SampleDetail,
) -> Result<Beacon, WireError> {
    if let Some(beacon) = decode_fast(body, rules, detail) {
        return Ok(beacon);
    }
    let mut beacon = decode_general(body, rules)?;
    if detail == SampleDetail::ValuesOnly {
        for s in &mut beacon.metrics {
            s.id = None;
            s.attribution = None;
        }
    }
    Ok(beacon)
}

/// Both decoders' answers, for the differential fuzz target (`fuzz/fuzz_targets/beacon_fast_path.rs`): whenever
/// the fast path answers, it must equal the general decoder's beacon. Not part of the API.
#[doc(hidden)]
pub fn decode_both_paths(body: &[u8]) -> (Option<Beacon>, Result<Beacon, WireError>) {
    (
        decode_fast(body, &crate::page::NoRules, SampleDetail::Full),
        decode_general(body, &crate::page::NoRules),
    )
}

/// The fast path: `None` whenever the body is anything but a valid beacon the [`scanner`] reads as-is; the general
/// decoder then decides (and words the error).
fn decode_fast(body: &[u8], rules: &dyn RouteRules, detail: SampleDetail) -> Option<Beacon> {
    let raw = scanner::scan(body, detail == SampleDetail::Full)?;
    let raw_metrics = raw.metrics?;
    let raw_url = raw.url?;
    // An integer's text only: `1.0` or `1e0` are not the integer 1 to the general decoder either.
    if raw.v.and_then(|v| v.parse::<u64>().ok()) != Some(WIRE_VERSION)
        || raw_url.len() > MAX_URL_BYTES
        || raw_metrics.is_empty()
        || raw_metrics.len() > Metric::ALL.len()
    {
        return None;
    }
    let site = SiteId::parse(raw.site?)?;
    let url = PageUrl::parse_with(raw_url, rules).ok()?;
    let release = match raw.release {
        None => None,
        Some(r) => Some(Release::parse(r)?),
    };
    let nav = match raw.nav {
        None => NavType::Navigate,
        Some(n) => NavType::parse(n)?,
    };
    let mut metrics: Vec<Sample> = Vec::with_capacity(raw_metrics.len());
    for m in raw_metrics {
        let name = m.name?;
        let value = m.value?;
        let metric = Metric::ALL.into_iter().find(|x| x.as_str() == name)?;
        let max = metric.max_value();
        if !value.is_finite()
            || !(0.0..=max).contains(&value)
            || metrics.iter().any(|s| s.metric == metric)
        {
            return None;
        }
        let id = match m.id {
            None => None,
            Some(s)
                if !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control) =>
            {
                (detail == SampleDetail::Full).then(|| s.to_string())
            }
            Some(_) => return None,
        };
        metrics.push(Sample {
            metric,
            value,
            id,
            attribution: m.attribution,
        });
    }
    Some(Beacon {
        site,
        url,
        release,
        nav,
        metrics,
    })
}

/// The general decoder: any JSON, every error named by field.
fn decode_general(body: &[u8], rules: &dyn RouteRules) -> Result<Beacon, WireError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| err("body", format!("malformed JSON ({e})")))?;
    let Value::Object(obj) = value else {
        return Err(err("body", "must be a JSON object"));
    };
    match obj.get("v") {
        None => return Err(err("v", "missing; this collector reads wire version 1")),
        Some(v) if v.as_u64() == Some(WIRE_VERSION) => {}
        Some(v) => {
            return Err(err(
                "v",
                format!("unsupported wire version {v}; this collector reads 1"),
            ))
        }
    }
    let site = required_str(&obj, "site")?;
    let site = SiteId::parse(site).ok_or_else(|| {
        err(
            "site",
            "must be 1-64 characters of letters, digits, '.', '_' or '-'",
        )
    })?;
    let url = required_str(&obj, "url")?;
    if url.len() > MAX_URL_BYTES {
        return Err(err("url", format!("longer than {MAX_URL_BYTES} bytes")));
    }
    let url = PageUrl::parse_with(url, rules).map_err(|e: UrlError| err("url", e.to_string()))?;
    let release = match optional_str(&obj, "release")? {
        None => None,
        Some(r) => Some(Release::parse(r).ok_or_else(|| {
            err(
                "release",
                "must be 1-64 printable ASCII characters without spaces",
            )
        })?),
    };
    let nav = match optional_str(&obj, "nav")? {
        None => NavType::Navigate,
        Some(n) => NavType::parse(n).ok_or_else(|| {
            err("nav", format!("unknown navigation type {n:?}; expected one of navigate, reload, back-forward, back-forward-cache, prerender, restore"))
        })?,
    };
    let metrics = match obj.get("metrics") {
        None | Some(Value::Null) => return Err(err("metrics", "missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("metrics", "must be an array")),
    };
    if metrics.is_empty() {
        return Err(err("metrics", "must hold at least one metric"));
    }
    if metrics.len() > Metric::ALL.len() {
        return Err(err(
            "metrics",
            "holds more than 5 entries; each metric may appear once",
        ));
    }
    let mut samples: Vec<Sample> = Vec::with_capacity(metrics.len());
    for (i, m) in metrics.iter().enumerate() {
        let sample = decode_sample(i, m)?;
        if samples.iter().any(|s| s.metric == sample.metric) {
            return Err(err(
                format!("metrics[{i}].name"),
                format!("{} appears more than once", sample.metric),
            ));
        }
        samples.push(sample);
    }
    Ok(Beacon {
        site,
        url,
        release,
        nav,
        metrics: samples,
    })
}

fn decode_sample(i: usize, m: &Value) -> Result<Sample, WireError> {
    let field = |f: &str| format!("metrics[{i}].{f}");
    let Value::Object(m) = m else {
        return Err(err(format!("metrics[{i}]"), "must be an object"));
    };
    let name = match m.get("name") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(err(field("name"), "missing")),
        Some(_) => return Err(err(field("name"), "must be a string")),
    };
    // The wire is what our beacon and web-vitals send: exact upper-case names.
    let metric = Metric::ALL
        .into_iter()
        .find(|x| x.as_str() == name)
        .ok_or_else(|| {
            err(
                field("name"),
                format!("unknown metric {name:?}; expected one of LCP, INP, CLS, FCP, TTFB"),
            )
        })?;
    let value = match m.get("value") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        None | Some(Value::Null) => {
            return Err(err(
                field("value"),
                "missing (NaN and Infinity are not numbers)",
            ))
        }
        Some(_) => return Err(err(field("value"), "must be a number")),
    };
    let max = metric.max_value();
    if !value.is_finite() || !(0.0..=max).contains(&value) {
        return Err(err(
            field("value"),
            format!("{value} is out of range for {metric}: must be between 0 and {max}"),
        ));
    }
    let id = match m.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        Some(_) => {
            return Err(err(
                field("id"),
                format!("must be a string of 1-{MAX_ID_BYTES} bytes"),
            ))
        }
    };
    let attribution = match m.get("attribution") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => Some(decode_attribution(&field("attribution"), a)?),
        Some(_) => return Err(err(field("attribution"), "must be an object")),
    };
    Ok(Sample {
        metric,
        value,
        id,
        attribution,
    })
}

fn decode_attribution(field: &str, a: &Map<String, Value>) -> Result<String, WireError> {
    if a.len() > MAX_ATTRIBUTION_KEYS {
        return Err(err(
            field,
            format!("has more than {MAX_ATTRIBUTION_KEYS} keys"),
        ));
    }
    let mut out = Map::new();
    for (k, v) in a {
        if k.is_empty() || k.len() > MAX_ATTRIBUTION_KEY_BYTES {
            return Err(err(
                field,
                format!("key {k:?} must be 1-{MAX_ATTRIBUTION_KEY_BYTES} bytes"),
            ));
        }
        let v = match v {
            Value::String(s) => Value::String(truncate(s, MAX_ATTRIBUTION_VALUE_BYTES).to_string()),
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Value::Number(n.clone()),
            Value::Null | Value::Bool(_) => v.clone(),
            _ => {
                return Err(err(
                    format!("{field}.{k}"),
                    "must be a string, number, boolean or null",
                ))
            }
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out).to_string())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, WireError> {
    optional_str(obj, key)?.ok_or_else(|| err(key, "missing"))
}

fn optional_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, WireError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(key, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"{"v":1,"site":"demo","url":"https://shop.example/products/123?utm_source=x#top","release":"2026.11.2",
 "nav":"navigate","metrics":[{"name":"LCP","value":2310.5,"id":"v1-1732430000000-123"},
 {"name":"INP","value":180},{"name":"CLS","value":0.031},{"name":"FCP","value":900},{"name":"TTFB","value":120}],"future":{"x":1}}"#;

    #[test]
    fn decodes_the_contract_example() {
        let b = decode_beacon(GOOD.as_bytes()).unwrap();
        assert_eq!(b.site.as_str(), "demo");
        assert_eq!(b.url.page(), "/products/:id");
        assert_eq!(b.release.as_ref().map(Release::as_str), Some("2026.11.2"));
        assert_eq!(b.nav, NavType::Navigate);
        assert_eq!(b.metrics.len(), 5);
        assert_eq!(b.metrics[0].value, 2310.5);
        assert_eq!(b.metrics[0].id.as_deref(), Some("v1-1732430000000-123"));
        assert_eq!(b.metrics[2].metric, Metric::Cls);
    }

    fn with(patch: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        let mut target = &mut v;
        let parts: Vec<&str> = patch.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            target = match p.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*p],
            };
        }
        let last = parts[parts.len() - 1];
        match value {
            Value::Null if last != "value" => {
                target.as_object_mut().unwrap().remove(last);
            }
            other => target[last] = other,
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn every_refusal_names_its_field() {
        use serde_json::json;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "body: malformed JSON"),
            (b"[1,2]".to_vec(), "body: must be a JSON object"),
            (with("v", Value::Null), "v: missing"),
            (with("v", json!(2)), "v: unsupported wire version 2"),
            (with("v", json!("1")), "v: unsupported wire version"),
            (with("site", Value::Null), "site: missing"),
            (with("site", json!("a b")), "site: must be"),
            (with("site", json!(7)), "site: must be a string"),
            (with("url", Value::Null), "url: missing"),
            (with("url", json!("/relative")), "url: must be an absolute http(s) URL"),
            (with("release", json!("")), "release: must be"),
            (with("nav", json!("teleport")), "nav: unknown navigation type \"teleport\""),
            (with("metrics", json!([])), "metrics: must hold at least one metric"),
            (with("metrics", json!({})), "metrics: must be an array"),
            (with("metrics.1.name", json!("FID")), "metrics[1].name: unknown metric \"FID\""),
            (with("metrics.1.name", json!("LCP")), "metrics[1].name: LCP appears more than once"),
            (with("metrics.0.value", json!(-1)), "metrics[0].value: -1 is out of range for LCP"),
            (with("metrics.2.value", json!(101)), "metrics[2].value: 101 is out of range for CLS"),
            (with("metrics.0.value", json!(3600001)), "metrics[0].value: 3600001 is out of range"),
            (with("metrics.0.value", Value::Null), "metrics[0].value: missing"),
            (with("metrics.0.value", json!("12")), "metrics[0].value: must be a number"),
            (with("metrics.0.id", json!(5)), "metrics[0].id: must be a string"),
            (with("metrics.0.attribution", json!([1])), "metrics[0].attribution: must be an object"),
            (with("metrics.0.attribution", json!({"a": {"b": 1}})), "metrics[0].attribution.a: must be a string"),
            (br#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":NaN}]}"#.to_vec(), "body: malformed JSON"),
            (br#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":1e999}]}"#.to_vec(), "body: malformed JSON"),
        ];
        for (body, want) in cases {
            let got = decode_beacon(&body).expect_err(want).to_string();
            assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
        }
    }

    #[test]
    fn optional_fields_default_and_attribution_is_capped() {
        let body = format!(
            r#"{{"v":1,"site":"d","url":"https://a.example/x","metrics":[{{"name":"CLS","value":0,"attribution":{{"target":"{}","t":12.5}}}}]}}"#,
            "é".repeat(200)
        );
        let b = decode_beacon(body.as_bytes()).unwrap();
        assert_eq!(b.nav, NavType::Navigate);
        assert_eq!(b.release, None);
        let a: Value = serde_json::from_str(b.metrics[0].attribution.as_deref().unwrap()).unwrap();
        assert_eq!(
            a["target"].as_str().unwrap().len(),
            MAX_ATTRIBUTION_VALUE_BYTES
        );
        assert_eq!(a["t"], 12.5);
    }

    /// A JSON fragment for a field: usually a good value, sometimes a wrong type, an escape, a bad value or null.
    fn field(
        good: &'static [&'static str],
        bad: &'static [&'static str],
    ) -> impl Strategy<Value = String> {
        prop_oneof![
            80 => proptest::sample::select(good).prop_map(str::to_string),
            4 => proptest::sample::select(bad).prop_map(str::to_string),
            1 => Just("null".to_string()),
            1 => Just("12".to_string()),
            1 => Just("[\"x\"]".to_string()),
            1 => Just("{}".to_string()),
            1 => Just("\"\"".to_string()),
            1 => Just("\"s\\u0069te\"".to_string()),
        ]
    }

    /// An attribution object: scalars of every kind (floats with noise, exponents, long and multi-byte strings),
    /// sometimes a repeated, empty or long key, a nested value, an escape, or too many keys.
    fn attribution_json() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            12 => Just(None),
            1 => Just(Some("k0".to_string())),
            1 => Just(Some(String::new())),
            1 => Just(Some("k".repeat(MAX_ATTRIBUTION_KEY_BYTES + 1))),
        ];
        let value = prop_oneof![
            30 => proptest::sample::select(
                &[
                    "\"#x\"", "\"\"", "0", "-0", "12", "-5", "0.1", "120.30000001192093", "1e2", "1E-7",
                    "18446744073709551616", "true", "false", "null", "\"é\"",
                ][..]
            )
            .prop_map(str::to_string),
            2 => (250usize..260, any::<bool>()).prop_map(|(n, wide)| {
                let unit = if wide { "é" } else { "x" };
                format!("\"{}\"", unit.repeat(n / unit.len()))
            }),
            1 => proptest::sample::select(&["1e400", "\"a\\\"b\"", "{}", "[1]", "01"][..])
                .prop_map(str::to_string),
        ];
        let object = |kv: Vec<(Option<String>, String)>| {
            let parts: Vec<String> = kv
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| format!("\"{}\":{v}", k.unwrap_or_else(|| format!("k{i}"))))
                .collect();
            format!("{{{}}}", parts.join(","))
        };
        prop_oneof![
            1 => field(&["{}"], &["7"]),
            8 => proptest::collection::vec((key.clone(), value.clone()), 0..8).prop_map(object),
            1 => proptest::collection::vec((key, value), 15..18).prop_map(object),
        ]
    }

    fn metric_json() -> impl Strategy<Value = String> {
        (
            field(
                &["\"LCP\"", "\"INP\"", "\"CLS\"", "\"FCP\"", "\"TTFB\""],
                &["\"lcp\""],
            ),
            field(
                &["0", "1", "0.031", "2310.5", "-0", "180", "1.0e2", "12e-1"],
                &["-1", "1e9", "7200000"],
            ),
            proptest::option::of(field(
                &["\"v1-123\"", "\"v1-9\""],
                &["\"a\\nb\"", "\"\\u0061\""],
            )),
            proptest::option::weighted(0.4, attribution_json()),
            proptest::option::of(field(&["true"], &["{}"])),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(name, value, id, attribution, extra, repeat)| {
                let mut parts = vec![format!("\"name\":{name}"), format!("\"value\":{value}")];
                parts.extend(id.map(|v| format!("\"id\":{v}")));
                parts.extend(attribution.map(|v| format!("\"attribution\":{v}")));
                parts.extend(extra.map(|v| format!("\"future\":{v}")));
                if repeat {
                    parts.push(format!("\"value\":{value}"));
                }
                format!("{{{}}}", parts.join(","))
            })
    }

    fn beacon_json() -> impl Strategy<Value = String> {
        (
            field(&["1"], &["2", "1.0", "\"1\""]),
            field(
                &["\"demo\"", "\"shop.example\""],
                &["\"bad site\"", "\"d\\u0065mo\""],
            ),
            field(
                &["\"https://a.example/p/1?q=1#f\"", "\"https://a.example/\""],
                &["\"ftp://x/\"", "\"/rel\""],
            ),
            proptest::option::of(field(&["\"2026.11.2\""], &["\"r 1\""])),
            proptest::option::of(field(
                &["\"navigate\"", "\"reload\"", "\"back-forward-cache\""],
                &["\"walk\""],
            )),
            proptest::collection::vec(metric_json(), 0..4),
            proptest::bool::weighted(0.1),
            proptest::option::of(Just("\"future\":{\"x\":[1,2]}".to_string())),
            any::<u8>(),
        )
            .prop_map(
                |(v, site, url, release, nav, metrics, as_array, extra, order)| {
                    let mut parts = vec![
                        format!("\"v\":{v}"),
                        format!("\"site\":{site}"),
                        format!("\"url\":{url}"),
                        format!("\"metrics\":[{}]", metrics.join(",")),
                    ];
                    parts.extend(release.map(|r| format!("\"release\":{r}")));
                    parts.extend(nav.map(|n| format!("\"nav\":{n}")));
                    parts.extend(extra);
                    if order % 10 == 0 {
                        // A repeated key: the general decoder keeps the last.
                        parts.push(format!("\"site\":{site}"));
                    }
                    let n = parts.len();
                    parts.rotate_left(order as usize % n);
                    if as_array {
                        format!("[{}]", parts.join(","))
                    } else {
                        format!("{{{}}}", parts.join(","))
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The fast path is an optimisation only: whatever it accepts, the general decoder decodes identically, and
        /// the public decoder's answer (beacon or error) is always the general decoder's.
        #[test]
        fn fast_and_general_decoders_agree(body in beacon_json()) {
            let general = decode_general(body.as_bytes(), &crate::page::NoRules);
            if let Some(fast) = decode_fast(body.as_bytes(), &crate::page::NoRules, SampleDetail::Full) {
                prop_assert_eq!(Ok(fast), general.clone(), "{}", body);
            }
            prop_assert_eq!(decode_beacon(body.as_bytes()), general, "{}", body);
        }
    }

    /// What the ingest path decodes: the full beacon less ids and attribution, or the very same error.
    fn values_only(body: &[u8]) -> Result<Beacon, WireError> {
        decode_beacon_detail(body, &crate::page::NoRules, SampleDetail::ValuesOnly)
    }

    fn without_detail(mut b: Beacon) -> Beacon {
        for s in &mut b.metrics {
            s.id = None;
            s.attribution = None;
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Keeping only values changes what is kept, never what is accepted, on either path.
        #[test]
        fn values_only_decoding_accepts_and_refuses_alike(body in beacon_json()) {
            let full = decode_beacon(body.as_bytes());
            prop_assert_eq!(values_only(body.as_bytes()), full.clone().map(without_detail), "{}", body);
            if let Some(fast) = decode_fast(body.as_bytes(), &crate::page::NoRules, SampleDetail::ValuesOnly) {
                prop_assert_eq!(Ok(fast), full.map(without_detail), "{}", body);
            }
        }

        #[test]
        fn values_only_decoding_checks_attribution_alike(attrs in proptest::collection::vec(attribution_json(), 1..4)) {
            let metrics: Vec<String> = attrs
                .iter()
                .zip(["LCP", "INP", "CLS"])
                .map(|(a, name)| format!(r#"{{"name":"{name}","value":1.5,"id":"v1-7","attribution":{a}}}"#))
                .collect();
            let body = format!(r#"{{"v":1,"site":"d","url":"https://a.example/","metrics":[{}]}}"#, metrics.join(","));
            let full = decode_beacon(body.as_bytes());
            prop_assert_eq!(values_only(body.as_bytes()), full.clone().map(without_detail), "{}", body);
            if let Some(fast) = decode_fast(body.as_bytes(), &crate::page::NoRules, SampleDetail::ValuesOnly) {
                prop_assert_eq!(Ok(fast), full.map(without_detail), "{}", body);
            }
        }
    }

    #[test]
    fn values_only_decoding_refuses_what_full_decoding_refuses_in_attribution() {
        let body = |attribution: &str| {
            format!(
                r#"{{"v":1,"site":"d","url":"https://a.example/","metrics":[{{"name":"LCP","value":1,"id":"v1-1","attribution":{attribution}}}]}}"#
            )
        };
        let seventeen: Vec<String> = (0..17).map(|i| format!(r#""k{i}":1"#)).collect();
        for attribution in [
            r#"{"a":1e400}"#.to_string(),
            r#"{"a":{"b":1}}"#.to_string(),
            r#"{"a":[1]}"#.to_string(),
            r#"{"":1}"#.to_string(),
            format!(r#"{{"{}":1}}"#, "k".repeat(33)),
            format!("{{{}}}", seventeen.join(",")),
            "7".to_string(),
        ] {
            let b = body(&attribution);
            let full = decode_beacon(b.as_bytes());
            assert_eq!(
                values_only(b.as_bytes()),
                full.clone().map(without_detail),
                "{attribution}"
            );
        }
        // And what it accepts, it accepts without the detail.
        let b = body(r#"{"a":1e300,"s":"x","t":true,"n":null,"f":false,"i":-3}"#);
        let kept = values_only(b.as_bytes()).unwrap();
        assert_eq!(
            (
                kept.metrics[0].id.as_deref(),
                kept.metrics[0].attribution.as_deref()
            ),
            (None, None)
        );
        assert!(decode_beacon(b.as_bytes()).unwrap().metrics[0]
            .attribution
            .is_some());
    }

    /// The agreement property above proves something only if its bodies reach the fast path, attribution
    /// included, and also reach the general decoder.
    #[test]
    fn the_generated_bodies_exercise_both_paths() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut fast, mut with_attribution, mut general) = (0, 0, 0);
        for _ in 0..2000 {
            let body = beacon_json().new_tree(&mut runner).unwrap().current();
            match decode_fast(body.as_bytes(), &crate::page::NoRules, SampleDetail::Full) {
                Some(b) => {
                    fast += 1;
                    with_attribution += b.metrics.iter().any(|m| m.attribution.is_some()) as usize;
                }
                None => general += 1,
            }
        }
        assert!(
            fast > 100 && with_attribution > 30 && general > 100,
            "{fast} {with_attribution} {general}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The same for attribution alone, on otherwise valid beacons: the scanner compacts it itself.
        #[test]
        fn fast_and_general_decoders_agree_on_attribution(attrs in proptest::collection::vec(attribution_json(), 1..4)) {
            let metrics: Vec<String> = attrs
                .iter()
                .zip(["LCP", "INP", "CLS"])
                .map(|(a, name)| format!(r#"{{"name":"{name}","value":1.5,"attribution":{a}}}"#))
                .collect();
            let body = format!(r#"{{"v":1,"site":"d","url":"https://a.example/","metrics":[{}]}}"#, metrics.join(","));
            let general = decode_general(body.as_bytes(), &crate::page::NoRules);
            if let Some(fast) = decode_fast(body.as_bytes(), &crate::page::NoRules, SampleDetail::Full) {
                prop_assert_eq!(Ok(fast), general.clone(), "{}", body);
            }
            prop_assert_eq!(decode_beacon(body.as_bytes()), general, "{}", body);
        }
    }

    #[test]
    fn the_fast_path_takes_typical_beacons_and_leaves_the_rest() {
        let rules = crate::page::NoRules;
        assert!(decode_fast(GOOD.as_bytes(), &rules, SampleDetail::Full).is_some());
        // What beacon.js sends: attribution on LCP, INP and CLS, with float noise and a missing-key-free object.
        let ours = r#"{"v":1,"site":"demo","url":"https://shop.example/p/1","nav":"navigate","metrics":[{"name":"LCP","value":2310.5,"id":"v1-1","attribution":{"target":"main>img.hero","url":"https://cdn.example/a.jpg","ttfb":120.30000001192093,"loadDelay":0,"loadTime":800,"renderDelay":1390.2}},{"name":"INP","value":96,"id":"v1-2","attribution":{"target":"button#buy","type":"pointerup","inputDelay":2.5,"processing":40,"presentation":53.5}},{"name":"CLS","value":0.031,"id":"v1-3","attribution":{"target":"div.ad","value":0.02,"time":1234.5}}]}"#;
        let fast = decode_fast(ours.as_bytes(), &rules, SampleDetail::Full)
            .expect("beacon.js's shape takes the fast path");
        assert_eq!(Ok(fast), decode_general(ours.as_bytes(), &rules));
        for other in [
            // JSON arrays must stay an error even though a derived struct would read them positionally.
            r#"[1,"d","https://a/",null,null,[{"name":"LCP","value":1}]]"#,
            r#"{"v":1,"site":"d","url":"https://a/","metrics":[["LCP",1]]}"#,
            r#"{"v":1,"site":"d","site":"e","url":"https://a/","metrics":[{"name":"LCP","value":1}]}"#,
            r#"{"v":1,"site":"d","url":"https://a/","release":null,"metrics":[{"name":"LCP","value":1}]}"#,
            r#"{"v":1,"site":"d","url":"https://a/\u0070","metrics":[{"name":"LCP","value":1}]}"#,
            r#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":1,"attribution":{"a":{"b":1}}}]}"#,
            r#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":1,"attribution":{"a":1,"a":2}}]}"#,
            r#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":1}]} x"#,
            r#"{"v":1,"site":"d","url":"https://a/","metrics":[{"name":"LCP","value":01}]}"#,
        ] {
            assert!(
                decode_fast(other.as_bytes(), &rules, SampleDetail::Full).is_none(),
                "{other}"
            );
        }
    }
}
