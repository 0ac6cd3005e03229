//! Value histograms: HDR bucketing with a fixed range and precision, a sparse mergeable representation, the one
//! quantile definition the product uses, and the CrUX three-bin shares.
//!
//! Why sparse: the collector keeps one histogram per (site, minute, page, device, release, nav, metric). A dense HDR
//! counts array is ~100 KiB at this precision; a long tail of pages with one sample a minute needs a few bytes each.
//! The bucketing itself is `hdrhistogram`'s (`lowest_equivalent`), so it is the same function in the embedded store,
//! the ClickHouse rollups (`sumMap(bucket, count)`) and anywhere else a bucket key is computed.

use crate::metric::{Metric, Rating, Unit};
use std::sync::OnceLock;

/// Significant decimal digits kept: a bucket's width is at most 1/1024 of its value (< 0.1 %).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Millisecond metrics are recorded in whole milliseconds: exact below 2,048 ms (every realistic INP and TTFB), and
/// within 0.05 % above; sub-millisecond digits are noise for a user's experience.
pub const MILLIS_SCALE: f64 = 1.0;
/// CLS is recorded in ten-thousandths: exact below 0.2048, within 0.05 % above.
pub const SCORE_SCALE: f64 = 10_000.0;

fn template() -> &'static hdrhistogram::Histogram<u64> {
    static T: OnceLock<hdrhistogram::Histogram<u64>> = OnceLock::new();
    T.get_or_init(|| {
        // Both scales put their maximum (3.6e6 ms, 1e6 ten-thousandths) below this bound, so one template serves all.
        hdrhistogram::Histogram::new_with_bounds(1, 4_000_000, SIGNIFICANT_DIGITS)
            .expect("constant HDR bounds are valid")
    })
}

fn scale(metric: Metric) -> f64 {
    match metric.unit() {
        Unit::Millis => MILLIS_SCALE,
        Unit::Score => SCORE_SCALE,
    }
}

/// The bucket key of a value: the lowest value (in recorded units) equivalent to it at this precision.
/// The value must already be validated (finite, within the metric's bounds).
pub fn bucket_of(metric: Metric, value: f64) -> u64 {
    let units = (value * scale(metric)).round().max(0.0) as u64;
    template().lowest_equivalent(units)
}

/// The value reported for a bucket: the middle of its range, in the metric's unit. Exact for buckets of width one.
pub fn bucket_value(metric: Metric, bucket: u64) -> f64 {
    let t = template();
    let low = t.lowest_equivalent(bucket);
    let high = t.highest_equivalent(bucket);
    // Integer midpoint, rounded down, so that it is a recordable value and identical on every platform.
    let mid = low + (high - low) / 2;
    mid as f64 / scale(metric)
}

/// A quantile, held exactly in parts per million so that `0.95 × 100` is 95, not 95.00000000000001.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantile(u32);

/// Why a quantile string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantile {0:?} must be a decimal number above 0 and at most 1, with at most 6 decimals (like 0.75)")]
pub struct QuantileError(pub String);

impl Quantile {
    /// The 75th percentile, CrUX's headline statistic.
    pub const P75: Quantile = Quantile(750_000);

    /// Parses a decimal like `0.75`, `0.999`, `1`.
    pub fn parse(s: &str) -> Result<Quantile, QuantileError> {
        let err = || QuantileError(s.to_string());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() && frac.is_empty()
            || frac.len() > 6
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || int.len() > 1
        {
            return Err(err());
        }
        let int: u32 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        let mut f: u32 = 0;
        for i in 0..6 {
            let d = frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as u32);
            f = f * 10 + d;
        }
        let ppm = int * 1_000_000 + f;
        if ppm == 0 || ppm > 1_000_000 {
            return Err(err());
        }
        Ok(Quantile(ppm))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The quantile as a float.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Nearest rank: the 1-based rank `ceil(q × n)` (at least 1) of the value this quantile denotes among `n`.
    pub fn rank(self, n: u64) -> u64 {
        let r = (self.0 as u128 * n as u128).div_ceil(1_000_000) as u64;
        r.max(1)
    }
}

/// A sparse histogram of one metric's values: sorted (bucket, count) pairs plus the exact rating counts.
///
/// Rating counts are kept from the exact values rather than derived from buckets, so the shares are exact even
/// where a bucket straddles a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Histogram {
    buckets: Vec<(u64, u64)>,
    ratings: [u64; 3],
}

/// The three CrUX bins as fractions of the total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Share rated good.
    pub good: f64,
    /// Share rated needs improvement.
    pub ni: f64,
    /// Share rated poor.
    pub poor: f64,
}

/// A merged histogram reduced to what a stats answer shows: rating counts and some quantiles
/// ([`Histogram::summary`], [`Merger::finish_summary`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    ratings: [u64; 3],
    quantiles: Vec<Option<f64>>,
}

impl Summary {
    /// Number of values.
    pub fn count(&self) -> u64 {
        self.ratings.iter().sum()
    }

    /// The CrUX three-bin shares, as [`Histogram::shares`] gives them. `None` when empty.
    pub fn shares(&self) -> Option<Shares> {
        shares_of(self.ratings)
    }

    /// The quantiles asked for, in that order, as [`Histogram::quantile`] gives them.
    pub fn quantiles(&self) -> &[Option<f64>] {
        &self.quantiles
    }
}

fn shares_of(ratings: [u64; 3]) -> Option<Shares> {
    let n: u64 = ratings.iter().sum();
    if n == 0 {
        return None;
    }
    let n = n as f64;
    Some(Shares {
        good: ratings[0] as f64 / n,
        ni: ratings[1] as f64 / n,
        poor: ratings[2] as f64 / n,
    })
}

/// Why stored histogram bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a histogram of a known version.
    #[error("histogram: unknown encoding version {0}")]
    Version(u8),
    /// Truncated or malformed.
    #[error("histogram: truncated or malformed bytes")]
    Malformed,
}

