//! GGUF (v2, v3) reader: header, metadata, tensor directory, and borrowed tensor data.
//!
//! The file is untrusted input: every length, count, offset and shape is checked against the
//! bytes actually present before anything is allocated or sliced, and each failure names what
//! was wrong. Tensor data is never copied: [`Gguf::tensor_data`] borrows from the file bytes.

use std::collections::BTreeMap;

use crate::quant::GgmlType;

/// `GGUF` in little-endian.
const MAGIC: u32 = 0x4655_4747;
/// Longest string (key, metadata value, tensor name) accepted.
const MAX_STRING: u64 = 16 << 20;
/// Most metadata entries / tensors / array elements accepted.
const MAX_COUNT: u64 = 1 << 24;
/// Most dimensions of a tensor.
const MAX_DIMS: u32 = 4;

/// Why a GGUF file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    /// A GGUF version this reader does not know.
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    /// The file ends before the named part.
    #[error("GGUF truncated while reading {what} at byte {at}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the read.
        at: u64,
    },
    /// A length or count beyond the reader's limits.
    #[error("GGUF {what} too large ({value})")]
    TooLarge {
        /// What the count or length was for.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A string that is not UTF-8.
    #[error("GGUF string at byte {0} is not UTF-8")]
    Utf8(u64),
    /// An unknown metadata value type.
    #[error("GGUF metadata value type {0} is unknown")]
    ValueType(u32),
    /// A tensor whose element type the engine does not implement.
    #[error(
        "tensor {name}: type {ty} is not supported (supported: F32, F16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)"
    )]
    TensorType {
        /// Tensor name.
        name: String,
        /// The ggml type id or name.
        ty: String,
    },
    /// A tensor whose shape, offset or size does not fit the file.
    #[error("tensor {name}: {why}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Two tensors or two keys of one name.
    #[error("GGUF has two entries named {0}")]
    Duplicate(String),
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// Any unsigned integer type, widened.
    U64(u64),
    /// Any signed integer type, widened.
    I64(i64),
    /// f32 or f64, widened.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (GGUF order): `[cols, rows]` for a matrix.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset from the start of the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row length (innermost dimension).
    pub fn cols(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows (product of the outer dimensions).
    pub fn rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A parsed GGUF header: metadata and tensor directory. Data stays in the caller's bytes.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// File format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Offset of the tensor data section.
    pub data_offset: u64,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let at = self.pos as u64;
        let end = at.checked_add(n).ok_or(GgufError::Truncated { what, at })?;
        if end > self.b.len() as u64 {
            return Err(GgufError::Truncated { what, at });
        }
        let s = &self.b[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn count(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(GgufError::TooLarge { what, value: n });
        }
        Ok(n)
    }
    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(GgufError::TooLarge { what, value: n });
        }
        let at = self.pos as u64;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| GgufError::Utf8(at))
    }
    fn value(&mut self, ty: u32, depth: u8) -> Result<Value, GgufError> {
        const W: &str = "metadata value";
        Ok(match ty {
            0 => Value::U64(u64::from(self.arr::<1>(W)?[0])),
            1 => Value::I64(i64::from(self.arr::<1>(W)?[0] as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.arr(W)?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.arr(W)?))),
            4 => Value::U64(u64::from(self.u32(W)?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.arr(W)?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.arr(W)?))),
            7 => Value::Bool(self.arr::<1>(W)?[0] != 0),
            8 => Value::Str(self.string("metadata string")?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::TooLarge {
                        what: "array nesting",
                        value: u64::from(depth),
                    });
                }
                let ety = self.u32("array type")?;
                let n = self.count("array length")?;
                // Each element takes at least one byte: a length beyond the file is a lie.
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(GgufError::Truncated {
                        what: "array",
                        at: self.pos as u64,
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(W)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(W)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(W)?)),
            t => return Err(GgufError::ValueType(t)),
        })
    }
}

