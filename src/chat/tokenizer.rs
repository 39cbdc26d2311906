//! Tokenizer setup: Hugging Face `tokenizer.json`, or one built from a GGUF's
//! embedded vocabulary. Either way we also keep, per token, the exact bytes it
//! stands for, which is what makes streaming detokenization O(1) per token.

use crate::error::{Error, Result};
use crate::formats::gguf_header::GgufHeader;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;

pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer with special tokens read as plain text: message
    /// content goes through it, so typing `<|im_end|>` cannot end a turn.
    plain: Tokenizer,
    /// Raw bytes of every token id; empty for special (control) tokens.
    token_bytes: Vec<Vec<u8>>,
    special: HashSet<u32>,
    pub bos_id: Option<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub eos_ids: Vec<u32>,
    pub add_bos: bool,
    /// The tokenizer.json this was built from (written back by `hearth convert`).
    pub json: Value,
}

/// Fields of tokenizer_config.json / GGUF metadata that shape how we use it.
#[derive(Default, Clone)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub extra_eos_ids: Vec<u32>,
    pub add_bos: bool,
}

pub(crate) fn bytes_to_unicode() -> [char; 256] {
    // GPT-2's reversible byte <-> printable-char table.
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    table
}

impl TextTokenizer {
    pub fn from_json(json: Value, special: SpecialTokens) -> Result<Self> {
        let inner = Tokenizer::from_str(&json.to_string())
            .map_err(|e| Error::Tokenizer(format!("cannot build tokenizer: {e}")))?;
        let vocab_size = inner.get_vocab_size(true);
        if vocab_size == 0 {
            return Err(Error::Tokenizer("the tokenizer has an empty vocabulary".into()));
        }
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        let mut special_ids = HashSet::new();
        if let Some(added) = json["added_tokens"].as_array() {
            for t in added {
                if t["special"].as_bool().unwrap_or(false) {
                    if let Some(id) = t["id"].as_u64() {
                        special_ids.insert(id as u32);
                    }
                }
            }
        }
        let decoder = json["decoder"].to_string();
        let byte_level = decoder.contains("ByteLevel");
        let sentencepiece = decoder.contains("\u{2581}") || decoder.contains("ByteFallback");
        let unicode = bytes_to_unicode();
        let mut inverse = std::collections::HashMap::new();
        for (b, c) in unicode.iter().enumerate() {
            inverse.insert(*c, b as u8);
        }
        let mut token_bytes = vec![Vec::new(); vocab_size];
        for (id, slot) in token_bytes.iter_mut().enumerate() {
            let id = id as u32;
            if special_ids.contains(&id) {
                continue;
            }
            let Some(tok) = inner.id_to_token(id) else { continue };
            *slot = if byte_level {
                tok.chars()
                    .map(|c| inverse.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| tok.as_bytes().to_vec())
            } else if sentencepiece {
                if tok.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>') {
                    u8::from_str_radix(&tok[3..5], 16).map(|b| vec![b]).unwrap_or_default()
                } else {
                    tok.replace('\u{2581}', " ").into_bytes()
                }
            } else {
                inner.decode(&[id], false).unwrap_or_default().into_bytes()
            };
        }
        let token_id = |t: &Option<String>| t.as_ref().and_then(|t| inner.token_to_id(t));
        let bos_id = token_id(&special.bos_token);
        let mut eos_ids: Vec<u32> = token_id(&special.eos_token).into_iter().collect();
        for id in special.extra_eos_ids {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        Ok(TextTokenizer {
            inner,
            plain,
            token_bytes,
            special: special_ids,
            bos_id,
            bos_token: special.bos_token,
            eos_token: special.eos_token,
            eos_ids,
            add_bos: special.add_bos,
            json,
        })
    }

