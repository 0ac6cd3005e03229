//! Stored histogram bytes are read back from disk: corrupt bytes must give an error, never a panic, and whatever
//! decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = vitals::Histogram::decode(data) {
        assert_eq!(vitals::Histogram::decode(&h.encode()).as_ref(), Ok(&h));
        let _ = h.quantile(vitals::Metric::Lcp, vitals::Quantile::P75);
    }
});
