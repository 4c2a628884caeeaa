//! `[storage]`: where the store lives and the keys that seal it at rest (each 32 bytes,
//! base64-encoded).

use std::path::PathBuf;

use serde::Serialize;

use super::cx::{Cx, R};
use super::raw;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub encryption_key: Option<Secret>,
    pub previous_encryption_keys: Vec<Secret>,
}

impl Cx<'_> {
    /// `[storage]`.
    pub(super) fn storage(&mut self, st: &raw::RawStorage) -> R<StorageConfig> {
        let storage_path = self
            .path("storage.path", &st.path)?
            .unwrap_or_else(|| self.base.join("data"));
        let encryption_key = self.secret(
            "storage.encryption_key",
            &st.encryption_key,
            &st.encryption_key_file,
        )?;
        let mut previous_encryption_keys = Vec::new();
        for p in st.previous_encryption_keys.iter().flatten() {
            previous_encryption_keys.push(Secret::new(
                self.expand("storage.previous_encryption_keys", p)?.0,
            ));
        }
        for (key, k) in encryption_key
            .iter()
            .map(|k| ("storage.encryption_key", k))
            .chain(
                previous_encryption_keys
                    .iter()
                    .map(|k| ("storage.previous_encryption_keys", k)),
            )
        {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.expose().trim())
                .map(|b| b.len() == 32)
                .unwrap_or(false);
            if !ok {
                return Err(self.err(
                    key,
                    st.encryption_key.as_ref(),
                    "must be 32 bytes, base64-encoded (`openssl rand -base64 32`)",
                ));
            }
        }

        Ok(StorageConfig {
            path: storage_path,
            encryption_key,
            previous_encryption_keys,
        })
    }
}
