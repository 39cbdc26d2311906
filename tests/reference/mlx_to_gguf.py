"""Test helper: writes a tiny MLX-format model (from `hearth synth`) as a GGUF
file with llama.cpp's tensor names and metadata keys, using gguf-py.

usage: mlx_to_gguf.py MODEL_DIR OUT.gguf
Supports the families the MoE tests need (qwen3_moe -> llama.cpp's qwen3moe,
gpt_oss -> gpt-oss). Dense tensors are written as F32; MXFP4 layers are moved
bit for bit into ggml's MXFP4 blocks (the same E2M1 codes and E8M0 scales,
laid out per 32: one scale byte, then value j in the low and j+16 in the high
nibble of byte j); affine-quantized layers are dequantized to F32."""
import json
import sys

import gguf
import mlx.core as mx
import numpy as np

ARCH = {"qwen3_moe": "qwen3moe", "gpt_oss": "gpt-oss"}
PARTS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp", "mlp.switch_mlp.gate_proj": "ffn_gate_exps",
    "mlp.switch_mlp.up_proj": "ffn_up_exps", "mlp.switch_mlp.down_proj": "ffn_down_exps",
}


GPT_OSS_PARTS = {
    "post_attention_layernorm": "post_attention_norm", "mlp.router": "ffn_gate_inp",
    "mlp.experts.gate_proj": "ffn_gate_exps", "mlp.experts.up_proj": "ffn_up_exps",
    "mlp.experts.down_proj": "ffn_down_exps",
}


def gguf_name(hf, arch):
    if hf.endswith(".self_attn.sinks"):
        return f"blk.{hf.split('.')[2]}.attn_sinks.weight"
    base, suffix = hf.rsplit(".", 1)
    if base == "model.embed_tokens":
        return f"token_embd.{suffix}"
    if base == "model.norm":
        return f"output_norm.{suffix}"
    if base == "lm_head":
        return f"output.{suffix}"
    _, _, i, part = base.split(".", 3)
    parts = {**PARTS, **GPT_OSS_PARTS} if arch == "gpt-oss" else PARTS
    return f"blk.{i}.{parts[part]}.{suffix}"


def mxfp4_blocks(weight, scales):
    """MLX mxfp4 (uint32 words of 8 codes, low nibble first; uint8 scales) -> ggml bytes."""
    w = np.array(weight).view(np.uint8)
    codes = np.stack([w & 0xF, w >> 4], axis=-1).reshape(*w.shape[:-1], -1, 32)
    packed = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
    e = np.array(scales)[..., None]
    return np.concatenate([e, packed], axis=-1).reshape(*w.shape[:-1], -1)


def tensors(src, cfg):
    """(hf name, array, raw ggml type or None) for every logical tensor."""
    arrays = mx.load(f"{src}/model.safetensors")
    quant = cfg.get("quantization", {})
    for name in sorted(arrays):
        a = arrays[name]
        if name.endswith((".scales", ".biases")):
            continue
        prefix = name[: -len(".weight")] if name.endswith(".weight") else None
        scales = arrays.get(f"{prefix}.scales") if prefix else None
        if scales is None:
            yield name, np.array(a.astype(mx.float32)), None
        elif scales.dtype == mx.uint8:
            yield name, mxfp4_blocks(a, scales), gguf.GGMLQuantizationType.MXFP4
        else:
            layer = quant.get(prefix, quant)
            dense = mx.dequantize(a, scales, arrays[f"{prefix}.biases"], layer["group_size"], layer["bits"])
            yield name, np.array(dense.astype(mx.float32)), None


def main():
    src, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(f"{src}/config.json"))
    tok = json.load(open(f"{src}/tokenizer.json"))
    arch = ARCH[cfg["model_type"]]
    w = gguf.GGUFWriter(out, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    if arch == "gpt-oss":
        w.add_expert_count(cfg["num_local_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["intermediate_size"])
        w.add_sliding_window(cfg["sliding_window"])
        rs = cfg["rope_scaling"]
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    else:
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab] + [a["content"] for a in tok["added_tokens"]]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - len(tok["added_tokens"])) + [3] * len(tok["added_tokens"]))
    w.add_token_merges([])
    w.add_eos_token_id(len(tokens) - 1)
    for name, a, raw in tensors(src, cfg):
        if raw is None:
            w.add_tensor(gguf_name(name, arch), a)
        else:
            w.add_tensor(gguf_name(name, arch), a, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