/// Version 1: every pair, delta-encoded. Written for small histograms (and keys without a dense slot).
const ENCODING_V1: u8 = 1;
/// Version 2, sectioned: a table of per-section counts ahead of the pairs, so a quantile can be found by reading the
/// table of every row and the pairs of one section only ([`Merger::summarize_encoded`]).
const ENCODING_V2: u8 = 2;
/// Dense slots per section of the sectioned encoding: 128 slots span 128 ms below 2,048 ms and 1/8 of a power of two
/// above (about 6 % of the value), so a month of one page's LCP falls in a few dozen sections.
const SECTION_SLOTS: usize = 128;
/// Sections over every dense slot.
const SECTIONS: usize = DENSE_SLOTS.div_ceil(SECTION_SLOTS);
/// Histograms of at least this many pairs are written sectioned. Below it a histogram is read whole in about the
/// time its section table takes, and the table (14 bytes and two per section) would be most of its size: minute rows
/// hold a few values each.
const SECTIONED_FROM_PAIRS: usize = 16;
/// Bytes of the bitmap of sections present.
const PRESENCE_BYTES: usize = SECTIONS.div_ceil(8);
const _: () = assert!(SECTIONS <= 128, "the presence bitmap is read as a u128");

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one validated value.
    pub fn record(&mut self, metric: Metric, value: f64) {
        self.record_bucket(bucket_of(metric, value), metric.rate(value), 1);
    }

    /// Records `count` values that fall in `bucket` and carry `rating`.
    pub fn record_bucket(&mut self, bucket: u64, rating: Rating, count: u64) {
        match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (bucket, count)),
        }
        self.ratings[rating.code() as usize] += count;
    }

    /// Builds a histogram from bucket pairs (any order, repeats allowed) and rating counts, as read back from a
    /// store. Returns `None` when the pairs and the rating counts disagree on the total.
    pub fn from_parts(
        pairs: impl IntoIterator<Item = (u64, u64)>,
        ratings: [u64; 3],
    ) -> Option<Histogram> {
        let mut buckets: Vec<(u64, u64)> = pairs.into_iter().filter(|p| p.1 > 0).collect();
        buckets.sort_unstable_by_key(|p| p.0);
        buckets.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += later.1;
                true
            } else {
                false
            }
        });
        let h = Histogram { buckets, ratings };
        (h.buckets.iter().map(|p| p.1).sum::<u64>() == h.count()).then_some(h)
    }

    /// Adds another histogram into this one, in place.
    ///
    /// Why in place: a query folds many small rows (a few buckets each) into one large group histogram; building a
    /// new vector on every merge made that quadratic in the group's bucket count. Here counts of shared buckets are
    /// added where they are, and only the new buckets are merged in, from the back, within the one allocation.
    pub fn merge(&mut self, other: &Histogram) {
        for i in 0..3 {
            self.ratings[i] += other.ratings[i];
        }
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets.extend_from_slice(&other.buckets);
            return;
        }
        // Buckets of `other` above the last of `self` are appended as they are; the rest are found or inserted.
        let last = self.buckets[self.buckets.len() - 1].0;
        let tail = other.buckets.partition_point(|&(b, _)| b <= last);
        let mut fresh: Vec<(u64, u64)> = Vec::new();
        let mut lo = 0;
        for &(bucket, count) in &other.buckets[..tail] {
            // `other` is sorted, so each search starts where the previous one ended.
            match self.buckets[lo..].binary_search_by_key(&bucket, |&(b, _)| b) {
                Ok(i) => {
                    self.buckets[lo + i].1 += count;
                    lo += i + 1;
                }
                Err(i) => {
                    fresh.push((bucket, count));
                    lo += i;
                }
            }
        }
        self.buckets.extend_from_slice(&other.buckets[tail..]);
        if fresh.is_empty() {
            return;
        }
        // Merge `fresh` (sorted, disjoint from `self`, all below the appended tail) into the head from the back.
        let appended = other.buckets.len() - tail;
        let head = self.buckets.len() - appended;
        self.buckets
            .splice(head..head, std::iter::repeat_n((0, 0), fresh.len()));
        let (mut i, mut j, mut w) = (head, fresh.len(), head + fresh.len());
        while j > 0 {
            w -= 1;
            if i > 0 && self.buckets[i - 1].0 > fresh[j - 1].0 {
                self.buckets[w] = self.buckets[i - 1];
                i -= 1;
            } else {
                self.buckets[w] = fresh[j - 1];
                j -= 1;
            }
        }
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.ratings.iter().sum()
    }

    /// The (bucket, count) pairs, in bucket order.
    pub fn buckets(&self) -> &[(u64, u64)] {
        &self.buckets
    }

    /// Counts per rating: good, needs improvement, poor.
    pub fn rating_counts(&self) -> [u64; 3] {
        self.ratings
    }

    /// The nearest-rank quantile: the value of the bucket holding the `ceil(q × n)`-th smallest value, reported as the
    /// middle of that bucket (so within half a bucket width, < 0.05 %, of the exact sample). `None` when empty.
    pub fn quantile(&self, metric: Metric, q: Quantile) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = q.rank(n);
        let mut seen = 0u64;
        for &(bucket, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(bucket_value(metric, bucket));
            }
        }
        None
    }

    /// The CrUX three-bin shares. `None` when empty.
    pub fn shares(&self) -> Option<Shares> {
        shares_of(self.ratings)
    }

    /// The rating counts and the given quantiles: what a stats answer needs of a histogram.
    pub fn summary(&self, metric: Metric, quantiles: &[Quantile]) -> Summary {
        Summary {
            ratings: self.ratings,
            quantiles: quantiles
                .iter()
                .map(|&q| self.quantile(metric, q))
                .collect(),
        }
    }

    /// Approximate heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// Serialises to a compact, versioned byte string. Histograms of [`SECTIONED_FROM_PAIRS`] pairs or more are
    /// written sectioned (version 2): LEB128 varints of the rating counts; a bitmap of the sections present; one byte
    /// giving the widths of what follows; each present section's count and the end offset of its pairs, fixed-width
    /// little-endian; then each section's pairs as (slot offset delta, count) varints. Smaller ones (most minute rows)
    /// are written as version 1: the rating counts, the bucket count, then delta-encoded bucket keys with their
    /// counts.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_sectioned().unwrap_or_else(|| self.encode_v1())
    }

    fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.buckets.len() * 4);
        out.push(ENCODING_V1);
        for r in self.ratings {
            put_varint(&mut out, r);
        }
        put_varint(&mut out, self.buckets.len() as u64);
        let mut prev = 0u64;
        for &(b, c) in &self.buckets {
            put_varint(&mut out, b - prev);
            put_varint(&mut out, c);
            prev = b;
        }
        out
    }

    /// Version 2, or `None` where it does not apply: fewer than [`SECTIONED_FROM_PAIRS`] pairs, a key without a
    /// dense slot, or a zero count.
    fn encode_sectioned(&self) -> Option<Vec<u8>> {
        if self.buckets.len() < SECTIONED_FROM_PAIRS {
            return None;
        }
        let mut present = 0u128;
        for &(b, c) in &self.buckets {
            if c == 0 {
                return None;
            }
            present |= 1u128 << (dense_slot(b)? / SECTION_SLOTS);
        }
        let sections = present.count_ones() as usize;
        let mut counts: Vec<u64> = Vec::with_capacity(sections);
        let mut ends: Vec<u64> = Vec::with_capacity(sections);
        let mut data = Vec::with_capacity(self.buckets.len() * 3);
        let mut pairs = self.buckets.iter().peekable();
        while let Some(&(b, c)) = pairs.next() {
            let slot = dense_slot(b)?;
            let section = slot / SECTION_SLOTS;
            let mut count = c;
            let mut prev_off = slot % SECTION_SLOTS;
            put_varint(&mut data, prev_off as u64);
            put_varint(&mut data, c);
            while let Some(&&(b, c)) = pairs.peek() {
                let slot = dense_slot(b)?;
                if slot / SECTION_SLOTS != section {
                    break;
                }
                pairs.next();
                let off = slot % SECTION_SLOTS;
                put_varint(&mut data, (off - prev_off) as u64);
                put_varint(&mut data, c);
                count = count.checked_add(c)?;
                prev_off = off;
            }
            counts.push(count);
            ends.push(data.len() as u64);
        }
        let width = |max: u64| (8 - max.leading_zeros() as usize / 8).max(1);
        let count_width = width(counts.iter().copied().max().unwrap_or(0));
        let end_width = width(data.len() as u64);
        let mut out = Vec::with_capacity(32 + sections * (count_width + end_width) + data.len());
        out.push(ENCODING_V2);
        for r in self.ratings {
            put_varint(&mut out, r);
        }
        out.extend_from_slice(&present.to_le_bytes()[..PRESENCE_BYTES]);
        out.push((count_width | end_width << 4) as u8);
        for c in counts {
            out.extend_from_slice(&c.to_le_bytes()[..count_width]);
        }
        for e in ends {
            out.extend_from_slice(&e.to_le_bytes()[..end_width]);
        }
        out.extend_from_slice(&data);
        Some(out)
    }

    /// Reads what [`Histogram::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Histogram, DecodeError> {
        let mut buckets = Vec::new();
        let ratings = decode_each(bytes, &mut buckets)?;
        Ok(Histogram { buckets, ratings })
    }
}

