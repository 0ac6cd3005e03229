//! The policy file (TOML). Example, with every key:
//!
//! ```toml
//! allow_unknown_sites = false          # refuse beacons for sites not listed below (default true)
//! bot_filter = true                    # drop beacons from bots and headless browsers (default true)
//! trusted_proxies = ["10.0.0.0/8"]     # peers whose X-Forwarded-For is believed (default none)
//! hsts = true                          # send Strict-Transport-Security (set when a TLS proxy fronts us)
//! default_rate_limit = { per_second = 10.0, burst = 50 }   # per client IP and site, when a site has none
//!
//! [sites.demo]
//! allowed_origins = ["https://shop.example"]   # Origin header must be one of these (absent: any)
//! sample_rate = 0.5                            # keep at most this share of page views (default 1)
//! rate_limit = { per_second = 5.0, burst = 20 }
//!
//! [[tokens]]                           # query API bearer tokens, stored as SHA-256 hashes
//! name = "grafana"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! sites = ["demo"]                     # or ["*"]
//! ```

use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// Why the policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Unreadable.
    #[error("policy file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML or a wrong key.
    #[error("policy file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A token bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained beacons per second.
    pub per_second: f64,
    /// Burst size.
    pub burst: u32,
}

/// One site's settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicy {
    /// Allowed `Origin` values (scheme://host[:port]); empty means any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Share of page views kept, in (0, 1].
    #[serde(default = "one")]
    pub sample_rate: f64,
    /// Per client IP.
    pub rate_limit: Option<RateLimit>,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// A query token, as configured: never the token itself, only its SHA-256.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A name for logs.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Sites it may read; `*` for all.
    pub sites: Vec<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("sites", &self.sites)
            .finish()
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Accept beacons for sites not listed.
    #[serde(default = "yes")]
    pub allow_unknown_sites: bool,
    /// Drop bots.
    #[serde(default = "yes")]
    pub bot_filter: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Send HSTS.
    #[serde(default)]
    pub hsts: bool,
    /// Rate limit for sites without their own.
    pub default_rate_limit: Option<RateLimit>,
    /// Sites.
    #[serde(default)]
    pub sites: HashMap<String, SitePolicy>,
    /// Query tokens.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_unknown_sites: true,
            bot_filter: true,
            trusted_proxies: Vec::new(),
            hsts: false,
            default_rate_limit: None,
            sites: HashMap::new(),
            tokens: Vec::new(),
        }
    }
}

/// What the policy says about one beacon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Take it.
    Accept,
    /// The site is not configured and unknown sites are refused.
    UnknownSite,
    /// The Origin is not allowed for the site.
    Origin,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text).map_err(|message| PolicyError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks policy TOML.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        for (id, s) in &p.sites {
            if vitals::SiteId::parse(id).is_none() {
                return Err(format!("sites.{id}: not a valid site id"));
            }
            if !(s.sample_rate > 0.0 && s.sample_rate <= 1.0) {
                return Err(format!(
                    "sites.{id}.sample_rate: must be above 0 and at most 1"
                ));
            }
            for o in &s.allowed_origins {
                if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                    return Err(format!(
                        "sites.{id}.allowed_origins: {o:?} must look like https://shop.example"
                    ));
                }
            }
        }
        for rl in p
            .sites
            .values()
            .filter_map(|s| s.rate_limit.as_ref())
            .chain(p.default_rate_limit.as_ref())
        {
            if !(rl.per_second > 0.0 && rl.burst >= 1) {
                return Err("rate_limit: per_second must be above 0 and burst at least 1".into());
            }
        }
        for t in &p.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "tokens.{}: sha256 must be 64 hex characters",
                    t.name
                ));
            }
            if t.sites.is_empty() {
                return Err(format!(
                    "tokens.{}: sites must name at least one site or \"*\"",
                    t.name
                ));
            }
        }
        Ok(p)
    }

    /// Whether a beacon for `site` from `origin` may be taken.
    pub fn admit(&self, site: &str, origin: Option<&str>) -> Admission {
        match self.sites.get(site) {
            None if self.allow_unknown_sites => Admission::Accept,
            None => Admission::UnknownSite,
            Some(s) if s.allowed_origins.is_empty() => Admission::Accept,
            Some(s) => match origin {
                Some(o) if s.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)) => {
                    Admission::Accept
                }
                _ => Admission::Origin,
            },
        }
    }

    /// The site's sampling ceiling.
    pub fn sample_rate(&self, site: &str) -> f64 {
        self.sites.get(site).map_or(1.0, |s| s.sample_rate)
    }

    /// The rate limit for a site's clients.
    pub fn rate_limit(&self, site: &str) -> Option<RateLimit> {
        self.sites
            .get(site)
            .and_then(|s| s.rate_limit)
            .or(self.default_rate_limit)
    }

    /// Whether the peer is a trusted proxy.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
allow_unknown_sites = false
trusted_proxies = ["10.0.0.0/8", "::1/128"]
default_rate_limit = { per_second = 10.0, burst = 50 }
[sites.demo]
allowed_origins = ["https://shop.example"]
sample_rate = 0.5
rate_limit = { per_second = 5.0, burst = 20 }
[sites.open]
[[tokens]]
name = "grafana"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
sites = ["demo"]
"#;

    #[test]
    fn parses_and_applies_the_example() {
        let p = Policy::parse(EXAMPLE).unwrap();
        assert_eq!(
            p.admit("demo", Some("https://shop.example")),
            Admission::Accept
        );
        assert_eq!(
            p.admit("demo", Some("https://evil.example")),
            Admission::Origin
        );
        assert_eq!(p.admit("demo", None), Admission::Origin);
        assert_eq!(
            p.admit("open", Some("https://anything.example")),
            Admission::Accept
        );
        assert_eq!(p.admit("other", None), Admission::UnknownSite);
        assert_eq!(p.sample_rate("demo"), 0.5);
        assert_eq!(p.rate_limit("demo").unwrap().burst, 20);
        assert_eq!(p.rate_limit("open").unwrap().burst, 50);
        assert!(p.is_trusted_proxy("10.1.2.3".parse().unwrap()));
        assert!(!p.is_trusted_proxy("192.0.2.1".parse().unwrap()));
        assert!(
            !format!("{p:?}").contains("9f86d0"),
            "token hashes never printed"
        );
        assert!(Policy::parse("").unwrap().allow_unknown_sites);
    }

    #[test]
    fn refuses_mistakes_with_the_key_named() {
        for (text, want) in [
            ("bogus = 1", "unknown field `bogus`"),
            ("[sites.demo]\nsample_rate = 0", "sites.demo.sample_rate"),
            (
                "[sites.demo]\nallowed_origins = [\"shop.example\"]",
                "sites.demo.allowed_origins",
            ),
            ("[sites.\"bad site\"]", "not a valid site id"),
            (
                "[[tokens]]\nname = \"t\"\nsha256 = \"abc\"\nsites = [\"*\"]",
                "tokens.t: sha256",
            ),
            ("trusted_proxies = [\"nonsense\"]", "invalid IP address"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
