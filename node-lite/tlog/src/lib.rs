//! The receipt transparency log, as pure logic shared by the relay (native) and the light
//! client (browser, wasm32): no I/O, no clocks, no randomness.
//!
//! - RFC 9162 Merkle tree hashing (SHA-256, leaf prefix `0x00`, node prefix `0x01`), tree heads,
//!   inclusion and consistency proofs (generation over any [`HashReader`], and verification).
//! - [`note`]: C2SP `signed-note` (Ed25519 signatures, key ids, verifier keys).
//! - [`checkpoint`]: C2SP `tlog-checkpoint`, C2SP `tlog-cosignature` (cosignature/v1) and
//!   equivocation proofs.
//! - [`tiles`]: C2SP `tlog-tiles` paths and tile data.
//! - [`api`]: the relay log's HTTP API (paths, bodies, checked decoding), defined once for
//!   the relay, the native client and the page.
//! - [`audit`]: the light client's flow against one log (checkpoint → consistency → quorum →
//!   inclusion), sans-IO: the native client and the page drive the same code.
//! - `remote` (native, feature `fetch`): the relay log API over HTTP and `receipt_status`
//!   (included / witnessed per receipt), for `shoal-node receipts` and the relay's witness.
//! - [`client`]: the light client (checkpoint signature, k-of-n witness quorum, inclusion,
//!   consistency with the last checkpoint seen).
//! - [`receipt`]: signed job receipts, the log's entries.
//! - `receipt_store` (native): a node's own receipts, appended to a file with `fsync`.
//!
//! Storage model. A tree of `n` leaves stores every *complete* subtree hash `(level, index)`:
//! the subtree covering leaves `[index << level, (index + 1) << level)`. These hashes never
//! change once written, a tree of `n` leaves has fewer than `2n` of them, and every proof or
//! tree head for any size `≤ n` needs `O(log n)` of them.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod checkpoint;
pub mod client;
pub mod note;
pub mod receipt;
#[cfg(not(target_family = "wasm"))]
pub mod receipt_store;
#[cfg(all(feature = "fetch", not(target_family = "wasm")))]
pub mod remote;
pub mod tiles;

#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Largest tree size accepted anywhere (2^63): keeps every shift and `+ 1` below overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 63;

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree, or the size exceeds [`MAX_TREE_SIZE`].
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Zero-based leaf index asked for.
        index: u64,
        /// Tree size (number of leaves) it was checked against.
        size: u64,
    },
    /// `old > new`, or a size above [`MAX_TREE_SIZE`].
    #[error("sizes out of order or too large: {old} > {new}")]
    BadSizes {
        /// The smaller tree's size (or a range's start).
        old: u64,
        /// The larger tree's size (or a range's end).
        new: u64,
    },
    /// The proof has more or fewer hashes than the two sizes require.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The proof is well formed but hashes to a different root than the one trusted.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    /// A [`HashReader`] had no hash for a subtree the computation needs.
    #[error("the hash store is missing subtree ({level}, {index})")]
    Missing {
        /// Subtree height: 0 for leaves, covering `2^level` leaves.
        level: u8,
        /// Position among subtrees of that level (first leaf is `index << level`).
        index: u64,
    },
}

