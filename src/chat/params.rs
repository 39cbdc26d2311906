//! What a caller asks of one generation and what it gets back, shared by the
//! engine, the CLI, the app's settings and the saved conversations. The
//! defaults live here and nowhere else.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Reply length when neither the user nor the caller says otherwise.
pub const DEFAULT_MAX_TOKENS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repetition_context: usize,
    /// Subtracted from the logit of every token seen in that window (OpenAI's
    /// `presence_penalty`); 0 = off.
    pub presence_penalty: f32,
    /// Subtracted once per occurrence in that window (`frequency_penalty`); 0 = off.
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            // Neutral: a penalty changes what even greedy decoding says
            // (SmolLM2 rambles where it would answer "4"). Models that want
            // one say so in generation_config.json (`RecommendedSampling`).
            repetition_penalty: 1.0,
            repetition_context: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// Sampling values a model's authors recommend (generation_config.json, or a
/// GGUF's `general.sampling.*` keys). They replace Hearth's defaults, never a
/// value the user set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecommendedSampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

impl RecommendedSampling {
    /// The defaults with these recommendations, then a request's own
    /// temperature and top-p over them (every API dialect starts here).
    pub fn with_request(&self, temperature: Option<f32>, top_p: Option<f32>) -> SamplingParams {
        let mut s = self.apply(&SamplingParams::default());
        s.temperature = temperature.unwrap_or(s.temperature);
        s.top_p = top_p.unwrap_or(s.top_p);
        s
    }

    /// From generation_config.json. Values outside the valid ranges are ignored.
    pub fn from_generation_config(v: &serde_json::Value) -> Self {
        let f = |k: &str| v[k].as_f64().map(|x| x as f32).filter(|x| x.is_finite());
        let r = RecommendedSampling {
            temperature: f("temperature"),
            top_p: f("top_p"),
            top_k: v["top_k"].as_u64().map(|k| k as usize),
            min_p: f("min_p"),
            repetition_penalty: f("repetition_penalty"),
        };
        // A config that says do_sample: false means greedy.
        if v["do_sample"].as_bool() == Some(false) {
            return RecommendedSampling { temperature: Some(0.0), ..r }.valid();
        }
        r.valid()
    }

    /// Drops values that would not pass `SamplingParams::validate`.
    pub fn valid(self) -> Self {
        RecommendedSampling {
            temperature: self.temperature.filter(|t| *t >= 0.0 && *t <= 100.0),
            top_p: self.top_p.filter(|p| *p > 0.0 && *p <= 1.0),
            top_k: self.top_k,
            min_p: self.min_p.filter(|p| (0.0..1.0).contains(p)),
            repetition_penalty: self.repetition_penalty.filter(|p| *p > 0.0 && *p <= 10.0),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == RecommendedSampling::default()
    }

    /// `base` with the recommended values wherever it still holds Hearth's default.
    pub fn apply(&self, base: &SamplingParams) -> SamplingParams {
        let d = SamplingParams::default();
        let pick = |cur: f32, def: f32, rec: Option<f32>| if cur == def { rec.unwrap_or(cur) } else { cur };
        SamplingParams {
            temperature: pick(base.temperature, d.temperature, self.temperature),
            top_p: pick(base.top_p, d.top_p, self.top_p),
            top_k: if base.top_k == d.top_k { self.top_k.unwrap_or(base.top_k) } else { base.top_k },
            min_p: pick(base.min_p, d.min_p, self.min_p),
            repetition_penalty: pick(base.repetition_penalty, d.repetition_penalty, self.repetition_penalty),
            ..base.clone()
        }
    }

    /// "temperature 0.6, top-p 0.95" for the model manager.
    pub fn describe(&self) -> String {
        let mut v = vec![];
        if let Some(t) = self.temperature {
            v.push(format!("temperature {t}"));
        }
        if let Some(p) = self.top_p {
            v.push(format!("top-p {p}"));
        }
        if let Some(k) = self.top_k {
            v.push(format!("top-k {k}"));
        }
        if let Some(p) = self.min_p {
            v.push(format!("min-p {p}"));
        }
        if let Some(p) = self.repetition_penalty {
            v.push(format!("repetition penalty {p}"));
        }
        v.join(", ")
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }

    /// Whether any penalty needs the recent tokens.
    pub fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature <= 100.0) {
            return bad("temperature must be between 0 and 100");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.min_p) {
            return bad("min-p must be in [0, 1)");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return bad("repetition penalty must be in (0, 10]");
        }
        if !((-2.0..=2.0).contains(&self.presence_penalty) && (-2.0..=2.0).contains(&self.frequency_penalty)) {
            return bad("presence and frequency penalties must be between -2 and 2");
        }
        if self.repetition_context > 1 << 20 {
            return bad("repetition context must be at most 1048576 tokens");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks that need exact lengths).
    pub ignore_eos: bool,
    /// Only output that matches this (structured output): every token is
    /// chosen among those the grammar allows (`engine::constraint`).
    pub constraint: Option<OutputConstraint>,
    /// Report each token's log-probability and this many most likely
    /// alternatives (at most `MAX_TOP_LOGPROBS`); None = no log-probabilities.
    pub logprobs: Option<usize>,
    /// Tool calls read from the reply get ids of this prefix and a count
    /// (each API its own shape); empty: `call_{request}_`.
    pub call_id_prefix: String,
    /// A conversation over the context is an error rather than sent without
    /// its oldest turns (the Responses API's `truncation: "disabled"`).
    pub keep_turns: bool,
    /// The most tokens the reply may think (Anthropic's `thinking.budget_tokens`):
    /// past it the reasoning block is closed for the model, which then answers.
    pub reasoning_budget: Option<usize>,
    /// The prompt cache on disk (`engine::prompt_file`): a folder the
    /// conversation's caches are restored from before the prompt runs (where
    /// they hold more of it than memory does) and saved to after the reply.
    #[serde(default)]
    pub prompt_file: Option<std::path::PathBuf>,
}

