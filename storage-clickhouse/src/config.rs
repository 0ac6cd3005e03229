//! Connection and behaviour settings of the ClickHouse store, validated once so the rest can trust them.

use std::fmt;
use std::time::Duration;

/// A secret string (a password) that never shows in `Debug`, `Display` or logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// No secret set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// Everything the ClickHouse store needs to know.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding the tables (an identifier: letters, digits, `_`).
    pub database: String,
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: Secret,
    /// Identity of this writer's id sequence (the collector's spool): ids are unique and increasing per source, so
    /// deduplication after a replay looks at this source's rows only. Several collectors must use different ones.
    pub source: String,
    /// Whole days of raw rows kept (at least 3: queries read raw rows for the minute-resolution edges of the
    /// last 48 hours, and a day partition is dropped only when all of it is older than this).
    pub raw_retention_days: u32,
    /// Whole days of hourly rollups kept; 0 keeps them forever.
    pub rollup_retention_days: u32,
    /// A batch is sent when its rows (one per beacon) hold this many samples…
    pub batch_rows: usize,
    /// …or when its oldest row has waited this long (at most one second).
    pub batch_max_age: Duration,
    /// Samples held in memory (current plus sealed batches) before the sink stops reading its input channel.
    pub max_backlog_rows: usize,
    /// Longest time stored rows are summed in memory before their sums go to the hourly rollup (the sums of a
    /// closed hour go at once: queries read the current hour from raw rows).
    pub rollup_interval: Duration,
    /// Time limit of one insert (sending and the server's answer).
    pub insert_timeout: Duration,
    /// Time limit of one query.
    pub query_timeout: Duration,
    /// First retry delay; doubles per failure up to `retry_max`.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// When set, the schema is the `ReplicatedMergeTree` + `Distributed` variant on this cluster.
    pub cluster: Option<String>,
    /// Whether inserts and answers travel LZ4-compressed.
    pub compression: WireCompression,
}

/// Compression of what travels between the collector and ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireCompression {
    /// LZ4, unless the URL names a loopback host: on one machine compressing costs both sides CPU and saves
    /// nothing (in ClickHouse mode at the maximum rate here, the collector spent ~3 % of its CPU in LZ4).
    #[default]
    Auto,
    /// Always LZ4 (ClickHouse's checksummed compressed blocks).
    Lz4,
    /// Never.
    None,
}

impl WireCompression {
    /// `auto`, `lz4` or `none`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(WireCompression::Auto),
            "lz4" => Ok(WireCompression::Lz4),
            "none" => Ok(WireCompression::None),
            other => Err(ConfigError(format!(
                "compression {other:?} must be auto, lz4 or none"
            ))),
        }
    }

    /// The name [`WireCompression::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            WireCompression::Auto => "auto",
            WireCompression::Lz4 => "lz4",
            WireCompression::None => "none",
        }
    }
}

/// Whether an `http(s)://` URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "fieldvitals".into(),
            user: "default".into(),
            password: Secret::default(),
            source: "default".into(),
            raw_retention_days: 30,
            rollup_retention_days: 400,
            // ClickHouse's own guidance is about one insert per second: every insert makes a part in the raw table
            // and one in the rollup, and merging small parts was most of the server's CPU at the ingest ceiling
            // (docs/benchmarks.md). At ~100,000 rows/s (one collector's ceiling here) the age cuts before the count.
            batch_rows: 100_000,
            batch_max_age: Duration::from_secs(1),
            max_backlog_rows: 300_000,
            // Ten seconds of one collector's maximum rate make ~35,000 rollup rows a second against ~80,000 for one
            // second's (docs/benchmarks.md); late rows of a closed hour reach its rollup within this time.
            rollup_interval: Duration::from_secs(10),
            insert_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            cluster: None,
            compression: WireCompression::Auto,
        }
    }
}

/// The largest batch. ClickHouse forms blocks of at most `max_insert_block_size` rows (1,048,576 by default) and,
/// on newer servers, cuts them at `min_insert_block_size_bytes` (256 MiB) too; half a million rows of a few hundred
/// bytes stay one block under both, so an insert stays atomic.
pub const MAX_BATCH_ROWS: usize = 500_000;

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clickhouse config: {0}")]
pub struct ConfigError(pub String);

