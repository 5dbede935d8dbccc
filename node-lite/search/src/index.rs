//! A local semantic index over text files: passages with their file and line, their
//! vectors, stored in one file written atomically (temp file + rename).
//!
//! The index is model-agnostic: callers embed passages and queries (so the CLI can show a
//! progress bar) and hand vectors in.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SHOALIX1";
/// Largest file the indexer reads (larger ones are skipped with a warning).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Target words per passage (the model reads at most 256 tokens).
pub const PASSAGE_WORDS: usize = 120;

/// One indexed file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doc {
    /// The file's path as given to [`Index::plan`] (displayed; also the lookup key).
    pub path: String,
    /// Hex SHA-256 of the text when indexed: an unchanged hash skips re-embedding (empty for
    /// docs created by [`Index::add`] without a plan).
    pub sha256: String,
}

/// One embedded piece of a [`Doc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Passage {
    /// Position of the passage's file in [`Index::docs`].
    pub doc: u32,
    /// 1-based line where the passage starts.
    pub line: u32,
    /// The passage text as embedded (and shown in search results).
    pub text: String,
}

/// A passage waiting for its vector.
#[derive(Debug, Clone)]
pub struct PendingPassage {
    /// Path of the file it comes from (matches a [`Doc::path`]).
    pub path: String,
    /// 1-based line where the passage starts.
    pub line: u32,
    /// The text the caller must embed.
    pub text: String,
}

/// The whole index as saved on disk (`SHOALIX1` then postcard): files, passages and their
/// vectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// Name of the embedding model the vectors came from; opening with another model fails.
    pub model: String,
    /// Dimensions of every vector (MiniLM: 384).
    pub dim: usize,
    /// Indexed files, referenced by position from [`Passage::doc`].
    pub docs: Vec<Doc>,
    /// Every passage, in the same order as the rows of `vectors`.
    pub passages: Vec<Passage>,
    /// Row-major `passages.len() × dim`, unit length rows.
    pub vectors: Vec<f32>,
}

/// One search result of [`Index::search`].
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Dot product of the passage and query vectors: cosine similarity, in `[-1, 1]`.
    pub score: f32,
    /// Path of the file the passage is in.
    pub path: String,
    /// 1-based line where the passage starts.
    pub line: u32,
    /// The passage text.
    pub text: String,
}

