//! `canopy demo`: the end-to-end job on a synthetic scene.
use std::path::Path;

pub fn run(_out: &Path, _size: usize) -> anyhow::Result<()> {
    anyhow::bail!("the demo is assembled once the writer and tiler land")
}