/// Where [`decode_each`] puts the pairs it reads.
trait PairSink {
    /// The number of pairs that follow (already checked against the input's length).
    fn expect(&mut self, _pairs: usize) {}
    fn pair(&mut self, bucket: u64, count: u64);
    /// A pair given by its dense slot (below [`DENSE_SLOTS`]).
    #[inline]
    fn slot(&mut self, slot: usize, count: u64) {
        self.pair(slot_key(slot), count);
    }
}

impl PairSink for Vec<(u64, u64)> {
    #[inline]
    fn expect(&mut self, pairs: usize) {
        self.reserve_exact(pairs);
    }
    #[inline]
    fn pair(&mut self, bucket: u64, count: u64) {
        self.push((bucket, count));
    }
}

/// Validates encoded bytes (everything [`Histogram::decode`] checks) while handing each (bucket, count) pair to
/// `sink` in bucket order; returns the rating counts. On an error some pairs may already have been handed over.
fn decode_each(bytes: &[u8], sink: &mut impl PairSink) -> Result<[u64; 3], DecodeError> {
    let (&version, mut rest) = bytes.split_first().ok_or(DecodeError::Malformed)?;
    if version == ENCODING_V2 {
        return Sectioned::read(rest)?.decode_all(sink);
    }
    if version != ENCODING_V1 {
        return Err(DecodeError::Version(version));
    }
    let mut ratings = [0u64; 3];
    for r in &mut ratings {
        *r = get_varint(&mut rest)?;
    }
    let n = get_varint(&mut rest)?;
    // Each pair takes at least two bytes: refuse lengths the input cannot hold before allocating.
    if n > rest.len() as u64 / 2 {
        return Err(DecodeError::Malformed);
    }
    sink.expect(n as usize);
    let mut prev = 0u64;
    // Checked sums: corrupt counts must be an error, not an overflow (found by fuzzing). Overflows are collected in
    // one flag and checked after the loop: the pairs handed over meanwhile are discarded with the error.
    let mut total = 0u64;
    let mut overflow = false;
    for i in 0..n {
        let delta = get_varint(&mut rest)?;
        if i > 0 && delta == 0 {
            return Err(DecodeError::Malformed);
        }
        let (b, o) = prev.overflowing_add(delta);
        let c = get_varint(&mut rest)?;
        let (t, p) = total.overflowing_add(c);
        overflow |= o | p;
        total = t;
        sink.pair(b, c);
        prev = b;
    }
    if !rest.is_empty() || overflow {
        return Err(DecodeError::Malformed);
    }
    let rated = ratings.iter().try_fold(0u64, |acc, r| acc.checked_add(*r));
    if rated != Some(total) {
        return Err(DecodeError::Malformed);
    }
    Ok(ratings)
}

/// A version 2 histogram's layout, read from its header: rating counts, the bitmap of sections present, then one
/// fixed-width count and one fixed-width end offset (into the pairs) per section present, then the pairs.
/// Fixed widths let a reader take a section's count or find its pairs without reading anything before them.
struct Sectioned<'a> {
    ratings: [u64; 3],
    present: u128,
    counts: &'a [u8],
    count_width: usize,
    ends: &'a [u8],
    end_width: usize,
    data: &'a [u8],
}

/// One section of a [`Sectioned`] histogram.
struct Section<'a> {
    index: usize,
    count: u64,
    pairs: &'a [u8],
}

/// Reads a little-endian number of `width` (1 to 8) bytes at `bytes[i * width..]`, which must be in bounds. Where 8
/// bytes are there to read, one unaligned load and a mask (the bytes after the number are whatever follows it).
#[inline(always)]
fn fixed(bytes: &[u8], width: usize, i: usize) -> u64 {
    let at = i * width;
    let mask = u64::MAX >> (64 - 8 * width as u32);
    match bytes.get(at..at + 8) {
        Some(word) => u64::from_le_bytes(word.try_into().expect("8 bytes")) & mask,
        None => bytes[at..at + width]
            .iter()
            .rev()
            .fold(0u64, |v, &b| v << 8 | b as u64),
    }
}

