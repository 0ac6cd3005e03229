//! Device class (CrUX's form factor) from request headers: phone, tablet or desktop.
//!
//! Derived only from what the browser sends (`User-Agent`, and the `Sec-CH-UA-Mobile` client hint when present),
//! never from the beacon body, so a page cannot claim to be something it is not.
//!
//! # How a request is classed
//!
//! The user agent is read for what it says about the device, in this order (first match wins):
//!
//! 1. Windows Phone (`Windows Phone`, `IEMobile`) is a phone. Its UAs also claim `Android` and `iPhone`.
//! 2. Any other Windows (`Windows NT`) is a desktop, whatever `Touch` or `Tablet PC` tokens it carries: those
//!    describe input hardware, and CrUX counts Windows as desktop.
//! 3. Tablet markers: `iPad`, a `Tablet` token (Firefox for Android, Opera Tablet, RIM Tablet OS), `Kindle`, Amazon
//!    `Silk/` (only ships on Fire devices, even when it sends a desktop-looking UA), `PlayBook`.
//! 4. `iPhone` and `iPod` are phones.
//! 5. `Macintosh` is a desktop. That is a real Mac, or an iPhone or iPad browser asking for the desktop site (iPadOS
//!    Safari does so by default, Chrome and Firefox on iOS on request, and some in-app web views add an iOS
//!    `Mobile/…` token to it); the form factor behind it cannot be known.
//! 6. Other phone-only browsers: BlackBerry, `Opera Mini`, `Opera Mobi`.
//! 7. Android: a `Mobile` token means a phone, its absence a tablet. That is the convention Chrome, WebView, Samsung
//!    Internet, Edge, Opera and the in-app browsers built on them follow (Chrome's reduced UA keeps it:
//!    `Android 10; K` with `Mobile` is a phone, without it a tablet).
//! 8. Anything else with a `Mobile` token (KaiOS, BlackBerry 10, Symbian) is a phone.
//! 9. Everything else, including an empty or missing UA, bots and command-line clients, is a desktop.
//!
//! `Mobile` and `Tablet` are matched as whole words, ignoring ASCII case; device names (`iPad`, `iPhone`, …) as
//! substrings, since they are often glued to model numbers (`FBDV/iPhone14,5`).
//!
//! `Sec-CH-UA-Mobile: ?1` (sent by Chromium browsers) means a phone whatever the UA says. `?0` only says "not a
//! phone", so it demotes a phone UA to desktop (the browser is in "request desktop site" mode) but leaves a tablet UA
//! a tablet.
//!
//! # What cannot be told apart
//!
//! iPadOS Safari (13+) sends a desktop macOS user agent by default, byte-identical to Safari on a Mac, and WebKit
//! sends no client hints; no request header tells it apart from a Mac, so it is classed as desktop, as CrUX's
//! user-agent based form factor does. Likewise an Android tablet whose Chrome requests desktop sites (the default on
//! large tablets) sends a desktop Linux UA and is classed as desktop. Old-style iPad UAs (with the `iPad` token) are
//! tablets.

use serde::{Deserialize, Serialize};

/// CrUX's three form factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// Phones.
    Phone,
    /// Tablets.
    Tablet,
    /// Desktops and laptops, and anything not recognised as a phone or tablet.
    Desktop,
}

impl DeviceClass {
    /// Every class.
    pub const ALL: [DeviceClass; 3] = [
        DeviceClass::Phone,
        DeviceClass::Tablet,
        DeviceClass::Desktop,
    ];

