//! A lean HTTP/1.1 client: one hyper connection per worker, kept alive, no pooling layer and no per-request
//! allocation beyond the body. The generator must outpace the collector on the same two cores, so it does no more
//! work per request than a browser's TCP stack would make the server do.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A kept-alive connection.
pub type Connection = SendRequest<Full<Bytes>>;

/// Opens a connection (Nagle off: a beacon is one small write).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the peer closes or the sender is dropped; errors show up on the next send.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends a request on a connection and reads the whole answer.
pub async fn send(
    conn: &mut Connection,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One GET on a fresh connection (for queries, not for load).
pub async fn get(addr: SocketAddr, path_and_query: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path_and_query)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One POST on a fresh connection (bulk loads and admin statements), with extra headers.
pub async fn post(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut conn = connect(addr).await?;
    let mut req = Request::post(path_and_query).header(hyper::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&mut conn, req.body(Full::new(body))?).await
}

/// Percent-encodes a query-string value.
pub fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolves `http://host:port` to a socket address, refusing anything that is not loopback: this tool generates
/// load, and must not be pointed at somebody else's server by a typo.
pub fn loopback_target(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("target {url:?}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .with_context(|| format!("target {url:?}: cannot resolve"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("target {url:?}: resolves to nothing"))?;
    if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        anyhow::bail!(
            "target {url:?} resolves to {}, which is not a loopback address: loadtest only targets this machine",
            bad.ip()
        );
    }
    Ok(first)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert_eq!(
            loopback_target("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(loopback_target("http://127.0.0.2:9/x").is_ok());
        assert!(loopback_target("http://[::1]:8080").is_ok());
        assert!(loopback_target("http://localhost:8080").is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.1",
            "http://8.8.8.8:80",
            "http://[::ffff:10.0.0.1]:80",
            "https://127.0.0.1:8080",
        ] {
            assert!(loopback_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("/products/:id"), "%2Fproducts%2F%3Aid");
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }
}
