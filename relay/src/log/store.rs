//! The durable append-only log on redb, with group commit.
//!
//! Tables (one redb file):
//! - `entries`:  leaf index → entry bytes (the encoded receipt)
//! - `hashes`:   `level << 56 | index` → SHA-256 of the complete subtree `(level, index)`;
//!   written once, never changed; every proof is `O(log n)` point reads, a tile is one range
//! - `leaves`:   leaf hash → leaf index (proof by leaf hash; idempotent re-submission)
//! - `meta`:     `"size"` → committed tree size
//! - `checkpoints`: tree size → signed checkpoint note (every checkpoint ever issued)
//!
//! Writes: every submitter sends its batch through one bounded queue to a single writer
//! thread. The writer drains whatever is queued (up to `max_batch` entries), appends it all
//! in ONE write transaction, commits with `Durability::Immediate` (fsync), and only then
//! answers each submitter with its leaf indices. So: acknowledged ⇒ committed. A checkpoint
//! request rides in the same queue, so a checkpoint is signed over committed state only and
//! is itself committed before it is served.

use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_tlog::checkpoint::Checkpoint;
use shoal_tlog::note::NoteSigner;
use shoal_tlog::tiles::{Tile, TileKind, encode_bundle};
use shoal_tlog::{self as tlog, Frontier, Hash, HashReader, ProofError};
use tokio::sync::{mpsc, oneshot, watch};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const HASHES: TableDefinition<u64, [u8; 32]> = TableDefinition::new("hashes");
const LEAVES: TableDefinition<[u8; 32], u64> = TableDefinition::new("leaves");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");

/// Hash keys pack the level into the top byte: indices stay below 2^56.
const MAX_LOG_SIZE: u64 = 1 << 56;
/// Largest single entry (tile entry bundles use a u16 length).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
/// Most entries read in one range request.
pub const MAX_RANGE: u64 = 1024;

fn hash_key(level: u8, index: u64) -> u64 {
    (u64::from(level) << 56) | index
}

/// Why a log operation failed; the HTTP API maps each variant to a status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// redb failed (I/O, corruption, database already open): HTTP 500.
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    /// A proof was asked for impossible indices or sizes, or a subtree hash is missing: 400.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A tree size, tile or entry beyond what is committed (the text names it): 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is invalid (entry too large, empty or oversized range): 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The log holds 2^56 entries, the most its hash keys can address: 503.
    #[error("log is full")]
    Full,
    /// The writer thread has stopped (shutdown or a failed commit): 503.
    #[error("the log writer has stopped")]
    Closed,
}

redb_errors_into!(LogError);

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Checkpoint origin line (by convention the log key's name).
    pub origin: String,
    /// Bound of the submission queue (in submissions, not entries).
    pub queue_depth: usize,
    /// Most entries committed in one write transaction.
    pub max_batch: usize,
    /// redb page cache.
    pub cache_bytes: usize,
}

impl LogConfig {
    /// Defaults for `origin`: 4096 queued submissions, 16 Ki entries per commit, 256 MiB cache.
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            queue_depth: 4096,
            max_batch: 16 * 1024,
            cache_bytes: 256 << 20,
        }
    }
}

enum Cmd {
    Append {
        entries: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<Vec<u64>, LogError>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<Arc<str>, LogError>>,
    },
}

#[derive(Debug, Clone)]
struct Published {
    size: u64,
    root: Hash,
    /// Latest signed checkpoint (log signature only).
    checkpoint: Option<(u64, Arc<str>)>,
    /// Cosignature lines collected for that checkpoint.
    cosignatures: Vec<String>,
}

/// The log: cheap to share (`Arc<Log>`).
pub struct Log {
    db: Arc<Database>,
    tx: mpsc::Sender<Cmd>,
    state: Arc<RwLock<Published>>,
    origin: String,
    /// Size of the latest checkpoint, bumped by the writer when it issues a new one.
    issued: Arc<watch::Sender<u64>>,
}

struct StoreReader<'a>(&'a redb::ReadOnlyTable<u64, [u8; 32]>);

impl HashReader for StoreReader<'_> {
    type Error = LogError;
    fn read(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.0
            .get(hash_key(level, index))?
            .map(|g| g.value())
            .ok_or(LogError::Proof(ProofError::Missing { level, index }))
    }
}

struct WriteReader<'a, 'b>(&'a redb::Table<'b, u64, [u8; 32]>);

impl HashReader for WriteReader<'_, '_> {
    type Error = LogError;
    fn read(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.0
            .get(hash_key(level, index))?
            .map(|g| g.value())
            .ok_or(LogError::Proof(ProofError::Missing { level, index }))
    }
}

