//! The committed header `include/edgecut.h` is what cbindgen generates from the sources now.
//! `EDGECUT_BLESS=1 cargo test -p edgecut-mobile --test header` rewrites it.

#[test]
fn committed_header_is_current() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(cfg)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    let fresh = String::from_utf8(out).unwrap();
    let path = format!("{dir}/include/edgecut.h");
    if std::env::var_os("EDGECUT_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "mobile/include/edgecut.h is stale: run EDGECUT_BLESS=1 cargo test -p edgecut-mobile --test header"
    );
}