    /// Loads tokenizer.json (+ tokenizer_config.json, generation_config.json) from a model dir.
    pub fn from_dir(dir: &Path) -> Result<(Self, Option<String>)> {
        let path = dir.join("tokenizer.json");
        let text = crate::files::read_text(&path, 256 << 20)?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg = read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let token_str = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                _ => None,
            }
        };
        let mut special = SpecialTokens {
            bos_token: token_str(&cfg["bos_token"]),
            eos_token: token_str(&cfg["eos_token"]),
            extra_eos_ids: vec![],
            add_bos: cfg["add_bos_token"].as_bool().unwrap_or(false),
        };
        if let Some(gen) = read_json_opt(&dir.join("generation_config.json"))? {
            match &gen["eos_token_id"] {
                Value::Number(n) => special.extra_eos_ids.extend(n.as_u64().map(|x| x as u32)),
                Value::Array(a) => special
                    .extra_eos_ids
                    .extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32)),
                _ => {}
            }
        }
        let mut template = cfg["chat_template"].as_str().map(String::from);
        if let Some(list) = cfg["chat_template"].as_array() {
            // Newer configs hold a list of named templates; "default" is the chat one.
            template = list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(String::from);
        }
        let jinja = dir.join("chat_template.jinja");
        if template.is_none() {
            template = crate::files::read_small_text(&jinja, 4 << 20)?;
        }
        Ok((Self::from_json(json, special)?, template))
    }

    /// Builds the tokenizer embedded in a GGUF file.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self> {
        let model = h.get_str("tokenizer.ggml.model").unwrap_or("");
        let tokens = h
            .string_array("tokenizer.ggml.tokens")
            .ok_or_else(|| Error::Tokenizer("GGUF has no tokenizer.ggml.tokens".into()))?;
        let types: Vec<u64> = h
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let tok_of = |key: &str| {
            h.get_u64(key)
                .and_then(|id| tokens.get(id as usize))
                .map(|s| s.to_string())
        };
        let special = SpecialTokens {
            bos_token: tok_of("tokenizer.ggml.bos_token_id"),
            eos_token: tok_of("tokenizer.ggml.eos_token_id"),
            extra_eos_ids: h
                .get_u64("tokenizer.ggml.eot_token_id")
                .map(|x| vec![x as u32])
                .unwrap_or_default(),
            add_bos: h
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(model == "llama"),
        };
        let json = match model {
            "gpt2" => gpt2_json(h, &tokens, &types)?,
            "llama" => spm_json(h, &tokens, &types)?,
            other => {
                return Err(Error::Tokenizer(format!(
                    "GGUF tokenizer model '{other}' is not supported (supported: gpt2, llama)"
                )))
            }
        };
        let mut special = special;
        // Chat models end a turn with their own token; stop there too (as llama.cpp does).
        for eot in ["<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>"] {
            if let Some(id) = tokens.iter().position(|t| *t == eot) {
                if !special.extra_eos_ids.contains(&(id as u32)) {
                    special.extra_eos_ids.push(id as u32);
                }
            }
        }
        Self::from_json(json, special)
    }

    /// Encodes text; special-token strings in it become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a rendered chat prompt, adding BOS only where the model wants it
    /// and the template did not already put it there.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_prompt_guarded(text, &[])
    }

    /// As `encode_prompt`, with the byte ranges of `text` that hold message
    /// content: a special token whose text lies inside one is spelled out as
    /// plain text instead, so no message can forge a control token. Text with no
    /// special-token strings in its content encodes exactly as `encode_prompt`.
    pub fn encode_prompt_guarded(&self, text: &str, content: &[std::ops::Range<usize>]) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len());
        for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            // Control tokens are rare: only they are looked up among the spans.
            let special = self.special.contains(&id);
            if special && start < end && content.iter().any(|r| r.start <= start && end <= r.end) {
                let piece = text.get(start..end).unwrap_or_default();
                let plain = self.plain.encode(piece, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                ids.extend_from_slice(plain.get_ids());
            } else {
                ids.push(id);
            }
        }
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.bytes_of(i).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn bytes_of(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// A control token's text (`<|channel|>`), for formats that are parsed by
    /// their control tokens (harmony); None for ordinary tokens.
    pub fn special_text(&self, id: u32) -> Option<String> {
        if self.special.contains(&id) {
            self.inner.id_to_token(id)
        } else {
            None
        }
    }

    /// The id of a control token by its text.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text).filter(|id| self.special.contains(id))
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    match crate::files::read_small_text(path, 16 << 20)? {
        Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        None => Ok(None),
    }
}

const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

/// The GGUF vocabulary as tokenizer.json's `vocab`, and its `added_tokens`:
/// control (3) and user-defined (4) tokens, matched whole before the model runs.
fn vocab_and_added(tokens: &[&str], types: &[u64]) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
    let added = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types.get(i) == Some(&3)})
        })
        .collect();
    (vocab, added)
}

/// tokenizer.json for a GGUF SentencePiece vocabulary (tokenizer.ggml.model = llama):
/// BPE with byte fallback whose merges come from the piece scores, the way
/// Hugging Face converts SentencePiece models (a pair merges into a piece; pairs
/// are ranked by that piece's score).
fn spm_json(h: &GgufHeader, tokens: &[&str], types: &[u64]) -> Result<Value> {
    let scores: Vec<f64> = h
        .get("tokenizer.ggml.scores")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    if scores.len() != tokens.len() {
        return Err(Error::Tokenizer("GGUF SentencePiece tokenizer lacks scores for its tokens".into()));
    }
    let ids: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    // Normal pieces (type 1) take part in merges; control, unused and byte tokens do not.
    let normal = |i: usize| matches!(types.get(i), Some(1) | None);
    let mut merges: Vec<(f64, usize, usize)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if !normal(i) || piece.chars().count() < 2 {
            continue;
        }
        let mut local = Vec::new();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&a), Some(&b)) = (ids.get(l), ids.get(r)) {
                if normal(a) && normal(b) {
                    local.push((scores[i], a, b));
                }
            }
        }
        local.sort_by_key(|&(_, a, b)| (a, b));
        merges.extend(local);
    }
    // Stable sort: higher-scoring pieces merge first; ties keep the id order.
    merges.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
    let merges: Vec<Value> = merges.iter().map(|&(_, a, b)| json!([tokens[a], tokens[b]])).collect();
    let (vocab, added) = vocab_and_added(tokens, types);
    let unk = h.get_u64("tokenizer.ggml.unknown_token_id").and_then(|i| tokens.get(i as usize)).map(|s| s.to_string());
    let add_prefix = h.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()).unwrap_or(true);
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// tokenizer.json for a GGUF byte-level BPE vocabulary (tokenizer.ggml.model = gpt2).
fn gpt2_json(h: &GgufHeader, tokens: &[&str], types: &[u64]) -> Result<Value> {
    // No merges: a byte-level vocabulary used character by character (writers
    // leave the key out when the list is empty).
    let merges = h.string_array("tokenizer.ggml.merges").unwrap_or_default();
    let (vocab, added) = vocab_and_added(tokens, types);
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
    let pre = match h.get_str("tokenizer.ggml.pre").unwrap_or("default") {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, split(GPT2_SPLIT), byte_level]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level]}),
        "qwen2" | "deepseek-llm" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level]}),
        _ => json!({"type": "Sequence", "pretokenizers": [split(GPT2_SPLIT), byte_level]}),
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}
