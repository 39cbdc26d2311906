//! Facts about this machine, one function each, every OS-specific path here:
//! physical memory, whether MLX has a GPU, this process's resident memory and
//! free disk space. Cached where the UI asks every frame.

use std::path::Path;

/// Where models run on this machine: it decides the compute type
/// (see `models::load::ModelParts::apply_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// CPU: weights dequantized to f32 unless that takes over half the memory.
    Cpu,
    /// Metal or CUDA: weights stay quantized, compute in 16-bit.
    Gpu,
}

/// True when MLX has a GPU (Metal or CUDA) to run on.
pub fn gpu_available() -> bool {
    let mut metal = false;
    let mut cuda = false;
    unsafe {
        mlx_sys::mlx_metal_is_available(&mut metal);
        mlx_sys::mlx_cuda_is_available(&mut cuda);
    }
    metal || cuda
}

/// Where models run here. Asked once: the model manager shows verdicts every frame.
pub fn device() -> Device {
    static D: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    *D.get_or_init(|| if gpu_available() { Device::Gpu } else { Device::Cpu })
}

/// Physical memory of this machine, read once (the UI asks for it every frame).
pub fn total_memory() -> u64 {
    static M: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *M.get_or_init(read_total_memory)
}

fn read_total_memory() -> u64 {
    #[cfg(target_os = "macos")]
    {
        let mut v: u64 = 0;
        let mut len = std::mem::size_of::<u64>();
        let name = c"hw.memsize";
        let rc = unsafe { libc::sysctlbyname(name.as_ptr(), (&mut v as *mut u64).cast(), &mut len, std::ptr::null_mut(), 0) };
        if rc == 0 && v > 0 {
            return v;
        }
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })
        .unwrap_or(16 << 30)
}

/// Hands memory freed by a model's unload back to the system. glibc's
/// malloc keeps freed blocks in its arenas, so after unloading a model
/// (MLX's CPU buffers, the tokenizer, the template) the process kept
/// hundreds of MB it no longer used, more the more models it had cycled
/// through (`tests/soak.rs`). macOS's allocator returns such memory itself.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resident memory of this process: the kernel's task info on macOS,
/// /proc on Linux; 0 where neither answers.
pub fn process_rss() -> u64 {
    #[cfg(target_os = "macos")]
    {
        let mut buf = [0u8; PROC_TASKINFO_SIZE];
        let n = unsafe {
            libc::proc_pidinfo(libc::getpid(), libc::PROC_PIDTASKINFO, 0, buf.as_mut_ptr().cast(), PROC_TASKINFO_SIZE as libc::c_int)
        };
        usize::try_from(n).ok().and_then(|n| resident_size_from_taskinfo(buf.get(..n)?)).unwrap_or(0)
    }
    #[cfg(not(target_os = "macos"))]
    {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
            .map(|pages| pages * page)
            .unwrap_or(0)
    }
}

/// Size of Darwin's `struct proc_taskinfo` (<sys/proc_info.h>): six u64
/// (virtual size, resident size, user and system times, of all and of live
/// threads) then twelve i32 counters.
const PROC_TASKINFO_SIZE: usize = 96;
#[cfg(target_os = "macos")]
const _: () = assert!(std::mem::size_of::<libc::proc_taskinfo>() == PROC_TASKINFO_SIZE);

/// The resident size out of the bytes `proc_pidinfo(PROC_PIDTASKINFO)` wrote:
/// `pti_resident_size`, the second u64 (native byte order). None unless the
/// kernel filled the whole struct. Plain bytes, so the Linux tests run it.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn resident_size_from_taskinfo(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != PROC_TASKINFO_SIZE {
        return None;
    }
    Some(u64::from_ne_bytes(bytes[8..16].try_into().ok()?))
}

/// Free bytes on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0 {
            return Some(s.f_bavail as u64 * s.f_frsize as u64);
        }
    }
    let _ = dir;
    None
}

/// Set by the signal handler `on_terminate_signals` installs.
static TERMINATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_terminate(_: libc::c_int) {
    // Only an atomic store: nothing else is safe inside a signal handler.
    TERMINATE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// SIGTERM, SIGINT and SIGHUP (a logout, `kill`, Ctrl+C in a terminal) no
/// longer end the process at once: they are noted, and `wake` is called
/// from a watcher thread (within 100 ms) so the app can save the reply
/// being written and close (`take_terminate_request`). Once per process.
pub fn on_terminate_signals(wake: impl Fn() + Send + 'static) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            unsafe {
                libc::signal(sig, note_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t);
            }
        }
        let _ = std::thread::Builder::new().name("hearth-signals".into()).spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if TERMINATE.load(std::sync::atomic::Ordering::SeqCst) {
                wake();
            }
        });
    });
}

/// Whether a terminate signal arrived since the last call (and forgets it).
pub fn take_terminate_request() -> bool {
    TERMINATE.swap(false, std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_facts_are_plausible() {
        let mem = total_memory();
        assert!(mem > 256 << 20, "total memory {mem}");
        #[cfg(target_os = "linux")]
        {
            let rss = process_rss();
            assert!(rss > 1 << 20 && rss < mem, "rss {rss}");
        }
        let free = free_space(&std::env::temp_dir()).expect("statvfs works on the temp dir");
        assert!(free > 0);
        assert_eq!(device() == Device::Gpu, gpu_available());
    }

    #[test]
    fn taskinfo_bytes_give_the_resident_size() {
        let mut b = [0u8; PROC_TASKINFO_SIZE];
        b[..8].copy_from_slice(&(40u64 << 30).to_ne_bytes()); // pti_virtual_size
        b[8..16].copy_from_slice(&123_456_789u64.to_ne_bytes()); // pti_resident_size
        b[16..24].copy_from_slice(&7u64.to_ne_bytes()); // pti_total_user
        assert_eq!(resident_size_from_taskinfo(&b), Some(123_456_789));
        // A short answer (an older or failed call) is no answer.
        assert_eq!(resident_size_from_taskinfo(&b[..48]), None);
        assert_eq!(resident_size_from_taskinfo(&[]), None);
    }
}
