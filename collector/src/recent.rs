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

/// Per site, the latest accepted beacons, newest last, holding at most [`PER_SITE`] samples.
#[derive(Default)]
struct Ring {
    beacons: VecDeque<Arc<Accepted>>,
    samples: usize,
}

impl Ring {
    /// Keeps `accepted` (`n` samples), dropping the oldest beacons past [`PER_SITE`] samples.
    fn push(&mut self, accepted: Accepted, n: usize) {
        self.beacons.push_back(Arc::new(accepted));
        self.samples += n;
        while self.samples > PER_SITE {
            match self.beacons.pop_front() {
                Some(old) => self.samples -= old.beacon.metrics.len(),
                None => break,
            }
        }
    }
}

/// The recent beacons of every site.
///
/// The ingest path only moves the accepted beacon in (one `Arc`, no per-sample strings: profiling showed building
/// and dropping those on every beacon among the largest single costs of ingest); the JSON view is built when read.
#[derive(Default)]
pub struct Recent {
    sites: Mutex<HashMap<String, Ring>>,
}

impl Recent {
    /// Remembers an accepted beacon.
    pub fn push(&self, accepted: Accepted) {
        let n = accepted.beacon.metrics.len();
        if n == 0 {
            return;
        }
        let mut sites = self.sites.lock().expect("recent lock");
        // One hash lookup for a known site (the map keeps SipHash: site names come from the internet).
        if let Some(ring) = sites.get_mut(accepted.beacon.site.as_str()) {
            ring.push(accepted, n);
            return;
        }
        if sites.len() >= MAX_SITES {
            return;
        }
        // The site's name is allocated once, when the site is first seen.
        let mut ring = Ring::default();
        let name = accepted.beacon.site.as_str().to_string();
        ring.push(accepted, n);
        sites.insert(name, ring);
    }

    /// The latest `limit` samples of a site, newest first.
    pub fn latest(&self, site: &str, limit: usize) -> Vec<RecentSample> {
        // Copy the Arcs out so the lock is not held while formatting.
        let beacons: Vec<Arc<Accepted>> = {
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
fn expand(a: &Accepted) -> Vec<RecentSample> {
    let b = &a.beacon;
    let at = DateTime::<Utc>::from_timestamp_millis(a.received_at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    b.metrics
        .iter()
        .map(|s| RecentSample {
            received_at: at.clone(),
            page: b.url.page().to_string(),
            path: b.url.path().to_string(),
            host: b.url.host().to_string(),
            device: a.device.as_str(),
            release: b.release.as_ref().map(|r| r.as_str().to_string()),
            nav: b.nav.as_str(),
            metric: s.metric.as_str(),
            value: s.value,
            id: s.id.clone(),
            attribution: s
                .attribution
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(site: &str, lcp: f64) -> Accepted {
        let body = format!(
            r#"{{"v":1,"site":"{site}","url":"https://a.example/","metrics":[{{"name":"LCP","value":{lcp}}},{{"name":"CLS","value":0.1}}]}}"#
        );
        Accepted {
            id: 1,
            received_at_ms: 1_800_000_000_000,
            device: vitals::DeviceClass::Phone,
            beacon: vitals::decode_beacon(body.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn keeps_the_newest_samples_per_site_and_a_bounded_number_of_sites() {
        let r = Recent::default();
        for i in 0..PER_SITE {
            r.push(accepted("a", i as f64));
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
            r.push(accepted(&format!("s{i}"), 1.0));
        }
        r.push(accepted("one-too-many", 1.0));
        assert!(r.latest("one-too-many", 10).is_empty());
        // Known sites still take beacons at the cap.
        r.push(accepted("a", 5000.0));
        assert_eq!(r.latest("a", 1)[0].value, 0.1);
        assert_eq!(r.latest("a", 2)[1].value, 5000.0);
    }
}
