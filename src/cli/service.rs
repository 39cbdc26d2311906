//! `hearth service`: the daemon as a user service that starts at login
//! (a systemd user unit on Linux, a launchd agent on macOS), its status, and
//! stopping it. Installing writes only the unit file the user asked for.

use super::daemon;
use anyhow::{bail, Context, Result};
use hearth::engine::remote::{self, DaemonRecord};
use hearth::paths;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum ServiceCmd {
    /// Run `hearth serve --daemon` at login (and now): writes a systemd user
    /// unit (Linux) or a launchd agent (macOS) and enables it.
    Install {
        /// Only write the unit file; enable it yourself.
        #[arg(long)]
        no_enable: bool,
        /// Arguments for `hearth serve` (e.g. `-- --port 8080 --idle-unload 600`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Disable and remove the unit file written by `install`.
    Uninstall,
    /// Whether a daemon runs, where it serves, and how many apps are attached
    /// (exit status 0 when it runs, 3 when not).
    Status,
    /// Ask the running daemon to stop, and wait until it has.
    Stop,
}

const UNIT: &str = "hearth.service";
const AGENT: &str = "app.hearth.daemon";

pub fn service(cmd: ServiceCmd) -> Result<()> {
    let data = paths::data_dir();
    match cmd {
        ServiceCmd::Status => status(&data),
        ServiceCmd::Stop => stop(&data),
        ServiceCmd::Install { no_enable, serve_args } => install(&data, no_enable, &serve_args),
        ServiceCmd::Uninstall => uninstall(),
    }
}

fn status(data: &Path) -> Result<()> {
    let unit = unit_path()?;
    let installed = if unit.exists() { format!("installed ({})", unit.display()) } else { "not installed".into() };
    match remote::probe(data, Duration::from_secs(3)) {
        Ok(h) => {
            println!("running: pid {}, serving at {}", h.pid, h.url);
            match &h.model {
                Some(m) => println!("model: {}", m.name),
                None => println!("model: none loaded (requests load theirs)"),
            }
            // This probe is a connection of its own.
            println!("apps attached: {}", h.clients.saturating_sub(1));
            if let Some(rec) = DaemonRecord::read(data) {
                println!("log: {}", rec.log.display());
            }
            println!("service: {installed}");
            Ok(())
        }
        Err(why) => {
            match DaemonRecord::read(data) {
                Some(rec) => println!("not running (pid {} left a record and stopped answering: {why})", rec.pid),
                None => println!("not running"),
            }
            println!("service: {installed}");
            std::process::exit(3)
        }
    }
}

fn stop(data: &Path) -> Result<()> {
    let pid = remote::request_stop(data, Duration::from_secs(3)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let end = Instant::now() + Duration::from_secs(15);
    // SAFETY: kill with signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 && !is_zombie(pid) {
        if Instant::now() > end {
            bail!("the daemon (pid {pid}) was asked to stop and is still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("stopped the Hearth daemon (pid {pid})");
    Ok(())
}

/// A process that exited but was not reaped yet (where no init reaps it)
/// counts as stopped once every one of its threads has exited: its leader
/// shows as a zombie while the others still close its sockets.
fn is_zombie(pid: u32) -> bool {
    let exited = |stat: &str| stat.rsplit(')').next().is_some_and(|r| matches!(r.trim_start().chars().next(), Some('Z' | 'X')));
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| std::fs::read_to_string(t.path().join("stat")).map_or(true, |s| exited(&s)))
}

/// Where the unit file goes: systemd's user folder, or LaunchAgents.
fn unit_path() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set")?;
    Ok(if cfg!(target_os = "macos") {
        home.join("Library/LaunchAgents").join(format!("{AGENT}.plist"))
    } else {
        let config = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| home.join(".config"));
        config.join("systemd/user").join(UNIT)
    })
}

fn install(data: &Path, no_enable: bool, serve_args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut args = vec![exe.display().to_string(), "serve".into(), "--daemon".into(), "--foreground".into()];
    args.extend(serve_args.iter().cloned());
    if serve_args.iter().any(|a| a == "--daemon" || a == "--foreground") {
        bail!("give only `hearth serve`'s other options after `--`: the service runs it as the daemon itself");
    }
    let path = unit_path()?;
    let text = if cfg!(target_os = "macos") { launchd_plist(&args, data) } else { systemd_unit(&args, data) };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).with_context(|| format!("cannot create the folder of {}", path.display()))?;
    // launchd opens its StandardErrorPath there before the daemon runs, and makes no folder.
    let logs = daemon::log_path(data);
    std::fs::create_dir_all(logs.parent().unwrap_or(data)).with_context(|| format!("cannot create the folder of {}", logs.display()))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    if no_enable {
        println!("enable it with: {}", enable_hint(&path));
        return Ok(());
    }
    // A reinstall replaces what runs: launchd will not bootstrap a loaded
    // agent, and systemd's `enable --now` leaves a running unit as it was.
    let steps: Vec<Vec<String>> = if cfg!(target_os = "macos") {
        let uid = unsafe { libc::getuid() };
        let _ = std::process::Command::new("launchctl").args(["bootout".to_string(), format!("gui/{uid}/{AGENT}")]).output();
        vec![vec!["launchctl".into(), "bootstrap".into(), format!("gui/{uid}"), path.display().to_string()]]
    } else {
        vec![
            vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
            vec!["systemctl".into(), "--user".into(), "enable".into(), UNIT.into()],
            vec!["systemctl".into(), "--user".into(), "restart".into(), UNIT.into()],
        ]
    };
    for step in steps {
        let out = std::process::Command::new(&step[0]).args(&step[1..]).output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            bail!("the unit is written, but `{}` failed: {why}\nenable it where a user session manager runs: {}", step.join(" "), enable_hint(&path));
        }
    }
    println!("enabled: the daemon starts now and at each login");
    Ok(())
}

