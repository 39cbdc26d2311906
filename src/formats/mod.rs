//! Reading and writing model files, with no knowledge of architectures:
//! GGUF (header, metadata, tensors, the ggml block types MLX cannot read),
//! and safetensors (headers, tensors). Everything here checks sizes against the
//! file before it trusts them.

pub mod dequant;
pub mod gguf;
pub mod gguf_header;
pub mod safetensors;
