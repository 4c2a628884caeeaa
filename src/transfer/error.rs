//! Why an import stopped, whatever it read: a line of JSON lines, a file or folder of an SDK's
//! file store, or the store it saved into.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why an import stopped. Nothing after the failing line is imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{}: {message}", path.display())]
    Folder { path: PathBuf, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}
