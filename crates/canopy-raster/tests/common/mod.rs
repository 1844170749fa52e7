//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/data` next to the repository (or `$CANOPY_SHARED_DATA`), `None` with a printed
/// message when it is missing so the calling test can skip.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("CANOPY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = base.join(sub);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set CANOPY_SHARED_DATA to the shared data folder to run this test)",
            p.display()
        );
        None
    }
}
