//! Relying-party applications and how they authenticate.

use crate::config::AppConfig;
use bzt_core::secret::{Secret, SecretHash};
use std::collections::HashMap;
use std::sync::Arc;

/// A configured relying party (trading platform, bid tool, opening hall).
#[derive(Debug)]
pub struct App {
    pub id: String,
    pub name: String,
    /// Origins whose pages may open this app's browser endpoints.
    pub allowed_origins: Vec<String>,
    /// Key of the `Bzt-Signature` HMAC on webhooks.
    pub webhook_secret: Option<Secret>,
}

impl App {
    /// docs/protocol.md: the `Origin` header is checked when both it and the
    /// app's list are present.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(o) => self.allowed_origins.iter().any(|a| {
                a.trim_end_matches('/')
                    .eq_ignore_ascii_case(o.trim_end_matches('/'))
            }),
        }
    }
}

/// All apps, by id and by the SHA-256 of their API key.
#[derive(Default)]
pub struct Apps {
    by_id: HashMap<String, Arc<App>>,
    // Keyed by the key's hash: a map lookup on a hash of the secret leaks
    // nothing useful through timing, and the config may hold only hashes.
    by_key: HashMap<[u8; 32], Arc<App>>,
}

impl Apps {
    pub fn from_config(apps: &[AppConfig]) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for a in apps {
            let app = Arc::new(App {
                id: a.id.clone(),
                name: a.name.clone(),
                allowed_origins: a.allowed_origins.clone(),
                webhook_secret: a.webhook_secret.as_deref().and_then(Secret::from_presented),
            });
            out.by_key.insert(a.api_key_hash()?.0, app.clone());
            out.by_id.insert(a.id.clone(), app);
        }
        Ok(out)
    }

    pub fn by_api_key(&self, presented: &str) -> Option<Arc<App>> {
        let hash = SecretHash::of(presented.as_bytes());
        let app = self.by_key.get(&hash.0)?;
        Some(app.clone())
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<App>> {
        self.by_id.get(id).cloned()
    }
}
