//! Image keys: `/config/inode/<pool>/<inode>` and `/index/image/<name>`.

use super::SchemaError;
use serde::{Deserialize, Serialize};

/// `/config/inode/<pool>/<inode>`: one image (or snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeConfig {
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_pool: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

impl InodeConfig {
    pub fn validate(&self, key: &str) -> Result<(), SchemaError> {
        if self.name.is_empty() {
            return Err(SchemaError::new(format!("{key} name"), "must not be empty"));
        }
        if !self.size.is_multiple_of(4096) {
            return Err(SchemaError::new(
                format!("{key} size"),
                format!("{} is not a multiple of 4096", self.size),
            ));
        }
        Ok(())
    }
}

/// `/index/image/<name>`: where an image's config lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    pub id: u64,
    pub pool_id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_examples_parse() {
        let image: InodeConfig = serde_json::from_str(
            r#"{"name":"testimg","size":2147483648,"parent_id":3,"readonly":false}"#,
        )
        .unwrap();
        assert!(image.validate("config/inode/1/5").is_ok());
        assert_eq!(image.parent_id, Some(3));
        let index: ImageIndex = serde_json::from_str(r#"{"id":5,"pool_id":1}"#).unwrap();
        assert_eq!(index.pool_id, 1);
        let odd = InodeConfig {
            name: "x".into(),
            size: 1000,
            parent_id: None,
            parent_pool: None,
            readonly: false,
        };
        assert!(odd.validate("k").unwrap_err().to_string().contains("1000"));
    }
}
