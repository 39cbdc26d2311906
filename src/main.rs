//! `hearth`: the desktop app by default; `chat`, `generate`, `bench`, `convert`,
//! `synth` and `models` on the same engine for the terminal (see `cli/`).

mod cli;

fn main() {
    if let Err(e) = cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
