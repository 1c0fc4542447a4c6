//! Disks that really fail: a tiny tmpfs the test mounts (the tests run as root, as CI does),
//! filled up to get the kernel's own ENOSPC, or remounted read-only for EROFS. No mock file
//! system and no permission tricks (root ignores `chmod`): the proxy's writes fail exactly
//! as they would on a full or read-only production disk. Unmounted on drop.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TinyDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl TinyDisk {
    /// A fresh tmpfs of `kib` KiB.
    pub fn mount(kib: u64) -> TinyDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (these tests need root, as CI has)",
            dir.path().display()
        );
        let filler = dir.path().join("filler");
        TinyDisk { dir, filler }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk to the last block: the next write that needs space gets ENOSPC.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("open filler");
        let chunk = vec![0u8; 4096];
        for _ in 0..1_000_000 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        // The last partial page too.
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
    }

    /// Frees what [`TinyDisk::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }

    /// Remounts read-only (EROFS for every write) or back read-write.
    pub fn read_only(&self, ro: bool) {
        let status = Command::new("mount")
            .args(["-o", if ro { "remount,ro" } else { "remount,rw" }])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot remount {}",
            self.dir.path().display()
        );
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
