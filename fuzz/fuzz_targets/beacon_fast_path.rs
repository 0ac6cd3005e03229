//! The beacon decoder has a fast path (a hand-written scan, `vitals/src/wire/scanner.rs`) and a general decoder
//! (`serde_json`). Whatever body the fast path accepts, it must decode exactly as the general decoder does; and
//! decoding values only (what the ingest path does) must accept and refuse exactly what full decoding does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals::wire::{decode_beacon_detail, SampleDetail};

fuzz_target!(|data: &[u8]| {
    let (fast, general) = vitals::wire::decode_both_paths(data);
    if let Some(fast) = fast {
        assert_eq!(Ok(fast), general, "{:?}", String::from_utf8_lossy(data));
    }
    let values = decode_beacon_detail(data, &vitals::page::NoRules, SampleDetail::ValuesOnly);
    let full = vitals::decode_beacon(data).map(|mut b| {
        for s in &mut b.metrics {
            s.id = None;
            s.attribution = None;
        }
        b
    });
    assert_eq!(values, full, "{:?}", String::from_utf8_lossy(data));
});
