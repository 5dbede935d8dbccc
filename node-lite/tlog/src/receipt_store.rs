//! The node's own receipts, kept on disk (native): what `shoal-node receipts` checks against
//! the relays' logs.
//!
//! Format: an append-only file of records `len (u32 LE) ‖ encoded receipt` (see
//! [`crate::receipt`]). An append is written and `fsync`ed before it returns. A torn last
//! record (the process died mid-append) is ignored on load and cut off by the next append;
//! damage anywhere else is reported, never skipped silently. Every record is decoded and its
//! signatures verified on load; the same receipt stored twice is returned once.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::receipt::{MAX_RECEIPT_BYTES, Receipt, ReceiptError};

/// Errors of the receipt store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("receipt store {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A complete record that is not a valid receipt (the file was damaged or edited).
    #[error("receipt store {path}: record at byte {offset} is invalid: {source}")]
    BadRecord {
        /// The store file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// Why it was refused.
        source: ReceiptError,
    },
    /// A record length larger than any receipt (the file was damaged).
    #[error(
        "receipt store {path}: record at byte {offset} claims {len} bytes (max {MAX_RECEIPT_BYTES})"
    )]
    BadLength {
        /// The store file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The claimed length.
        len: u32,
    },
    /// A receipt to append does not verify.
    #[error("refusing to store an invalid receipt: {0}")]
    Invalid(ReceiptError),
}

/// A receipt file. Cheap to create; the file is made on the first append.
#[derive(Debug, Clone)]
pub struct ReceiptStore {
    path: PathBuf,
}

impl ReceiptStore {
    /// The store at `path` (created, with its parent directory, on first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends receipts (each verified first) durably.
    pub fn append(&self, receipts: &[Receipt]) -> Result<(), StoreError> {
        for r in receipts {
            r.verify().map_err(StoreError::Invalid)?;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        // Cut a torn tail left by a crash, so the new records stay readable.
        let (_, valid_end) = self.scan(&mut f)?;
        f.set_len(valid_end).map_err(|e| self.io(e))?;
        f.seek(SeekFrom::Start(valid_end)).map_err(|e| self.io(e))?;
        let mut buf = Vec::new();
        for r in receipts {
            let bytes = r.encode();
            // A receipt's encoding is far below u32::MAX (MAX_RECEIPT_BYTES).
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&bytes);
        }
        f.write_all(&buf).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))
    }

    /// Every stored receipt, verified, in append order, duplicates removed. A missing file is
    /// an empty store.
    pub fn load(&self) -> Result<Vec<Receipt>, StoreError> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        Ok(self.scan(&mut f)?.0)
    }

    /// Reads all complete records; returns them and the end of the last complete one.
    fn scan(&self, f: &mut File) -> Result<(Vec<Receipt>, u64), StoreError> {
        let mut data = Vec::new();
        f.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        f.read_to_end(&mut data).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut pos = 0usize;
        while data.len() - pos >= 4 {
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(&data[pos..pos + 4]);
            let len = u32::from_le_bytes(len_bytes);
            if len as usize > MAX_RECEIPT_BYTES || len == 0 {
                return Err(StoreError::BadLength {
                    path: self.path.clone(),
                    offset: pos as u64,
                    len,
                });
            }
            let end = pos + 4 + len as usize;
            if end > data.len() {
                break; // torn tail
            }
            let r = Receipt::decode_verified(&data[pos + 4..end]).map_err(|source| {
                StoreError::BadRecord {
                    path: self.path.clone(),
                    offset: pos as u64,
                    source,
                }
            })?;
            if seen.insert(r.leaf_hash()) {
                out.push(r);
            }
            pos = end;
        }
        Ok((out, pos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Ed25519Signer, NoteSigner};
    use crate::receipt::{ReceiptBody, commitment};

    fn receipt(i: u32) -> Receipt {
        let w = Ed25519Signer::from_seed("w", &[1; 32]).expect("key");
        let r = Ed25519Signer::from_seed("r", &[2; 32]).expect("key");
        let body = ReceiptBody {
            job_id: [7; 16],
            shard: i,
            input_commitment: commitment(&i.to_le_bytes()),
            output_commitment: commitment(b"out"),
            worker: w.public_key(),
            requester: r.public_key(),
            started_ms: 1,
            finished_ms: 2,
        };
        let ws = body.sign_as_worker(&w).expect("sign");
        Receipt::countersign(body, ws, &r).expect("countersign")
    }

    #[test]
    fn roundtrip_dedup_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReceiptStore::new(dir.path().join("sub/receipts.bin"));
        assert!(s.load().expect("empty").is_empty());
        s.append(&[receipt(0), receipt(1)]).expect("append");
        s.append(&[receipt(1), receipt(2)]).expect("append");
        let got = s.load().expect("load");
        assert_eq!(
            got.iter().map(|r| r.body.shard).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn torn_tail_is_ignored_then_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.bin");
        let s = ReceiptStore::new(&p);
        s.append(&[receipt(0), receipt(1)]).expect("append");
        let full = std::fs::read(&p).expect("read");
        std::fs::write(&p, &full[..full.len() - 5]).expect("truncate");
        assert_eq!(s.load().expect("load").len(), 1);
        s.append(&[receipt(2)]).expect("append after tear");
        let shards: Vec<u32> = s
            .load()
            .expect("load")
            .iter()
            .map(|r| r.body.shard)
            .collect();
        assert_eq!(shards, vec![0, 2]);
    }

    #[test]
    fn damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.bin");
        let s = ReceiptStore::new(&p);
        s.append(&[receipt(0), receipt(1)]).expect("append");
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[20] ^= 0xff; // inside the first receipt
        std::fs::write(&p, &bytes).expect("write");
        assert!(matches!(
            s.load(),
            Err(StoreError::BadRecord { offset: 0, .. })
        ));
        bytes[20] ^= 0xff;
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, &bytes).expect("write");
        assert!(matches!(s.load(), Err(StoreError::BadLength { .. })));
    }

    #[test]
    fn invalid_receipt_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReceiptStore::new(dir.path().join("r.bin"));
        let mut r = receipt(0);
        r.body.shard = 9; // signatures no longer match
        assert!(matches!(s.append(&[r]), Err(StoreError::Invalid(_))));
        assert!(s.load().expect("load").is_empty());
    }
}
