//! The synthetic but realistic page-view population, and beacon `i` of it.
//!
//! Every beacon is a pure function of `(seed, i)`: its own small RNG is seeded from both, so bodies can be made ahead
//! of time or on the fly, in any order, on any thread, and the ground truth can be rebuilt afterwards from the list of
//! accepted indices alone. The population: three sites of different size; pages per site with Zipf popularity (one
//! page collapses many product/article URLs into `…/:id`, as real sites do); a device mix given by real user-agent
//! strings (55% phone, 40% desktop, 5% tablet); releases (one rolling out); navigation types. Each
//! (site, page, device, release) group has its own lognormal distribution per metric, so groups really differ; CLS
//! is zero for about half of page views with a heavy lognormal tail for the rest.

use crate::zipf::Zipf;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use vitals::{DeviceClass, Metric, NavType};

/// Real user-agent strings with the device class CrUX gives them, and their share of traffic (per mille).
pub const USER_AGENTS: &[(&str, DeviceClass, u32)] = &[
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", DeviceClass::Phone, 170),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", DeviceClass::Phone, 40),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", DeviceClass::Phone, 230),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", DeviceClass::Phone, 70),
    ("Mozilla/5.0 (Android 14; Mobile; rv:132.0) Gecko/132.0 Firefox/132.0", DeviceClass::Phone, 20),
    ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.60.109;]", DeviceClass::Phone, 20),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", DeviceClass::Desktop, 200),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", DeviceClass::Desktop, 50),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", DeviceClass::Desktop, 70),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:132.0) Gecko/20100101 Firefox/132.0", DeviceClass::Desktop, 30),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", DeviceClass::Desktop, 50),
    ("Mozilla/5.0 (iPad; CPU OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1", DeviceClass::Tablet, 25),
    ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", DeviceClass::Tablet, 25),
];

/// Releases every site has, with their share (per mille); index 0 is "no release sent".
pub const RELEASES: &[(Option<&str>, u32)] = &[
    (None, 50),
    (Some("2026.11.1"), 200),
    (Some("2026.11.2"), 500),
    (Some("2026.11.3"), 250),
];

/// Navigation types and their share (per mille).
pub const NAVS: &[(NavType, &str, u32)] = &[
    (NavType::Navigate, "navigate", 800),
    (NavType::Reload, "reload", 50),
    (NavType::BackForward, "back-forward", 70),
    (NavType::BackForwardCache, "back-forward-cache", 50),
    (NavType::Prerender, "prerender", 30),
];

/// Sites: name suffix, host, share of traffic (per mille), share of the page population (per mille).
const SITES: &[(&str, &str, u32, u32)] = &[
    ("shop", "shop.example", 550, 500),
    ("news", "news.example", 300, 350),
    ("docs", "docs.example", 150, 150),
];

const SECTIONS: &[&str] = &[
    "category",
    "guide",
    "blog",
    "help",
    "collections",
    "about",
    "topics",
    "stories",
];

/// What the generator needs to know.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The seed: the same seed gives the same beacons.
    pub seed: u64,
    /// Distinct pages over all sites.
    pub pages: usize,
    /// Site names are `{prefix}-shop`, `{prefix}-news`, `{prefix}-docs`, so runs can be kept apart.
    pub site_prefix: String,
    /// Only the first `sites` sites (1 to 3).
    pub sites: usize,
    /// LCP, INP and CLS carry attribution objects, as `beacon/js/beacon.js` sends them (about twice the bytes of
    /// a beacon without).
    pub attribution: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            pages: 3000,
            site_prefix: "lt".into(),
            sites: 3,
            attribution: true,
        }
    }
}

/// One site of the population.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site id beacons carry.
    pub name: String,
    /// Host of its URLs.
    pub host: &'static str,
    /// Page popularity.
    pub zipf: Zipf,
}

/// The population beacons are drawn from.
#[derive(Debug, Clone)]
pub struct Workload {
    config: WorkloadConfig,
    sites: Vec<Site>,
    site_cdf: Vec<u32>,
    ua_cdf: Vec<u32>,
    release_cdf: Vec<u32>,
    nav_cdf: Vec<u32>,
}

/// Beacon `i`: everything about it, as indices into the population, plus the metric values it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PageView {
    /// Index of the beacon.
    pub index: u64,
    /// Site index.
    pub site: u16,
    /// Page rank within the site (0 is the most popular).
    pub page: u32,
    /// Index into [`USER_AGENTS`].
    pub ua: u16,
    /// Index into [`RELEASES`].
    pub release: u8,
    /// Index into [`NAVS`].
    pub nav: u8,
    /// The number in the URL of an `…/:id` page.
    pub item_id: u32,
    /// Whether the URL carries a query string and fragment (dropped by normalisation).
    pub tracking: bool,
    /// Values per metric, in [`Metric::ALL`] order; `None` when the page view did not report that metric.
    pub values: [Option<f64>; 5],
}

