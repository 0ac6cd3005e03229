//! A compact, versioned binary form of an [`Accepted`] beacon: what the spool stores between the 204 and the store.
//!
//! The validated beacon is stored (not the raw body), so replay neither parses JSON again nor depends on a policy
//! (route rules, sampling) that may have changed since. The id is not stored: it is the spool's sequence number.
//! Neither are the samples' web-vitals `id` and `attribution` (since version 2): no store keeps them, and they were
//! three quarters of a beacon.js beacon's record (~550 bytes per beacon in the spool; ~134 without them). Version 1
//! records, which carry them, are still read (skipping both), so a spool written before an upgrade replays after it.

use crate::Accepted;
use vitals::wire::{Beacon, Release, Sample};
use vitals::{DeviceClass, Metric, NavType, PageUrl, SiteId};

/// The version written; [`decode`] also reads version 1.
const VERSION: u8 = 2;

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spool record: {0}")]
pub struct CodecError(&'static str);

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes everything the stores read: not the id, nor the samples' `id` and `attribution`.
pub fn encode(a: &Accepted) -> Vec<u8> {
    let b = &a.beacon;
    let mut out = Vec::with_capacity(128 + b.metrics.len() * 9);
    out.push(VERSION);
    out.extend_from_slice(&a.received_at_ms.to_le_bytes());
    out.push(a.device.code());
    put_str(&mut out, b.site.as_str());
    put_str(&mut out, b.url.host());
    put_str(&mut out, b.url.path());
    put_str(&mut out, b.url.page());
    put_str(&mut out, b.release.as_ref().map_or("", |r| r.as_str()));
    out.push(b.nav.code());
    out.push(b.metrics.len() as u8);
    for s in &b.metrics {
        out.push(s.metric.code());
        out.extend_from_slice(&s.value.to_le_bytes());
    }
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn skip_str(&mut self) -> Result<(), CodecError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(len).map(drop)
    }
    fn str(&mut self) -> Result<&'a str, CodecError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| CodecError("not UTF-8"))
    }
}

