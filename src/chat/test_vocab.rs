//! Tokenizers for unit tests: one token per byte, plus control tokens.

use super::tokenizer::TextTokenizer;

/// A byte-level tokenizer with no merges: ids 0–255 are the bytes (in
/// GPT-2's byte-to-unicode table), then `specials` as control tokens.
pub(crate) fn byte_tokenizer(specials: &[&str]) -> TextTokenizer {
    let table = super::tokenizer::bytes_to_unicode();
    let mut vocab = serde_json::Map::new();
    for (i, c) in table.iter().enumerate() {
        vocab.insert(c.to_string(), serde_json::json!(i));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vocab.insert(s.to_string(), serde_json::json!(256 + i));
            serde_json::json!({"id": 256 + i, "content": s, "special": true, "single_word": false,
                               "lstrip": false, "rstrip": false, "normalized": false})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    TextTokenizer::from_json(json, Default::default()).unwrap()
}

/// Token ids for a scripted reply: control tokens by name, text byte by byte.
pub(crate) fn script(tok: &TextTokenizer, parts: &[&str]) -> Vec<u32> {
    parts
        .iter()
        .flat_map(|p| match tok.special_id(p) {
            Some(id) => vec![id],
            None => p.bytes().map(|b| b as u32).collect(),
        })
        .collect()
}
