//! Compiles `proto/ota/v1/*.proto` with protox (pure Rust, no system protoc).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: cargo reuses a
    // compiled build script across checkouts of the workspace (its hash
    // leaves the workspace's path out), and a path baked in at compile time
    // would generate another checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "ota/v1/common.proto",
        "ota/v1/vehicle_store.proto",
        "ota/v1/rule_engine.proto",
        "ota/v1/staging.proto",
        "ota/v1/campaign_manager.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("ota_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