    /// The API spelling: `phone`, `tablet`, `desktop`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Phone => "phone",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Desktop => "desktop",
        }
    }

    /// Parses the API spelling (any ASCII case).
    pub fn parse(s: &str) -> Option<DeviceClass> {
        DeviceClass::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }

    /// A small integer code, stable on disk and in ClickHouse: 0 phone, 1 tablet, 2 desktop.
    pub fn code(self) -> u8 {
        match self {
            DeviceClass::Phone => 0,
            DeviceClass::Tablet => 1,
            DeviceClass::Desktop => 2,
        }
    }

    /// The inverse of [`DeviceClass::code`].
    pub fn from_code(code: u8) -> Option<DeviceClass> {
        DeviceClass::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Classifies a request from its `User-Agent` and `Sec-CH-UA-Mobile` headers.
    ///
    /// `?1` means a phone whatever the UA says; `?0` demotes a phone UA to desktop and otherwise defers to the UA;
    /// a missing or unrecognised hint value defers to the UA.
    pub fn from_headers(user_agent: Option<&str>, sec_ch_ua_mobile: Option<&str>) -> DeviceClass {
        // A structured-field boolean: exactly `?1` or `?0`, perhaps with surrounding whitespace.
        let hint = sec_ch_ua_mobile.map(str::trim);
        if hint == Some("?1") {
            return DeviceClass::Phone;
        }
        let from_ua = DeviceClass::from_user_agent(user_agent.unwrap_or(""));
        if hint == Some("?0") && from_ua == DeviceClass::Phone {
            // "Request desktop site" and the like: trust the hint over a phone UA. `?0` cannot tell a tablet from a
            // desktop, so a tablet UA stays a tablet.
            return DeviceClass::Desktop;
        }
        from_ua
    }

    /// Classifies a `User-Agent` string alone (see the module documentation for the rules).
    pub fn from_user_agent(ua: &str) -> DeviceClass {
        let has = |needle: &str| contains_ci(ua, needle);
        let word = |w: &str| contains_word_ci(ua, w);

        if has("windows phone") || has("iemobile") {
            return DeviceClass::Phone;
        }
        if has("windows nt") {
            return DeviceClass::Desktop;
        }
        if has("ipad") || word("tablet") || has("kindle") || has("silk/") || has("playbook") {
            return DeviceClass::Tablet;
        }
        if has("iphone") || has("ipod") {
            return DeviceClass::Phone;
        }
        if has("macintosh") {
            return DeviceClass::Desktop;
        }
        if has("blackberry") || has("opera mini") || has("opera mobi") {
            return DeviceClass::Phone;
        }
        if has("android") {
            return if word("mobile") {
                DeviceClass::Phone
            } else {
                DeviceClass::Tablet
            };
        }
        if word("mobile") {
            return DeviceClass::Phone;
        }
        DeviceClass::Desktop
    }
}

/// Whether `needle` (lower-case ASCII) occurs anywhere in `haystack`, ignoring ASCII case.
fn contains_ci(haystack: &str, needle: &str) -> bool {
    find_ci(haystack.as_bytes(), needle.as_bytes(), |_, _| true)
}

/// Whether `word` (lower-case ASCII) occurs in `haystack` as a whole word, ignoring ASCII case: neither preceded nor
/// followed by an ASCII letter or digit (so `Mobile/15E148` and `; Mobile;` count, `IEMobile` and `MobileSafari` do
/// not).
fn contains_word_ci(haystack: &str, word: &str) -> bool {
    let h = haystack.as_bytes();
    find_ci(h, word.as_bytes(), |start, end| {
        let alnum_at = |i: Option<usize>| {
            i.and_then(|i| h.get(i))
                .is_some_and(u8::is_ascii_alphanumeric)
        };
        !alnum_at(start.checked_sub(1)) && !alnum_at(Some(end))
    })
}

/// Whether `needle` occurs in `h` (ignoring ASCII case) at some `start..end` that `accept` approves.
fn find_ci(h: &[u8], needle: &[u8], accept: impl Fn(usize, usize) -> bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    h.windows(needle.len())
        .enumerate()
        .any(|(i, w)| w.eq_ignore_ascii_case(needle) && accept(i, i + needle.len()))
}

