//! Uploaded files on disk, content-addressed by MD5.
//!
//! Layout under the data directory: `tmp/` holds uploads in progress (emptied at
//! start-up: anything there belongs to an upload that died), `files/ab/cd/<md5>`
//! holds finished files. An upload streams into a temp file while its MD5 is
//! computed; `commit` fsyncs it, renames it to its content address and fsyncs the
//! directory, so a crash never leaves a truncated file under a final name. The same
//! bytes twice are stored once. An `Upload` dropped before `commit` removes its temp
//! file. Which user uploaded what lives in the database, not here.

use super::hex::encode_hex;
use md5::{Digest, Md5};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct Store {
    files: PathBuf,
    tmp: PathBuf,
}

/// What a finished upload became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub md5: [u8; 16],
    pub size: u64,
    /// False when the same bytes were already stored (this copy was discarded).
    pub new_copy: bool,
}

impl Store {
    /// Opens (creating) the data directory and removes leftovers of dead uploads.
    pub fn open(root: &Path) -> io::Result<Store> {
        let store = Store {
            files: root.join("files"),
            tmp: root.join("tmp"),
        };
        fs::create_dir_all(&store.files)?;
        fs::create_dir_all(&store.tmp)?;
        let mut removed = 0;
        for entry in fs::read_dir(&store.tmp)? {
            let entry = entry?;
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!("removed {removed} temp files of interrupted uploads");
        }
        Ok(store)
    }

    /// Where the file with this MD5 lives (whether or not it exists).
    pub fn path_of(&self, md5: &[u8; 16]) -> PathBuf {
        let hex = encode_hex(md5);
        self.files.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Opens a stored file for reading, with its size.
    pub fn open_file(&self, md5: &[u8; 16]) -> io::Result<(File, u64)> {
        let file = File::open(self.path_of(md5))?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Starts an upload into a fresh temp file.
    pub fn begin(&self) -> io::Result<Upload> {
        let mut name = [0u8; 12];
        getrandom::getrandom(&mut name).map_err(io::Error::other)?;
        let path = self.tmp.join(format!("{}.part", encode_hex(&name)));
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(Upload {
            file,
            path,
            md5: Md5::new(),
            size: 0,
            committed: false,
        })
    }

    /// Number of uploads in progress (temp files).
    #[cfg(test)]
    fn temp_files(&self) -> usize {
        fs::read_dir(&self.tmp).map(|d| d.count()).unwrap_or(0)
    }
}

/// One upload in progress.
pub struct Upload {
    file: File,
    path: PathBuf,
    md5: Md5,
    size: u64,
    committed: bool,
}

impl Upload {
    /// Appends body bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.md5.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the upload durable under its content address.
    pub fn commit(mut self, store: &Store) -> io::Result<Stored> {
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        let target = store.path_of(&md5);
        let size = self.size;
        if target.exists() {
            // Same bytes already stored: this copy is redundant. Drop removes it.
            return Ok(Stored {
                md5,
                size,
                new_copy: false,
            });
        }
        self.file.sync_all()?;
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("content address has no parent"))?;
        fs::create_dir_all(dir)?;
        fs::rename(&self.path, &target)?;
        self.committed = true;
        // The rename is durable only once the directory entry is on disk.
        File::open(dir)?.sync_all()?;
        Ok(Stored {
            md5,
            size,
            new_copy: true,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("crudrs-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn commit_stores_once_under_the_md5() {
        let root = temp_root("commit");
        let store = Store::open(&root).expect("open");
        let mut a = store.begin().expect("begin");
        a.write(b"hello ").expect("write");
        a.write(b"world").expect("write");
        let stored = a.commit(&store).expect("commit");
        assert_eq!(encode_hex(&stored.md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert!(stored.new_copy);
        assert_eq!(
            fs::read(store.path_of(&stored.md5)).expect("read"),
            b"hello world"
        );

        let mut b = store.begin().expect("begin");
        b.write(b"hello world").expect("write");
        let again = b.commit(&store).expect("commit");
        assert!(!again.new_copy);
        assert_eq!(store.temp_files(), 0);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn abandoned_uploads_leave_nothing_and_start_up_cleans_tmp() {
        let root = temp_root("abandon");
        let store = Store::open(&root).expect("open");
        let mut u = store.begin().expect("begin");
        u.write(b"half").expect("write");
        assert_eq!(store.temp_files(), 1);
        drop(u);
        assert_eq!(store.temp_files(), 0);

        fs::write(root.join("tmp").join("dead.part"), b"x").expect("write");
        let store = Store::open(&root).expect("reopen");
        assert_eq!(store.temp_files(), 0);
        let _ = fs::remove_dir_all(&root);
    }
}