impl<'a> Sectioned<'a> {
    /// Reads the header after the version byte, checking that the parts fit the input exactly (the counts and the
    /// pairs are checked where they are read: [`Sectioned::add_counts`], [`Sectioned::sections`]).
    #[inline(always)]
    fn read(mut rest: &'a [u8]) -> Result<Sectioned<'a>, DecodeError> {
        let mut ratings = [0u64; 3];
        for r in &mut ratings {
            *r = get_varint(&mut rest)?;
        }
        let (bitmap, rest) = rest
            .split_first_chunk::<PRESENCE_BYTES>()
            .ok_or(DecodeError::Malformed)?;
        let mut word = [0u8; 16];
        word[..PRESENCE_BYTES].copy_from_slice(bitmap);
        let present = u128::from_le_bytes(word);
        let (&widths, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
        let (count_width, end_width) = ((widths & 0xf) as usize, (widths >> 4) as usize);
        let n = present.count_ones() as usize;
        if present == 0
            || present >> SECTIONS != 0
            || !(1..=8).contains(&count_width)
            || !(1..=8).contains(&end_width)
            || rest.len() < n * (count_width + end_width)
        {
            return Err(DecodeError::Malformed);
        }
        // `counts` and `ends` run on to the end of the input, so that `fixed` can load whole words; `n` bounds them.
        let counts = rest;
        let ends = &rest[n * count_width..];
        let data = &ends[n * end_width..];
        // The last section ends where the data ends (ends rising are checked as sections are read).
        if fixed(ends, end_width, n - 1) != data.len() as u64 {
            return Err(DecodeError::Malformed);
        }
        Ok(Sectioned {
            ratings,
            present,
            counts,
            count_width,
            ends,
            end_width,
            data,
        })
    }

    /// Adds each section's count to `sections` and checks the counts (above zero, summing to the rating total);
    /// returns the rating counts. The pairs are not read.
    #[inline(always)]
    fn add_counts(&self, sections: &mut [u64; SECTIONS]) -> Result<[u64; 3], DecodeError> {
        let mut left = self.present;
        let mut total = 0u64;
        let mut i = 0;
        while left != 0 {
            let index = left.trailing_zeros() as usize;
            left &= left - 1;
            let count = fixed(self.counts, self.count_width, i);
            i += 1;
            if count == 0 {
                return Err(DecodeError::Malformed);
            }
            total = total.checked_add(count).ok_or(DecodeError::Malformed)?;
            // `index` is below SECTIONS: `read` refused bits above.
            sections[index] = sections[index].wrapping_add(count);
        }
        self.check_total(total)?;
        Ok(self.ratings)
    }

    fn check_total(&self, total: u64) -> Result<(), DecodeError> {
        let rated = self
            .ratings
            .iter()
            .try_fold(0u64, |acc, r| acc.checked_add(*r));
        if rated != Some(total) {
            return Err(DecodeError::Malformed);
        }
        Ok(())
    }

    /// Section `index`, if present: found by its rank among the sections present, without reading the others.
    #[inline(always)]
    fn section(&self, index: usize) -> Result<Option<Section<'a>>, DecodeError> {
        if self.present >> index & 1 == 0 {
            return Ok(None);
        }
        let i = (self.present & ((1u128 << index) - 1)).count_ones() as usize;
        let start = if i == 0 {
            0
        } else {
            fixed(self.ends, self.end_width, i - 1)
        };
        let end = fixed(self.ends, self.end_width, i);
        if start >= end || end > self.data.len() as u64 {
            return Err(DecodeError::Malformed);
        }
        Ok(Some(Section {
            index,
            count: fixed(self.counts, self.count_width, i),
            pairs: &self.data[start as usize..end as usize],
        }))
    }

    /// Every section's pairs handed to `sink`, all checked; returns the rating counts.
    fn decode_all(&self, sink: &mut impl PairSink) -> Result<[u64; 3], DecodeError> {
        let mut left = self.present;
        let mut total = 0u64;
        while left != 0 {
            let index = left.trailing_zeros() as usize;
            left &= left - 1;
            let section = self.section(index)?.ok_or(DecodeError::Malformed)?;
            if section.count == 0 {
                return Err(DecodeError::Malformed);
            }
            total = total
                .checked_add(section.count)
                .ok_or(DecodeError::Malformed)?;
            section.decode_into(sink)?;
        }
        self.check_total(total)?;
        Ok(self.ratings)
    }
}

impl Section<'_> {
    /// Hands the section's pairs to `sink`, checking them (offsets rising within the section, counts above zero and
    /// summing to the section's count).
    #[inline]
    fn decode_into(&self, sink: &mut impl PairSink) -> Result<(), DecodeError> {
        let base = self.index * SECTION_SLOTS;
        let mut rest = self.pairs;
        let mut off = 0u64;
        let mut first = true;
        let mut sum = 0u64;
        let mut overflow = false;
        while !rest.is_empty() {
            let delta = get_varint(&mut rest)?;
            let c = get_varint(&mut rest)?;
            if (!first && delta == 0) || c == 0 || delta >= (SECTION_SLOTS as u64 - off) {
                return Err(DecodeError::Malformed);
            }
            first = false;
            off += delta;
            let slot = base + off as usize;
            if slot >= DENSE_SLOTS {
                return Err(DecodeError::Malformed);
            }
            let (s, o) = sum.overflowing_add(c);
            overflow |= o;
            sum = s;
            sink.slot(slot, c);
        }
        if overflow || sum != self.count {
            return Err(DecodeError::Malformed);
        }
        Ok(())
    }
}

/// Dense slots of [`Merger`]: one per bucket key below 2^22 (every key the template produces; 4,000,000 < 2^22).
const DENSE_SLOTS: usize = SUB_BUCKETS + 11 * HALF_SUB_BUCKETS;
/// Keys below this are their own bucket (width 1); above, each power of two holds `HALF_SUB_BUCKETS` buckets.
const SUB_BUCKETS: usize = 2048;
const HALF_SUB_BUCKETS: usize = 1024;

/// The dense slot of a bucket key, `None` for a key that is not the lowest value of a bucket below 2^22 (such keys
/// cannot come from [`bucket_of`], but stored bytes are not trusted to be canonical).
#[inline]
fn dense_slot(key: u64) -> Option<usize> {
    if key < SUB_BUCKETS as u64 {
        return Some(key as usize);
    }
    // Buckets above 2^11 hold the values sharing their top 11 bits: key = sub << shift, sub in [1024, 2048).
    let shift = 63 - key.leading_zeros() - HALF_SUB_BUCKETS.trailing_zeros();
    let sub = key >> shift;
    if sub << shift != key {
        return None;
    }
    let slot =
        SUB_BUCKETS + (shift as usize - 1) * HALF_SUB_BUCKETS + (sub as usize - HALF_SUB_BUCKETS);
    (slot < DENSE_SLOTS).then_some(slot)
}

/// The bucket key of a dense slot: the inverse of [`dense_slot`].
fn slot_key(slot: usize) -> u64 {
    if slot < SUB_BUCKETS {
        return slot as u64;
    }
    let s = slot - SUB_BUCKETS;
    let shift = s / HALF_SUB_BUCKETS + 1;
    ((s % HALF_SUB_BUCKETS + HALF_SUB_BUCKETS) as u64) << shift
}

/// Merges many encoded histograms into one without building or sorting their pairs: counts are added into a dense
/// array indexed by bucket (keys that have no slot are set aside and sorted in at the end), and [`Merger::finish`]
/// walks the occupied slots in order. Reusable: `finish` leaves it empty.
///
/// Why: a query folds thousands of rows per group; collecting their pairs and sorting them (what
/// [`Histogram::from_parts`] does) was most of the time of "p75 by page". The result is the same histogram.
pub struct Merger {
    pairs: DensePairs,
    ratings: [u64; 3],
    /// The pairs of version 1 rows, by dense slot, on the summary path.
    loose: Vec<(u32, u64)>,
}

/// A [`Merger`]'s counts.
struct DensePairs {
    // Fixed-size: `dense_slot`'s bound is then the arrays' own, and the per-pair index checks compile away.
    counts: Box<[u64; DENSE_SLOTS]>,
    /// One bit per slot that was added to since the last `finish`.
    occupied: Box<[u64; DENSE_SLOTS.div_ceil(64)]>,
    /// Pairs whose key has no dense slot.
    other: Vec<(u64, u64)>,
}

impl DensePairs {
    /// Calls `f(slot, count)` for every occupied slot with a count, in slot (so bucket) order, leaving the dense
    /// part empty for the next merge.
    fn drain_dense(&mut self, mut f: impl FnMut(usize, u64)) {
        for (i, word) in self.occupied.iter_mut().enumerate() {
            let mut w = std::mem::take(word);
            while w != 0 {
                let slot = i * 64 + w.trailing_zeros() as usize;
                w &= w - 1;
                let c = std::mem::take(&mut self.counts[slot]);
                if c > 0 {
                    f(slot, c);
                }
            }
        }
    }
}

impl PairSink for DensePairs {
    #[inline]
    fn pair(&mut self, bucket: u64, count: u64) {
        match dense_slot(bucket) {
            Some(s) => self.slot(s, count),
            None => self.other.push((bucket, count)),
        }
    }

    #[inline]
    fn slot(&mut self, s: usize, count: u64) {
        self.counts[s] = self.counts[s].wrapping_add(count);
        self.occupied[s / 64] |= 1 << (s % 64);
    }
}

