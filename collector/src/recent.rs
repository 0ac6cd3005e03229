//! The most recent accepted samples per site, exactly as received: the "is my snippet working" view.
//!
//! Held in memory only (bounded per site and in the number of sites); it is a live view, not a store.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use storage::Accepted;

/// Samples kept per site.
pub const PER_SITE: usize = 1000;
/// Sites kept (a flood of made-up site names cannot grow this without bound).
pub const MAX_SITES: usize = 10_000;

/// One sample as `/v1/recent` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentSample {
    /// When the collector accepted the beacon (RFC 3339, ms).
    pub received_at: String,
    /// The normalised page.
    pub page: String,
    /// The path as sent, without query string and fragment.
    pub path: String,
    /// The host.
    pub host: String,
    /// Device class from the request headers.
    pub device: &'static str,
    /// Release label.
    pub release: Option<String>,
    /// Navigation type.
    pub nav: &'static str,
    /// Metric name.
    pub metric: &'static str,
    /// The value exactly as received.
    pub value: f64,
    /// The beacon's id for the metric.
    pub id: Option<String>,
    /// Attribution as received (length-capped by the decoder).
    pub attribution: Option<serde_json::Value>,
}

/// Largest body kept with a beacon. beacon.js sends ~700 bytes; a body may be up to 64 KiB, mostly unknown fields
/// that the decoder skips, and a ring of those would hold 64 MiB for one site.
pub const MAX_KEPT_BODY_BYTES: usize = 4096;

/// An accepted beacon as kept: what was stored, and the body it came in (up to [`MAX_KEPT_BODY_BYTES`]), for the
/// ids and attribution that the ingest path checks but does not keep. A larger body is decoded in full when pushed
/// and not kept: then `accepted` holds the ids and attribution itself, as bounded as the decoder bounds them.
struct Kept {
    accepted: Accepted,
    body: Option<Box<[u8]>>,
}

/// Per site, the latest accepted beacons, newest last, holding at most [`PER_SITE`] samples.
#[derive(Default)]
struct Ring {
    beacons: VecDeque<Arc<Kept>>,
    samples: usize,
}

impl Ring {
    /// Keeps `kept` (`n` samples), moving the oldest beacons past [`PER_SITE`] samples to `evicted`.
    fn push(&mut self, kept: Arc<Kept>, n: usize, evicted: &mut Vec<Arc<Kept>>) {
        self.beacons.push_back(kept);
        self.samples += n;
        while self.samples > PER_SITE {
            match self.beacons.pop_front() {
                Some(old) => {
                    self.samples -= old.accepted.beacon.metrics.len();
                    evicted.push(old);
                }
                None => break,
            }
        }
    }
}

/// The recent beacons of every site.
///
/// The ingest path only moves the accepted beacon in, with a copy of its body (one `Arc` and one buffer, no
/// per-sample strings: profiling showed building and dropping those on every beacon among the largest single costs
/// of ingest); the JSON view, ids and attribution included, is built when read.
#[derive(Default)]
pub struct Recent {
    sites: Mutex<HashMap<String, Ring>>,
}

impl Recent {
    /// Remembers an accepted beacon and the (decompressed) body it was decoded from.
    pub fn push(&self, accepted: Accepted, body: &[u8]) {
        let n = accepted.beacon.metrics.len();
        if n == 0 {
            return;
        }
        let kept = if body.len() <= MAX_KEPT_BODY_BYTES {
            Kept {
                accepted,
                body: Some(body.into()),
            }
        } else {
            let mut accepted = accepted;
            // The same body decodes to the same samples, now with their details (it was accepted, so this succeeds).
            if let Ok(full) = vitals::decode_beacon(body) {
                accepted.beacon.metrics = full.metrics;
            }
            Kept {
                accepted,
                body: None,
            }
        };
        // Both connection threads push here: the lock is held for the ring's bookkeeping only. The allocation is
        // made before it and the evicted beacons are freed after it (a connection thread that waited on this lock
        // while the other was preempted inside it waited for milliseconds).
        let kept = Arc::new(kept);
        let mut evicted = Vec::new();
        let mut sites = self.sites.lock().expect("recent lock");
        // One hash lookup for a known site (the map keeps SipHash: site names come from the internet).
        if let Some(ring) = sites.get_mut(kept.accepted.beacon.site.as_str()) {
            ring.push(kept, n, &mut evicted);
            drop(sites);
            drop(evicted);
            return;
        }
        if sites.len() >= MAX_SITES {
            return;
        }
        // The site's name is allocated once, when the site is first seen.
        let mut ring = Ring::default();
        let name = kept.accepted.beacon.site.as_str().to_string();
        ring.push(kept, n, &mut evicted);
        sites.insert(name, ring);
    }

    /// The latest `limit` samples of a site, newest first.
    pub fn latest(&self, site: &str, limit: usize) -> Vec<RecentSample> {
        // Copy the Arcs out so the lock is not held while formatting.
        let beacons: Vec<Arc<Kept>> = {
            let sites = self.sites.lock().expect("recent lock");
            match sites.get(site) {
                Some(r) => r.beacons.iter().rev().cloned().collect(),
                None => return Vec::new(),
            }
        };
        let mut out = Vec::with_capacity(limit.min(PER_SITE));
        for a in beacons {
            for s in expand(&a).into_iter().rev() {
                if out.len() == limit {
                    return out;
                }
                out.push(s);
            }
        }
        out
    }
}

