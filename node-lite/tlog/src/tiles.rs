//! C2SP `tlog-tiles` (<https://c2sp.org/tlog-tiles>) paths and data.
//!
//! - Hash tiles `tile/<L>/<N>[.p/<W>]`: the `W` (≤ 256) consecutive level-`8L` subtree hashes
//!   starting at index `256 N`, concatenated (32 bytes each). Full tiles have no `.p/` part.
//! - Entry bundles `tile/entries/<N>[.p/<W>]`: entries `256 N ..` each as a big-endian `u16`
//!   length then the bytes.
//! - `<N>` is written in groups of three decimal digits, every group but the last prefixed
//!   with `x`: 1234067 → `x001/x234/067`.

use super::{Hash, node_hash};

/// Tile height: every tile spans 8 tree levels (256 hashes wide).
pub const TILE_HEIGHT: u8 = 8;
/// Full tile width.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// What a tile holds: subtree hashes or log entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Hash tile at tile level `L` (tree level `8 L`).
    Hash {
        /// Tile level `L` (0..=7), the `<L>` path segment; not the tree level.
        level: u8,
    },
    /// Entry bundle.
    Entries,
}

/// A tile coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Hash tile (and its level) or entry bundle.
    pub kind: TileKind,
    /// Tile number `N` at its level: the tile starts at hash/entry index `256 N`.
    pub index: u64,
    /// 1..=256.
    pub width: u16,
}

/// [`Tile::parse`] refused a path: not a canonical `tile/...` path (or too long).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("bad tile path")]
pub struct BadTilePath;

fn encode_index(mut n: u64) -> String {
    let mut groups = vec![n % 1000];
    while n >= 1000 {
        n /= 1000;
        groups.push(n % 1000);
    }
    let mut s = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i + 1 < groups.len() {
            s.push_str(&format!("x{g:03}/"));
        } else {
            s.push_str(&format!("{g:03}"));
        }
    }
    s
}

impl Tile {
    /// The path relative to the log prefix (`tile/...`).
    pub fn path(&self) -> String {
        let l = match self.kind {
            TileKind::Hash { level } => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut p = format!("tile/{l}/{}", encode_index(self.index));
        if u64::from(self.width) != TILE_WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a path relative to the log prefix (`tile/...`). Only canonical paths are
    /// accepted (the encoding of the result must equal the input).
    pub fn parse(path: &str) -> Result<Self, BadTilePath> {
        if path.len() > 96 {
            return Err(BadTilePath);
        }
        let rest = path.strip_prefix("tile/").ok_or(BadTilePath)?;
        let (l, rest) = rest.split_once('/').ok_or(BadTilePath)?;
        let kind = if l == "entries" {
            TileKind::Entries
        } else {
            let level: u8 = l.parse().map_err(|_| BadTilePath)?;
            if level > 7 {
                return Err(BadTilePath);
            }
            TileKind::Hash { level }
        };
        let (n_part, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let w: u16 = w.parse().map_err(|_| BadTilePath)?;
                if w == 0 || u64::from(w) >= TILE_WIDTH {
                    return Err(BadTilePath);
                }
                (n, w)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let mut index: u64 = 0;
        for g in n_part.split('/') {
            let g = g.strip_prefix('x').unwrap_or(g);
            if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadTilePath);
            }
            let v: u64 = g.parse().map_err(|_| BadTilePath)?;
            index = index
                .checked_mul(1000)
                .and_then(|i| i.checked_add(v))
                .ok_or(BadTilePath)?;
        }
        let t = Tile { kind, index, width };
        if t.path() != path {
            return Err(BadTilePath);
        }
        Ok(t)
    }

    /// The tree level of the hashes in a hash tile.
    pub fn tree_level(&self) -> Option<u8> {
        match self.kind {
            TileKind::Hash { level } => Some(level * TILE_HEIGHT),
            TileKind::Entries => None,
        }
    }

    /// First index covered (leaf index for entry bundles; subtree index at `tree_level`).
    pub fn first(&self) -> u64 {
        self.index.saturating_mul(TILE_WIDTH)
    }

    /// Whether the tile can be served for a tree of `size` leaves. Stored hashes never
    /// change, so any width up to what the tree holds is servable (a dynamic server can
    /// answer old partial-tile paths too).
    pub fn exists_for(&self, size: u64) -> bool {
        let level = self.tree_level().unwrap_or(0);
        let available = size >> level;
        self.first()
            .checked_add(u64::from(self.width))
            .is_some_and(|end| end <= available)
    }
}

/// Splits a hash tile's bytes into hashes; `None` if the length is not a multiple of 32 or
/// exceeds 256 hashes.
pub fn tile_hashes(data: &[u8]) -> Option<Vec<Hash>> {
    if !data.len().is_multiple_of(32) || data.len() / 32 > TILE_WIDTH as usize {
        return None;
    }
    Some(
        data.chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

/// The hash of a full tile (256 hashes at level `8L`): the subtree hash at level `8(L+1)`,
/// i.e. one hash of the tile above.
pub fn full_tile_root(hashes: &[Hash]) -> Option<Hash> {
    if hashes.len() as u64 != TILE_WIDTH {
        return None;
    }
    let mut cur: Vec<Hash> = hashes.to_vec();
    while cur.len() > 1 {
        cur = cur
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    cur.first().copied()
}

/// Encodes entries as an entry bundle (u16 big-endian length prefixes). `None` if an entry
/// is longer than 65535 bytes.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).ok()?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Some(out)
}

/// Decodes an entry bundle; `None` if malformed or holding more than `max` entries.
pub fn decode_bundle(mut data: &[u8], max: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if out.len() == max || data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        data = &data[2..];
        if data.len() < len {
            return None;
        }
        out.push(&data[..len]);
        data = &data[len..];
    }
    Some(out)
}