/// Identifiers are put into SQL text (they cannot be bound), so they are restricted to a safe alphabet.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl ClickHouseConfig {
    /// Whether to compress on the wire: [`WireCompression::Auto`] resolved against the URL.
    pub fn lz4_on_the_wire(&self) -> bool {
        match self.compression {
            WireCompression::Auto => !is_loopback_url(&self.url),
            WireCompression::Lz4 => true,
            WireCompression::None => false,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return err(format!(
                "url {:?} must start with http:// or https://",
                self.url
            ));
        }
        if !is_identifier(&self.database) {
            return err(format!(
                "database {:?} must be letters, digits and _ (not starting with a digit)",
                self.database
            ));
        }
        if let Some(c) = &self.cluster {
            if !is_identifier(c) {
                return err(format!("cluster {c:?} must be letters, digits and _"));
            }
        }
        if self.source.is_empty() || self.source.len() > 128 {
            return err("source must be 1 to 128 bytes".into());
        }
        if self.raw_retention_days < 3 {
            return err(format!(
                "raw retention of {} days is too short: queries read raw rows of the last 48 hours (minimum 3)",
                self.raw_retention_days
            ));
        }
        if self.rollup_retention_days != 0 && self.rollup_retention_days < self.raw_retention_days {
            return err(
                "rollup retention must be 0 (forever) or at least the raw retention".into(),
            );
        }
        if self.batch_rows == 0
            || self.batch_max_age.is_zero()
            || self.batch_max_age > Duration::from_secs(1)
        {
            return err(
                "batches need at least one row and a maximum age above 0 and at most 1 s".into(),
            );
        }
        // ClickHouse cuts the rows of an insert it parses into blocks (about a million rows or 256 MiB by default),
        // and only a single block is atomic: a larger batch could be half stored after a failure, which exactly-once
        // relies on never happening.
        if self.batch_rows > MAX_BATCH_ROWS {
            return err(format!(
                "batches of more than {MAX_BATCH_ROWS} rows would not be one block (atomic) in ClickHouse"
            ));
        }
        if self.rollup_interval.is_zero() || self.rollup_interval > Duration::from_secs(60) {
            return err("the rollup interval must be above 0 and at most 60 s".into());
        }
        if self.max_backlog_rows < self.batch_rows {
            return err("max backlog rows must be at least the batch size".into());
        }
        if self.insert_timeout.is_zero() || self.query_timeout.is_zero() {
            return err("timeouts must be above 0".into());
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return err("retry delays must be above 0 with max >= min".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_bad_settings_are_refused() {
        let c = ClickHouseConfig {
            password: Secret::new("hunter2"),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(format!("{}", c.password), "[redacted]");
        assert!(c.validate().is_ok());
        for bad in [
            ClickHouseConfig {
                database: "x; DROP".into(),
                ..Default::default()
            },
            ClickHouseConfig {
                database: "1x".into(),
                ..Default::default()
            },
            ClickHouseConfig {
                cluster: Some("a-b".into()),
                ..Default::default()
            },
            ClickHouseConfig {
                raw_retention_days: 2,
                ..Default::default()
            },
            ClickHouseConfig {
                batch_max_age: Duration::from_millis(1001),
                ..Default::default()
            },
            ClickHouseConfig {
                url: "127.0.0.1:8123".into(),
                ..Default::default()
            },
            ClickHouseConfig {
                max_backlog_rows: 10,
                ..Default::default()
            },
            ClickHouseConfig {
                rollup_interval: Duration::ZERO,
                ..Default::default()
            },
            ClickHouseConfig {
                rollup_interval: Duration::from_secs(61),
                ..Default::default()
            },
            ClickHouseConfig {
                batch_rows: MAX_BATCH_ROWS + 1,
                max_backlog_rows: 4 * MAX_BATCH_ROWS,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compression_is_off_only_for_a_loopback_server_unless_chosen() {
        let on = |url: &str, compression| {
            ClickHouseConfig {
                url: url.into(),
                compression,
                ..Default::default()
            }
            .lz4_on_the_wire()
        };
        for local in [
            "http://127.0.0.1:8123",
            "http://127.9.0.1",
            "https://localhost:8443/",
            "http://LOCALHOST",
            "http://[::1]:8123",
            "http://user:pw@127.0.0.1:8123/?x=1",
        ] {
            assert!(!on(local, WireCompression::Auto), "{local}");
            assert!(on(local, WireCompression::Lz4), "{local}");
        }
        for remote in [
            "http://10.0.0.5:8123",
            "https://ch.example.com",
            "http://[2001:db8::1]:8123",
            "http://127.0.0.1.example.com",
            "http://localhost.example.com:8123",
            "http://user:127.0.0.1@10.0.0.5",
        ] {
            assert!(on(remote, WireCompression::Auto), "{remote}");
            assert!(!on(remote, WireCompression::None), "{remote}");
        }
        for (name, c) in [
            ("auto", WireCompression::Auto),
            ("lz4", WireCompression::Lz4),
            ("none", WireCompression::None),
        ] {
            assert_eq!(WireCompression::parse(name), Ok(c));
            assert_eq!(c.as_str(), name);
        }
        assert!(WireCompression::parse("zstd")
            .unwrap_err()
            .to_string()
            .contains("auto, lz4 or none"));
    }
}
