//! Structured output: a grammar (a JSON Schema, or any JSON object) turned
//! into a token mask each step with llguidance, the constrained-decoding
//! library llama.cpp, vLLM, SGLang and mistral.rs use. The mask is computed
//! on the host from the tokens so far and applied to the logits on the device
//! (disallowed tokens get -inf) before sampling, so every token the model
//! emits keeps the output a valid prefix, and end-of-sequence is allowed only
//! where the output is complete.
//!
//! The vocabulary llguidance sees is the tokenizer's own bytes per token
//! (`TextTokenizer::bytes_of`); control tokens are marked special so no text
//! in the grammar can match them.

use crate::chat::params::OutputConstraint;
use crate::chat::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use mlx_rs::Array;
use std::sync::Arc;

/// A tokenizer's vocabulary as llguidance reads it, built once per model.
pub struct GrammarVocab {
    factory: ParserFactory,
    /// The logits' width: the model's vocabulary, which may be larger than
    /// the tokenizer's (padding rows) or smaller (added tokens the model
    /// cannot emit).
    width: usize,
}

impl GrammarVocab {
    pub fn new(tok: &TextTokenizer, eos: u32, width: usize) -> Result<Self> {
        if eos as usize >= width {
            return Err(Error::InvalidArgument(format!("end-of-sequence token {eos} is outside the model's {width} logits")));
        }
        let words: Vec<Vec<u8>> = (0..width as u32)
            .map(|id| {
                if (id as usize) < tok.vocab_size() && !tok.is_special(id) {
                    tok.bytes_of(id).to_vec()
                } else {
                    // Control and padding tokens: unreachable from grammar text.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(format!("<[{id}]>").as_bytes());
                    w
                }
            })
            .collect();
        let info = TokRxInfo::new(width as u32, eos);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::InvalidArgument(format!("grammar vocabulary: {e}")))?;
        factory.quiet();
        Ok(GrammarVocab { factory, width })
    }

    pub fn start(&self, c: &OutputConstraint) -> Result<Constraint> {
        let mut schema = match c {
            OutputConstraint::JsonObject => serde_json::json!({"type": "object"}),
            OutputConstraint::JsonSchema(s) => s.clone(),
        };
        // Compact JSON (", " and ": " between items): with free whitespace a
        // small model can spend its whole budget on newlines.
        if let Some(o) = schema.as_object_mut() {
            o.entry("x-guidance").or_insert(serde_json::json!({"whitespace_flexible": false}));
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| Error::InvalidArgument(format!("the JSON schema cannot be used: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidArgument(format!("the JSON schema cannot be used: {e}")));
        }
        Ok(Constraint { matcher, width: self.width, mask_time: std::time::Duration::ZERO, steps: 0 })
    }
}

/// One reply's constraint.
pub struct Constraint {
    matcher: Matcher,
    width: usize,
    /// Host time spent computing masks, for the stats.
    pub mask_time: std::time::Duration,
    pub steps: usize,
}

impl Constraint {
    /// The allowed tokens for the next position as an additive mask [1, width]
    /// (0 where allowed, -inf elsewhere).
    pub fn mask(&mut self) -> Result<Array> {
        let t = std::time::Instant::now();
        let vob = self.matcher.compute_mask_or_eos().map_err(|e| Error::InvalidArgument(format!("structured output: {e}")))?;
        let mut m = vec![f32::NEG_INFINITY; self.width];
        vob.iter_set_entries(|i| {
            if let Some(x) = m.get_mut(i) {
                *x = 0.0;
            }
        });
        self.mask_time += t.elapsed();
        self.steps += 1;
        Ok(Array::from_slice(&m, &[1, self.width as i32]))
    }

    /// Records the token chosen.
    pub fn commit(&mut self, id: u32) -> Result<()> {
        // Once the output is complete only end-of-sequence was allowed; it
        // ends the reply and the grammar has nothing more to read.
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| Error::InvalidArgument(format!("structured output: {e}")))
    }
}
