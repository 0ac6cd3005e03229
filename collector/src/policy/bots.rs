//! Bot and headless-browser detection from the user agent. Their page views are not users' experiences.

/// Lower-case fragments of user agents that identify crawlers, monitors, headless browsers and scripts.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "chrome-lighthouse",
    "pagespeed",
    "gtmetrix",
    "pingdom",
    "uptime",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "node-fetch",
    "axios/",
    "puppeteer",
    "playwright",
    "selenium",
    "facebookexternalhit",
    "embedly",
    "preview",
    "bingpreview",
    "yahoo! slurp",
    "duckduckgo",
    "baiduspider",
    "yandex",
    "semrush",
    "ahrefs",
    "petalbot",
    "applebot",
    "google-read-aloud",
    "mediapartners-google",
];

/// All markers in one automaton: one pass over the user agent, case-insensitive, instead of lower-casing a copy and
/// scanning it once per marker (that was ~2 % of a beacon's CPU).
fn markers() -> &'static aho_corasick::AhoCorasick {
    static MARKERS: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    MARKERS.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(BOT_MARKERS)
            .expect("the bot markers are a valid pattern set")
    })
}

/// Whether a user agent is a bot. A missing user agent counts as one: every browser sends it.
pub fn is_bot(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return true;
    };
    markers().is_match(ua)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_and_browsers() {
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "",
        ] {
            assert!(is_bot(Some(bot)), "{bot}");
        }
        assert!(is_bot(None));
        for browser in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Android 14; Mobile; rv:132.0) Gecko/132.0 Firefox/132.0",
            "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        ] {
            assert!(!is_bot(Some(browser)), "{browser}");
        }
    }

    proptest::proptest! {
        /// The automaton says exactly what lower-casing and scanning for each marker says.
        #[test]
        fn the_automaton_matches_the_plain_definition(
            prefix in "[ -~]{0,40}",
            marker in proptest::sample::select(BOT_MARKERS),
            upper in proptest::collection::vec(proptest::bool::ANY, 32),
            suffix in "[ -~]{0,40}",
            with_marker in proptest::bool::ANY,
        ) {
            let cased: String = marker
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            let ua = if with_marker { format!("{prefix}{cased}{suffix}") } else { format!("{prefix}{suffix}") };
            let plain = {
                let t = ua.trim().to_ascii_lowercase();
                t.is_empty() || BOT_MARKERS.iter().any(|m| t.contains(m))
            };
            proptest::prop_assert_eq!(is_bot(Some(&ua)), plain, "{:?}", ua);
        }
    }
}
