//! The client's IP: the TCP peer, or — only when the peer is a trusted proxy — the nearest untrusted address in
//! `X-Forwarded-For`. Used for rate limiting only; never stored.

use super::Policy;
use axum::http::HeaderMap;
use std::net::IpAddr;

/// The client address for a request from `peer`.
pub fn client_ip(policy: &Policy, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !policy.is_trusted_proxy(peer) {
        return peer;
    }
    // Walk the chain from the right (the hop nearest us); the first address that is not a trusted proxy is the
    // client as far as anyone we trust can tell. Unparsable entries stop the walk: trust ends there.
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !policy.is_trusted_proxy(ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_proxies() {
        let p = Policy::parse("trusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            client_ip(&p, stranger, &headers(&["203.0.113.9"])),
            stranger,
            "spoofed header ignored"
        );
        assert_eq!(
            client_ip(&p, proxy, &headers(&["203.0.113.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&p, proxy, &headers(&["1.1.1.1, 203.0.113.9, 10.0.0.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "the client is the nearest untrusted hop, not the left-most claim"
        );
        assert_eq!(client_ip(&p, proxy, &headers(&["garbage"])), proxy);
        assert_eq!(client_ip(&p, proxy, &headers(&[])), proxy);
    }
}
