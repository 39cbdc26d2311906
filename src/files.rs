//! Reading files Hearth did not write itself and so cannot trust: regular
//! files only (never a FIFO, a device or a directory), never more than a cap,
//! so a hostile or broken file is a clear error instead of a hang or a
//! runaway allocation. And writing: atomically (temp file, fsync, rename: a
//! crash mid-save leaves the old file or the new one, never half), and
//! secrets only the user can read.

use crate::error::{io_err, Error, Result};
use std::io::Read;
use std::path::Path;

/// What stands at a path that is not a regular file, for the error.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "is a FIFO (named pipe), not a regular file";
        }
        if t.is_socket() {
            return "is a socket, not a regular file";
        }
        if t.is_block_device() || t.is_char_device() {
            return "is a device, not a regular file";
        }
    }
    if meta.is_dir() {
        "is a folder, not a regular file"
    } else {
        "is not a regular file"
    }
}

/// Opens a file Hearth only reads (model weights and headers, configs, a
/// downloaded part): a regular file, after links. A FIFO would block the
/// open until a writer comes and a device could stream for ever, so they
/// are an error naming what stands there. The open itself is non-blocking,
/// so a FIFO swapped in after the check cannot block it either; the
/// descriptor is checked again (`fstat`) before it is handed out.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    require_regular(path)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK changes nothing for a regular file's reads.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(io_err(path))?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(f)
}

/// That `path` is a regular file after links, without opening it: the error
/// names what stands there instead (`open_regular`'s first check, and the
/// loader's for shards it will hand to MLX).
pub fn require_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(())
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> Error {
    Error::CorruptModel { path: path.to_path_buf(), reason: format!("{}; it was not read", kind_of(meta)) }
}

/// Reads a small file (a model's config, tokenizer or template, a settings or
/// token file): only a regular file (a FIFO or device named like one would block or never
/// end), at most `cap` bytes. `Ok(None)` when it does not exist.
pub fn read_small(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let f = open_regular(path)?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len > cap {
        return Err(Error::CorruptModel {
            path: path.to_path_buf(),
            reason: format!("is {len} bytes, more than the {cap} such a file can need"),
        });
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(cap + 1).read_to_end(&mut buf).map_err(io_err(path))?;
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

/// Writes `bytes` to `path` atomically and durably (its folder made if need be).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
    // Errors name the file being saved (the temporary's name says nothing to a
    // user); on a full disk the temporary is removed and the old file stays.
    tmp.as_file_mut().write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| crate::error::Error::Io { path: path.to_path_buf(), source: e.error })?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
