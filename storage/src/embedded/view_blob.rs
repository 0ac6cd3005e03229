//! A minute row of `hist_minute`: the histograms of every metric one view (minute, site, page, device, release,
//! nav) reported, in one blob.
//!
//! Why one row per view rather than per (view, metric): the writer's per-second flush upserts every view seen in
//! that second, and a beacon carries up to five metrics that share the view. One upsert per view instead of one
//! per sample cut the writer's work per beacon (see `docs/benchmarks.md`); hour and day rows stay per metric,
//! where queries want them.
//!
//! Format: one byte with bit `i` set when [`Metric::code`] `i` is present; then, for each present metric in code
//! order, the length of its encoding as a LEB128 varint and its [`Histogram::encode`] bytes.

use vitals::histogram::{get_varint, put_varint, DecodeError};
use vitals::{Histogram, Metric};

/// One optional histogram per metric, indexed by [`Metric::code`].
pub type Slots = [Option<Histogram>; Metric::ALL.len()];

/// Encodes the present slots (a view with none encodes as the single byte 0).
pub fn encode(slots: &Slots) -> Vec<u8> {
    let encoded: Vec<Option<Vec<u8>>> = slots
        .iter()
        .map(|h| h.as_ref().map(Histogram::encode))
        .collect();
    assemble(&encoded)
}

/// A view blob holding one metric's already encoded histogram.
pub fn single(metric: Metric, encoded: &[u8]) -> Vec<u8> {
    let mut sections: [Option<&[u8]>; Metric::ALL.len()] = [None; Metric::ALL.len()];
    sections[metric.code() as usize] = Some(encoded);
    assemble(&sections)
}

/// The blob of encoded sections, one per metric code.
fn assemble<S: AsRef<[u8]>>(sections: &[Option<S>]) -> Vec<u8> {
    let present = sections.iter().flatten().map(|s| s.as_ref());
    let mut out = Vec::with_capacity(1 + present.clone().map(|s| s.len() + 3).sum::<usize>());
    out.push(
        sections
            .iter()
            .enumerate()
            .fold(0, |m, (i, s)| if s.is_some() { m | 1 << i } else { m }),
    );
    for s in present {
        put_varint(&mut out, s.len() as u64);
        out.extend_from_slice(s);
    }
    out
}

/// Whether the view has a histogram for `metric` (reads the first byte only).
pub fn has(blob: &[u8], metric: Metric) -> bool {
    blob.first()
        .is_some_and(|mask| mask & 1 << metric.code() != 0)
}

