//! What a beacon's `User-Agent` (and `Sec-CH-UA-Mobile`) header says: a bot or not, and the device class,
//! remembered per worker thread.
//!
//! Why: a site's traffic comes from a few hundred distinct user agents, and classifying one (the bot markers and the
//! device rules, several case-insensitive scans of ~150 bytes) cost ~2 µs of every beacon's ~40; a lookup costs a
//! hash of the string. The cache is bounded (cleared when full) and only holds short strings, so a flood of unique
//! user agents costs what classifying did, plus a hash, and a bounded amount of memory.

use super::bots::is_bot;
use std::cell::RefCell;
use std::collections::HashMap;
use vitals::DeviceClass;

/// What a user agent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// A bot (or no user agent at all).
    pub bot: bool,
    /// The device class, from the user agent and the mobile hint.
    pub device: DeviceClass,
}

/// Entries per thread before the cache is cleared.
const CAPACITY: usize = 4096;
/// Longer user agents are classified every time, never held.
const LONGEST: usize = 512;

/// Per user agent, the verdict for each mobile hint this cache holds: none, `?0`, `?1`.
type Seen = HashMap<Box<str>, [Option<Verdict>; 3], foldhash::fast::RandomState>;

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(HashMap::with_hasher(Default::default()));
}

/// The verdict computed from scratch.
fn classify_now(user_agent: Option<&str>, mobile_hint: Option<&str>) -> Verdict {
    Verdict {
        bot: is_bot(user_agent),
        device: DeviceClass::from_headers(user_agent, mobile_hint),
    }
}

/// Classifies the headers, from this thread's cache when it has seen them.
pub fn classify(user_agent: Option<&str>, mobile_hint: Option<&str>) -> Verdict {
    let slot = match mobile_hint {
        None => 0,
        Some("?0") => 1,
        Some("?1") => 2,
        // Rare spellings (whitespace, garbage) are not worth a slot.
        Some(_) => return classify_now(user_agent, mobile_hint),
    };
    let Some(ua) = user_agent.filter(|ua| ua.len() <= LONGEST) else {
        return classify_now(user_agent, mobile_hint);
    };
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(v) = seen.get(ua).and_then(|slots| slots[slot]) {
            return v;
        }
        let v = classify_now(user_agent, mobile_hint);
        if seen.len() >= CAPACITY && !seen.contains_key(ua) {
            seen.clear();
        }
        seen.entry(ua.into()).or_default()[slot] = Some(v);
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AGENTS: &[&str] = &[
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "",
    ];

    #[test]
    fn cached_verdicts_are_the_computed_ones() {
        // Twice over every combination: the second round is answered from the cache.
        for _ in 0..2 {
            for ua in AGENTS.iter().map(|a| Some(*a)).chain([None]) {
                for hint in [None, Some("?0"), Some("?1"), Some(" ?1 "), Some("junk")] {
                    assert_eq!(
                        classify(ua, hint),
                        classify_now(ua, hint),
                        "{ua:?} {hint:?}"
                    );
                }
            }
        }
        let long = format!("Mozilla/5.0 (iPhone) {}", "x".repeat(LONGEST));
        assert_eq!(classify(Some(&long), None), classify_now(Some(&long), None));
    }

    #[test]
    fn the_cache_stays_bounded() {
        for i in 0..CAPACITY * 2 + 7 {
            classify(Some(&format!("Agent {i} (Android; Mobile)")), None);
            assert!(SEEN.with(|s| s.borrow().len()) <= CAPACITY);
        }
        // Still right after being cleared.
        assert_eq!(
            classify(Some(AGENTS[0]), None),
            classify_now(Some(AGENTS[0]), None)
        );
    }

    proptest! {
        #[test]
        fn any_headers_classify_as_computed(
            ua in proptest::option::of(".{0,80}"),
            hint in proptest::option::of(prop_oneof![Just("?0".to_string()), Just("?1".to_string()), ".{0,4}"]),
        ) {
            // Twice: once computed (or cached from an earlier case), once certainly cached.
            for _ in 0..2 {
                prop_assert_eq!(
                    classify(ua.as_deref(), hint.as_deref()),
                    classify_now(ua.as_deref(), hint.as_deref())
                );
            }
        }
    }
}
