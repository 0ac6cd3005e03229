//! Page normalisation: from the URL a beacon reports to the page key analysts group by.
//!
//! `https://Shop.Example/products/123/?utm_source=x#top` becomes host `shop.example`, path `/products/123` and page
//! `/products/:id`. Query strings and fragments are dropped before anything is stored (they carry personal data and
//! unbounded cardinality); user info in the authority is dropped too.

use std::fmt;

/// Longest path kept, in bytes; longer paths are cut at a segment boundary and end in `/…`.
pub const MAX_PATH_BYTES: usize = 512;
/// Longest host kept (DNS's own limit).
pub const MAX_HOST_BYTES: usize = 253;

/// A beacon URL after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    host: String,
    path: String,
    page: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `http://` or `https://`.
    #[error("must be an absolute http(s) URL")]
    NotHttp,
    /// No host, or a host with characters no host name has.
    #[error("has no valid host")]
    BadHost,
    /// Control characters or spaces.
    #[error("contains control characters or spaces")]
    BadChars,
}

/// Per-site route rules: the seam for custom page grouping (`/blog/*` → `/blog/:slug`), applied after the built-in
/// collapsing. The default has none.
pub trait RouteRules {
    /// Returns the page for a normalised path when a rule matches.
    fn route(&self, path: &str) -> Option<String>;
}

/// No custom rules.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRules;

impl RouteRules for NoRules {
    fn route(&self, _path: &str) -> Option<String> {
        None
    }
}

impl PageUrl {
    /// Normalises an absolute http(s) URL with the built-in rules only.
    pub fn parse(url: &str) -> Result<PageUrl, UrlError> {
        PageUrl::parse_with(url, &NoRules)
    }

    /// Normalises an absolute http(s) URL, then applies the site's route rules.
    pub fn parse_with(url: &str, rules: &dyn RouteRules) -> Result<PageUrl, UrlError> {
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(UrlError::BadChars);
        }
        let rest = strip_prefix_ci(url, "https://")
            .or_else(|| strip_prefix_ci(url, "http://"))
            .ok_or(UrlError::NotHttp)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = authority.to_ascii_lowercase();
        let host_ok = !host.is_empty()
            && host.len() <= MAX_HOST_BYTES
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        if !host_ok {
            return Err(UrlError::BadHost);
        }
        let raw_path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
        let path = clean_path(raw_path);
        let page = rules.route(&path).unwrap_or_else(|| collapse_ids(&path));
        Ok(PageUrl { host, path, page })
    }

    /// Rebuilds a normalised URL from its stored parts (the spool's records), checking the invariants that
    /// [`PageUrl::parse`] establishes, so a corrupt record cannot produce a page the API could never show.
    pub fn from_parts(host: &str, path: &str, page: &str) -> Option<PageUrl> {
        let ok = !host.is_empty()
            && host.len() <= MAX_HOST_BYTES
            && path.starts_with('/')
            && page.starts_with('/')
            && path.len() <= MAX_PATH_BYTES + 4
            && page.len() <= 4 * MAX_PATH_BYTES
            && ![host, path, page]
                .iter()
                .any(|s| s.contains(['?', '#']) || s.chars().any(char::is_control));
        ok.then(|| PageUrl {
            host: host.to_string(),
            path: path.to_string(),
            page: page.to_string(),
        })
    }

    /// Lower-case host, with the port when one was given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path with empty segments and the trailing slash removed, identifiers kept.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The page key: the path with identifier-like segments collapsed to `:id`.
    pub fn page(&self) -> &str {
        &self.page
    }
}

impl fmt::Display for PageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Drops empty segments (`//`, the trailing slash) and caps the length at a segment boundary.
fn clean_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_PATH_BYTES) + 1);
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        if out.len() + 1 + seg.len() > MAX_PATH_BYTES {
            out.push_str("/…");
            break;
        }
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Replaces identifier-like segments with `:id`.
pub fn collapse_ids(path: &str) -> String {
    if path == "/" {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').skip(1) {
        out.push('/');
        out.push_str(if is_identifier(seg) { ":id" } else { seg });
    }
    out
}

