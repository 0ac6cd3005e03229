//! `--verify`: ask the collector's query API what it stored and compare with the ground truth.

use crate::client::{encode_query_value, get};
use crate::truth::{Comparison, GroundTruth, GroupKey, Observed};
use crate::workload::Workload;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vitals::{DeviceClass, Metric};

/// The ground truth of the accepted beacons.
pub fn truth_of(w: &Workload, accepted: &[u64]) -> GroundTruth {
    let mut t = GroundTruth::default();
    for &i in accepted {
        t.add(w, &w.page_view(i));
    }
    t
}

async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(addr, path).await?;
    anyhow::ensure!(
        status == 200,
        "GET {path}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body)?)
}

/// Total samples of a site and metric the collector can answer for now.
pub async fn queryable_total(addr: SocketAddr, site: &str, metric: Metric) -> anyhow::Result<u64> {
    let v = get_json(
        addr,
        &format!(
            "/v1/p75?site={}&metric={}",
            encode_query_value(site),
            metric.as_str()
        ),
    )
    .await?;
    Ok(v["rows"]
        .as_array()
        .and_then(|rows| rows.first())
        .and_then(|r| r["n"].as_u64())
        .unwrap_or(0))
}

/// Waits until every site's totals are queryable (or `timeout` passes); returns how long that took.
/// `totals[site][metric]` are the accepted samples per site index and metric ([`Metric::ALL`] order).
pub async fn wait_until_queryable(
    addr: SocketAddr,
    w: &Workload,
    totals: &[[u64; 5]],
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    loop {
        let mut all = true;
        'sites: for (site, want) in w.sites().iter().zip(totals) {
            for (metric, want) in Metric::ALL.iter().zip(want) {
                if queryable_total(addr, &site.name, *metric).await? < *want {
                    all = false;
                    break 'sites;
                }
            }
        }
        if all {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every group the collector reports for the workload's sites, by page, device and release.
pub async fn observed(
    addr: SocketAddr,
    w: &Workload,
) -> anyhow::Result<BTreeMap<GroupKey, Observed>> {
    let mut out = BTreeMap::new();
    for site in w.sites() {
        for metric in Metric::ALL {
            let v = get_json(
                addr,
                &format!(
                    "/v1/p75?site={}&metric={}&by=page,device,release&limit=100000",
                    encode_query_value(&site.name),
                    metric.as_str()
                ),
            )
            .await?;
            anyhow::ensure!(
                v["truncated"] != serde_json::Value::Bool(true),
                "more than 100,000 groups for {} {}: verify a smaller run",
                site.name,
                metric.as_str()
            );
            for row in v["rows"].as_array().into_iter().flatten() {
                let field = |k: &str| {
                    row[k]
                        .as_str()
                        .ok_or_else(|| anyhow::anyhow!("row without {k}: {row}"))
                };
                let key = GroupKey {
                    site: site.name.clone(),
                    metric,
                    page: field("page")?.to_string(),
                    device: DeviceClass::parse(field("device")?)
                        .ok_or_else(|| anyhow::anyhow!("unknown device in {row}"))?,
                    release: row["release"].as_str().map(str::to_string),
                };
                let obs = Observed {
                    n: row["n"]
                        .as_u64()
                        .ok_or_else(|| anyhow::anyhow!("row without n: {row}"))?,
                    p75: row["p75"]
                        .as_f64()
                        .ok_or_else(|| anyhow::anyhow!("row without p75: {row}"))?,
                };
                out.insert(key, obs);
            }
        }
    }
    Ok(out)
}

/// The outcome of a verification.
#[derive(Debug)]
pub struct Verification {
    /// The comparison.
    pub comparison: Comparison,
    /// Time from the last accepted beacon's answer until everything was queryable (`None`: not within the wait).
    pub freshness: Option<Duration>,
    /// Beacons and samples in the truth.
    pub beacons: u64,
}

/// Waits for the accepted beacons to be queryable (measuring freshness from the last accepted answer), then
/// rebuilds the truth and compares every group.
pub async fn verify(
    addr: SocketAddr,
    w: &Workload,
    accepted: &[u64],
    totals: &[[u64; 5]],
    last_accepted_at: Option<Instant>,
) -> anyhow::Result<Verification> {
    let waited = wait_until_queryable(addr, w, totals, Duration::from_secs(30)).await?;
    let freshness = waited.map(|_| last_accepted_at.map_or(Duration::ZERO, |t| t.elapsed()));
    let truth = truth_of(w, accepted);
    let comparison = truth.compare(&observed(addr, w).await?);
    Ok(Verification {
        comparison,
        freshness,
        beacons: truth.beacons(),
    })
}
