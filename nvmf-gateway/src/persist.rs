//! The configuration in etcd: one JSON document at `<prefix>/nvmf/<gateway>/config`,
//! written after every change and replayed at start. One key keeps a restart from ever
//! seeing half of a change; the document is small (a few KiB per subsystem).

use crate::config::GatewayConfig;

pub struct Store {
    etcd: etcd_client::Client,
    key: String,
}

impl Store {
    pub fn new(etcd: etcd_client::Client, prefix: &str, gateway: &str) -> Store {
        Store {
            etcd,
            key: format!("{}/nvmf/{gateway}/config", prefix.trim_end_matches('/')),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub async fn save(&self, config: &GatewayConfig) -> Result<(), String> {
        let text = serde_json::to_string(config).expect("the configuration serializes");
        self.etcd
            .clone()
            .put(self.key.as_str(), text, None)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot store the configuration at {}: {e}", self.key))
    }

    /// The stored configuration; None when there is none yet.
    pub async fn load(&self) -> Result<Option<GatewayConfig>, String> {
        let response = self
            .etcd
            .clone()
            .get(self.key.as_str(), None)
            .await
            .map_err(|e| format!("cannot read {}: {e}", self.key))?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        serde_json::from_slice(kv.value())
            .map(Some)
            .map_err(|e| format!("{}: invalid configuration: {e}", self.key))
    }
}
