//! Reading files Hearth did not write itself and so cannot trust: regular
//! files only (never a FIFO, a device or a directory), never more than a cap,
//! so a hostile or broken file is a clear error instead of a hang or a
//! runaway allocation. And writing secrets only the user can read.

use crate::error::{io_err, Error, Result};
use std::io::Read;
use std::path::Path;

/// Reads a small file (a model's config, tokenizer or template, a settings or
/// token file): only a regular file (a FIFO or device named like one would block or never
/// end), at most `cap` bytes. `Ok(None)` when it does not exist.
pub fn read_small(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.is_file() {
        return Err(Error::CorruptModel { path: path.to_path_buf(), reason: "is not a regular file".into() });
    }
    if meta.len() > cap {
        return Err(Error::CorruptModel {
            path: path.to_path_buf(),
            reason: format!("is {} bytes, more than the {cap} such a file can need", meta.len()),
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path).map_err(io_err(path))?.take(cap + 1).read_to_end(&mut buf).map_err(io_err(path))?;
    if buf.len() as u64 > cap {
        return Err(Error::CorruptModel { path: path.to_path_buf(), reason: "grew while it was read".into() });
    }
    Ok(Some(buf))
}

/// `read_small_text` for a file that must be there: a missing one is the
/// same I/O error `std::fs::read_to_string` would give.
pub fn read_text(path: &Path, cap: u64) -> Result<String> {
    read_small_text(path, cap)?.ok_or_else(|| io_err(path)(std::io::ErrorKind::NotFound.into()))
}

/// `read_small` as UTF-8 text.
pub fn read_small_text(path: &Path, cap: u64) -> Result<Option<String>> {
    match read_small(path, cap)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| Error::CorruptModel { path: path.to_path_buf(), reason: "is not UTF-8 text".into() }),
    }
}

/// Writes a secret (a token, an API key: one word) readable only by the
/// user, mode 0600 from the first byte (temp file + rename).
pub fn write_secret(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let token = token.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a token is one word without spaces"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_reads_refuse_fifos_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        assert_eq!(super::read_small(&p, 10).unwrap(), None);
        std::fs::write(&p, b"0123456789AB").unwrap();
        assert!(super::read_small(&p, 10).unwrap_err().to_string().contains("more than"));
        assert_eq!(super::read_small(&p, 12).unwrap().unwrap().len(), 12);
        #[cfg(unix)]
        {
            let fifo = dir.path().join("tokenizer.json");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let t = std::time::Instant::now();
            assert!(super::read_small(&fifo, 1 << 20).unwrap_err().to_string().contains("regular file"));
            assert!(t.elapsed() < std::time::Duration::from_secs(1));
        }
    }
}
