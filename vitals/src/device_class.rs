//! Device class (CrUX's form factor) from request headers: phone, tablet or desktop.
//!
//! Derived only from what the browser sends (`User-Agent`, and the `Sec-CH-UA-Mobile` client hint when present),
//! never from the beacon body, so a page cannot claim to be something it is not.
//!
//! iPadOS Safari (13+) sends a desktop macOS user agent by default; no request header tells it apart from a Mac, so it
//! is classed as desktop, as CrUX's user-agent based form factor does.

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
    pub fn from_headers(user_agent: Option<&str>, sec_ch_ua_mobile: Option<&str>) -> DeviceClass {
        // `?1` is a definite "mobile" (phone-sized) from Chromium; `?0` only says "not a phone", so a tablet still
        // needs the user agent to be told apart from a desktop.
        if sec_ch_ua_mobile.map(str::trim) == Some("?1") {
            return DeviceClass::Phone;
        }
        let ua = user_agent.unwrap_or("");
        let from_ua = DeviceClass::from_user_agent(ua);
        if sec_ch_ua_mobile.map(str::trim) == Some("?0") && from_ua == DeviceClass::Phone {
            // Chrome's "request desktop site" and the like: trust the hint over a stale UA token.
            return DeviceClass::Desktop;
        }
        from_ua
    }

    /// Classifies a `User-Agent` string alone.
    pub fn from_user_agent(ua: &str) -> DeviceClass {
        let has = |needle: &str| contains_ci(ua, needle);
        if has("ipad") || has("tablet") || has("kindle") || has("silk/") || has("playbook") {
            return DeviceClass::Tablet;
        }
        if has("iphone")
            || has("ipod")
            || has("windows phone")
            || has("iemobile")
            || has("blackberry")
        {
            return DeviceClass::Phone;
        }
        if has("android") {
            // Android's convention: phones say "Mobile", tablets do not.
            return if has("mobile") {
                DeviceClass::Phone
            } else {
                DeviceClass::Tablet
            };
        }
        if has("mobile") || has("opera mini") {
            return DeviceClass::Phone;
        }
        DeviceClass::Desktop
    }
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl std::fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
