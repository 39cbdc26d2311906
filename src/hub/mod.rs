//! The model hub: curated catalogue, Hugging Face search, resumable downloads
//! into the shared Hugging Face cache, the token, and the memory-fit estimate.

pub mod cache;
pub mod catalogue;
pub mod download;
pub mod fit;
pub mod ids;
pub mod manager;
pub mod token;

pub use download::{Control, Hub, Phase, Plan, Progress, SearchHit, SearchKind};

/// Everything a download can run into, each said plainly.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    BadId(String),
    #[error("{0}")]
    NeedsToken(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Offline(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Stalled(String),
    #[error("{0}")]
    Checksum(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    NoModelFiles(String),
    #[error("{0}")]
    Io(String),
    #[error("download paused")]
    Paused,
    #[error("download cancelled")]
    Cancelled,
}

impl HubError {
    /// Downloads and search turned off with HF_HUB_OFFLINE.
    pub fn offline_mode() -> HubError {
        HubError::Offline("Hearth is offline (HF_HUB_OFFLINE): downloads are unavailable".into())
    }
}