impl Log {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    pub fn open(
        path: &Path,
        config: LogConfig,
        signer: Arc<dyn NoteSigner>,
    ) -> Result<Arc<Self>, LogError> {
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_bytes);
        let db = Arc::new(builder.create(path)?);
        // Create tables and read the committed state.
        let (size, checkpoint, frontier) = {
            let w = db.begin_write()?;
            {
                w.open_table(ENTRIES)?;
                w.open_table(HASHES)?;
                w.open_table(LEAVES)?;
                w.open_table(META)?;
                w.open_table(CHECKPOINTS)?;
            }
            w.commit()?;
            let r = db.begin_read()?;
            let meta = r.open_table(META)?;
            let size = meta.get("size")?.map(|g| g.value()).unwrap_or(0);
            let cps = r.open_table(CHECKPOINTS)?;
            let checkpoint = cps
                .last()?
                .map(|(k, v)| (k.value(), Arc::<str>::from(v.value())));
            let hashes = r.open_table(HASHES)?;
            let frontier = Frontier::load(&StoreReader(&hashes), size)?;
            (size, checkpoint, frontier)
        };
        let state = Arc::new(RwLock::new(Published {
            size,
            root: frontier.root(),
            checkpoint,
            cosignatures: Vec::new(),
        }));
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let issued = Arc::new(watch::Sender::new(checkpoint_size_of(&state).unwrap_or(0)));
        let writer = Writer {
            issued: issued.clone(),
            db: db.clone(),
            rx,
            frontier,
            state: state.clone(),
            signer,
            origin: config.origin.clone(),
            max_batch: config.max_batch.max(1),
        };
        std::thread::Builder::new()
            .name("tlog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::Storage(e.into()))?;
        Ok(Arc::new(Self {
            db,
            tx,
            state,
            origin: config.origin,
            issued,
        }))
    }

    /// Opens the log, retrying for up to `wait` while a previous instance in this process
    /// (a relay being restarted) still holds the file.
    pub fn open_retry(
        path: &Path,
        config: LogConfig,
        signer: Arc<dyn NoteSigner>,
        wait: std::time::Duration,
    ) -> Result<Arc<Self>, LogError> {
        let t0 = std::time::Instant::now();
        loop {
            match Self::open(path, config.clone(), signer.clone()) {
                Err(LogError::Storage(redb::Error::DatabaseAlreadyOpen)) if t0.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Resolves whenever a new checkpoint is issued (its size in the receiver).
    pub fn subscribe_checkpoints(&self) -> watch::Receiver<u64> {
        self.issued.subscribe()
    }

    /// The latest checkpoint: `(size, note signed by the log only, cosignatures collected)`.
    pub fn latest(&self) -> Option<(u64, Arc<str>, usize)> {
        let p = self.published();
        p.checkpoint.map(|(s, n)| (s, n, p.cosignatures.len()))
    }

    /// The checkpoint origin line this log signs under (from [`LogConfig::origin`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn published(&self) -> Published {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Appends entries; resolves with their leaf indices once durably committed. An entry
    /// already in the log gets its existing index (re-submission after a lost ack is safe).
    pub async fn append(&self, entries: Vec<Vec<u8>>) -> Result<Vec<u64>, LogError> {
        if entries.iter().any(|e| e.len() > MAX_ENTRY_BYTES) {
            return Err(LogError::BadRequest("entry too large".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append { entries, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Signs (and durably stores) a checkpoint of the committed tree now; returns the note.
    /// If the size did not change since the last checkpoint, returns that one.
    pub async fn checkpoint_now(&self) -> Result<Arc<str>, LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Checkpoint { reply })
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Checkpoints on an interval until the log is dropped.
    pub fn spawn_checkpointer(self: &Arc<Self>, every: std::time::Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                let Some(log) = weak.upgrade() else { break };
                if let Err(e) = log.checkpoint_now().await {
                    tracing::warn!("checkpoint failed: {e}");
                }
            }
        });
    }

    /// Committed tree size and root (may be ahead of the latest checkpoint).
    pub fn committed(&self) -> (u64, Hash) {
        let p = self.published();
        (p.size, p.root)
    }

    /// The latest signed checkpoint with the cosignatures collected for it.
    pub fn checkpoint(&self) -> Option<String> {
        let p = self.published();
        let (_, note) = p.checkpoint?;
        let mut s = note.to_string();
        for c in &p.cosignatures {
            s.push_str(c);
        }
        Some(s)
    }

    /// Size of the latest checkpoint (0 when none).
    pub fn checkpoint_size(&self) -> u64 {
        self.published().checkpoint.map(|c| c.0).unwrap_or(0)
    }

    /// Attaches witness cosignature lines (`— name base64\n`) to the checkpoint of `size`, if
    /// it is still the latest. Callers verify them first (see `witness::WitnessClient`).
    pub fn add_cosignatures(&self, size: u64, lines: &[String]) {
        if let Ok(mut g) = self.state.write()
            && g.checkpoint.as_ref().is_some_and(|c| c.0 == size)
        {
            for l in lines {
                if !g.cosignatures.contains(l) && g.cosignatures.len() < 32 {
                    g.cosignatures.push(l.clone());
                }
            }
        }
    }

    /// Every checkpoint ever issued with size in `[from, to]` (for audits and tests).
    pub fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, LogError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(CHECKPOINTS)?;
        let mut out = Vec::new();
        for item in t.range(from..=to)? {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_owned()));
        }
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size > self.published().size {
            return Err(LogError::NotFound(format!(
                "tree size {size} not committed"
            )));
        }
        Ok(())
    }

    /// Merkle root of the first `size` entries; `size` must be committed.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.check_size(size)?;
        let r = self.db.begin_read()?;
        let t = r.open_table(HASHES)?;
        tlog::tree_root(&StoreReader(&t), size)
    }

