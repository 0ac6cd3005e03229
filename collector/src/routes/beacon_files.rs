//! `GET /beacon.js` and the content-hashed wasm and JS fallback it loads, embedded at build time from
//! `beacon/dist/`. Any site may load them (CORS, `Cross-Origin-Resource-Policy: cross-origin`); the hashed files
//! are immutable and cached for a year, `beacon.js` for five minutes so a new build reaches pages quickly.
//! Served brotli- or gzip-compressed when the client accepts it (compressed once, on first use).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::OnceLock;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/beacon_files.rs"));
}

struct Asset {
    name: &'static str,
    raw: &'static [u8],
    br: Vec<u8>,
    gzip: Vec<u8>,
}

fn assets() -> &'static [Asset] {
    static A: OnceLock<Vec<Asset>> = OnceLock::new();
    A.get_or_init(|| {
        embedded::FILES
            .iter()
            .map(|&(name, raw)| {
                let mut br = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut br, 4096, 11, 22);
                    w.write_all(raw).expect("in-memory write");
                }
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(raw).expect("in-memory write");
                Asset {
                    name,
                    raw,
                    br,
                    gzip: gz.finish().expect("in-memory gzip"),
                }
            })
            .collect()
    })
}

/// The names of the embedded files (for tests and logs).
pub fn names() -> Vec<&'static str> {
    embedded::FILES.iter().map(|f| f.0).collect()
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".wasm") {
        "application/wasm"
    } else {
        "text/javascript; charset=utf-8"
    }
}

/// `GET /:file` for the beacon's files.
pub async fn get_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = assets().iter().find(|a| a.name == file) else {
        let msg = if embedded::FILES.is_empty() {
            "beacon: not built into this collector (run beacon/build.sh)"
        } else {
            "not found"
        };
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": msg })),
        )
            .into_response();
    };
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = |t: &str| {
        accepts
            .split(',')
            .any(|p| p.split(';').next().map(str::trim) == Some(t))
    };
    let (body, encoding): (&[u8], Option<&str>) = if token("br") {
        (&asset.br, Some("br"))
    } else if token("gzip") {
        (&asset.gzip, Some("gzip"))
    } else {
        (asset.raw, None)
    };
    let cache = if asset.name == "beacon.js" {
        "public, max-age=300"
    } else {
        "public, max-age=31536000, immutable"
    };
    let mut resp = body.to_vec().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    resp
}
