//! `hearth serve` as a child process on a free port with a fresh data folder,
//! for the tests that drive it over HTTP (server, soak).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub home: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `model` and waits for the address it prints. A start
/// that fails is its stderr; after the start, stderr is drained on a thread
/// so a talkative server never blocks on a full pipe.
pub fn serve_model(model: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> Result<Serve, String> {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(["serve", "--port", "0", "--model"])
        .arg(model)
        .args(args)
        .env("HEARTH_HOME", home.path())
        .env_remove("HEARTH_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let Some(port) = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()) else {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let _ = child.wait();
        return Err(err);
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(Serve { child, port, home })
}
