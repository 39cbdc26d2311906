//! Checksums of downloaded files: the LFS sha256, or the git blob sha1 for
//! small files, computed off the async runtime.

use super::plan::PlanFile;
use sha2::Digest;
use std::io::Read;
use std::path::Path;

/// sha256 (LFS) or git blob sha1 (small files) of a file, as hex.
pub(super) fn checksum(path: &Path, f: &PlanFile) -> std::io::Result<(String, String)> {
    let mut file = std::fs::File::open(path)?;
    match &f.sha256 {
        Some(expected) => Ok((expected.clone(), hash_rest::<sha2::Sha256>(&mut file, b"")?)),
        None => {
            let header = format!("blob {}\0", file.metadata()?.len());
            Ok((f.etag.clone(), hash_rest::<sha1::Sha1>(&mut file, header.as_bytes())?))
        }
    }
}

/// Hex digest of `prefix` followed by the rest of `file`, read in 1 MiB pieces.
fn hash_rest<D: Digest>(file: &mut std::fs::File, prefix: &[u8]) -> std::io::Result<String> {
    let mut h = D::new();
    h.update(prefix);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