/// Numbers, UUIDs, long hex strings (hashes, object ids) and long mixed letter-digit tokens.
fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if b.len() >= 12 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Base64url-style tokens and slugs with embedded ids: long, and digits make up a good part of them.
    b.len() >= 20
        && digits * 4 >= b.len()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn page(url: &str) -> String {
        PageUrl::parse(url).unwrap().page().to_string()
    }

    #[test]
    fn the_contract_example() {
        let p = PageUrl::parse("https://Shop.Example/products/123?utm_source=x#top").unwrap();
        assert_eq!(p.host(), "shop.example");
        assert_eq!(p.path(), "/products/123");
        assert_eq!(p.page(), "/products/:id");
    }

    #[test]
    fn collapsing_table() {
        let cases = [
            ("https://a.example", "/"),
            ("https://a.example/", "/"),
            ("https://a.example/?q=1", "/"),
            ("https://a.example#x", "/"),
            ("https://a.example/checkout/", "/checkout"),
            ("https://a.example//checkout//step-2/", "/checkout/step-2"),
            ("https://a.example/u/42/orders/9001", "/u/:id/orders/:id"),
            (
                "https://a.example/o/123e4567-e89b-12d3-a456-426614174000",
                "/o/:id",
            ),
            (
                "https://a.example/o/123E4567-E89B-12D3-A456-426614174000/edit",
                "/o/:id/edit",
            ),
            (
                "https://a.example/commit/9fceb02d0ae598e95dc970b74767f19372d61af8",
                "/commit/:id",
            ),
            ("https://a.example/obj/507f1f77bcf86cd799439011", "/obj/:id"),
            ("https://a.example/s/aB3dE5fG7hJ9kL1mN3pQ5r", "/s/:id"),
            (
                "https://a.example/blog/how-we-made-checkout-fast",
                "/blog/how-we-made-checkout-fast",
            ),
            ("https://a.example/deadbeef", "/deadbeef"),
            ("https://a.example/cafebabecafebabe", "/cafebabecafebabe"),
            ("https://a.example/v2/api", "/v2/api"),
            ("https://a.example/Products/Shoes", "/Products/Shoes"),
            ("http://user:pw@a.example:8080/x", "/x"),
        ];
        for (url, want) in cases {
            assert_eq!(page(url), want, "{url}");
        }
        assert_eq!(
            PageUrl::parse("http://user:pw@A.example:8080/x")
                .unwrap()
                .host(),
            "a.example:8080"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(PageUrl::parse("ftp://a.example/"), Err(UrlError::NotHttp));
        assert_eq!(PageUrl::parse("/relative"), Err(UrlError::NotHttp));
        assert_eq!(PageUrl::parse("https:///x"), Err(UrlError::BadHost));
        assert_eq!(PageUrl::parse("https://a b/x"), Err(UrlError::BadChars));
        assert_eq!(
            PageUrl::parse("https://a.example/\n"),
            Err(UrlError::BadChars)
        );
        assert_eq!(PageUrl::parse("https://ex%41mple/"), Err(UrlError::BadHost));
    }

    #[test]
    fn route_rules_take_precedence() {
        struct Blog;
        impl RouteRules for Blog {
            fn route(&self, path: &str) -> Option<String> {
                path.starts_with("/blog/")
                    .then(|| "/blog/:slug".to_string())
            }
        }
        let p = PageUrl::parse_with("https://a.example/blog/hello-world/", &Blog).unwrap();
        assert_eq!((p.path(), p.page()), ("/blog/hello-world", "/blog/:slug"));
    }

    proptest! {
        #[test]
        fn pages_are_bounded_and_idempotent(path in "(/[a-zA-Z0-9._~%-]{0,40}){0,40}", q in "[a-z=&]{0,10}") {
            let p = PageUrl::parse(&format!("https://x.example{path}?{q}")).unwrap();
            prop_assert!(p.path().len() <= MAX_PATH_BYTES + 4);
            prop_assert!(p.page().starts_with('/'));
            prop_assert!(!p.page().contains('?'));
            prop_assert!(p.page() == "/" || !p.page().ends_with('/'));
            // Collapsing can lengthen a path (`/7` → `/:id`), so idempotence is checked away from the length cap.
            if p.page().len() < MAX_PATH_BYTES / 2 {
                let again = PageUrl::parse(&format!("https://x.example{}", p.page())).unwrap();
                prop_assert_eq!(again.page(), p.page());
            }
        }
    }
}