impl Gguf {
    /// Parse the header of `bytes` (the start of a GGUF file, or all of it). When `bytes` is
    /// the whole file, every tensor is also checked to lie inside it; with only a prefix (a
    /// download in progress) pass `file_len` = the full size to check against that instead.
    pub fn parse(bytes: &[u8], file_len: Option<u64>) -> Result<Self, GgufError> {
        let mut r = Reader { b: bytes, pos: 0 };
        let magic = r.u32("magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = r.count("tensor count")?;
        let n_kv = r.count("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata type")?;
            let v = r.value(ty, 0)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(GgufError::Duplicate(key));
            }
        }
        let mut infos = Vec::with_capacity(n_tensors.min(4096) as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let nd = r.u32("tensor dims")?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(GgufError::Tensor {
                    name,
                    why: format!("{nd} dimensions"),
                });
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(r.u64("tensor dim")?);
            }
            let ty_id = r.u32("tensor type")?;
            let off = r.u64("tensor offset")?;
            infos.push((name, dims, ty_id, off));
        }
        let align = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32);
        if align == 0 || !align.is_power_of_two() || align > 1 << 16 {
            return Err(GgufError::TooLarge {
                what: "alignment",
                value: align,
            });
        }
        let data_offset = (r.pos as u64).div_ceil(align) * align;
        let file_len = file_len.unwrap_or(bytes.len() as u64);
        let mut tensors = BTreeMap::new();
        for (name, dims, ty_id, off) in infos {
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::TensorType {
                name: name.clone(),
                ty: crate::quant::ggml_type_name(ty_id),
            })?;
            let bad = |why: String| GgufError::Tensor {
                name: name.clone(),
                why,
            };
            let mut elements: u64 = 1;
            for &d in &dims {
                if d == 0 {
                    return Err(bad("a zero dimension".into()));
                }
                elements = elements
                    .checked_mul(d)
                    .ok_or_else(|| bad("too many elements".into()))?;
            }
            if elements > 1 << 34 {
                return Err(bad(format!("{elements} elements")));
            }
            let block = ty.block_elems() as u64;
            if !dims[0].is_multiple_of(block) {
                return Err(bad(format!(
                    "row of {} is not a multiple of {}'s block of {block}",
                    dims[0],
                    ty.name()
                )));
            }
            let size = elements / block * ty.block_bytes() as u64;
            if !off.is_multiple_of(align) {
                return Err(bad(format!("offset {off} not aligned to {align}")));
            }
            let start = data_offset
                .checked_add(off)
                .ok_or_else(|| bad("offset overflows".into()))?;
            let end = start
                .checked_add(size)
                .ok_or_else(|| bad("size overflows".into()))?;
            if end > file_len {
                return Err(bad(format!(
                    "data ends at byte {end}, past the end of the file ({file_len} bytes): truncated file"
                )));
            }
            let info = TensorInfo {
                name: name.clone(),
                dims,
                ty,
                offset: start,
                size,
            };
            if tensors.insert(name.clone(), info).is_some() {
                return Err(GgufError::Duplicate(name));
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            data_offset,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An unsigned integer metadata value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// A float metadata value.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// The architecture (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The data of tensor `info` inside `file` (the whole file's bytes).
    pub fn tensor_data<'f>(
        &self,
        file: &'f [u8],
        info: &TensorInfo,
    ) -> Result<&'f [u8], GgufError> {
        let start = info.offset as usize;
        let end = start.saturating_add(info.size as usize);
        file.get(start..end).ok_or_else(|| GgufError::Tensor {
            name: info.name.clone(),
            why: format!(
                "data {start}..{end} is past the end of the file ({} bytes): truncated file",
                file.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny GGUF writer for tests (v3, one f32 tensor).
    pub(crate) fn tiny(extra_kv: &[(&str, u32, Vec<u8>)], tensor_ty: u32, cols: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&((1 + extra_kv.len()) as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend_from_slice(&(t.len() as u64).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        for (k, t, v) in extra_kv {
            s(&mut b, k);
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(v);
        }
        s(&mut b, "w");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&cols.to_le_bytes());
        b.extend_from_slice(&tensor_ty.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..cols {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_a_tiny_file_and_borrows_its_data() {
        let f = tiny(&[("n", 4, 7u32.to_le_bytes().to_vec())], 0, 8);
        let g = Gguf::parse(&f, None).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get_u64("n"), Some(7));
        let t = &g.tensors["w"];
        assert_eq!((t.cols(), t.rows(), t.size), (8, 1, 32));
        let d = g.tensor_data(&f, t).unwrap();
        assert_eq!(f32::from_le_bytes(d[4..8].try_into().unwrap()), 1.0);
    }

    #[test]
    fn every_truncation_is_refused_by_name_never_a_panic() {
        let f = tiny(
            &[(
                "s",
                8,
                [5u64.to_le_bytes().to_vec(), b"hello".to_vec()].concat(),
            )],
            0,
            8,
        );
        assert!(Gguf::parse(&f, None).is_ok());
        for cut in 0..f.len() {
            let e = Gguf::parse(&f[..cut], None).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("truncated") || msg.contains("magic"),
                "cut {cut}: {msg}"
            );
        }
    }

    #[test]
    fn refuses_bad_magic_version_types_and_lengths() {
        let mut f = tiny(&[], 0, 8);
        f[0] = b'X';
        assert!(matches!(Gguf::parse(&f, None), Err(GgufError::BadMagic(_))));
        let mut f = tiny(&[], 0, 8);
        f[4] = 9;
        assert!(matches!(Gguf::parse(&f, None), Err(GgufError::Version(9))));
        // Q5_K (type 13) is not supported: refused with its name.
        let f = tiny(&[], 13, 256);
        let e = Gguf::parse(&f, None).unwrap_err().to_string();
        assert!(e.contains("Q5_K") && e.contains("not supported"), "{e}");
        // A string claiming 2^40 bytes.
        let f = tiny(&[("s", 8, (1u64 << 40).to_le_bytes().to_vec())], 0, 8);
        assert!(matches!(
            Gguf::parse(&f, None),
            Err(GgufError::TooLarge { .. })
        ));
        // An array claiming more elements than bytes left.
        let f = tiny(
            &[(
                "a",
                9,
                [
                    4u32.to_le_bytes().to_vec(),
                    (1u64 << 20).to_le_bytes().to_vec(),
                ]
                .concat(),
            )],
            0,
            8,
        );
        assert!(Gguf::parse(&f, None).is_err());
    }
}
