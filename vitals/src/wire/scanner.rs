//! The beacon decoder's fast path: a single forward scan over the JSON that beacons actually send.
//!
//! It reads the wire format's own fields straight out of the body (borrowed `&str`s, numbers as text until they
//! are needed), skips unknown fields, and compacts `attribution` objects the way the general decoder does. It
//! gives up (`None`) on anything it is not sure to read exactly as the general decoder would: a string with an
//! escape, a `null` field, a repeated key, nesting where a scalar belongs, any syntax error. The caller then runs
//! the general decoder, which alone words errors; a property test checks that both agree on every body the scanner
//! accepts. The typed `serde_json` parse it replaces took ~12,000 instructions for a beacon without attribution and
//! left every beacon.js beacon (which has attribution) to the general decoder, at ~120,000; this scan takes ~7,000
//! and ~22,000 (callgrind, `loadtest/examples/decode_timing.rs`).

use super::{MAX_ATTRIBUTION_KEYS, MAX_ATTRIBUTION_KEY_BYTES, MAX_ATTRIBUTION_VALUE_BYTES};
use std::fmt::Write;

/// The top-level fields of a beacon, as found.
#[derive(Default)]
pub(super) struct RawBeacon<'a> {
    /// The text of the `v` number.
    pub v: Option<&'a str>,
    pub site: Option<&'a str>,
    pub url: Option<&'a str>,
    pub release: Option<&'a str>,
    pub nav: Option<&'a str>,
    pub metrics: Option<Vec<RawSample<'a>>>,
}

/// One entry of `metrics`, as found.
#[derive(Default)]
pub(super) struct RawSample<'a> {
    pub name: Option<&'a str>,
    pub value: Option<f64>,
    pub id: Option<&'a str>,
    /// Already compacted exactly as the general decoder's `decode_attribution` writes it (when kept).
    pub attribution: Option<String>,
    /// An `attribution` key was read (kept or not): a second one is the general decoder's.
    pub attribution_seen: bool,
}

/// Scans a whole body; `None` whenever the general decoder must decide. Without `keep_attribution`, attribution
/// objects are checked by the same rules but not compacted (`RawSample::attribution` stays `None`).
pub(super) fn scan(body: &[u8], keep_attribution: bool) -> Option<RawBeacon<'_>> {
    // One UTF-8 check for the whole body; every string slice below starts and ends at an ASCII quote, so each is
    // valid UTF-8 on its own.
    let text = std::str::from_utf8(body).ok()?;
    let mut s = Scanner {
        text,
        at: 0,
        keep_attribution,
    };
    let mut b = RawBeacon::default();
    s.object(|s, key| match key {
        "v" => once(&mut b.v, s.number()?),
        "site" => once(&mut b.site, s.string()?),
        "url" => once(&mut b.url, s.string()?),
        "release" => once(&mut b.release, s.string()?),
        "nav" => once(&mut b.nav, s.string()?),
        "metrics" => {
            let mut metrics = Vec::with_capacity(5);
            s.array(|s| {
                metrics.push(s.sample()?);
                Some(())
            })?;
            once(&mut b.metrics, metrics)
        }
        _ => s.skip_value(0),
    })?;
    s.ws();
    // Nothing but white space after the object.
    (s.at == text.len()).then_some(b)
}

/// Sets a field once: a repeated key is left to the general decoder (which keeps the last).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The `serde_json::Number` that `serde_json` reads from a JSON number's text, without a deserializer per number:
/// integers that fit `u64` (or, negative, `i64`) stay integers; anything with a fraction or an exponent, `-0`, and
/// integers beyond 64 bits are floats. `None` for a float that does not fit an `f64` (JSON has no infinity).
fn json_number(text: &str) -> Option<serde_json::Number> {
    if text.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        return serde_json::Number::from_f64(text.parse().ok()?);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    match digits.parse::<u64>() {
        Ok(m) if !negative => Some(m.into()),
        // serde_json's rule: a negative integer whose negation is not a negative i64 (`-0`, or below i64::MIN)
        // becomes a float.
        Ok(m) => match (m as i64).wrapping_neg() {
            n if n < 0 => Some(n.into()),
            _ => serde_json::Number::from_f64(-(m as f64)),
        },
        // Beyond u64: rare enough to let serde_json itself round it.
        Err(_) => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .filter(|n| n.as_f64().is_some_and(f64::is_finite)),
    }
}

/// Deepest nesting skipped inside unknown fields (deeper bodies go to the general decoder).
const MAX_SKIP_DEPTH: usize = 16;

struct Scanner<'a> {
    text: &'a str,
    at: usize,
    /// Compact attribution objects, or only check them.
    keep_attribution: bool,
}