/// Where the summary path puts version 1 rows' pairs: by dense slot, their counts added to their sections as they
/// come. A key without a slot sets `whole` (and that pair is dropped: the caller then merges everything instead).
struct LooseSlots<'a> {
    pairs: Vec<(u32, u64)>,
    sections: &'a mut [u64; SECTIONS],
    whole: bool,
}

impl PairSink for LooseSlots<'_> {
    #[inline]
    fn pair(&mut self, bucket: u64, count: u64) {
        match dense_slot(bucket) {
            Some(slot) => {
                let s = &mut self.sections[slot / SECTION_SLOTS];
                *s = s.wrapping_add(count);
                self.pairs.push((slot as u32, count));
            }
            None => self.whole = true,
        }
    }
}

/// Counts added straight into a [`Merger`]'s dense array, without marking occupancy (the summary path zeroes the
/// sections it counted itself).
struct SlotCounts<'a>(&'a mut [u64; DENSE_SLOTS]);

impl PairSink for SlotCounts<'_> {
    fn pair(&mut self, bucket: u64, count: u64) {
        if let Some(s) = dense_slot(bucket) {
            self.slot(s, count);
        }
    }

    #[inline]
    fn slot(&mut self, s: usize, count: u64) {
        self.0[s] = self.0[s].wrapping_add(count);
    }
}

impl Default for Merger {
    fn default() -> Self {
        Merger::new()
    }
}

impl Merger {
    /// An empty merger (~110 KiB).
    pub fn new() -> Merger {
        Merger {
            pairs: DensePairs {
                counts: Box::new([0; DENSE_SLOTS]),
                occupied: Box::new([0; DENSE_SLOTS.div_ceil(64)]),
                other: Vec::new(),
            },
            ratings: [0; 3],
            loose: Vec::new(),
        }
    }

    /// Adds bytes written by [`Histogram::encode`], validated as [`Histogram::decode`] does. After an error the
    /// merger holds part of those bytes' pairs: finish it and discard the result.
    pub fn add_encoded(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let ratings = decode_each(bytes, &mut self.pairs)?;
        self.add_ratings(ratings);
        Ok(())
    }

    /// Adds a histogram.
    pub fn add(&mut self, h: &Histogram) {
        for &(b, c) in &h.buckets {
            self.pairs.pair(b, c);
        }
        self.add_ratings(h.ratings);
    }

    fn add_ratings(&mut self, ratings: [u64; 3]) {
        for (total, r) in self.ratings.iter_mut().zip(ratings) {
            *total = total.wrapping_add(r);
        }
    }

    /// [`Histogram::summary`] of the merged histogram, without building it; leaves the merger empty. `None` when the
    /// bucket and rating totals disagree, as from [`Merger::finish`].
    ///
    /// Why: a by-page answer over 28 days holds ~1,700 buckets per page; allocating and filling those vectors only to
    /// read three numbers off them was a sixth of the query.
    pub fn finish_summary(&mut self, metric: Metric, quantiles: &[Quantile]) -> Option<Summary> {
        if !self.pairs.other.is_empty() {
            return self.finish().map(|h| h.summary(metric, quantiles));
        }
        let ratings = std::mem::take(&mut self.ratings);
        let n: u64 = ratings.iter().sum();
        let ranks: Vec<u64> = quantiles.iter().map(|q| q.rank(n)).collect();
        let mut values: Vec<Option<f64>> = vec![None; quantiles.len()];
        // As Histogram::quantile: the first bucket at which the running count reaches the rank (none when empty).
        let mut seen = 0u64;
        self.pairs.drain_dense(|slot, c| {
            seen += c;
            for (v, &rank) in values.iter_mut().zip(&ranks) {
                if v.is_none() && n > 0 && seen >= rank {
                    *v = Some(bucket_value(metric, slot_key(slot)));
                }
            }
        });
        (seen == n).then_some(Summary {
            ratings,
            quantiles: values,
        })
    }

    /// [`Merger::finish_summary`] of the histograms `rows` encode, reading of each version 2 row only its section
    /// table and the pairs of the sections that hold the quantiles: the table's counts, summed over the rows, say
    /// which section holds each quantile's rank, and only there are pairs needed. Version 1 rows are read whole.
    /// Starts and leaves the merger empty, on error too. `Ok(None)` when bucket and rating totals disagree.
    ///
    /// Why: "p75 by page over 28 days" reads every pair of ~30 rows per page (most values of a month are their own
    /// bucket); the tables are a fraction of that.
    ///
    /// What is checked: every row's header (as in [`Histogram::decode`]) and the pairs of every section read; a
    /// corrupt pair in a section no quantile falls in goes unnoticed here (the writer's merges read every pair).
    pub fn summarize_encoded(
        &mut self,
        rows: &[&[u8]],
        metric: Metric,
        quantiles: &[Quantile],
    ) -> Result<Option<Summary>, DecodeError> {
        let out = self.summarize_rows(rows, metric, quantiles);
        if out.is_err() {
            self.clear();
        }
        out
    }

    /// Empties the merger without building anything.
    fn clear(&mut self) {
        self.pairs.drain_dense(|_, _| {});
        self.pairs.other.clear();
        self.ratings = [0; 3];
    }