    /// RFC 6962 inclusion proof of leaf `index` in the tree of `size` (committed) entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(size)?;
        let r = self.db.begin_read()?;
        let t = r.open_table(HASHES)?;
        tlog::prove_inclusion(&StoreReader(&t), index, size)
    }

    /// Index of a leaf by its hash, if present.
    pub fn index_of(&self, leaf_hash: &Hash) -> Result<Option<u64>, LogError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(LEAVES)?;
        Ok(t.get(leaf_hash)?.map(|g| g.value()))
    }

    /// RFC 6962 consistency proof from the tree of `old` entries to that of `new` (committed).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(new)?;
        let r = self.db.begin_read()?;
        let t = r.open_table(HASHES)?;
        tlog::prove_consistency(&StoreReader(&t), old, new)
    }

    /// Entries `[start, end)`, at most [`MAX_RANGE`], all below the committed size.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LogError> {
        if start >= end || end - start > MAX_RANGE {
            return Err(LogError::BadRequest(format!(
                "range must be non-empty and at most {MAX_RANGE} entries"
            )));
        }
        self.check_size(end)?;
        let r = self.db.begin_read()?;
        let t = r.open_table(ENTRIES)?;
        let mut out = Vec::with_capacity((end - start) as usize);
        for item in t.range(start..end)? {
            let (_, v) = item?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Bytes of a tlog-tiles tile (hash tile or entry bundle) for the committed tree.
    pub fn tile(&self, tile: &Tile) -> Result<Vec<u8>, LogError> {
        let size = self.published().size;
        if !tile.exists_for(size) {
            return Err(LogError::NotFound(tile.path()));
        }
        let first = tile.first();
        let end = first + u64::from(tile.width);
        let r = self.db.begin_read()?;
        match tile.kind {
            TileKind::Entries => {
                let t = r.open_table(ENTRIES)?;
                let mut es = Vec::with_capacity(usize::from(tile.width));
                for item in t.range(first..end)? {
                    let (_, v) = item?;
                    es.push(v.value().to_vec());
                }
                encode_bundle(es.iter().map(|e| e.as_slice()))
                    .ok_or_else(|| LogError::BadRequest("entry too large for a bundle".into()))
            }
            TileKind::Hash { .. } => {
                let level = tile.tree_level().unwrap_or(0);
                let t = r.open_table(HASHES)?;
                let mut out = Vec::with_capacity(32 * usize::from(tile.width));
                for item in t.range(hash_key(level, first)..hash_key(level, end))? {
                    let (_, v) = item?;
                    out.extend_from_slice(&v.value());
                }
                if out.len() != 32 * usize::from(tile.width) {
                    return Err(LogError::NotFound(tile.path()));
                }
                Ok(out)
            }
        }
    }
}

fn checkpoint_size_of(state: &RwLock<Published>) -> Option<u64> {
    match state.read() {
        Ok(g) => g.checkpoint.as_ref().map(|c| c.0),
        Err(p) => p.into_inner().checkpoint.as_ref().map(|c| c.0),
    }
}

struct Writer {
    issued: Arc<watch::Sender<u64>>,
    db: Arc<Database>,
    rx: mpsc::Receiver<Cmd>,
    frontier: Frontier,
    state: Arc<RwLock<Published>>,
    signer: Arc<dyn NoteSigner>,
    origin: String,
    max_batch: usize,
}

