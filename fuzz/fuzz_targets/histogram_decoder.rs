//! Stored histogram bytes are read back from disk: corrupt bytes must give an error, never a panic, and whatever
//! decodes must re-encode to the same histogram and summarise, through the sectioned reader, to what the decoded
//! histogram says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals::histogram::Merger;
use vitals::{Metric, Quantile};

fuzz_target!(|data: &[u8]| {
    let quantiles = [Quantile::P75, Quantile::parse("0.5").unwrap()];
    let summary = Merger::new().summarize_encoded(&[data], Metric::Lcp, &quantiles);
    if let Ok(h) = vitals::Histogram::decode(data) {
        assert_eq!(vitals::Histogram::decode(&h.encode()).as_ref(), Ok(&h));
        let _ = h.quantile(Metric::Lcp, Quantile::P75);
        assert_eq!(summary, Ok(Some(h.summary(Metric::Lcp, &quantiles))));
    }
});