    fn summarize_rows(
        &mut self,
        rows: &[&[u8]],
        metric: Metric,
        quantiles: &[Quantile],
    ) -> Result<Option<Summary>, DecodeError> {
        // Pass 1: section counts of version 2 rows; version 1 rows (small ones) decoded whole, set aside.
        let mut sections = [0u64; SECTIONS];
        let mut ratings = [0u64; 3];
        let mut loose = LooseSlots {
            pairs: std::mem::take(&mut self.loose),
            sections: &mut sections,
            whole: false,
        };
        loose.pairs.clear();
        for row in rows {
            let r = if row.first() == Some(&ENCODING_V2) {
                Sectioned::read(&row[1..])?.add_counts(loose.sections)?
            } else {
                decode_each(row, &mut loose)?
            };
            for (t, r) in ratings.iter_mut().zip(r) {
                *t = t.wrapping_add(r);
            }
        }
        let (loose, whole) = (loose.pairs, loose.whole);
        if whole {
            // Keys without a dense slot (never written by this code): merge everything and summarise the histogram.
            self.loose = loose;
            for row in rows {
                self.add_encoded(row)?;
            }
            return Ok(self.finish().map(|h| h.summary(metric, quantiles)));
        }
        let n = ratings.iter().fold(0u64, |a, r| a.wrapping_add(*r));
        if sections.iter().fold(0u64, |a, c| a.wrapping_add(*c)) != n {
            self.loose = loose;
            return Ok(None);
        }
        // Each quantile's section, and its rank within that section.
        let targets: Vec<Option<(usize, u64)>> = quantiles
            .iter()
            .map(|q| {
                if n == 0 {
                    return None;
                }
                let rank = q.rank(n);
                let mut seen = 0u64;
                sections.iter().enumerate().find_map(|(i, &c)| {
                    let before = seen;
                    seen += c;
                    (seen >= rank).then_some((i, rank - before))
                })
            })
            .collect();
        // Pass 2: the pairs of those sections, counted straight into the dense counts (no occupancy bits: the
        // sections' slots are zeroed below).
        let mut wanted = 0u128;
        for &(i, _) in targets.iter().flatten() {
            wanted |= 1 << i;
        }
        let counts = &mut self.pairs.counts;
        let found = (|| {
            if wanted != 0 {
                let mut sink = SlotCounts(counts);
                for &(slot, count) in &loose {
                    let slot = slot as usize;
                    if wanted >> (slot / SECTION_SLOTS) & 1 == 1 {
                        sink.slot(slot, count);
                    }
                }
                for row in rows.iter().filter(|r| r.first() == Some(&ENCODING_V2)) {
                    let header = Sectioned::read(&row[1..])?;
                    let mut left = wanted;
                    while left != 0 {
                        let index = left.trailing_zeros() as usize;
                        left &= left - 1;
                        if let Some(section) = header.section(index)? {
                            section.decode_into(&mut sink)?;
                        }
                    }
                }
            }
            let values: Vec<Option<f64>> = targets
                .iter()
                .map(|t| {
                    t.and_then(|(section, rank)| {
                        let slots = section * SECTION_SLOTS
                            ..((section + 1) * SECTION_SLOTS).min(DENSE_SLOTS);
                        let mut seen = 0u64;
                        slots
                            .into_iter()
                            .find(|&slot| {
                                seen += counts[slot];
                                seen >= rank
                            })
                            .map(|slot| bucket_value(metric, slot_key(slot)))
                    })
                })
                .collect();
            Ok::<_, DecodeError>(values)
        })();
        // Zero what pass 2 counted, on error too.
        let mut left = wanted;
        while left != 0 {
            let section = left.trailing_zeros() as usize;
            left &= left - 1;
            let end = ((section + 1) * SECTION_SLOTS).min(DENSE_SLOTS);
            counts[section * SECTION_SLOTS..end].fill(0);
        }
        self.loose = loose;
        let values = found?;
        // Every target section's counts are exactly its table count (checked while decoding), so each rank is found.
        let complete = targets
            .iter()
            .zip(&values)
            .all(|(t, v)| t.is_some() == v.is_some());
        Ok(complete.then_some(Summary {
            ratings,
            quantiles: values,
        }))
    }

    /// The merged histogram, leaving the merger empty. `None`, as from [`Histogram::from_parts`], when the bucket
    /// and rating totals disagree.
    pub fn finish(&mut self) -> Option<Histogram> {
        let n: usize = self
            .pairs
            .occupied
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum();
        let mut buckets = Vec::with_capacity(n + self.pairs.other.len());
        self.pairs
            .drain_dense(|slot, c| buckets.push((slot_key(slot), c)));
        let other = &mut self.pairs.other;
        let ratings = std::mem::take(&mut self.ratings);
        if other.is_empty() {
            let h = Histogram { buckets, ratings };
            return (h.buckets.iter().map(|p| p.1).sum::<u64>() == h.count()).then_some(h);
        }
        buckets.append(other);
        Histogram::from_parts(buckets, ratings)
    }
}

/// Appends `v` as a LEB128 varint (what the encodings here use; storage frames its blobs with it too).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint from the front of `input` and advances past it; [`DecodeError::Malformed`] when cut short or
/// longer than 64 bits.
#[inline(always)]
pub fn get_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    // Most counts and bucket deltas take one or two bytes, in no predictable pattern: decoded here without a branch
    // on which (a merge decodes millions), the rest in the loop below.
    let bytes: &[u8] = input;
    if let [b0, b1, ..] = *bytes {
        if b0 & b1 < 0x80 {
            let (b0, b1) = (b0 as u64, b1 as u64);
            let two = b0 >> 7;
            *input = &bytes[1 + two as usize..];
            return Ok(b0 & 0x7f | (b1 << 7) & two.wrapping_neg());
        }
    }
    get_long_varint(input)
}

fn get_long_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or(DecodeError::Malformed)?;
        *input = rest;
        v |= ((b & 0x7f) as u64)
            .checked_shl(shift)
            .ok_or(DecodeError::Malformed)?;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Malformed)
}

