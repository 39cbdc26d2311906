//! A pure-Rust reader for the GGUF container: header, metadata and tensor table.
//!
//! MLX's own loader aborts on some malformed files, so every GGUF is parsed and
//! checked here first (magic, version, every tensor lying inside the file, known
//! tensor types) and only then handed to MLX. The metadata also gives the
//! architecture, hyper-parameters, tokenizer and chat template.

use crate::error::{io_err, Error, Result};
use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U64(v) => Some(v),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            MetaValue::Bool(b) => Some(b as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            MetaValue::U64(v) => Some(v != 0),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types: (name, block size in elements, bytes per block).
pub fn ggml_type_info(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order (fastest-varying first).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

impl TensorInfo {
    pub fn type_name(&self) -> String {
        ggml_type_info(self.ggml_type)
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| format!("ggml type {}", self.ggml_type))
    }
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

#[derive(Debug)]
pub struct GgufHeader {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: HashMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: u64,
    pub file_len: u64,
}

// Sanity bounds so a corrupt length field can't make us allocate gigabytes.
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_COUNT: u64 = 1 << 24;
/// Metadata values held in memory at most, over all arrays: a vocabulary of
/// 262k tokens with scores, types and merges is about 1M; each value takes
/// ~32 bytes, so this caps the header at ~270 MB however the file lies.
const MAX_VALUES: u64 = 1 << 23;

struct Reader<R> {
    r: R,
    path: PathBuf,
    /// Bytes read so far and the file's length: a length field can never
    /// promise more than the bytes that are left.
    pos: u64,
    len: u64,
    values: u64,
}

impl<R: Read> Reader<R> {
    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::CorruptModel {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.corrupt("file ends inside the GGUF header"))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING || n > self.left() {
            return Err(self.corrupt(format!("string length {n} is implausible")));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| self.corrupt("file ends inside the GGUF header"))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| self.corrupt("metadata string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U64(self.bytes::<1>()?[0] as u64),
            1 => MetaValue::I64(self.bytes::<1>()?[0] as i8 as i64),
            2 => MetaValue::U64(u16::from_le_bytes(self.bytes()?) as u64),
            3 => MetaValue::I64(i16::from_le_bytes(self.bytes()?) as i64),
            4 => MetaValue::U64(self.u32()? as u64),
            5 => MetaValue::I64(i32::from_le_bytes(self.bytes()?) as i64),
            6 => MetaValue::F64(f32::from_le_bytes(self.bytes()?) as f64),
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.corrupt("nested metadata arrays too deep"));
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least a byte of the file.
                if n > MAX_ARRAY || n > self.left() {
                    return Err(self.corrupt(format!("metadata array length {n} is implausible")));
                }
                self.values += n;
                if self.values > MAX_VALUES {
                    return Err(self.corrupt("the metadata holds more values than any model's"));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.corrupt(format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufHeader {
    pub fn read(path: &Path) -> Result<Self> {
        // Opening a FIFO would block until a writer comes: regular files only.
        let file = crate::files::open_regular(path)?;
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let mut r = Reader {
            r: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            pos: 4,
            len: file_len,
            values: 0,
        };
        let mut magic = [0u8; 4];
        if r.r.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(Error::NotGguf(format!(
                "{} does not start with the GGUF magic bytes",
                path.display()
            )));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.corrupt(format!("unsupported GGUF version {version}")));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // A tensor entry or a key/value pair takes well over 8 bytes.
        if n_tensors > MAX_COUNT || n_kv > MAX_COUNT || (n_tensors + n_kv) * 8 > r.left() {
            return Err(r.corrupt("tensor or metadata count is implausible"));
        }
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.corrupt(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::new();
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let header_end = r.r.stream_position().map_err(io_err(path))?;
        // MLX's own GGUF reader divides by the alignment: 0 or an odd value
        // must be refused here, before it ever sees the file.
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(r.corrupt(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_offset = header_end.div_ceil(alignment) * alignment;
        let header = GgufHeader {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_offset,
            file_len,
        };
        header.check_tensor_extents()?;
        Ok(header)
    }

    fn check_tensor_extents(&self) -> Result<()> {
        for t in &self.tensors {
            let Some((_, block, bytes)) = ggml_type_info(t.ggml_type) else {
                return Err(Error::UnsupportedTensorType {
                    tensor: t.name.clone(),
                    ggml_type: t.type_name(),
                });
            };
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| self.corrupt(format!("tensor '{}' is too large", t.name)))?;
            if t.dims[0] % block != 0 {
                return Err(self.corrupt(format!(
                    "tensor '{}' row length {} is not a multiple of its block size {block}",
                    t.name, t.dims[0]
                )));
            }
            let size = n / block * bytes;
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|x| x.checked_add(size));
            match end {
                Some(end) if end <= self.file_len => {}
                _ => {
                    return Err(self.corrupt(format!(
                        "tensor '{}' extends past the end of the file ({} bytes): the file is truncated",
                        t.name, self.file_len
                    )))
                }
            }
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::CorruptModel {
            path: self.path.clone(),
            reason,
        }
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
            .ok_or_else(|| self.corrupt("no general.architecture in metadata".into()))
    }
    pub fn string_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_str())
            .collect()
    }
    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(|t| ggml_type_info(t.ggml_type).map(|(_, b, s)| t.n_elements() / b * s))
            .sum()
    }
}

/// Reads raw bytes of one tensor (for the types MLX's loader cannot keep).
pub fn read_tensor_bytes(header: &GgufHeader, t: &TensorInfo) -> Result<Vec<u8>> {
    let (_, block, bytes) = ggml_type_info(t.ggml_type).ok_or_else(|| Error::UnsupportedTensorType {
        tensor: t.name.clone(),
        ggml_type: t.type_name(),
    })?;
    let size = (t.n_elements() / block * bytes) as usize;
    let mut f = crate::files::open_regular(&header.path)?;
    f.seek(SeekFrom::Start(header.data_offset + t.offset))
        .map_err(io_err(&header.path))?;
    let mut buf = vec![0u8; size];
    f.read_exact(&mut buf).map_err(io_err(&header.path))?;
    Ok(buf)
}