impl<'a> Scanner<'a> {
    fn byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// Skips JSON white space.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte() {
            self.at += 1;
        }
    }

    /// The next byte after white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.byte()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        // An escape needs unescaping, and a raw control character is invalid JSON: both are the general decoder's.
        let len = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        Some(&self.text[start..start + len])
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.byte() {
            self.at += 1;
        }
        self.at - start
    }

    /// The text of a number, checked against JSON's grammar (which is stricter than Rust's float syntax: no `+1`,
    /// `01`, `.5`, `1.`, `inf`).
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.at;
        if self.byte() == Some(b'-') {
            self.at += 1;
        }
        match self.byte()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.byte() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.byte() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.byte() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(&self.text[start..self.at])
    }

    /// A literal (`true`, `false`, `null`).
    fn literal(&mut self, word: &'static str) -> Option<&'static str> {
        self.ws();
        self.text[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            word
        })
    }

    /// An object, each member handed to `member` with its key (the value is `member`'s to consume).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.container(b'{', b'}', |s| {
            let key = s.string()?;
            s.eat(b':')?;
            member(s, key)
        })
    }

    /// An array, each element consumed by `element`.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.container(b'[', b']', element)
    }

    /// `open`, items separated by commas (each consumed by `item`), `close`.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                c if c == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Any JSON value, checked and skipped (an unknown field, kept for newer beacons' sake).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip_value(depth + 1)),
            b'[' => self.array(|s| s.skip_value(depth + 1)),
            b't' => self.literal("true").map(drop),
            b'f' => self.literal("false").map(drop),
            b'n' => self.literal("null").map(drop),
            _ => self.number().map(drop),
        }
    }

    /// One entry of `metrics`.
    fn sample(&mut self) -> Option<RawSample<'a>> {
        let mut m = RawSample::default();
        self.object(|s, key| match key {
            "name" => once(&mut m.name, s.string()?),
            "value" => {
                let v: f64 = s.number()?.parse().ok()?;
                // JSON has no infinity: a number too large for f64 is an error, which is the general decoder's.
                once(&mut m.value, v.is_finite().then_some(v)?)
            }
            "id" => once(&mut m.id, s.string()?),
            "attribution" => {
                if m.attribution_seen {
                    return None;
                }
                m.attribution_seen = true;
                m.attribution = s.attribution()?;
                Some(())
            }
            _ => s.skip_value(0),
        })?;
        Some(m)
    }

    /// An attribution object of scalars, written compactly in key order with strings cut at
    /// [`MAX_ATTRIBUTION_VALUE_BYTES`]: the general decoder's `decode_attribution`, for the bodies this scanner
    /// reads (no escapes, no repeated keys). `Some(None)`: valid, and not kept.
    fn attribution(&mut self) -> Option<Option<String>> {
        let mut out = self.keep_attribution.then(|| {
            let mut out = String::with_capacity(128);
            out.push('{');
            out
        });
        let mut keys: [&str; MAX_ATTRIBUTION_KEYS] = [""; MAX_ATTRIBUTION_KEYS];
        let mut n = 0;
        self.object(|s, key| {
            if n == MAX_ATTRIBUTION_KEYS
                || key.is_empty()
                || key.len() > MAX_ATTRIBUTION_KEY_BYTES
                || keys[..n].contains(&key)
            {
                return None;
            }
            keys[n] = key;
            n += 1;
            let Some(out) = out.as_mut() else {
                // Checked only: the same values are accepted, nothing is written.
                return match s.peek()? {
                    b'"' => s.string().map(drop),
                    b't' => s.literal("true").map(drop),
                    b'f' => s.literal("false").map(drop),
                    b'n' => s.literal("null").map(drop),
                    _ => finite_json_number(s.number()?).then_some(()),
                };
            };
            if n > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            match s.peek()? {
                b'"' => {
                    out.push('"');
                    out.push_str(super::truncate(s.string()?, MAX_ATTRIBUTION_VALUE_BYTES));
                    out.push('"');
                }
                b't' => out.push_str(s.literal("true")?),
                b'f' => out.push_str(s.literal("false")?),
                b'n' => out.push_str(s.literal("null")?),
                _ => {
                    // Written by serde_json's own `Number`, so integers stay integers and floats print exactly as
                    // the general decoder prints them.
                    write!(out, "{}", json_number(s.number()?)?).ok()?;
                }
            }
            Some(())
        })?;
        if let Some(out) = out.as_mut() {
            out.push('}');
        }
        Some(out)
    }
}

/// Whether [`json_number`] reads `text` (a number in JSON's grammar) as a number: without an exponent, fewer than
/// 300 digits cannot overflow an `f64`, so only the rest is parsed.
fn finite_json_number(text: &str) -> bool {
    (text.len() < 300 && !text.bytes().any(|c| matches!(c, b'e' | b'E')))
        || json_number(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::json_number;
    use proptest::prelude::*;

    fn serde_number(text: &str) -> Option<serde_json::Number> {
        serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .filter(|n| n.as_f64().is_some_and(f64::is_finite))
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them_at_the_edges() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "-18446744073709551616",
            "123456789012345678901234567890",
            "1.5",
            "-0.0",
            "1E-7",
            "1e2",
            "120.30000001192093",
            "1e400",
            "-1e400",
            "2.2250738585072011e-308",
        ] {
            let (ours, theirs) = (json_number(text), serde_number(text));
            // Compared as printed: that is what ends up in the attribution string.
            assert_eq!(
                ours.map(|n| n.to_string()),
                theirs.map(|n| n.to_string()),
                "{text}"
            );
        }
    }

    proptest! {
        /// Any number in JSON's grammar prints the same either way.
        #[test]
        fn numbers_read_as_serde_json_reads_them(
            negative: bool,
            int in prop_oneof!["0", "[1-9][0-9]{0,25}"],
            frac in proptest::option::of("[0-9]{1,20}"),
            exp in proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,3}")),
        ) {
            let mut text = String::new();
            if negative {
                text.push('-');
            }
            text.push_str(&int);
            if let Some(f) = frac {
                text.push('.');
                text.push_str(&f);
            }
            if let Some((e, sign, digits)) = exp {
                text.push_str(&e);
                text.push_str(&sign);
                text.push_str(&digits);
            }
            prop_assert_eq!(
                json_number(&text).map(|n| n.to_string()),
                serde_number(&text).map(|n| n.to_string()),
                "{}", text
            );
        }
    }
}