/// The exact nearest-rank quantile of raw values: the reference the histogram is tested against.
pub fn exact_quantile(values: &[f64], q: Quantile) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[(q.rank(v.len() as u64) - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merge_in_place_small_into_large_and_back() {
        // Every shape of overlap: shared buckets, new ones below, between and above, and a long tail.
        let mut large = Histogram::new();
        for v in (0..3000).map(|i| i as f64 * 3.0) {
            large.record(Metric::Lcp, v);
        }
        for extra in [
            vec![1.0, 2.0, 3.0, 4000.0, 9001.0, 20_000.0, 50_000.0],
            vec![0.0],
            vec![1_000_000.0, 2_000_000.0],
            vec![5.0, 7.0, 8999.0],
            vec![],
        ] {
            let mut small = Histogram::new();
            extra.iter().for_each(|v| small.record(Metric::Lcp, *v));
            let mut want = large.clone();
            extra.iter().for_each(|v| want.record(Metric::Lcp, *v));
            let mut merged = large.clone();
            merged.merge(&small);
            assert_eq!(merged, want, "large += {extra:?}");
            let mut other_way = small.clone();
            other_way.merge(&large);
            assert_eq!(other_way, want, "{extra:?} += large");
            large = want;
        }
        assert!(large.buckets().windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn quantile_parse_is_exact_decimal() {
        assert_eq!(Quantile::parse("0.75").unwrap(), Quantile::P75);
        assert_eq!(Quantile::parse(".5").unwrap().ppm(), 500_000);
        assert_eq!(Quantile::parse("1").unwrap().ppm(), 1_000_000);
        assert_eq!(Quantile::parse("0.999999").unwrap().ppm(), 999_999);
        for bad in [
            "0",
            "0.0",
            "1.5",
            "2",
            "-0.5",
            "abc",
            "",
            ".",
            "0.1234567",
            "1e-1",
            "0.5x",
            "10",
        ] {
            assert!(Quantile::parse(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(Quantile::parse("0.95").unwrap().rank(100), 95);
        assert_eq!(Quantile::P75.rank(4), 3);
        assert_eq!(Quantile::P75.rank(5), 4);
        assert_eq!(Quantile::P75.rank(1), 1);
    }

    #[test]
    fn small_integers_are_exact() {
        let mut h = Histogram::new();
        for v in [120.0, 180.0, 200.0, 40.0] {
            h.record(Metric::Inp, v);
        }
        assert_eq!(h.quantile(Metric::Inp, Quantile::P75), Some(180.0));
        assert_eq!(
            h.quantile(Metric::Inp, Quantile::parse("1").unwrap()),
            Some(200.0)
        );
        assert_eq!(h.count(), 4);
        let s = h.shares().unwrap();
        assert_eq!((s.good, s.ni, s.poor), (1.0, 0.0, 0.0));
        assert_eq!(Histogram::new().quantile(Metric::Inp, Quantile::P75), None);
    }

    #[test]
    fn zero_and_maximum_values_are_recordable() {
        for m in Metric::ALL {
            let mut h = Histogram::new();
            h.record(m, 0.0);
            h.record(m, m.max_value());
            assert_eq!(h.quantile(m, Quantile::parse("0.5").unwrap()), Some(0.0));
            let top = h.quantile(m, Quantile::parse("1").unwrap()).unwrap();
            assert!(
                (top - m.max_value()).abs() / m.max_value() < 0.001,
                "{m}: {top}"
            );
        }
    }

    #[test]
    fn decode_refuses_garbage() {
        assert_eq!(Histogram::decode(&[]), Err(DecodeError::Malformed));
        assert_eq!(Histogram::decode(&[9]), Err(DecodeError::Version(9)));
        assert_eq!(
            Histogram::decode(&[1, 1, 0, 0, 0]),
            Err(DecodeError::Malformed),
            "counts disagree"
        );
        assert_eq!(
            Histogram::decode(&[1, 0, 0, 0, 0x7f]),
            Err(DecodeError::Malformed),
            "length beyond input"
        );
        assert_eq!(
            Histogram::decode(&[1, 0, 0, 0, 0, 0]),
            Err(DecodeError::Malformed),
            "trailing bytes"
        );
        assert_eq!(
            Histogram::decode(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(DecodeError::Malformed),
            "overlong varint"
        );
    }

    #[test]
    fn fuzz_regression_rating_counts_that_overflow_are_malformed() {
        let crash = [
            0x01, 0xff, 0x2a, 0xff, 0xff, 0xff, 0x27, 0xff, 0xd6, 0xfe, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x07, 0x01, 0xbd, 0xfd, 0x19, 0xed, 0xbd, 0xbd, 0x26,
        ];
        assert_eq!(Histogram::decode(&crash), Err(DecodeError::Malformed));
    }

    #[test]
    fn every_bucket_of_every_metric_has_a_dense_slot() {
        // Walk the template's buckets up to its bound: each lowest value maps to the next slot, and back.
        let t = template();
        let (mut key, mut slot) = (0u64, 0usize);
        while key <= 4_000_000 {
            assert_eq!(dense_slot(key), Some(slot), "key {key}");
            assert_eq!(slot_key(slot), key);
            key = t.next_non_equivalent(key);
            slot += 1;
        }
        assert!(slot <= DENSE_SLOTS);
        for m in Metric::ALL {
            assert!(dense_slot(bucket_of(m, m.max_value())).is_some(), "{m}");
        }
        // Keys no bucket starts at, and keys beyond the slots, take the sorted path.
        assert_eq!(dense_slot(2049), None);
        assert_eq!(dense_slot(1 << 22), None);
        assert_eq!(dense_slot(u64::MAX), None);
    }

    /// Dense histograms are written sectioned, small ones (and keys without a dense slot) as version 1, and both read
    /// back as what was written.
    #[test]
    fn encoding_is_sectioned_where_it_pays() {
        let mut dense = Histogram::new();
        for v in 0..500 {
            dense.record(Metric::Lcp, 1000.0 + v as f64 * 3.0);
        }
        let bytes = dense.encode();
        assert_eq!(bytes[0], ENCODING_V2);
        // About the size of version 1 (a pair takes two bytes in both here); the table is what it adds.
        assert!(
            bytes.len() * 10 < dense.encode_v1().len() * 11,
            "{} bytes",
            bytes.len()
        );
        assert_eq!(Histogram::decode(&bytes).unwrap(), dense);
        let mut tiny = Histogram::new();
        tiny.record(Metric::Lcp, 1234.0);
        tiny.record(Metric::Lcp, 4321.0);
        assert_eq!(tiny.encode()[0], ENCODING_V1);
        assert_eq!(Histogram::decode(&tiny.encode()).unwrap(), tiny);
        let odd = histogram_of((2049..2069).map(|k| (k, 1)).collect(), 0);
        assert_eq!(odd.encode()[0], ENCODING_V1);
        assert_eq!(Histogram::decode(&odd.encode()).unwrap(), odd);
        // Sections must rise, and a section's count must match its pairs.
        let mut two_sections = Histogram::new();
        for v in (10..20).chain(300..310) {
            two_sections.record(Metric::Lcp, v as f64);
        }
        let good = two_sections.encode();
        assert_eq!(good[0], ENCODING_V2);
        // [2, ratings×3, presence bitmap (13 bytes), widths, count×2, end×2, pairs]
        assert_eq!(&good[1..6], &[20, 0, 0, 0b101, 0]);
        assert_eq!(&good[17..20], &[0x11, 10, 10]);
        let mut zero = good.clone();
        zero[18] = 0;
        assert_eq!(Histogram::decode(&zero), Err(DecodeError::Malformed));
        let mut miscounted = good.clone();
        miscounted[18] = 9;
        assert_eq!(Histogram::decode(&miscounted), Err(DecodeError::Malformed));
        let mut short = good.clone();
        short[21] -= 1;
        assert_eq!(Histogram::decode(&short), Err(DecodeError::Malformed));
        let mut beyond = good.clone();
        beyond[16] = 0x80;
        assert_eq!(Histogram::decode(&beyond), Err(DecodeError::Malformed));
        let mut merger = Merger::new();
        for bad in [zero, miscounted, short, beyond] {
            assert!(merger
                .summarize_encoded(&[&bad], Metric::Lcp, &[Quantile::P75])
                .is_err());
        }
    }

    #[test]
    fn merger_refuses_what_decode_refuses() {
        let mut m = Merger::new();
        for bad in [
            &[][..],
            &[9],
            &[1, 1, 0, 0, 0],
            &[1, 0, 0, 0, 0x7f],
            &[1, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(m.add_encoded(bad), Histogram::decode(bad).map(|_| ()));
        }
    }

    /// Pairs with any key: the template's buckets, and keys that have no dense slot (never written by this code,
    /// but stored bytes are not trusted), with zero counts too.
    fn any_pairs() -> impl Strategy<Value = Vec<(u64, u64)>> {
        let key = prop_oneof![
            (0.0..=Metric::Lcp.max_value()).prop_map(|v| bucket_of(Metric::Lcp, v)),
            0u64..5000,
            any::<u64>().prop_map(|k| k >> 20),
        ];
        prop::collection::vec((key, 0u64..5), 0..60)
    }

    /// A histogram from pairs, its ratings put all in one bin so the totals agree.
    fn histogram_of(pairs: Vec<(u64, u64)>, bin: usize) -> Histogram {
        let mut ratings = [0; 3];
        ratings[bin] = pairs.iter().map(|p| p.1).sum();
        Histogram::from_parts(pairs, ratings).unwrap()
    }

    fn metric() -> impl Strategy<Value = Metric> {
        prop::sample::select(Metric::ALL.to_vec())
    }

    fn values(m: Metric) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(0.0..=m.max_value(), 1..400)
    }

    proptest! {
        #[test]
        fn quantiles_are_within_precision_of_exact(
            (m, vals) in metric().prop_flat_map(|m| (Just(m), values(m))),
            ppm in 1u32..=1_000_000,
        ) {
            let q = Quantile(ppm);
            let mut h = Histogram::new();
            for &v in &vals { h.record(m, v); }
            let got = h.quantile(m, q).unwrap();
            let exact = exact_quantile(&vals, q).unwrap();
            // Half a bucket (1/2048 relative) plus the rounding to recorded units.
            let tol = exact / 2048.0 + 0.5 / scale(m) + 1e-9;
            prop_assert!((got - exact).abs() <= tol, "{m} q={q:?} got {got} exact {exact}");
            prop_assert_eq!(h.count(), vals.len() as u64);
        }

        #[test]
        fn merge_equals_recording_everything(
            (m, a, b) in metric().prop_flat_map(|m| (Just(m), values(m), values(m))),
        ) {
            let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record(m, v); all.record(m, v); }
            for &v in &b { hb.record(m, v); all.record(m, v); }
            let mut merged = ha.clone();
            merged.merge(&hb);
            prop_assert_eq!(&merged, &all);
            hb.merge(&ha);
            prop_assert_eq!(&hb, &all, "merge is commutative");
        }

        #[test]
        fn encode_decode_round_trips((m, vals) in metric().prop_flat_map(|m| (Just(m), values(m)))) {
            let mut h = Histogram::new();
            for &v in &vals { h.record(m, v); }
            prop_assert_eq!(Histogram::decode(&h.encode()).unwrap(), h.clone());
            let rebuilt = Histogram::from_parts(h.buckets().iter().rev().copied(), h.rating_counts()).unwrap();
            prop_assert_eq!(rebuilt, h);
        }

        #[test]
        fn merger_equals_from_parts(
            rows in prop::collection::vec((any_pairs(), 0usize..3), 0..20),
            ppms in prop::collection::vec(1u32..=1_000_000, 0..4),
        ) {
            let rows: Vec<Histogram> = rows.into_iter().map(|(p, bin)| histogram_of(p, bin)).collect();
            let mut ratings = [0u64; 3];
            let mut pairs = Vec::new();
            for h in &rows {
                pairs.extend_from_slice(h.buckets());
                for (t, r) in ratings.iter_mut().zip(h.rating_counts()) { *t += r; }
            }
            let want = Histogram::from_parts(pairs, ratings).unwrap();
            let mut m = Merger::new();
            for h in &rows { m.add_encoded(&h.encode()).unwrap(); }
            prop_assert_eq!(m.finish().unwrap(), want.clone());
            // Reused after `finish`, and fed decoded histograms instead of bytes.
            for h in &rows { m.add(h); }
            prop_assert_eq!(m.finish().unwrap(), want.clone());
            prop_assert_eq!(m.finish().unwrap(), Histogram::new());
            // The summary without the histogram: the same rating counts and quantiles, and the merger left empty.
            let qs: Vec<Quantile> = ppms.iter().map(|&p| Quantile(p)).collect();
            for h in &rows { m.add_encoded(&h.encode()).unwrap(); }
            let summary = m.finish_summary(Metric::Lcp, &qs).unwrap();
            prop_assert_eq!(&summary, &want.summary(Metric::Lcp, &qs));
            let by_hand: Vec<Option<f64>> = qs.iter().map(|&q| want.quantile(Metric::Lcp, q)).collect();
            prop_assert_eq!(summary.quantiles(), by_hand.as_slice());
            prop_assert_eq!(summary.count(), want.count());
            prop_assert_eq!(summary.shares(), want.shares());
            prop_assert_eq!(m.finish().unwrap(), Histogram::new());
        }

        #[test]
        fn summaries_of_encoded_rows_equal_the_merged_histograms(
            (m, rows) in metric().prop_flat_map(|m| (Just(m), prop::collection::vec(prop::collection::vec(0.0..=m.max_value(), 0..300), 0..8))),
            sparse in prop::collection::vec((any_pairs(), 0usize..3), 0..3),
            ppms in prop::collection::vec(1u32..=1_000_000, 0..4),
        ) {
            // Recorded rows (sectioned when dense enough), tiny rows (version 1) and, now and then, arbitrary pairs.
            let mut hs: Vec<Histogram> = rows.iter().map(|vals| {
                let mut h = Histogram::new();
                for &v in vals { h.record(m, v); }
                h
            }).collect();
            hs.extend(sparse.into_iter().map(|(p, bin)| histogram_of(p, bin)));
            let mut all = Histogram::new();
            for h in &hs { all.merge(h); }
            let qs: Vec<Quantile> = ppms.iter().map(|&p| Quantile(p)).chain([Quantile::P75]).collect();
            let encoded: Vec<Vec<u8>> = hs.iter().map(Histogram::encode).collect();
            let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
            let mut merger = Merger::new();
            prop_assert_eq!(merger.summarize_encoded(&refs, m, &qs).unwrap().unwrap(), all.summary(m, &qs));
            // The merger is left empty.
            prop_assert_eq!(merger.finish().unwrap(), Histogram::new());
        }

        #[test]
        fn sectioned_bytes_with_a_changed_byte_never_panic_and_summaries_agree_with_decode(
            vals in prop::collection::vec(1000.0..=1500.0f64, 40..200),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut h = Histogram::new();
            for &v in &vals { h.record(Metric::Lcp, v); }
            let mut bytes = h.encode();
            prop_assert_eq!(bytes[0], ENCODING_V2);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let mut m = Merger::new();
            let summary = m.summarize_encoded(&[&bytes], Metric::Lcp, &[Quantile::P75]);
            match Histogram::decode(&bytes) {
                Ok(d) => {
                    prop_assert_eq!(summary, Ok(Some(d.summary(Metric::Lcp, &[Quantile::P75]))));
                    m.add_encoded(&bytes).unwrap();
                    prop_assert_eq!(m.finish().unwrap(), d);
                }
                Err(e) => {
                    prop_assert_eq!(m.add_encoded(&bytes), Err(e));
                    m.finish();
                }
            }
            prop_assert_eq!(m.finish().unwrap(), Histogram::new());
        }

        #[test]
        fn merger_decodes_like_decode(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut m = Merger::new();
            match Histogram::decode(&bytes) {
                Ok(h) => {
                    m.add_encoded(&bytes).unwrap();
                    prop_assert_eq!(m.finish().unwrap(), Histogram::from_parts(h.buckets().to_vec(), h.rating_counts()).unwrap());
                }
                Err(e) => prop_assert_eq!(m.add_encoded(&bytes), Err(e)),
            }
        }

        #[test]
        fn short_varints_read_as_the_loop_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..12), v in any::<u64>()) {
            let (mut fast, mut slow) = (bytes.as_slice(), bytes.as_slice());
            prop_assert_eq!(get_varint(&mut fast), get_long_varint(&mut slow));
            prop_assert_eq!(fast.len(), slow.len());
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out.push(0x80);
            let mut rest = out.as_slice();
            prop_assert_eq!(get_varint(&mut rest), Ok(v));
            prop_assert_eq!(rest, &[0x80][..]);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Histogram::decode(&bytes);
        }

        #[test]
        fn shares_are_exact(vals in values(Metric::Lcp)) {
            let mut h = Histogram::new();
            for &v in &vals { h.record(Metric::Lcp, v); }
            let good = vals.iter().filter(|&&v| v <= 2500.0).count() as f64 / vals.len() as f64;
            let poor = vals.iter().filter(|&&v| v > 4000.0).count() as f64 / vals.len() as f64;
            let s = h.shares().unwrap();
            prop_assert_eq!(s.good, good);
            prop_assert_eq!(s.poor, poor);
        }
    }
}
