//! Streaming detokenizer: each token appends its bytes (looked up in a table
//! built at load), and only complete UTF-8 is released. O(1) per token, and a
//! character split across tokens (emoji, CJK, byte-fallback) is never broken.

use crate::chat::tokenizer::TextTokenizer;

#[derive(Default)]
pub struct StreamingDetokenizer {
    pending: Vec<u8>,
}

impl StreamingDetokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that became complete.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.bytes_of(id));
        self.take_valid()
    }

    fn take_valid(&mut self) -> String {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) => {
                // error_len() == None: an incomplete sequence at the end, wait for more.
                // Some(n): invalid bytes; let them through as U+FFFD rather than stall.
                match e.error_len() {
                    None => e.valid_up_to(),
                    Some(n) => e.valid_up_to() + n,
                }
            }
        };
        let rest = self.pending.split_off(valid);
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        out
    }

    /// Whatever is left at the end of generation (lossy if incomplete).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that could be the start of a stop string, and reports when
/// one is complete; the stop string itself is never emitted.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

pub enum StopCheck {
    /// Text that is safe to emit now.
    Emit(String),
    /// A stop string was found; emit this text (before it) and stop.
    Stop(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck::Emit(text.to_string());
        }
        self.held.push_str(text);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return StopCheck::Stop(out);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.held.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopCheck::Emit(out)
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}