/// Each metric's encoded histogram, borrowed from the blob. A blob cut short, with bytes left over or with a bit
/// for a metric that does not exist is [`DecodeError::Malformed`], like a damaged histogram.
pub fn sections(blob: &[u8]) -> Result<[Option<&[u8]>; Metric::ALL.len()], DecodeError> {
    let (&mask, mut rest) = blob.split_first().ok_or(DecodeError::Malformed)?;
    if mask >> Metric::ALL.len() != 0 {
        return Err(DecodeError::Malformed);
    }
    let mut out = [None; Metric::ALL.len()];
    for (i, slot) in out.iter_mut().enumerate() {
        if mask & 1 << i == 0 {
            continue;
        }
        let len = usize::try_from(get_varint(&mut rest)?).map_err(|_| DecodeError::Malformed)?;
        if len > rest.len() {
            return Err(DecodeError::Malformed);
        }
        let (section, r) = rest.split_at(len);
        *slot = Some(section);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(out)
}

/// One metric's encoded histogram, if the view has one.
pub fn pick(blob: &[u8], metric: Metric) -> Result<Option<&[u8]>, DecodeError> {
    Ok(sections(blob)?[metric.code() as usize])
}

/// Merges a view blob into `slots`, metric by metric (a slot still empty takes the blob's histogram as it is).
pub fn merge_into(slots: &mut Slots, blob: &[u8]) -> Result<(), DecodeError> {
    for (slot, section) in slots.iter_mut().zip(sections(blob)?) {
        if let Some(section) = section {
            let h = Histogram::decode(section)?;
            match slot {
                Some(acc) => acc.merge(&h),
                None => *slot = Some(h),
            }
        }
    }
    Ok(())
}

/// The merge of two view blobs, metric by metric; a metric only one side has is copied as it is.
pub fn merge(a: &[u8], b: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let (a, b) = (sections(a)?, sections(b)?);
    let mut merged: Vec<Option<std::borrow::Cow<'_, [u8]>>> = Vec::with_capacity(a.len());
    for (x, y) in a.iter().zip(b.iter()) {
        merged.push(match (x, y) {
            (Some(x), Some(y)) => {
                let mut h = Histogram::decode(x)?;
                h.merge(&Histogram::decode(y)?);
                Some(h.encode().into())
            }
            (Some(s), None) | (None, Some(s)) => Some((*s).into()),
            (None, None) => None,
        });
    }
    Ok(assemble(&merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slots(samples: &[(usize, f64)]) -> Slots {
        let mut s: Slots = Default::default();
        for &(m, v) in samples {
            s[m].get_or_insert_with(Histogram::default)
                .record(Metric::ALL[m], v);
        }
        s
    }

    proptest! {
        /// Every metric's section decodes to the histogram that was encoded, and merging blobs equals merging
        /// their histograms metric by metric.
        #[test]
        fn round_trip_and_merge_match_histograms(
            a in proptest::collection::vec((0usize..5, 0.0f64..60_000.0), 0..300),
            b in proptest::collection::vec((0usize..5, 0.0f64..60_000.0), 0..300),
        ) {
            let (sa, sb) = (slots(&a), slots(&b));
            let (ea, eb) = (encode(&sa), encode(&sb));
            for (i, m) in Metric::ALL.iter().enumerate() {
                let got = pick(&ea, *m).unwrap().map(|s| Histogram::decode(s).unwrap());
                prop_assert_eq!(&got, &sa[i]);
            }
            let merged = merge(&ea, &eb).unwrap();
            for (i, m) in Metric::ALL.iter().enumerate() {
                let want = match (&sa[i], &sb[i]) {
                    (Some(x), Some(y)) => { let mut x = x.clone(); x.merge(y); Some(x) }
                    (x, y) => x.clone().or_else(|| y.clone()),
                };
                let got = pick(&merged, *m).unwrap().map(|s| Histogram::decode(s).unwrap());
                prop_assert_eq!(&got, &want);
                // Accumulating blobs into slots gives the same histograms.
                let mut acc = sa.clone();
                merge_into(&mut acc, &eb).unwrap();
                prop_assert_eq!(&acc[i], &want);
            }
        }

        /// No byte string makes the reader panic or read out of bounds.
        #[test]
        fn arbitrary_bytes_are_an_error_or_sections(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(s) = sections(&bytes) {
                let total: usize = s.iter().flatten().map(|x| x.len()).sum();
                prop_assert!(total < bytes.len());
            }
        }
    }

    #[test]
    fn malformed_blobs_are_refused() {
        assert!(sections(&[]).is_err());
        assert!(sections(&[0b10_0000]).is_err(), "a sixth metric");
        assert!(sections(&[0b1, 5, 1, 2]).is_err(), "cut short");
        assert!(sections(&[0b1, 1, 1, 9]).is_err(), "trailing bytes");
        assert!(sections(&[0b1, 0x80]).is_err(), "unterminated length");
        assert_eq!(sections(&[0]).unwrap(), [None; 5]);
        let one = encode(&slots(&[(2, 0.1)]));
        assert_eq!(one[0], 0b100);
        assert!(pick(&one, Metric::Lcp).unwrap().is_none());
        assert!(pick(&one, Metric::Cls).unwrap().is_some());
    }
}
