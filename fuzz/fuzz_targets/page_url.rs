//! Page normalisation of arbitrary strings: no panics, bounded output, no query strings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = vitals::PageUrl::parse(s) {
            assert!(p.path().len() <= vitals::page::MAX_PATH_BYTES + 4);
            assert!(!p.page().contains('?'));
        }
    }
});
