//! safetensors files: the header (tensor name -> dtype, shape, offsets),
//! checked against the file's length before anything trusts it.

use crate::error::{io_err, Error, Result};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Reads a safetensors file's header (tensor name -> dtype, shape, offsets) and
/// checks it against the file's length, so a truncated download is a clear
/// error instead of garbage weights.
pub fn header(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let corrupt = |reason: String| Error::CorruptModel { path: path.to_path_buf(), reason };
    let mut f = crate::files::open_regular(path)?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| corrupt("file is shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(corrupt(format!("header length {n} does not fit in a {len}-byte file")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).map_err(|_| corrupt("truncated header".into()))?;
    let header: Value = serde_json::from_slice(&h).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let data_len = len - 8 - n;
    let Value::Object(mut obj) = header else {
        return Err(corrupt("header is not an object".into()));
    };
    obj.remove("__metadata__");
    for (name, t) in &obj {
        let end = t["data_offsets"][1].as_u64().ok_or_else(|| corrupt(format!("tensor {name} has no offsets")))?;
        if end > data_len {
            return Err(corrupt(format!("tensor {name} extends past the end of the file: the file is truncated")));
        }
    }
    Ok(obj)
}

/// (name, dtype, element count) of every tensor in a safetensors file.
pub fn tensor_sizes(p: &Path) -> Result<Vec<(String, String, u64)>> {
    Ok(header(p)?
        .into_iter()
        .map(|(k, t)| {
            let n = t["shape"].as_array().map(|s| s.iter().filter_map(|d| d.as_u64()).product()).unwrap_or(0);
            (k, t["dtype"].as_str().unwrap_or("").to_string(), n)
        })
        .collect())
}

