//! Embeds the built beacon (`beacon/dist/`: `beacon.js` and the content-hashed wasm and fallback) into the collector,
//! so `cargo run -p collector` serves the beacon on a machine without any wasm toolchain.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = manifest_dir.join("..").join("beacon").join("dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dist) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let served = name == "beacon.js"
                || (name.starts_with("fv-") && (name.ends_with(".wasm") || name.ends_with(".js")));
            if served {
                println!("cargo:rerun-if-changed={}", e.path().display());
                files.push((name, e.path().canonicalize().expect("dist file path")));
            }
        }
    }
    files.sort();
    let mut out = String::from(
        "/// The beacon's files: (name, bytes).\npub const FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("beacon_files.rs");
    std::fs::write(target, out).expect("write generated file");
}
