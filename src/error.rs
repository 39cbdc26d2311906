//! One error type for everything the engine can reject. Every bad input maps to
//! a variant that says what was wrong; nothing in the engine panics on user data.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: {0}")]
    NotGguf(String),
    #[error("corrupt or truncated model file {path}: {reason}")]
    CorruptModel { path: PathBuf, reason: String },
    #[error("unsupported tensor type {ggml_type} in tensor '{tensor}'")]
    UnsupportedTensorType { tensor: String, ggml_type: String },
    #[error("missing tensor '{0}' in model weights")]
    MissingTensor(String),
    #[error("unexpected tensor(s) in model weights: {0}")]
    UnexpectedTensors(String),
    #[error("tensor '{name}' has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<i32>,
        actual: Vec<i32>,
    },
    #[error("unknown model architecture '{0}' (supported: {1})")]
    UnknownArchitecture(String, String),
    #[error("invalid model config: {0}")]
    Config(String),
    /// A sentence saying what was looked for where.
    #[error("{0}")]
    ModelNotFound(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("chat template error: {0}")]
    Template(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens but the context holds {context}")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("no model is loaded")]
    NoModel,
    /// A request named a model that went before the engine reached it (an
    /// idle model evicted between admission and the engine): worth a retry.
    #[error("{0} is not loaded (it was unloaded before the request reached the engine); send the request again")]
    NotLoaded(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("MLX error: {0}")]
    Mlx(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<mlx_rs::error::Exception> for Error {
    fn from(e: mlx_rs::error::Exception) -> Self {
        Error::Mlx(e.to_string())
    }
}

impl From<mlx_rs::error::IoError> for Error {
    fn from(e: mlx_rs::error::IoError) -> Self {
        Error::Mlx(e.to_string())
    }
}

impl From<mlx_rs::io::GgufError> for Error {
    fn from(e: mlx_rs::io::GgufError) -> Self {
        Error::Mlx(e.to_string())
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