enum Reply {
    Append(oneshot::Sender<Result<Vec<u64>, LogError>>, Vec<u64>),
    Checkpoint(oneshot::Sender<Result<Arc<str>, LogError>>),
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            let mut n = batch_entries(&batch[0]);
            while n < self.max_batch {
                match self.rx.try_recv() {
                    Ok(c) => {
                        n += batch_entries(&c);
                        batch.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<Cmd>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        let mut want_checkpoint = false;
        for c in batch {
            match c {
                Cmd::Append { entries: e, reply } => entries.push((e, reply)),
                Cmd::Checkpoint { reply } => {
                    want_checkpoint = true;
                    replies.push(Reply::Checkpoint(reply));
                }
            }
        }
        let before = self.frontier.clone();
        match self.write(&mut entries, want_checkpoint) {
            Ok((indices, checkpoint)) => {
                for ((_, reply), idx) in entries.into_iter().zip(indices) {
                    replies.push(Reply::Append(reply, idx));
                }
                // Publish the committed state before acknowledging.
                if let Ok(mut g) = self.state.write() {
                    g.size = self.frontier.size();
                    g.root = self.frontier.root();
                    if let Some(cp) = &checkpoint
                        && g.checkpoint.as_ref().map(|c| c.0) != Some(cp.0)
                    {
                        g.checkpoint = Some(cp.clone());
                        g.cosignatures.clear();
                        self.issued.send_replace(cp.0);
                    }
                }
                let note = checkpoint.map(|c| c.1);
                for r in replies {
                    match r {
                        Reply::Append(tx, idx) => {
                            let _ = tx.send(Ok(idx));
                        }
                        Reply::Checkpoint(tx) => {
                            let _ = tx.send(note.clone().ok_or(LogError::Closed));
                        }
                    }
                }
            }
            Err(e) => {
                // Nothing was committed: roll the in-memory frontier back.
                self.frontier = before;
                tracing::error!("log commit failed: {e}");
                for (_, reply) in entries {
                    let _ = reply.send(Err(LogError::Closed));
                }
                for r in replies {
                    if let Reply::Checkpoint(tx) = r {
                        let _ = tx.send(Err(LogError::Closed));
                    }
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn write(
        &mut self,
        batches: &mut [(Vec<Vec<u8>>, oneshot::Sender<Result<Vec<u64>, LogError>>)],
        want_checkpoint: bool,
    ) -> Result<(Vec<Vec<u64>>, Option<(u64, Arc<str>)>), LogError> {
        let txn = self.db.begin_write()?;
        let mut all = Vec::with_capacity(batches.len());
        let mut checkpoint = None;
        {
            let mut entries_t = txn.open_table(ENTRIES)?;
            let mut hashes_t = txn.open_table(HASHES)?;
            let mut leaves_t = txn.open_table(LEAVES)?;
            let mut batch_leaves: std::collections::HashMap<Hash, u64> =
                std::collections::HashMap::new();
            for (entries, _) in batches.iter_mut() {
                let mut idx = Vec::with_capacity(entries.len());
                for e in entries.drain(..) {
                    let lh = tlog::leaf_hash(&e);
                    if let Some(&i) = batch_leaves.get(&lh) {
                        idx.push(i);
                        continue;
                    }
                    if let Some(i) = leaves_t.get(&lh)?.map(|g| g.value()) {
                        idx.push(i);
                        continue;
                    }
                    let i = self.frontier.size();
                    if i >= MAX_LOG_SIZE {
                        return Err(LogError::Full);
                    }
                    entries_t.insert(i, e.as_slice())?;
                    leaves_t.insert(&lh, i)?;
                    batch_leaves.insert(lh, i);
                    let mut err = None;
                    self.frontier.append(lh, |level, index, h| {
                        if err.is_none()
                            && let Err(e) = hashes_t.insert(hash_key(level, index), h)
                        {
                            err = Some(e);
                        }
                    });
                    if let Some(e) = err {
                        return Err(e.into());
                    }
                    idx.push(i);
                }
                all.push(idx);
            }
            let size = self.frontier.size();
            txn.open_table(META)?.insert("size", size)?;
            if want_checkpoint {
                let mut cps = txn.open_table(CHECKPOINTS)?;
                let last = cps.last()?.map(|(k, v)| (k.value(), v.value().to_owned()));
                checkpoint = match last {
                    Some((s, note)) if s == size => Some((s, Arc::<str>::from(note))),
                    _ => {
                        debug_assert_eq!(
                            tlog::tree_root(&WriteReader(&hashes_t), size).ok(),
                            Some(self.frontier.root())
                        );
                        let cp = Checkpoint::new(&self.origin, size, self.frontier.root());
                        let note = cp
                            .sign(self.signer.as_ref())
                            .map_err(|e| LogError::BadRequest(e.to_string()))?
                            .to_text();
                        cps.insert(size, note.as_str())?;
                        Some((size, Arc::<str>::from(note)))
                    }
                };
            }
        }
        txn.commit()?;
        Ok((all, checkpoint))
    }
}

fn batch_entries(c: &Cmd) -> usize {
    match c {
        Cmd::Append { entries, .. } => entries.len().max(1),
        Cmd::Checkpoint { .. } => 1,
    }
}