/// Decodes a record, giving it `id`, and re-checks the domain invariants. Samples come back without `id` and
/// `attribution`.
pub fn decode(id: u64, bytes: &[u8]) -> Result<Accepted, CodecError> {
    let mut c = Cursor(bytes);
    let version = c.u8()?;
    if version != 1 && version != VERSION {
        return Err(CodecError("unknown version"));
    }
    let received_at_ms = i64::from_le_bytes(c.take(8)?.try_into().expect("8 bytes"));
    let device = DeviceClass::from_code(c.u8()?).ok_or(CodecError("bad device"))?;
    let site = SiteId::parse(c.str()?).ok_or(CodecError("bad site"))?;
    let (host, path, page) = (c.str()?, c.str()?, c.str()?);
    let url = PageUrl::from_parts(host, path, page).ok_or(CodecError("bad url"))?;
    let release = match c.str()? {
        "" => None,
        r => Some(Release::parse(r).ok_or(CodecError("bad release"))?),
    };
    let nav = NavType::from_code(c.u8()?).ok_or(CodecError("bad nav"))?;
    let n = c.u8()? as usize;
    if n == 0 || n > Metric::ALL.len() {
        return Err(CodecError("bad metric count"));
    }
    let mut metrics = Vec::with_capacity(n);
    for _ in 0..n {
        let metric = Metric::from_code(c.u8()?).ok_or(CodecError("bad metric"))?;
        let value = f64::from_le_bytes(c.take(8)?.try_into().expect("8 bytes"));
        if !(value.is_finite() && (0.0..=metric.max_value()).contains(&value)) {
            return Err(CodecError("value out of range"));
        }
        if version == 1 {
            // The sample's id and attribution, skipped unread: the record's checksum vouches for its bytes.
            c.skip_str()?;
            c.skip_str()?;
        }
        metrics.push(Sample {
            metric,
            value,
            id: None,
            attribution: None,
        });
    }
    if !c.0.is_empty() {
        return Err(CodecError("trailing bytes"));
    }
    Ok(Accepted {
        id,
        received_at_ms,
        device,
        beacon: Beacon {
            site,
            url,
            release,
            nav,
            metrics,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn beacon_body(lcp: f64, cls: f64, release: &str, nav: &str, attribution: bool) -> String {
        let attr = if attribution {
            r#","attribution":{"target":"img.hero","ttfb":12.5}"#
        } else {
            ""
        };
        let release = if release.is_empty() {
            String::new()
        } else {
            format!(r#","release":"{release}""#)
        };
        format!(
            r#"{{"v":1,"site":"shop","url":"https://Shop.Example/p/123?q=1"{release},"nav":"{nav}","metrics":[{{"name":"LCP","value":{lcp},"id":"v5-1"{attr}}},{{"name":"CLS","value":{cls}}}]}}"#
        )
    }

    /// A version-1 record, as collectors before version 2 wrote it: the samples' id and attribution included.
    fn encode_v1(a: &Accepted) -> Vec<u8> {
        let b = &a.beacon;
        let mut out = vec![1];
        out.extend_from_slice(&a.received_at_ms.to_le_bytes());
        out.push(a.device.code());
        put_str(&mut out, b.site.as_str());
        put_str(&mut out, b.url.host());
        put_str(&mut out, b.url.path());
        put_str(&mut out, b.url.page());
        put_str(&mut out, b.release.as_ref().map_or("", |r| r.as_str()));
        out.push(b.nav.code());
        out.push(b.metrics.len() as u8);
        for s in &b.metrics {
            out.push(s.metric.code());
            out.extend_from_slice(&s.value.to_le_bytes());
            put_str(&mut out, s.id.as_deref().unwrap_or(""));
            put_str(&mut out, s.attribution.as_deref().unwrap_or(""));
        }
        out
    }

    /// What a record keeps of a beacon: everything but the samples' id and attribution.
    fn kept(mut a: Accepted) -> Accepted {
        for s in &mut a.beacon.metrics {
            s.id = None;
            s.attribution = None;
        }
        a
    }

    proptest! {
        /// Both the records written now and version-1 records (from before an upgrade) read back as the beacon.
        #[test]
        fn round_trips_every_accepted_beacon(
            lcp in 0.0..3_600_000.0f64,
            cls in 0.0..100.0f64,
            release in "[a-z0-9.]{0,10}",
            nav in prop::sample::select(NavType::ALL.to_vec()),
            device in prop::sample::select(DeviceClass::ALL.to_vec()),
            attribution: bool,
            at in any::<i64>(),
            id in any::<u64>(),
        ) {
            let beacon = vitals::decode_beacon(beacon_body(lcp, cls, &release, nav.as_str(), attribution).as_bytes()).unwrap();
            let a = Accepted { id, received_at_ms: at, device, beacon };
            prop_assert_eq!(decode(id, &encode(&a)).unwrap(), kept(a.clone()));
            prop_assert_eq!(decode(id, &encode_v1(&a)).unwrap(), kept(a));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(1, &bytes);
        }
    }

    #[test]
    fn refuses_truncation_unknown_versions_and_trailing_bytes() {
        let beacon =
            vitals::decode_beacon(beacon_body(1.0, 0.1, "", "reload", true).as_bytes()).unwrap();
        let a = Accepted {
            id: 0,
            received_at_ms: 5,
            device: DeviceClass::Phone,
            beacon,
        };
        for bytes in [encode(&a), encode_v1(&a)] {
            for cut in 0..bytes.len() {
                assert!(decode(1, &bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut bad = bytes.clone();
            bad.push(0);
            assert_eq!(decode(1, &bad), Err(CodecError("trailing bytes")));
            let mut future = bytes.clone();
            future[0] = VERSION + 1;
            assert_eq!(decode(1, &future), Err(CodecError("unknown version")));
        }
        // The record is what the stores read, and no more: version 1's bytes less each sample's two strings.
        let free_form: usize = a
            .beacon
            .metrics
            .iter()
            .map(|s| {
                8 + s.id.as_ref().map_or(0, String::len)
                    + s.attribution.as_ref().map_or(0, String::len)
            })
            .sum();
        assert!(free_form > 8 * a.beacon.metrics.len());
        assert_eq!(encode(&a).len() + free_form, encode_v1(&a).len());
    }
}
