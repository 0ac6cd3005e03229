//! The beacon decoder takes untrusted bytes from the internet: it must never panic, and whatever it accepts must be
//! within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = vitals::decode_beacon(data) {
        assert!(!b.metrics.is_empty() && b.metrics.len() <= 5);
        for s in &b.metrics {
            assert!(s.value.is_finite() && s.value >= 0.0 && s.value <= s.metric.max_value());
            let mut h = vitals::Histogram::new();
            h.record(s.metric, s.value);
            assert_eq!(h.count(), 1);
        }
        assert!(b.url.page().starts_with('/'));
        assert!(!b.url.page().contains('?') && !b.url.page().contains('#'));
    }
});