/// The most alternatives per token a caller may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A generated token's log-probability (after penalties, before temperature:
/// the model's own distribution) and the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: Scored,
    pub top: Vec<Scored>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub id: u32,
    /// The token's text ("" for a control token) and its exact bytes.
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// What a reply must be, token by token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputConstraint {
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// JSON valid against this JSON Schema.
    JsonSchema(serde_json::Value),
    /// One call of one of these tools, in the model's tool-call markup, its
    /// arguments valid against the tool's schema (a forced `tool_choice`).
    ToolCall(Vec<super::tool_prompt::ToolSpec>),
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            sampling: SamplingParams::default(),
            max_tokens: DEFAULT_MAX_TOKENS,
            stop: vec![],
            ignore_eos: false,
            constraint: None,
            logprobs: None,
            call_id_prefix: String::new(),
            keep_turns: false,
            reasoning_budget: None,
            prompt_file: None,
        }
    }
}

/// How long a reasoning model thinks before answering, for templates that
/// take it (gpt-oss's `reasoning_effort`: "Reasoning: low" in the system turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Low,
    #[default]
    Medium,
    High,
}

impl ReasoningEffort {
    pub const ALL: [ReasoningEffort; 3] = [ReasoningEffort::Low, ReasoningEffort::Medium, ReasoningEffort::High];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

impl std::str::FromStr for ReasoningEffort {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| crate::error::Error::InvalidArgument(format!("reasoning effort '{s}' is not low, medium or high")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    MaxTokens,
    StopString,
    Cancelled,
    ContextFull,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V were already cached from an earlier turn.
    pub reused_tokens: usize,
    /// Prompt tokens actually run through the model.
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_s: f64,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub total_s: f64,
    pub peak_memory_bytes: u64,
    pub active_memory_bytes: u64,
    pub finish_reason: Option<FinishReason>,
    /// Oldest messages dropped to fit the context.
    pub trimmed_messages: usize,
    /// Structured output: host time spent computing token masks, per token.
    #[serde(default)]
    pub mask_ms_per_token: Option<f64>,
    /// The most sequences decoded in one forward pass beside this one
    /// (itself included): 1 when it ran alone.
    #[serde(default)]
    pub batch_rows: usize,
    /// Speculative decoding: tokens proposed, and how many of them the
    /// model's own draws kept (each kept one is a decode step saved).
    #[serde(default)]
    pub draft_tokens: usize,
    #[serde(default)]
    pub accepted_draft_tokens: usize,
    /// Generated tokens read inside the reply's reasoning block (OpenAI's
    /// `output_tokens_details.reasoning_tokens`).
    #[serde(default)]
    pub reasoning_tokens: usize,
    /// The prompt cache on disk (`GenerateParams::prompt_file`): prompt
    /// tokens restored from it, bytes this reply's save wrote, and why a
    /// saved cache was refused or a save failed (the reply went on without).
    #[serde(default)]
    pub prompt_file_tokens: usize,
    #[serde(default)]
    pub prompt_file_written: u64,
    #[serde(default)]
    pub prompt_file_error: Option<String>,
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_values_replace_defaults_but_never_user_choices() {
        let rec = RecommendedSampling::from_generation_config(&serde_json::json!({
            "temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": -3.0
        }));
        assert_eq!(rec.repetition_penalty, None, "an invalid value is ignored");
        let user = SamplingParams { top_k: 5, ..SamplingParams::default() };
        let p = rec.apply(&user);
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.6, 0.95, 5));
        assert_eq!(rec.describe(), "temperature 0.6, top-p 0.95, top-k 20");
        let greedy = RecommendedSampling::from_generation_config(&serde_json::json!({"do_sample": false}));
        assert_eq!(greedy.apply(&SamplingParams::default()).temperature, 0.0);
    }

    #[test]
    fn validation_rejects_nan_and_absurd_values() {
        for bad in [
            SamplingParams { temperature: f32::NAN, ..Default::default() },
            SamplingParams { temperature: 1e9, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { min_p: 1.0, ..Default::default() },
            SamplingParams { repetition_penalty: f32::INFINITY, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(SamplingParams::default().validate().is_ok());
    }
}
