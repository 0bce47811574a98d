//! The policy loader (`portcullis check` and `run`): the repo's example policy set with
//! one file replaced by the input (the first byte picks which: a tenant, a tier or
//! `gateway.toml`). Whatever the file holds, loading answers with a policy or errors,
//! never a panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Overrides, load};

/// The example policy set, copied once into a directory of this process.
static DIR: LazyLock<Option<(tempfile::TempDir, PathBuf)>> = LazyLock::new(|| {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let dir = tempfile::tempdir().ok()?;
    let root = dir.path().join("policies");
    copy_dir(&src, &root).ok()?;
    Some((dir, root))
});

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

const FILES: [&str; 4] = ["tenants/acme.toml", "tenants/initech.toml", "tiers/prod.toml", "gateway.toml"];

fuzz_target!(|data: &[u8]| {
    let Some((_, root)) = DIR.as_ref() else { return };
    let Some((pick, content)) = data.split_first() else { return };
    let file = root.join(FILES[usize::from(*pick) % FILES.len()]);
    let Ok(original) = std::fs::read(&file) else { return };
    if std::fs::write(&file, content).is_err() {
        return;
    }
    let env: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let _ = load(root, &env, &Overrides::default());
    let _ = std::fs::write(&file, original);
});