fn cdf(weights: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut acc = 0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

fn pick(cdf: &[u32], rng: &mut SmallRng) -> usize {
    let total = *cdf.last().expect("non-empty table");
    let x = rng.random_range(0..total);
    cdf.partition_point(|&c| c <= x)
}

/// A standard normal draw (Box–Muller; one of the pair is enough here).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A 64-bit mix (splitmix64's finaliser): decorrelates seeds that differ in a few bits.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A deterministic factor around 1 for a group, lognormal with the given sigma.
fn group_factor(key: u64, sigma: f64) -> f64 {
    let mut rng = SmallRng::seed_from_u64(mix(key));
    (sigma * normal(&mut rng)).exp()
}

fn letters(mut k: usize) -> String {
    // Pages are named by letters only, so page normalisation keeps them as they are (digits would read as ids).
    let mut s = String::new();
    loop {
        s.push((b'a' + (k % 26) as u8) as char);
        k /= 26;
        if k == 0 {
            break;
        }
    }
    s
}

impl Workload {
    /// Builds the population.
    pub fn new(config: WorkloadConfig) -> Workload {
        let n_sites = config.sites.clamp(1, SITES.len());
        let share_total: u32 = SITES[..n_sites].iter().map(|s| s.3).sum();
        let sites = SITES[..n_sites]
            .iter()
            .map(|&(suffix, host, _, page_share)| {
                let pages = ((config.pages as u64 * page_share as u64) / share_total as u64).max(2);
                Site {
                    name: format!("{}-{suffix}", config.site_prefix),
                    host,
                    zipf: Zipf::new(pages as usize, 1.0),
                }
            })
            .collect();
        Workload {
            sites,
            site_cdf: cdf(SITES[..n_sites].iter().map(|s| s.2)),
            ua_cdf: cdf(USER_AGENTS.iter().map(|u| u.2)),
            release_cdf: cdf(RELEASES.iter().map(|r| r.1)),
            nav_cdf: cdf(NAVS.iter().map(|n| n.2)),
            config,
        }
    }

    /// The sites.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The configuration.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The page key the collector must derive for a page rank of a site (the URL's normalised form).
    pub fn page_key(&self, _site: u16, page: u32) -> String {
        match page {
            0 => "/".into(),
            1 => "/products/:id".into(),
            p => {
                let p = p as usize;
                format!("/{}/{}", SECTIONS[p % SECTIONS.len()], letters(p))
            }
        }
    }

    /// The URL a page view reports.
    pub fn url(&self, v: &PageView) -> String {
        let site = &self.sites[v.site as usize];
        let mut url = format!("https://{}", site.host);
        match v.page {
            0 => url.push('/'),
            1 => {
                let _ = write!(url, "/products/{}", v.item_id);
            }
            _ => url.push_str(&self.page_key(v.site, v.page)),
        }
        if v.tracking {
            url.push_str("?utm_source=newsletter&utm_medium=email#reviews");
        }
        url
    }

    /// Page view `i`.
    pub fn page_view(&self, i: u64) -> PageView {
        let mut rng = SmallRng::seed_from_u64(mix(self.config.seed ^ mix(i)));
        let site = pick(&self.site_cdf, &mut rng) as u16;
        let page = self.sites[site as usize].zipf.sample(rng.random::<f64>()) as u32;
        let ua = pick(&self.ua_cdf, &mut rng) as u16;
        let release = pick(&self.release_cdf, &mut rng) as u8;
        let nav = pick(&self.nav_cdf, &mut rng) as u8;
        let item_id = rng.random_range(1..100_000);
        let tracking = rng.random_ratio(1, 10);
        let device = USER_AGENTS[ua as usize].1;
        let group = ((self.config.seed.wrapping_mul(31) + site as u64) << 40)
            ^ ((page as u64) << 8)
            ^ ((device.code() as u64) << 4)
            ^ release as u64;
        let page_group =
            ((self.config.seed.wrapping_mul(31) + site as u64) << 40) ^ ((page as u64) << 8);
        // Slow pages are slow on every device; phones are slower; a release shifts things a little.
        let page_factor = group_factor(page_group, 0.35);
        let device_factor = match device {
            DeviceClass::Phone => 1.6,
            DeviceClass::Tablet => 1.3,
            DeviceClass::Desktop => 1.0,
        };
        let group_noise = group_factor(group, 0.08);
        let scale = page_factor * device_factor * group_noise;
        let mut values = [None; 5];
        for (slot, metric) in Metric::ALL.iter().enumerate() {
            let (present, median, sigma) = match metric {
                Metric::Lcp => (rng.random_ratio(97, 100), 1900.0, 0.6),
                Metric::Inp => (rng.random_ratio(65, 100), 140.0, 0.8),
                Metric::Cls => (rng.random_ratio(95, 100), 0.03, 1.3),
                Metric::Fcp => (true, 1100.0, 0.55),
                Metric::Ttfb => (true, 420.0, 0.7),
            };
            if !present {
                continue;
            }
            let z = normal(&mut rng);
            let v = match metric {
                Metric::Cls => {
                    // Most page views do not shift at all; the rest have a heavy tail.
                    if rng.random_ratio(45, 100) {
                        0.0
                    } else {
                        let raw = median * scale.sqrt() * (sigma * z).exp();
                        ((raw * 10_000.0).round() / 10_000.0).min(vitals::metric::MAX_CLS)
                    }
                }
                Metric::Inp => {
                    // Browsers report event durations rounded to 8 ms.
                    let raw = median * scale * (sigma * z).exp();
                    ((raw / 8.0).round() * 8.0).clamp(8.0, vitals::metric::MAX_MILLIS)
                }
                _ => {
                    let raw = median * scale * (sigma * z).exp();
                    ((raw * 10.0).round() / 10.0).min(vitals::metric::MAX_MILLIS)
                }
            };
            values[slot] = Some(v);
        }
        PageView {
            index: i,
            site,
            page,
            ua,
            release,
            nav,
            item_id,
            tracking,
            values,
        }
    }

    /// The beacon body the browser snippet would send for a page view (wire format v1).
    pub fn body(&self, v: &PageView) -> String {
        let mut s = String::with_capacity(400);
        let _ = write!(
            s,
            r#"{{"v":1,"site":"{}","url":"{}""#,
            self.sites[v.site as usize].name,
            self.url(v)
        );
        if let Some(r) = RELEASES[v.release as usize].0 {
            let _ = write!(s, r#","release":"{r}""#);
        }
        let _ = write!(s, r#","nav":"{}","metrics":["#, NAVS[v.nav as usize].1);
        let mut first = true;
        for (slot, metric) in Metric::ALL.iter().enumerate() {
            if let Some(value) = v.values[slot] {
                if !first {
                    s.push(',');
                }
                first = false;
                let _ = write!(
                    s,
                    r#"{{"name":"{}","value":{value},"id":"v5-{}-{}""#,
                    metric.as_str(),
                    v.index,
                    slot
                );
                if self.config.attribution {
                    self.attribution(&mut s, v, *metric, value);
                }
                s.push('}');
            }
        }
        s.push_str("]}");
        s
    }

    /// `,"attribution":{...}` for LCP, INP and CLS, shaped like beacon.js's: a selector, the LCP resource, and the
    /// metric's parts as unrounded browser timings (their sum is the value).
    fn attribution(&self, s: &mut String, v: &PageView, metric: Metric, value: f64) {
        const TARGETS: [&str; 6] = [
            "main>div.hero>img",
            "#product-image",
            "article>p:nth-child(2)",
            "button#add-to-cart",
            "a.nav-link",
            "div.ad-slot",
        ];
        let target = TARGETS[(v.index % TARGETS.len() as u64) as usize];
        // Browser timings are doubles of sub-millisecond clocks: split the value at an irregular fraction.
        let f = 0.1 + (v.index % 89) as f64 / 113.0;
        match metric {
            Metric::Lcp => {
                let host = self.sites[v.site as usize].host;
                let _ = write!(
                    s,
                    r#","attribution":{{"target":"{target}","url":"https://{host}/img/{}.jpg","ttfb":{},"loadDelay":{},"loadTime":{},"renderDelay":{}}}"#,
                    v.page,
                    value * f * 0.5,
                    value * f * 0.25,
                    value * f * 0.25,
                    value * (1.0 - f)
                );
            }
            Metric::Inp => {
                let _ = write!(
                    s,
                    r#","attribution":{{"target":"{target}","type":"pointerup","inputDelay":{},"processing":{},"presentation":{}}}"#,
                    value * f * 0.3,
                    value * f * 0.7,
                    value * (1.0 - f)
                );
            }
            Metric::Cls => {
                let _ = write!(
                    s,
                    r#","attribution":{{"target":"{target}","value":{},"time":{}}}"#,
                    value * f,
                    1000.0 + (v.index % 4000) as f64 * 1.7
                );
            }
            Metric::Fcp | Metric::Ttfb => {}
        }
    }

    /// The user agent a page view is sent with.
    pub fn user_agent(&self, v: &PageView) -> &'static str {
        USER_AGENTS[v.ua as usize].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_agrees_with_the_product_on_pages_and_devices() {
        // Ground truth keys pages and devices by construction; the collector derives them from the URL and the
        // user agent. They must agree, or --verify would compare different groups.
        for (ua, class, _) in USER_AGENTS {
            assert_eq!(DeviceClass::from_user_agent(ua), *class, "{ua}");
        }
        let w = Workload::new(WorkloadConfig::default());
        for i in 0..5000 {
            let v = w.page_view(i);
            let body = w.body(&v);
            let b =
                vitals::decode_beacon(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(b.url.page(), w.page_key(v.site, v.page), "{body}");
            assert_eq!(b.site.as_str(), w.sites()[v.site as usize].name);
            assert_eq!(b.nav, NAVS[v.nav as usize].0);
            assert_eq!(
                b.release.as_ref().map(|r| r.as_str()),
                RELEASES[v.release as usize].0
            );
            let sent: Vec<(Metric, f64)> = Metric::ALL
                .iter()
                .zip(v.values)
                .filter_map(|(m, x)| x.map(|x| (*m, x)))
                .collect();
            let got: Vec<(Metric, f64)> = b.metrics.iter().map(|s| (s.metric, s.value)).collect();
            assert_eq!(got, sent, "values survive the JSON round trip exactly");
        }
    }

    #[test]
    fn same_seed_same_beacons_other_seed_other_beacons() {
        let a = Workload::new(WorkloadConfig::default());
        let b = Workload::new(WorkloadConfig::default());
        let c = Workload::new(WorkloadConfig {
            seed: 2,
            ..WorkloadConfig::default()
        });
        assert_eq!(a.page_view(12345), b.page_view(12345));
        assert_ne!(a.page_view(12345).values, c.page_view(12345).values);
    }

    #[test]
    fn the_mix_is_realistic() {
        let w = Workload::new(WorkloadConfig::default());
        let n = 20_000;
        let views: Vec<PageView> = (0..n).map(|i| w.page_view(i)).collect();
        let phones = views
            .iter()
            .filter(|v| USER_AGENTS[v.ua as usize].1 == DeviceClass::Phone)
            .count() as f64
            / n as f64;
        assert!((0.52..0.58).contains(&phones), "{phones}");
        let cls: Vec<f64> = views.iter().filter_map(|v| v.values[2]).collect();
        let zeros = cls.iter().filter(|&&c| c == 0.0).count() as f64 / cls.len() as f64;
        assert!((0.40..0.50).contains(&zeros), "{zeros}");
        // Heavy tail: some page views shift a lot, the median is small.
        let mut sorted = cls.clone();
        sorted.sort_by(f64::total_cmp);
        assert!(sorted[sorted.len() / 2] < 0.05 && sorted[sorted.len() * 999 / 1000] > 0.5);
        // Long tail of pages: the top page of the shop gets far more than a tail page, and many pages are seen.
        let shop: Vec<u32> = views
            .iter()
            .filter(|v| v.site == 0)
            .map(|v| v.page)
            .collect();
        let top = shop.iter().filter(|&&p| p == 0).count();
        let distinct: std::collections::HashSet<u32> = shop.iter().copied().collect();
        assert!(top > shop.len() / 20, "{top}");
        assert!(distinct.len() > 600, "{}", distinct.len());
    }

    #[test]
    fn bodies_carry_attribution_like_beacon_js_and_decode() {
        let with = Workload::new(WorkloadConfig::default());
        let without = Workload::new(WorkloadConfig {
            attribution: false,
            ..WorkloadConfig::default()
        });
        for i in 0..2000 {
            let v = with.page_view(i);
            let a = vitals::decode_beacon(with.body(&v).as_bytes()).expect("valid");
            let b = vitals::decode_beacon(without.body(&v).as_bytes()).expect("valid");
            assert_eq!(a.metrics.len(), b.metrics.len());
            for (x, y) in a.metrics.iter().zip(&b.metrics) {
                // The same samples; attribution on exactly the metrics beacon.js attributes.
                assert_eq!((x.metric, x.value), (y.metric, y.value));
                assert_eq!(y.attribution, None);
                let attributed = matches!(x.metric, Metric::Lcp | Metric::Inp | Metric::Cls);
                assert_eq!(x.attribution.is_some(), attributed, "{:?}", x);
                if let Some(json) = &x.attribution {
                    let obj: serde_json::Value = serde_json::from_str(json).unwrap();
                    assert!(obj["target"].is_string(), "{json}");
                }
            }
        }
    }
}
