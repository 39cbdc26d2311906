//! From token ids to streamed text (mlx-lm's `stream_generate` side): a
//! streaming detokenizer and stop strings, joined in `TextStream`.
//!
//! The detokenizer appends each token's bytes (looked up in a table built at
//! load) and releases only complete UTF-8: O(1) per token, and a character
//! split across tokens (emoji, CJK, byte-fallback) is never broken.

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

/// Token ids in, text out: detokenized, with stop strings held back and cut.
pub struct TextStream {
    detok: StreamingDetokenizer,
    stops: StopMatcher,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream { detok: StreamingDetokenizer::new(), stops: StopMatcher::new(stops) }
    }

    /// Adds one token; returns the text to emit now, or the text before a
    /// completed stop string.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> StopCheck {
        let piece = self.detok.push(tok, id);
        if piece.is_empty() {
            return StopCheck::Emit(String::new());
        }
        self.stops.push(&piece)
    }

    /// Everything still held when generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        let tail = self.detok.finish();
        let (StopCheck::Emit(s) | StopCheck::Stop(s)) = self.stops.push(&tail);
        s + &self.stops.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(c: StopCheck) -> (String, bool) {
        match c {
            StopCheck::Emit(s) => (s, false),
            StopCheck::Stop(s) => (s, true),
        }
    }

    #[test]
    fn stop_string_split_across_pieces_is_cut_and_never_emitted() {
        let mut m = StopMatcher::new(vec!["</answer>".into()]);
        assert_eq!(emitted(m.push("The answer is 4</an")), ("The answer is 4".into(), false));
        assert_eq!(emitted(m.push("swer> and more")), (String::new(), true));
    }

    #[test]
    fn held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(emitted(m.push("ST")), (String::new(), false));
        assert_eq!(emitted(m.push("ART")), ("START".into(), false));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn no_stops_emits_everything_at_once() {
        let mut m = StopMatcher::new(vec![String::new()]);
        assert_eq!(emitted(m.push("abc")), ("abc".into(), false));
    }
}