fn enable_hint(path: &Path) -> String {
    if cfg!(target_os = "macos") {
        format!("launchctl bootstrap gui/$(id -u) {}", path.display())
    } else {
        format!("systemctl --user daemon-reload && systemctl --user enable --now {UNIT}")
    }
}

fn uninstall() -> Result<()> {
    let path = unit_path()?;
    if !path.exists() {
        println!("not installed ({} does not exist)", path.display());
        return Ok(());
    }
    // Best effort: where no session manager runs, there is nothing to disable.
    let _ = if cfg!(target_os = "macos") {
        let uid = unsafe { libc::getuid() };
        std::process::Command::new("launchctl").args(["bootout".to_string(), format!("gui/{uid}/{AGENT}")]).output()
    } else {
        std::process::Command::new("systemctl").args(["--user", "disable", "--now", UNIT]).output()
    };
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!("removed {}", path.display());
    Ok(())
}

/// A systemd user unit: the daemon in the foreground, restarted if it fails.
fn systemd_unit(args: &[String], data: &Path) -> String {
    let exec = args.iter().map(|a| systemd_quote(a)).collect::<Vec<_>>().join(" ");
    let mut env = String::new();
    if let Some(home) = std::env::var_os("HEARTH_HOME") {
        env = format!("Environment={}\n", systemd_quote(&format!("HEARTH_HOME={}", Path::new(&home).display())));
    }
    format!(
        "[Unit]\nDescription=Hearth local model server (logs in {})\n\n[Service]\nType=simple\n{env}ExecStart={exec}\nRestart=on-failure\nRestartSec=5\nRestartPreventExitStatus={}\n\n[Install]\nWantedBy=default.target\n",
        daemon::log_path(data).parent().unwrap_or(data).display(),
        daemon::ANOTHER_SERVES
    )
}

/// Double-quoted for systemd's command line, `$` and `%` kept literal.
fn systemd_quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "$$").replace('%', "%%");
    format!("\"{escaped}\"")
}

/// A launchd agent: run at load (login), kept alive if it fails.
fn launchd_plist(args: &[String], data: &Path) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let items: String = args.iter().map(|a| format!("    <string>{}</string>\n", esc(a))).collect();
    let mut env = String::new();
    if let Some(home) = std::env::var_os("HEARTH_HOME") {
        env = format!("  <key>EnvironmentVariables</key>\n  <dict><key>HEARTH_HOME</key><string>{}</string></dict>\n", esc(&Path::new(&home).display().to_string()));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n  <key>Label</key><string>{AGENT}</string>\n  <key>ProgramArguments</key>\n  <array>\n{items}  </array>\n{env}  <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n  <key>StandardErrorPath</key><string>{}</string>\n</dict>\n</plist>\n",
        esc(&daemon::log_path(data).with_extension("launchd.log").display().to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_quote_what_the_service_manager_would_expand() {
        let args = vec!["/opt/my apps/hearth".to_string(), "serve".into(), "--alias".into(), "a=$HOME%i\"x".into()];
        let unit = systemd_unit(&args, Path::new("/d"));
        assert!(unit.contains("ExecStart=\"/opt/my apps/hearth\" \"serve\" \"--alias\" \"a=$$HOME%%i\\\"x\"\n"), "{unit}");
        assert!(unit.contains("WantedBy=default.target"));
        let plist = launchd_plist(&["a<b>&c".to_string()], Path::new("/d"));
        assert!(plist.contains("<string>a&lt;b&gt;&amp;c</string>"), "{plist}");
        assert!(plist.contains("<key>RunAtLoad</key><true/>"));
    }
}
