//! `hearth chat` (a terminal conversation) and `hearth generate` (one reply).

use super::{start_engine, stream_reply, ModelArgs, SampleArgs};
use anyhow::Result;
use hearth::chat::Message;
use hearth::engine::Prompt;
use std::io::{BufRead, Write};

pub fn generate(m: ModelArgs, s: SampleArgs, raw: bool, stats: bool, stop: Vec<String>, prompt_cache: Option<std::path::PathBuf>, prompt: String) -> Result<()> {
    let (engine, info) = start_engine(&m)?;
    let p = if raw { Prompt::Raw(prompt) } else { Prompt::Chat(vec![Message::user(prompt)]) };
    let mut params = s.params(stop, &info.recommended);
    // Absolute: the engine thread resolves nothing against this process's folder.
    params.prompt_file = prompt_cache.map(std::path::absolute).transpose()?;
    let id = engine.generate(p, params);
    stream_reply(&engine, id, stats)?;
    Ok(())
}

pub fn chat(m: ModelArgs, system: Option<String>, s: SampleArgs) -> Result<()> {
    let (engine, info) = start_engine(&m)?;
    let mut history: Vec<Message> = system.into_iter().map(Message::system).collect();
    let base = history.clone();
    let stdin = std::io::stdin();
    eprintln!("Type a message; /reset starts over, /quit exits.");
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(()),
            "/reset" => {
                history = base.clone();
                continue;
            }
            _ => {}
        }
        history.push(Message::user(line));
        let id = engine.generate(Prompt::Chat(history.clone()), s.params(vec![], &info.recommended));
        match stream_reply(&engine, id, false) {
            Ok(reply) => history.push(Message::assistant(reply)),
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
}

