//! The network: the curated catalogue, Hugging Face search, resumable
//! downloads into the shared Hugging Face cache (whose layout `library` reads),
//! the token, and the download thread the app talks to.

pub mod catalogue;
pub mod client;
pub mod manager;
pub mod plan;
pub mod token;
pub mod transfer;
pub mod verify;

pub use client::{Hub, Options};
pub use plan::{Control, Phase, Plan, Progress, SearchHit, SearchKind};

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

/// `HF_HUB_OFFLINE=1` (or `true`): Hearth sends no request to any hub.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

impl HubError {
    /// Downloads and search turned off with HF_HUB_OFFLINE.
    pub fn offline_mode() -> HubError {
        HubError::Offline("Hearth is offline (HF_HUB_OFFLINE): downloads are unavailable".into())
    }
}

impl From<crate::library::ids::BadId> for HubError {
    fn from(e: crate::library::ids::BadId) -> Self {
        HubError::BadId(e.0)
    }
}
