//! What is on disk: models installed in the models folder and models in the
//! shared Hugging Face cache, their cards (read from headers), turning a name
//! into a path, import and delete. No network here: downloads are `hub`'s job
//! and land in the cache layout this module reads.

pub mod card;
pub mod hf_cache;
pub mod ids;
pub mod installed;
pub mod resolve;

pub use card::{card, ModelCard};
pub use installed::{import, installed, installed_with_cache, odd_entries, InstalledModel};
pub use resolve::resolve;