/// Reads stored complete-subtree hashes. `read(level, index)` is the hash of leaves
/// `[index << level, (index + 1) << level)`.
pub trait HashReader {
    /// The store's error; proof routines also report their own [`ProofError`]s through it.
    type Error: From<ProofError>;
    /// The hash of complete subtree `(level, index)`, or an error if it is not stored.
    fn read(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Hash of leaves `[lo, hi)` where `lo` is a multiple of the largest power of two `≤ hi - lo`
/// (always true inside the RFC 9162 recursions). `O(log (hi - lo))` reads.
pub fn range_hash<R: HashReader>(r: &R, lo: u64, hi: u64) -> Result<Hash, R::Error> {
    let n = hi
        .checked_sub(lo)
        .ok_or(ProofError::BadSizes { old: lo, new: hi })?;
    if n == 0 {
        return Ok(EMPTY_ROOT);
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return r.read(level, lo >> level);
    }
    // Right spine: combine the complete subtrees of the binary decomposition, right to left.
    let k = split_point(n);
    let left = range_hash(r, lo, lo + k)?;
    let right = range_hash(r, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// The tree head (root hash) of the first `size` leaves.
pub fn tree_root<R: HashReader>(r: &R, size: u64) -> Result<Hash, R::Error> {
    range_hash(r, 0, size)
}

/// RFC 9162 §2.1.3.1 inclusion proof for leaf `index` in the tree of `size` leaves.
/// Hashes are listed from the leaf's sibling upwards.
pub fn prove_inclusion<R: HashReader>(r: &R, index: u64, size: u64) -> Result<Vec<Hash>, R::Error> {
    if index >= size || size > MAX_TREE_SIZE {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    let mut out = Vec::with_capacity(64 - size.leading_zeros() as usize);
    // Walk down iteratively, collecting siblings top-down, then reverse.
    let (mut lo, mut hi, m) = (0u64, size, index);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < lo + k {
            out.push(range_hash(r, lo + k, hi)?);
            hi = lo + k;
        } else {
            out.push(range_hash(r, lo, lo + k)?);
            lo += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// RFC 9162 §2.1.4.1 consistency proof from the tree of `old` leaves to the tree of `new`
/// leaves. Empty when `old == new` or `old == 0`.
pub fn prove_consistency<R: HashReader>(r: &R, old: u64, new: u64) -> Result<Vec<Hash>, R::Error> {
    if old > new || new > MAX_TREE_SIZE {
        return Err(ProofError::BadSizes { old, new }.into());
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    // SUBPROOF(m, D[lo:hi], b), iteratively; siblings collected top-down then reversed.
    let (mut lo, mut hi, mut m, mut b) = (0u64, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !b {
                out.push(range_hash(r, lo, hi)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push(range_hash(r, lo + k, hi)?);
            hi = lo + k;
        } else {
            out.push(range_hash(r, lo, lo + k)?);
            lo += k;
            m -= k;
            b = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// RFC 9162 §2.1.3.2: the root that `proof` leads to for leaf `index` with hash `leaf` in a
/// tree of `size` leaves.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size || size > MAX_TREE_SIZE {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Verifies an inclusion proof against a known root.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// RFC 9162 §2.1.4.2: verifies that the tree (`old`, `old_root`) is a prefix of
/// (`new`, `new_root`).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new || new > MAX_TREE_SIZE {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path = proof;
    let seed;
    if old.is_power_of_two() {
        seed = *old_root;
    } else {
        seed = path[0];
        path = &path[1..];
    }
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a tree: one complete subtree per set bit of `size`, largest (leftmost)
/// first. Appending a leaf yields the new complete subtrees to store; the root is a fold of
/// the edge. The log writer keeps one in memory and rebuilds it from storage on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The frontier of the empty tree (size 0, root [`EMPTY_ROOT`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored hashes (`popcount(size)`
    /// reads).
    pub fn load<R: HashReader>(r: &R, size: u64) -> Result<Self, R::Error> {
        if size > MAX_TREE_SIZE {
            return Err(ProofError::BadSizes { old: 0, new: size }.into());
        }
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push((level, r.read(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Self { size, nodes })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; calls `store(level, index, hash)` for every complete subtree that
    /// now exists and did not before (the leaf itself first, then its completed ancestors).
    pub fn append(&mut self, leaf: Hash, mut store: impl FnMut(u8, u64, &Hash)) {
        let index = self.size;
        store(0, index, &leaf);
        let mut cur = (0u8, leaf);
        while let Some(&(level, left)) = self.nodes.last() {
            if level != cur.0 {
                break;
            }
            self.nodes.pop();
            let h = node_hash(&left, &cur.1);
            let new_level = level + 1;
            store(new_level, index >> new_level, &h);
            cur = (new_level, h);
        }
        self.nodes.push(cur);
        self.size += 1;
    }

    /// RFC 9162 root of the current tree, folded from the edge ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// An in-memory tree (tests, witnesses' scratch work, small logs).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf given its already computed [`leaf_hash`], storing every new subtree hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.append(leaf, |level, index, h| {
            let l = level as usize;
            if levels.len() <= l {
                levels.resize_with(l + 1, Vec::new);
            }
            debug_assert_eq!(levels[l].len() as u64, index);
            levels[l].push(*h);
        });
    }

    /// Appends a leaf from its raw entry bytes (hashed with [`leaf_hash`]).
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(leaf_hash(data));
    }

    /// Number of leaves in the tree.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// RFC 9162 root of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

impl HashReader for MemoryTree {
    type Error = ProofError;
    fn read(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or(ProofError::Missing { level, index })
    }
}