impl std::fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceClass::{self, Desktop, Phone, Tablet};

    /// Real user-agent strings, verbatim, with the class each must get and what sent it.
    const UA_CASES: &[(&str, DeviceClass, &str)] = &[
        // Chrome, desktop (reduced UA).
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop, "Chrome, Windows"),
        ("Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36", Desktop, "Chrome 109, Windows 7"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop, "Chrome, macOS"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_3) AppleWebKit/535.19 (KHTML, like Gecko) Chrome/18.0.1025.151 Safari/535.19", Desktop, "Chrome 18, macOS (unreduced)"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop, "Chrome, Linux (also Chrome Android's request-desktop-site UA)"),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Desktop, "Chrome, ChromeOS"),
        // Chrome, Android.
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36", Phone, "Chrome, Android phone (reduced UA)"),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", Tablet, "Chrome, Android tablet (reduced UA)"),
        ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Mobile Safari/537.36", Phone, "Chrome 109, Pixel 7"),
        ("Mozilla/5.0 (Linux; Android 4.0.4; Galaxy Nexus Build/IMM76B) AppleWebKit/535.19 (KHTML, like Gecko) Chrome/18.0.1025.133 Mobile Safari/535.19", Phone, "Chrome 18, Galaxy Nexus"),
        ("Mozilla/5.0 (Linux; Android 4.4.2; Nexus 7 Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/34.0.1847.114 Safari/537.36", Tablet, "Chrome 34, Nexus 7"),
        ("Mozilla/5.0 (Linux; Android 12; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36", Tablet, "Chrome 108, Galaxy Tab S8"),
        ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36", Phone, "Android WebView, Galaxy A53"),
        // Chrome, iOS.
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/127.0.6533.107 Mobile/15E148 Safari/604.1", Phone, "Chrome (CriOS), iPhone"),
        ("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/127.0.6533.107 Mobile/15E148 Safari/604.1", Tablet, "Chrome (CriOS), iPad"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_5) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/111 Version/11.1.1 Safari/605.1.15", Desktop, "Chrome (CriOS), iPad, request desktop site"),
        // Safari.
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", Desktop, "Safari 17, macOS"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_3) AppleWebKit/534.53.11 (KHTML, like Gecko) Version/5.1.3 Safari/534.53.10", Desktop, "Safari 5, macOS"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Safari/605.1.15", Desktop, "Safari, iPadOS 16 default desktop UA (identical to a Mac)"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15", Desktop, "Safari, iPadOS 13.0 default desktop UA"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1", Phone, "Safari 17, iPhone"),
        ("Mozilla/5.0 (iPhone; U; CPU like Mac OS X; en) AppleWebKit/420+ (KHTML, like Gecko) Version/3.0 Mobile/1A543 Safari/419.3", Phone, "Safari 3, original iPhone"),
        ("Mozilla/5.0 (iPod touch; CPU iPhone OS 12_5_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1", Phone, "Safari, iPod touch"),
        ("Mozilla/5.0 (iPad; U; CPU OS 3_2 like Mac OS X; en-us) AppleWebKit/531.21.10 (KHTML, like Gecko) Version/4.0.4 Mobile/7B334b Safari/531.21.10", Tablet, "Safari 4, iPad (iOS 3.2)"),
        ("Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.1 Mobile/15E148 Safari/604.1", Tablet, "Safari 12, iPad (iOS 12)"),
        ("Mozilla/5.0 (iPad; CPU OS 13_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Mobile/15E148 Safari/604.1", Tablet, "Safari, iPadOS 13 with request-desktop-website off"),
        // Firefox.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0", Desktop, "Firefox, Windows"),
        ("Mozilla/5.0 (Windows NT 6.1; rv:115.0) Gecko/20100101 Firefox/115.0", Desktop, "Firefox ESR, Windows 7 32-bit"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0", Desktop, "Firefox, macOS"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", Desktop, "Firefox, Linux"),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0", Desktop, "Firefox, Ubuntu"),
        ("Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0", Phone, "Firefox, Android phone"),
        ("Mozilla/5.0 (Android 14; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0", Tablet, "Firefox, Android tablet"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15", Phone, "Firefox (FxiOS), iPhone"),
        ("Mozilla/5.0 (iPad; CPU OS 12_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/18.1b15719 Mobile/15E148 Safari/605.1.15", Tablet, "Firefox (FxiOS), iPad"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1 Safari/605.1.15", Desktop, "Firefox (FxiOS), iPhone, request desktop site"),
        ("Mozilla/5.0 (Mobile; Nokia_8110_4G; rv:48.0) Gecko/48.0 Firefox/48.0 KAIOS/2.5", Phone, "KaiOS browser, Nokia 8110 4G"),
        // Samsung Internet.
        ("Mozilla/5.0 (Linux; Android 9; SAMSUNG SM-G960U) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/10.1 Chrome/71.0.3578.99 Mobile Safari/537.36", Phone, "Samsung Internet 10, Galaxy S9"),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", Phone, "Samsung Internet 24, phone (reduced UA)"),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36", Tablet, "Samsung Internet 24, tablet (reduced UA)"),
        ("Mozilla/5.0 (Linux; Android 9; SAMSUNG SM-T825Y) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/15.0 Chrome/90.0.4430.210 Safari/537.36", Tablet, "Samsung Internet 15, Galaxy Tab S3"),
        ("Mozilla/5.0 (Linux; Android 12; SAMSUNG SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/19.0 Chrome/102.0.5005.125 Safari/537.36", Tablet, "Samsung Internet 19, Galaxy Tab S7"),
        ("Mozilla/5.0 (Linux; Android 5.0.2; SAMSUNG SM-T815Y Build/LRX22G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/44.0.2403.133 Safari/537.36", Tablet, "Samsung browser, Galaxy Tab S2"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36", Desktop, "Samsung Internet, DeX / desktop version"),
        // Edge.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0", Desktop, "Edge, Windows"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/48.0.2564.82 Safari/537.36 Edge/14.14316", Desktop, "EdgeHTML 14, Windows"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.0.0 Safari/537.36 Edg/127.0.2651.98", Desktop, "Edge, macOS"),
        ("Mozilla/5.0 (Linux; Android 10; HD1913) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.6533.103 Mobile Safari/537.36 EdgA/127.0.2651.90", Phone, "Edge (EdgA), Android phone"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/127.2651.102 Mobile/15E148 Safari/605.1.15", Phone, "Edge (EdgiOS), iPhone"),
        ("Mozilla/5.0 (iPad; CPU OS 12_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/12.0 EdgiOS/44.5.2 Mobile/15E148 Safari/605.1.15", Tablet, "Edge (EdgiOS), iPad"),
        ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.14977", Phone, "Edge, Windows 10 Mobile"),
        // Opera.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0", Desktop, "Opera, Windows"),
        ("Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18", Desktop, "Opera 12 (Presto), Windows"),
        ("Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 OPR/79.0.4195.76744", Phone, "Opera, Android phone"),
        ("Opera/9.80 (Android; Opera Mini/7.5.33361/31.1448; U; en) Presto/2.8.119 Version/11.1010", Phone, "Opera Mini (Presto), Android"),
        ("Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; U; en) Presto/2.5.25 Version/10.54", Phone, "Opera Mini, J2ME feature phone"),
        ("Opera/9.80 (Android 2.3.3; Linux; Opera Mobi/ADR-1111101157; U; es-ES) Presto/2.9.201 Version/11.50", Phone, "Opera Mobile (Presto), Android"),
        ("Opera/9.80 (Android 3.2.1; Linux; Opera Tablet/ADR-1109081720; U; ja) Presto/2.8.149 Version/11.10", Tablet, "Opera Tablet (Presto), Android"),
        // Amazon Kindle / Fire / Silk.
        ("Mozilla/5.0 (Linux; U; Android 2.3.4; en-us; Kindle Fire Build/GINGERBREAD) AppleWebKit/533.1 (KHTML, like Gecko) Version/4.0 Mobile Safari/533.1", Tablet, "Kindle Fire (1st gen), mobile view"),
        ("Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_6_3; en-us; Silk/1.0.13.81_10003810) AppleWebKit/533.16 (KHTML, like Gecko) Version/5.0 Safari/533.16 Silk-Accelerated=true", Tablet, "Silk 1, Kindle Fire (1st gen), desktop view"),
        ("Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/535.19 (KHTML, like Gecko) Silk/2.1 Mobile Safari/535.19 Silk-Accelerated=true", Tablet, "Silk 2, Kindle Fire HD, mobile view"),
        ("Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/112.3.1 like Chrome/112.0.5615.213 Safari/537.36", Tablet, "Silk, Fire HD 10"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Silk/112.3.1 like Chrome/112.0.5615.213 Safari/537.36", Tablet, "Silk, Fire tablet, desktop view"),
        ("Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ (KHTML, like Gecko) Version/5.0 Safari/531.2+ Kindle/3.0+", Tablet, "Kindle 3 e-reader"),
        // Other Android tablets.
        ("Mozilla/5.0 (Linux; Android 14; Pixel Tablet Build/UQ1A.240205.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/121.0.6167.178 Safari/537.36", Tablet, "Android WebView, Pixel Tablet"),
        ("Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 Safari/537.36", Tablet, "Chrome, Lenovo Tab P11"),
        ("Mozilla/5.0 (Linux; Android 10; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.104 Safari/537.36", Tablet, "Chrome, Lenovo Tab M10 FHD Plus"),
        // Other Android phones.
        ("Mozilla/5.0 (Linux; U; Android 12; en-us; 2201117TG Build/SKQ1.211103.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.127 Mobile Safari/537.36 XiaoMi/MiuiBrowser/13.28.0-gn", Phone, "Mi Browser, Redmi Note 11"),
        ("Mozilla/5.0 (Linux; U; Android 10; en-US; RMX1911 Build/QKQ1.200209.002) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36", Phone, "UC Browser, Realme 5"),
        // In-app browsers.
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/21E219 [FBAN/FBIOS;FBAV/454.0.0.43.109;FBBV/568067598;FBDV/iPhone16,2;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/569644498]", Phone, "Facebook app, iPhone"),
        ("Mozilla/5.0 (Linux; Android 12; SM-G991B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/108.0.5359.128 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/397.0.0.23.404;]", Phone, "Facebook app, Android"),
        ("Mozilla/5.0 (Linux; Android 8.1.0; motorola one Build/OPKS28.63-18-3; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/70.0.3538.80 Mobile Safari/537.36 Instagram 72.0.0.21.98 Android (27/8.1.0; 320dpi; 720x1362; motorola; motorola one; deen_sprout; qcom; pt_BR; 132081645)", Phone, "Instagram app, Android"),
        ("Mozilla/5.0 (Linux; Android 6.0.1; D6653 Build/23.5.A.0.575; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/58.0.3029.83 Mobile Safari/537.36 Instagram 10.21.0 Android (23/6.0.1; 480dpi; 1080x1776; Sony; D6653; D6653; qcom; zh_TW)", Phone, "Instagram app, Android (Xperia Z3)"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 334.0.0.28.90 (iPhone15,2; iOS 17_5; en_US; en; scale=3.00; 1179x2556; 598640424)", Phone, "Instagram app, iPhone"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", Desktop, "iOS in-app web view with a desktop UA"),
        // Older and odd ones.
        ("Mozilla/5.0 (Windows NT 6.3; WOW64; Trident/7.0; Touch; .NET4.0E; .NET4.0C; .NET CLR 3.5.30729; .NET CLR 2.0.50727; .NET CLR 3.0.30729; Tablet PC 2.0; rv:11.0) like Gecko", Desktop, "IE 11, Windows 8.1 with Tablet PC components"),
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; ARM; Trident/6.0; Touch)", Desktop, "IE 10, Windows RT (Surface)"),
        ("Mozilla/5.0 (Mobile; Windows Phone 8.1; Android 4.0; ARM; Trident/7.0; Touch; rv:11.0; IEMobile/11.0; NOKIA; Lumia 635) like iPhone OS 7_0_3 Mac OS X AppleWebKit/537 (KHTML, like Gecko) Mobile Safari/537", Phone, "IE Mobile 11, Windows Phone 8.1"),
        ("Mozilla/5.0 (BB10; Touch) AppleWebKit/537.10+ (KHTML, like Gecko) Version/10.0.9.2372 Mobile Safari/537.10+", Phone, "BlackBerry 10"),
        ("Mozilla/5.0 (PlayBook; U; RIM Tablet OS 2.1.0; en-US) AppleWebKit/536.2+ (KHTML, like Gecko) Version/7.2.1.0 Safari/536.2+", Tablet, "BlackBerry PlayBook"),
        ("Mozilla/5.0 (Symbian/3; Series60/5.2 NokiaN8-00/012.002; Profile/MIDP-2.1 Configuration/CLDC-1.1 ) AppleWebKit/533.4 (KHTML, like Gecko) NokiaBrowser/7.3.0 Mobile Safari/533.4 3gpp-gba", Phone, "Nokia Browser, Symbian N8"),
        ("Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36", Desktop, "Samsung Tizen TV"),
        ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/41.0.2272.96 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Phone, "Googlebot smartphone"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Desktop, "Googlebot desktop"),
        ("curl/8.5.0", Desktop, "curl"),
        ("python-requests/2.31.0", Desktop, "Python requests"),
        ("", Desktop, "empty User-Agent"),
    ];

    #[test]
    fn real_user_agents_are_classified() {
        assert!(UA_CASES.len() >= 60, "only {} UA rows", UA_CASES.len());
        let failures: Vec<String> = UA_CASES
            .iter()
            .filter_map(|&(ua, expected, what)| {
                let actual = DeviceClass::from_user_agent(ua);
                (actual != expected)
                    .then(|| format!("{what}: expected {expected}, got {actual}\n    UA: {ua:?}"))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} user agents misclassified:\n{}",
            failures.len(),
            UA_CASES.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn without_the_hint_headers_fall_back_to_the_user_agent() {
        for &(ua, expected, what) in UA_CASES {
            assert_eq!(
                DeviceClass::from_headers(Some(ua), None),
                expected,
                "{what}: {ua:?}"
            );
        }
        assert_eq!(DeviceClass::from_headers(None, None), Desktop);
    }

    const WINDOWS_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/127.0.6533.107 Mobile/15E148 Safari/604.1";

    #[test]
    fn sec_ch_ua_mobile_combinations() {
        let cases: &[(Option<&str>, Option<&str>, DeviceClass, &str)] = &[
            // `?1` is a phone, whatever the UA says.
            (
                Some(WINDOWS_CHROME),
                Some("?1"),
                Phone,
                "?1 overrides a desktop UA",
            ),
            (
                Some(ANDROID_TABLET),
                Some("?1"),
                Phone,
                "?1 overrides a tablet UA",
            ),
            (Some(IPAD), Some("?1"), Phone, "?1 overrides an iPad UA"),
            (
                Some(ANDROID_PHONE),
                Some("?1"),
                Phone,
                "?1 agrees with a phone UA",
            ),
            (None, Some("?1"), Phone, "?1 without a UA"),
            (Some(""), Some("?1"), Phone, "?1 with an empty UA"),
            (
                Some(WINDOWS_CHROME),
                Some(" ?1 "),
                Phone,
                "?1 with surrounding whitespace",
            ),
            // `?0` is "not a phone": a phone UA becomes desktop, tablets and desktops stay.
            (
                Some(ANDROID_PHONE),
                Some("?0"),
                Desktop,
                "?0 with a phone UA: request desktop site",
            ),
            (
                Some(ANDROID_TABLET),
                Some("?0"),
                Tablet,
                "?0 with an Android tablet UA stays tablet",
            ),
            (
                Some(IPAD),
                Some("?0"),
                Tablet,
                "?0 with an iPad UA stays tablet",
            ),
            (
                Some(WINDOWS_CHROME),
                Some("?0"),
                Desktop,
                "?0 with a desktop UA",
            ),
            (None, Some("?0"), Desktop, "?0 without a UA"),
            // A missing or malformed hint defers to the UA.
            (Some(ANDROID_PHONE), None, Phone, "no hint, phone UA"),
            (Some(ANDROID_TABLET), None, Tablet, "no hint, tablet UA"),
            (Some(WINDOWS_CHROME), None, Desktop, "no hint, desktop UA"),
            (Some(WINDOWS_CHROME), Some(""), Desktop, "empty hint"),
            (
                Some(WINDOWS_CHROME),
                Some("1"),
                Desktop,
                "hint `1` is not a structured boolean",
            ),
            (
                Some(WINDOWS_CHROME),
                Some("?true"),
                Desktop,
                "hint `?true` is not a structured boolean",
            ),
            (
                Some(ANDROID_PHONE),
                Some("0"),
                Phone,
                "hint `0` is not a structured boolean",
            ),
            (None, None, Desktop, "no headers at all"),
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|&(ua, hint, expected, what)| {
                let actual = DeviceClass::from_headers(ua, hint);
                (actual != expected).then(|| {
                    format!("{what}: expected {expected}, got {actual}\n    UA: {ua:?}, Sec-CH-UA-Mobile: {hint:?}")
                })
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn mobile_and_tablet_are_whole_words() {
        // iOS system fetches: "MobileSafari" is not the `Mobile` token.
        assert_eq!(
            DeviceClass::from_user_agent("MobileSafari/604.1 CFNetwork/1410.0.3 Darwin/22.6.0"),
            Desktop
        );
        assert_eq!(DeviceClass::from_user_agent("mobile"), Phone);
        assert_eq!(DeviceClass::from_user_agent("TABLET"), Tablet);
    }

    #[test]
    fn names_codes_and_display_round_trip() {
        for d in DeviceClass::ALL {
            assert_eq!(DeviceClass::parse(d.as_str()), Some(d));
            assert_eq!(
                DeviceClass::parse(&d.as_str().to_ascii_uppercase()),
                Some(d)
            );
            assert_eq!(d.to_string(), d.as_str());
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!(DeviceClass::parse("mobile"), None);
        assert_eq!(DeviceClass::parse(""), None);
        let codes: Vec<u8> = DeviceClass::ALL.iter().map(|d| d.code()).collect();
        assert_eq!(codes, [0, 1, 2]);
    }
}
