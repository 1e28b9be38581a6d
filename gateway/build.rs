//! Builds the eBPF programs (gateway-ebpf) with aya-build and leaves the object in OUT_DIR,
//! from where src/redirect/loader.rs embeds it. Needs nightly + rust-src and bpf-linker:
//! `cargo xtask setup` installs them.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "gateway-ebpf")
        .ok_or_else(|| anyhow!("gateway-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent of {}", pkg.manifest_path))?;
    aya_build::build_ebpf(
        [Package {
            name: "gateway-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if nightly, rust-src or bpf-linker is missing)")
}