/// Why reading, writing or querying an index failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A file system operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file (named) does not start with the `SHOALIX1` magic.
    #[error("{0}: not a Shoal index (or a newer format)")]
    BadFormat(String),
    /// The index at the path (first field) did not decode or encode, or its sizes disagree
    /// (second field: why).
    #[error("{0}: corrupt index: {1}")]
    Corrupt(String, String),
    /// The index on disk was embedded with a different model; its vectors are not comparable.
    #[error("index was built with model {built:?}, not {current:?}: re-index")]
    ModelMismatch {
        /// The model recorded in the index.
        built: String,
        /// The model the caller embeds with.
        current: String,
    },
    /// A vector handed in has the wrong length.
    #[error("vector has {got} dimensions, index has {want}")]
    Dim {
        /// Length of the vector given.
        got: usize,
        /// The index's [`Index::dim`].
        want: usize,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What happened to one input file during [`Index::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Same SHA-256 as when indexed: its passages are kept, nothing to embed.
    Unchanged,
    /// Not in the index yet: all its passages are pending.
    New,
    /// Content changed: its old passages were dropped and the new ones are pending.
    Changed,
    /// Not indexed, with the reason (unreadable, binary, not UTF-8, over [`MAX_FILE_BYTES`]).
    Skipped(String),
}

impl Index {
    /// An empty index for vectors of `dim` dimensions from `model`.
    pub fn new(model: &str, dim: usize) -> Self {
        Self {
            model: model.into(),
            dim,
            docs: Vec::new(),
            passages: Vec::new(),
            vectors: Vec::new(),
        }
    }

    /// Open `path`, or start an empty index if it does not exist.
    pub fn open_or_new(path: &Path, model: &str, dim: usize) -> Result<Self, IndexError> {
        if !path.exists() {
            return Ok(Self::new(model, dim));
        }
        let idx = Self::open(path)?;
        if idx.model != model {
            return Err(IndexError::ModelMismatch {
                built: idx.model,
                current: model.into(),
            });
        }
        Ok(idx)
    }

    /// Read and check an index file (magic, decoding, sizes); the model is not checked here.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let name = path.display().to_string();
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| IndexError::BadFormat(name.clone()))?;
        let idx: Index = postcard::from_bytes(body)
            .map_err(|e| IndexError::Corrupt(name.clone(), e.to_string()))?;
        if idx.vectors.len() != idx.passages.len() * idx.dim
            || idx
                .passages
                .iter()
                .any(|p| p.doc as usize >= idx.docs.len())
        {
            return Err(IndexError::Corrupt(name, "sizes do not add up".into()));
        }
        Ok(idx)
    }

    /// Write atomically: a crash leaves either the old or the new index, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut bytes = MAGIC.to_vec();
        bytes.extend(
            postcard::to_allocvec(self)
                .map_err(|e| IndexError::Corrupt(path.display().to_string(), e.to_string()))?,
        );
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Decide what to (re)embed for `files`: new or changed files are split into passages,
    /// stale passages of changed files are dropped. Returns per-file status and the passages
    /// that need vectors (pass them with their vectors to [`Index::add`]).
    pub fn plan(&mut self, files: &[PathBuf]) -> (Vec<(PathBuf, FileStatus)>, Vec<PendingPassage>) {
        let mut statuses = Vec::new();
        let mut pending = Vec::new();
        for file in files {
            let key = file.display().to_string();
            let text = match read_text(file) {
                Ok(t) => t,
                Err(why) => {
                    statuses.push((file.clone(), FileStatus::Skipped(why)));
                    continue;
                }
            };
            let sha = hex::encode(Sha256::digest(text.as_bytes()));
            let status = match self.docs.iter().position(|d| d.path == key) {
                Some(i) if self.docs[i].sha256 == sha => FileStatus::Unchanged,
                Some(i) => {
                    self.remove_doc(i);
                    FileStatus::Changed
                }
                None => FileStatus::New,
            };
            if status != FileStatus::Unchanged {
                self.docs.push(Doc {
                    path: key.clone(),
                    sha256: sha,
                });
                pending.extend(split_passages(&text).into_iter().map(|(line, text)| {
                    PendingPassage {
                        path: key.clone(),
                        line,
                        text,
                    }
                }));
            }
            statuses.push((file.clone(), status));
        }
        (statuses, pending)
    }

    /// Add embedded passages (from [`Index::plan`]).
    pub fn add(
        &mut self,
        passages: Vec<PendingPassage>,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), IndexError> {
        for (p, v) in passages.into_iter().zip(vectors) {
            if v.len() != self.dim {
                return Err(IndexError::Dim {
                    got: v.len(),
                    want: self.dim,
                });
            }
            let doc = self
                .docs
                .iter()
                .position(|d| d.path == p.path)
                .unwrap_or_else(|| {
                    self.docs.push(Doc {
                        path: p.path.clone(),
                        sha256: String::new(),
                    });
                    self.docs.len() - 1
                });
            self.passages.push(Passage {
                doc: doc as u32,
                line: p.line,
                text: p.text,
            });
            self.vectors.extend(v);
        }
        Ok(())
    }

    fn remove_doc(&mut self, i: usize) {
        let dim = self.dim;
        let mut keep_vec = Vec::with_capacity(self.vectors.len());
        let mut keep = Vec::with_capacity(self.passages.len());
        for (p, v) in self.passages.drain(..).zip(self.vectors.chunks(dim)) {
            if p.doc as usize != i {
                let doc = if p.doc as usize > i { p.doc - 1 } else { p.doc };
                keep.push(Passage { doc, ..p });
                keep_vec.extend_from_slice(v);
            }
        }
        self.passages = keep;
        self.vectors = keep_vec;
        self.docs.remove(i);
    }

    /// The `k` passages closest to the unit vector `query`, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::Dim {
                got: query.len(),
                want: self.dim,
            });
        }
        let scores: Vec<f32> = self
            .vectors
            .chunks(self.dim)
            .map(|v| crate::vector::dot(v, query))
            .collect();
        Ok(crate::vector::top_k(&scores, k)
            .into_iter()
            .map(|(i, score)| {
                let p = &self.passages[i];
                Hit {
                    score,
                    path: self.docs[p.doc as usize].path.clone(),
                    line: p.line,
                    text: p.text.clone(),
                }
            })
            .collect())
    }
}

/// Read a text file, refusing binary, non-UTF-8 and oversized files with a reason.
pub fn read_text(path: &Path) -> Result<String, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE_BYTES {
        return Err(format!("larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes)".into());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Files to index under `inputs`: the files themselves, and `.txt`/`.md` files found
/// recursively in directories (hidden entries skipped), sorted for stable output.
pub fn collect_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, IndexError> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(io_err(input))?;
        if meta.is_dir() {
            walk(input, &mut out)?;
        } else {
            out.push(input.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IndexError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("txt" | "md" | "markdown")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Split text into passages: paragraphs (blank-line separated), long paragraphs cut into
/// windows of about [`PASSAGE_WORDS`] words. Returns `(first line, text)` pairs.
pub fn split_passages(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut start = 0u32;
    let mut words = 0usize;
    let flush = |para: &mut Vec<&str>, start: u32, out: &mut Vec<(u32, String)>| {
        let joined = para.join(" ");
        let t = joined.trim();
        if !t.is_empty() {
            out.push((start, t.to_string()));
        }
        para.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u32 + 1;
        if line.trim().is_empty() {
            flush(&mut para, start, &mut out);
            words = 0;
            continue;
        }
        if para.is_empty() {
            start = lineno;
        }
        let n = line.split_whitespace().count();
        if words + n > PASSAGE_WORDS && !para.is_empty() {
            flush(&mut para, start, &mut out);
            start = lineno;
            words = 0;
        }
        if n > PASSAGE_WORDS {
            // One very long line: window it.
            let ws: Vec<&str> = line.split_whitespace().collect();
            for w in ws.chunks(PASSAGE_WORDS) {
                out.push((lineno, w.join(" ")));
            }
            continue;
        }
        para.push(line.trim());
        words += n;
    }
    flush(&mut para, start, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        crate::vector::l2_normalize(&mut v);
        v
    }

    #[test]
    fn passages_keep_line_numbers_and_window_long_lines() {
        let text = "title\n\nfirst para\nstill first\n\n\nsecond";
        assert_eq!(
            split_passages(text),
            vec![
                (1, "title".to_string()),
                (3, "first para still first".to_string()),
                (7, "second".to_string())
            ]
        );
        let long = "w ".repeat(PASSAGE_WORDS * 2 + 5);
        let p = split_passages(&long);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|(l, _)| *l == 1));
    }

    #[test]
    fn plan_add_search_save_reopen_and_reindex_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.md");
        std::fs::write(&a, "cats\n\ndogs").unwrap();
        std::fs::write(&b, "boats").unwrap();
        std::fs::write(dir.path().join("bin.txt"), b"\x00\x01").unwrap();
        std::fs::write(dir.path().join("latin1.txt"), b"caf\xe9").unwrap();
        std::fs::write(dir.path().join("skip.png"), b"png").unwrap();
        let files = collect_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files.len(), 4, "{files:?}");

        let mut idx = Index::new("m", 2);
        let (status, pending) = idx.plan(&files);
        let skipped: Vec<_> = status
            .iter()
            .filter(|(_, s)| matches!(s, FileStatus::Skipped(_)))
            .collect();
        assert_eq!(skipped.len(), 2);
        assert_eq!(pending.len(), 3);
        let vecs = pending
            .iter()
            .map(|p| match p.text.as_str() {
                "cats" => unit(&[1.0, 0.0]),
                "dogs" => unit(&[0.8, 0.6]),
                _ => unit(&[0.0, 1.0]),
            })
            .collect();
        idx.add(pending, vecs).unwrap();
        let hits = idx.search(&unit(&[1.0, 0.1]), 2).unwrap();
        assert_eq!(hits[0].text, "cats");
        assert_eq!(hits[1].text, "dogs");
        assert_eq!(hits[1].line, 3);

        let path = dir.path().join("idx/index.bin");
        idx.save(&path).unwrap();
        let mut idx = Index::open_or_new(&path, "m", 2).unwrap();
        assert_eq!(idx.passages.len(), 3);
        assert!(matches!(
            Index::open_or_new(&path, "other", 2),
            Err(IndexError::ModelMismatch { .. })
        ));

        // Unchanged files embed nothing; a changed file replaces its passages.
        let (_, pending) = idx.plan(&files);
        assert!(pending.is_empty());
        std::fs::write(&a, "fish").unwrap();
        let (_, pending) = idx.plan(&files);
        assert_eq!(pending.len(), 1);
        idx.add(pending, vec![unit(&[1.0, 0.0])]).unwrap();
        assert_eq!(idx.passages.len(), 2);
        assert_eq!(idx.search(&unit(&[1.0, 0.0]), 1).unwrap()[0].text, "fish");

        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(Index::open(&path), Err(IndexError::BadFormat(_))));
    }
}
