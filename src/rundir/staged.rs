//! Writing a directory all at once: build it in a temporary sibling, then rename it into place,
//! so a reader, or the next process after a crash, finds either no directory or the whole one,
//! never half of it. Checkpoints, `probe`'s output folder and `report`'s folder are written this
//! way.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A directory being built under a temporary name. Dropped without `commit` or `replace` (an
/// error on the way), it is removed; a crash leaves it, and the next `create` at the same path
/// clears it.
pub struct StagedDir {
    tmp: PathBuf,
    placed: bool,
}

impl StagedDir {
    /// A fresh, empty folder at `tmp` (whatever an interrupted attempt left there is removed).
    pub fn create(tmp: PathBuf) -> std::io::Result<StagedDir> {
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(StagedDir { tmp, placed: false })
    }

    /// Where to write the directory's contents.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the finished folder to `dest`, which must not exist.
    pub fn commit(mut self, dest: &Path) -> std::io::Result<()> {
        fs::rename(&self.tmp, dest)?;
        self.placed = true;
        Ok(())
    }

    /// Puts the finished folder at `dest`, replacing whatever folder is there: the old one is
    /// renamed to `backup`, the new one into place, then the backup deleted. If the second rename
    /// fails the old one is put back, so `dest` always holds one whole folder, old or new.
    pub fn replace(mut self, dest: &Path, backup: &Path) -> Result<()> {
        if !dest.exists() {
            fs::rename(&self.tmp, dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            self.placed = true;
            return Ok(());
        }
        let _ = fs::remove_dir_all(backup);
        fs::rename(dest, backup).with_context(|| {
            format!(
                "cannot replace {}: moving the old one to {}",
                dest.display(),
                backup.display()
            )
        })?;
        if let Err(e) = fs::rename(&self.tmp, dest) {
            let restored = fs::rename(backup, dest);
            return Err(anyhow::Error::from(e).context(format!(
                "cannot replace {}: renaming the new one into place ({})",
                dest.display(),
                match restored {
                    Ok(()) => "the old one is back in place".to_string(),
                    Err(r) => format!("the old one is at {}: {r}", backup.display()),
                }
            )));
        }
        self.placed = true;
        if let Err(e) = fs::remove_dir_all(backup) {
            eprintln!("warning: the old one is left at {}: {e}", backup.display());
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged_with(dir: &Path, name: &str, text: &str) -> StagedDir {
        let staged = StagedDir::create(dir.join(format!(".{name}.tmp"))).unwrap();
        fs::write(staged.path().join("file.txt"), text).unwrap();
        staged
    }

    #[test]
    fn a_committed_folder_appears_whole_and_its_staging_name_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        staged_with(tmp.path(), "out", "new").commit(&dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("file.txt")).unwrap(), "new");
        assert!(!tmp.path().join(".out.tmp").exists());
    }

    #[test]
    fn an_abandoned_folder_is_removed_and_a_leftover_is_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        drop(staged_with(tmp.path(), "out", "half"));
        assert!(!tmp.path().join(".out.tmp").exists());
        // What a crash leaves: a staging folder with content; the next create starts empty.
        fs::create_dir_all(tmp.path().join(".out.tmp/old")).unwrap();
        let again = StagedDir::create(tmp.path().join(".out.tmp")).unwrap();
        assert_eq!(fs::read_dir(again.path()).unwrap().count(), 0);
    }

    #[test]
    fn replacing_swaps_the_whole_folder_and_drops_the_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let backup = tmp.path().join(".out.old");
        staged_with(tmp.path(), "out", "old").commit(&dest).unwrap();
        fs::write(dest.join("stale.txt"), "only in the old one").unwrap();
        staged_with(tmp.path(), "out", "new")
            .replace(&dest, &backup)
            .unwrap();
        assert_eq!(fs::read_to_string(dest.join("file.txt")).unwrap(), "new");
        assert!(!dest.join("stale.txt").exists());
        assert!(!backup.exists());
    }
}