/// One beacon's samples as shown.
fn expand(kept: &Kept) -> Vec<RecentSample> {
    let (a, b) = (&kept.accepted, &kept.accepted.beacon);
    // The kept body decoded in full: it was accepted, so this succeeds (else the samples show without ids).
    let full = kept
        .body
        .as_deref()
        .and_then(|body| vitals::decode_beacon(body).ok());
    let detailed = full.as_ref().map_or(&b.metrics, |f| &f.metrics);
    let detail = |metric: vitals::Metric| detailed.iter().find(|s| s.metric == metric);
    let at = DateTime::<Utc>::from_timestamp_millis(a.received_at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    b.metrics
        .iter()
        .map(|s| {
            let detail = detail(s.metric);
            RecentSample {
                received_at: at.clone(),
                page: b.url.page().to_string(),
                path: b.url.path().to_string(),
                host: b.url.host().to_string(),
                device: a.device.as_str(),
                release: b.release.as_ref().map(|r| r.as_str().to_string()),
                nav: b.nav.as_str(),
                metric: s.metric.as_str(),
                value: s.value,
                id: detail.and_then(|d| d.id.clone()),
                attribution: detail
                    .and_then(|d| d.attribution.as_deref())
                    .and_then(|j| serde_json::from_str(j).ok()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(site: &str, lcp: f64) -> String {
        format!(
            r#"{{"v":1,"site":"{site}","url":"https://a.example/","metrics":[{{"name":"LCP","value":{lcp},"id":"v1-{lcp}","attribution":{{"target":"img.hero","ttfb":12.5}}}},{{"name":"CLS","value":0.1}}]}}"#
        )
    }

    /// Pushes a beacon as the ingest path does: decoded without ids and attribution, with its body.
    fn push(r: &Recent, site: &str, lcp: f64) {
        let body = body(site, lcp);
        let beacon = vitals::wire::decode_beacon_detail(
            body.as_bytes(),
            &vitals::page::NoRules,
            vitals::SampleDetail::ValuesOnly,
        )
        .unwrap();
        assert!(beacon
            .metrics
            .iter()
            .all(|s| s.id.is_none() && s.attribution.is_none()));
        r.push(
            Accepted {
                id: 1,
                received_at_ms: 1_800_000_000_000,
                device: vitals::DeviceClass::Phone,
                beacon,
            },
            body.as_bytes(),
        );
    }

    #[test]
    fn ids_and_attribution_are_shown_from_the_kept_body() {
        let r = Recent::default();
        push(&r, "a", 2500.0);
        let shown = r.latest("a", 10);
        assert_eq!(shown.len(), 2);
        let (cls, lcp) = (&shown[0], &shown[1]);
        assert_eq!(
            (lcp.metric, lcp.value, lcp.id.as_deref()),
            ("LCP", 2500.0, Some("v1-2500"))
        );
        assert_eq!(
            lcp.attribution,
            Some(serde_json::json!({"target": "img.hero", "ttfb": 12.5}))
        );
        assert_eq!(
            (cls.metric, cls.id.as_deref(), cls.attribution.as_ref()),
            ("CLS", None, None)
        );
    }

    #[test]
    fn a_large_body_is_not_kept_but_its_details_are_shown() {
        let r = Recent::default();
        let padding = "x".repeat(60_000);
        let body = format!(
            r#"{{"v":1,"site":"big","url":"https://a.example/","future":"{padding}","metrics":[{{"name":"LCP","value":2500,"id":"v1-9","attribution":{{"target":"img"}}}}]}}"#
        );
        let beacon = vitals::wire::decode_beacon_detail(
            body.as_bytes(),
            &vitals::page::NoRules,
            vitals::SampleDetail::ValuesOnly,
        )
        .unwrap();
        let accepted = Accepted {
            id: 1,
            received_at_ms: 1_800_000_000_000,
            device: vitals::DeviceClass::Desktop,
            beacon,
        };
        r.push(accepted, body.as_bytes());
        let kept = r.sites.lock().unwrap()["big"].beacons[0].clone();
        assert!(
            kept.body.is_none(),
            "a {} byte body must not be kept",
            body.len()
        );
        let shown = r.latest("big", 10);
        assert_eq!(
            (
                shown[0].value,
                shown[0].id.as_deref(),
                shown[0].attribution.clone()
            ),
            (
                2500.0,
                Some("v1-9"),
                Some(serde_json::json!({"target": "img"}))
            )
        );
        // A beacon.js-sized body is kept as it came.
        push(&r, "small", 1.0);
        assert!(r.sites.lock().unwrap()["small"].beacons[0].body.is_some());
    }

    #[test]
    fn keeps_the_newest_samples_per_site_and_a_bounded_number_of_sites() {
        let r = Recent::default();
        for i in 0..PER_SITE {
            push(&r, "a", i as f64);
        }
        let a = r.latest("a", PER_SITE);
        // Two samples per beacon: the newest PER_SITE / 2 beacons, newest first.
        assert_eq!(a.len(), PER_SITE);
        let lcp: Vec<f64> = a
            .iter()
            .filter(|s| s.metric == "LCP")
            .map(|s| s.value)
            .collect();
        assert_eq!(lcp.first(), Some(&((PER_SITE - 1) as f64)));
        assert_eq!(lcp.last(), Some(&((PER_SITE / 2) as f64)));

        for i in 1..MAX_SITES {
            push(&r, &format!("s{i}"), 1.0);
        }
        push(&r, "one-too-many", 1.0);
        assert!(r.latest("one-too-many", 10).is_empty());
        // Known sites still take beacons at the cap.
        push(&r, "a", 5000.0);
        assert_eq!(r.latest("a", 1)[0].value, 0.1);
        assert_eq!(r.latest("a", 2)[1].value, 5000.0);
    }
}
