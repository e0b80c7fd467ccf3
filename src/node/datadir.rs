//! File modes of the data directory. It holds the Raft log, the state, snapshots and (by default)
//! the key-encryption key, so only the node's user may read it: directories 0700, files 0600.
//! New files get those modes from the process umask; what an older version, a restore or an
//! operator left looser is tightened at start. Nothing outside the directory is touched, and
//! symbolic links inside it are neither followed nor changed.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A path whose mode [`tighten`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// Make `dir` private: umask 077 for everything the process creates from now on, the directory
/// created if missing, and anything already in it tightened (one warning names what was).
///
/// The umask is process-wide on purpose: sled, the snapshot store and the emulator create files
/// deep inside their own code, and a mode passed at each call site would miss the next one.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    // SAFETY: umask(2) only swaps the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let tightened = tighten(dir)?;
    if !tightened.is_empty() {
        let listed: Vec<String> = tightened
            .iter()
            .map(|t| format!("{} {:04o}->{:04o}", t.path.display(), t.from, t.to))
            .collect();
        tracing::warn!(
            data_dir = %dir.display(),
            count = tightened.len(),
            tightened = %listed.join(", "),
            "the data dir was readable by other users: tightened to 0700 directories and 0600 files"
        );
    }
    Ok(())
}

/// The mode `mode` should have: no group, other or special bits, and no execute bit on a file.
fn private_mode(mode: u32, is_dir: bool) -> u32 {
    if is_dir { mode & 0o700 } else { mode & 0o600 }
}

/// Walk `root` (following `root` itself if it is a link, nothing below it), removing group and
/// other permissions. A parent is tightened before its entries are listed, so nobody else can
/// swap an entry for a link while the walk runs.
pub fn tighten(root: &Path) -> anyhow::Result<Vec<Tightened>> {
    let mut changed = Vec::new();
    let meta = std::fs::metadata(root).with_context(|| format!("reading data dir {}", root.display()))?;
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        let from = meta.permissions().mode() & 0o7777;
        let is_dir = meta.is_dir();
        let to = private_mode(from, is_dir);
        if to != from {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(to))
                .with_context(|| format!("making {} private (chmod {to:o})", path.display()))?;
            changed.push(Tightened {
                path: path.clone(),
                from,
                to,
            });
        }
        if !is_dir {
            continue;
        }
        let entries = std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", path.display()))?;
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", entry.path().display())),
            };
            if meta.is_dir() || meta.is_file() {
                stack.push((entry.path(), meta));
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn loose_directories_and_files_are_tightened_and_links_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        std::fs::create_dir_all(root.join("db/blobs")).unwrap();
        std::fs::write(root.join("db/conf"), "x").unwrap();
        std::fs::write(root.join("db/blobs/1"), "x").unwrap();
        std::fs::write(root.join("tight"), "x").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        for d in ["", "db", "db/blobs"] {
            chmod(&root.join(d), 0o755);
        }
        chmod(&root.join("db/conf"), 0o644);
        chmod(&root.join("db/blobs/1"), 0o755);
        chmod(&root.join("tight"), 0o400);
        chmod(&outside, 0o644);

        let changed = tighten(&root).unwrap();

        assert_eq!(changed.len(), 5, "{changed:?}");
        for d in ["", "db", "db/blobs"] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&root.join("db/conf")), 0o600);
        assert_eq!(mode(&root.join("db/blobs/1")), 0o600, "no execute bit on data");
        assert_eq!(mode(&root.join("tight")), 0o400, "stricter modes stay");
        assert_eq!(mode(&outside), 0o644, "a link's target outside the dir is not touched");
        assert!(tighten(&root).unwrap().is_empty(), "a second pass has nothing to do");
    }

    #[test]
    fn private_modes() {
        assert_eq!(private_mode(0o755, true), 0o700);
        assert_eq!(private_mode(0o2775, true), 0o700);
        assert_eq!(private_mode(0o644, false), 0o600);
        assert_eq!(private_mode(0o4755, false), 0o600);
        assert_eq!(private_mode(0o500, true), 0o500);
    }
}
