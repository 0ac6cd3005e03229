//! The beacon decoder has a fast path (a hand-written scan, `vitals/src/wire/scanner.rs`) and a general decoder
//! (`serde_json`). Whatever body the fast path accepts, it must decode exactly as the general decoder does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (fast, general) = vitals::wire::decode_both_paths(data);
    if let Some(fast) = fast {
        assert_eq!(Ok(fast), general, "{:?}", String::from_utf8_lossy(data));
    }
});
