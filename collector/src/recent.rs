//! The most recent accepted samples per site, exactly as received: the "is my snippet working" view.
//!
//! Held in memory only (bounded per site and in the number of sites); it is a live view, not a store.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use storage::Accepted;

/// Samples kept per site.
pub const PER_SITE: usize = 1000;
/// Sites kept; beacons for further sites are not remembered here (they are still stored).
pub const MAX_SITES: usize = 10_000;

/// One sample as received.
#[derive(Debug, Clone, Serialize)]
pub struct RecentSample {
    /// Receive time, RFC 3339 with milliseconds.
    pub received_at: String,
    /// Page (normalised).
    pub page: String,
    /// Path (identifiers kept, no query string).
    pub path: String,
    /// Host.
    pub host: String,
    /// Device class from the headers.
    pub device: &'static str,
    /// Release, if sent.
    pub release: Option<String>,
    /// Navigation type.
    pub nav: &'static str,
    /// Metric name.
    pub metric: &'static str,
    /// Value, unrounded.
    pub value: f64,
    /// web-vitals' id, if sent.
    pub id: Option<String>,
    /// Attribution object, if sent (capped).
    pub attribution: Option<serde_json::Value>,
}

/// The per-site ring buffers.
#[derive(Default)]
pub struct Recent {
    sites: Mutex<HashMap<String, VecDeque<RecentSample>>>,
}

impl Recent {
    /// The entries a beacon will add, built before it is handed on (so that only accepted beacons are shown).
    pub fn prepare(a: &Accepted) -> (String, Vec<RecentSample>) {
        let b = &a.beacon;
        let at = DateTime::<Utc>::from_timestamp_millis(a.received_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let samples = b
            .metrics
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
            .collect();
        (b.site.as_str().to_string(), samples)
    }

    /// Remembers prepared entries of an accepted beacon.
    pub fn push(&self, site: String, samples: Vec<RecentSample>) {
        let mut sites = self.sites.lock().expect("recent lock");
        if !sites.contains_key(&site) && sites.len() >= MAX_SITES {
            return;
        }
        let ring = sites.entry(site).or_default();
        for s in samples {
            if ring.len() == PER_SITE {
                ring.pop_front();
            }
            ring.push_back(s);
        }
    }

    /// Up to `limit` samples of a site, newest first.
    pub fn latest(&self, site: &str, limit: usize) -> Vec<RecentSample> {
        let sites = self.sites.lock().expect("recent lock");
        sites
            .get(site)
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}
