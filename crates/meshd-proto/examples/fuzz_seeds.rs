//! Writes the seed corpus of the cargo-fuzz targets: `fuzz/corpus/<target>/<name>`.
//!
//! `cargo run -p meshd-proto --features fuzzing --example fuzz_seeds [CORPUS_DIR]`
//! (default: the workspace's `fuzz/corpus`). Handshakes use fresh ephemeral keys, so the
//! bytes differ on every run; commit them only when the seeds themselves change.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"),
        PathBuf::from,
    );
    let seeds = meshd_proto::fuzzing::seeds();
    for (target, name, bytes) in &seeds {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(name), bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), dir.display());
    Ok(())
}
