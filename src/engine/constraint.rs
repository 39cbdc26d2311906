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
use crate::chat::tool_prompt::{call_grammar, CallMarkup};
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

    /// A reply's constraint. Tool calls are written in `markup`; `marker`
    /// writes a piece of markup in llguidance's grammar (a control token by
    /// id, or the text).
    pub fn start(&self, c: &OutputConstraint, markup: CallMarkup, marker: &dyn Fn(&str) -> String) -> Result<Constraint> {
        let (grammar, what) = match c {
            OutputConstraint::JsonObject | OutputConstraint::JsonSchema(_) => {
                let mut schema = match c {
                    OutputConstraint::JsonSchema(s) => s.clone(),
                    _ => serde_json::json!({"type": "object"}),
                };
                // Compact JSON (", " and ": " between items): with free whitespace a
                // small model can spend its whole budget on newlines.
                if let Some(o) = schema.as_object_mut() {
                    o.entry("x-guidance").or_insert(serde_json::json!({"whitespace_flexible": false}));
                }
                (TopLevelGrammar::from_json_schema(schema), "the JSON schema")
            }
            OutputConstraint::ToolCall(tools) => {
                if tools.is_empty() {
                    return Err(Error::InvalidArgument("a forced tool call needs at least one tool".into()));
                }
                (TopLevelGrammar::from_lark(call_grammar(markup, tools, marker)), "the tools' schemas")
            }
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| Error::InvalidArgument(format!("{what} cannot be used: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidArgument(format!("{what} cannot be used: {e}")));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::test_vocab::{byte_tokenizer, script};
    use crate::chat::tool_prompt::ToolSpec;
    use serde_json::json;

    const SPECIALS: &[&str] = &["<|end|>", "<|channel|>", "<|constrain|>", "<|message|>", "<|call|>", "[TOOL_CALLS]", "[ARGS]"];

    fn tools() -> Vec<ToolSpec> {
        let weather = json!({"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}});
        let time = json!({"name": "local_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}});
        vec![ToolSpec::from_value(&weather).unwrap(), ToolSpec::from_value(&time).unwrap()]
    }

    /// Feeds `parts` token by token; returns how many tokens the grammar took
    /// before refusing one, and whether it was complete at the end.
    fn accepts(markup: CallMarkup, parts: &[&str]) -> (usize, bool) {
        let tok = byte_tokenizer(SPECIALS);
        let eos = tok.special_id("<|end|>").unwrap();
        let vocab = GrammarVocab::new(&tok, eos, tok.vocab_size()).unwrap();
        let marker = |text: &str| match tok.special_id(text) {
            Some(id) => format!("<[{id}]>"),
            None => serde_json::Value::from(text).to_string(),
        };
        let mut c = vocab.start(&OutputConstraint::ToolCall(tools()), markup, &marker).unwrap();
        let ids = script(&tok, parts);
        for (n, &id) in ids.iter().enumerate() {
            let allowed = c.matcher.compute_mask_or_eos().unwrap();
            if !allowed.is_allowed(id) {
                return (n, false);
            }
            c.commit(id).unwrap();
        }
        let done = c.matcher.compute_mask_or_eos().unwrap().is_allowed(eos);
        (ids.len(), done)
    }

    fn whole(markup: CallMarkup, parts: &[&str]) {
        let n = script(&byte_tokenizer(SPECIALS), parts).len();
        assert_eq!(accepts(markup, parts), (n, true), "{markup:?}: {parts:?}");
    }

    #[test]
    fn forced_calls_follow_each_models_markup() {
        whole(CallMarkup::Hermes, &["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>"]);
        whole(CallMarkup::Llama3, &["{\"name\": \"local_time\", \"parameters\": {\"tz\": \"CET\"}}"]);
        whole(CallMarkup::MistralJson, &["[TOOL_CALLS]", "[{\"name\": \"local_time\", \"arguments\": {\"tz\": \"CET\"}}]"]);
        whole(CallMarkup::MistralArgs, &["[TOOL_CALLS]", "get_weather", "[ARGS]", "{\"city\": \"Oslo\"}"]);
        whole(
            CallMarkup::Harmony,
            &["<|channel|>", "commentary to=functions.get_weather ", "<|constrain|>", "json", "<|message|>", "{\"city\": \"Oslo\"}", "<|call|>"],
        );
        whole(CallMarkup::QwenXml, &["<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"]);
        // An optional parameter may be left out.
        whole(CallMarkup::QwenXml, &["<tool_call>\n<function=get_weather>\n<parameter=city>\nLyon\n</parameter>\n</function>\n</tool_call>"]);
    }

    #[test]
    fn forced_calls_refuse_unknown_tools_bad_arguments_and_text() {
        let refused_at = |m, parts: &[&str]| accepts(m, parts).0;
        let prefix = "<tool_call>\n{\"name\": \"".len();
        // A tool that was not offered: refused at its first wrong letter.
        assert_eq!(refused_at(CallMarkup::Hermes, &["<tool_call>\n{\"name\": \"delete_all\""]), prefix);
        // A required argument missing, an integer out of range.
        let missing = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"days\"";
        assert!(refused_at(CallMarkup::Hermes, &[missing]) < missing.len());
        let below = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"X\", \"days\": 0";
        assert!(refused_at(CallMarkup::Hermes, &[below]) < below.len());
        // Prose instead of the call.
        assert_eq!(refused_at(CallMarkup::Hermes, &["Sure, "]), 0);
        // Harmony's markup is control tokens: their text spelled out is not them.
        assert_eq!(refused_at(CallMarkup::Harmony, &["<|channel|", ">"]), 0);
    }
}
