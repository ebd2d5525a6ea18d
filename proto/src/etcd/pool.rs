//! `/config/pools`: `{"<pool id>": {pool}, ...}` and the pool field rules.
//!
//! | field | rule |
//! |---|---|
//! | `name` | required, non-empty |
//! | `scheme` | `replicated`, `xor`, `ec` (`jerasure` = alias of `ec`) |
//! | `pg_size` | 1..=256; >= 3 for xor/ec |
//! | `parity_chunks` | 1 for xor; 1..=pg_size-2 for ec |
//! | `pg_minsize` | 1..=pg_size; >= data chunks for xor/ec |
//! | `pg_count` | >= 1 |
//! | `block_size` | power of two, 4 KiB..=128 MiB |
//! | `bitmap_granularity` | power of two dividing `block_size` |
//! | `failure_domain` | default `host` |

use super::global::ImmediateCommit;
use super::lenient;
use super::SchemaError;
use crate::ids::PoolId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PoolScheme {
    Replicated,
    Xor,
    Ec,
}

impl TryFrom<String> for PoolScheme {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "replicated" => Ok(PoolScheme::Replicated),
            "xor" => Ok(PoolScheme::Xor),
            "ec" | "jerasure" => Ok(PoolScheme::Ec),
            other => Err(format!(
                "scheme = {other:?}: must be replicated, xor, ec or jerasure"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalReads {
    Primary,
    Nearest,
    Random,
}

/// One pool as written in `/config/pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    pub scheme: PoolScheme,
    pub pg_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity_chunks: Option<u32>,
    pub pg_minsize: u32,
    pub pg_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_node: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient::string_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub osd_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_placement: Option<serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "lenient::string_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub primary_affinity_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmap_granularity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_commit: Option<ImmediateCommit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_stripe_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_reads: Option<LocalReads>,
    /// This pool's `scrub_interval` (overrides the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_interval: Option<serde_json::Value>,
}

pub const MAX_PG_SIZE: u32 = 256;
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 128 << 20;

impl PoolConfig {
    /// Number of parity chunks: 0 for replicated pools, 1 for xor (default), as set for ec.
    pub fn parity_chunks(&self) -> u32 {
        match self.scheme {
            PoolScheme::Replicated => 0,
            PoolScheme::Xor => self.parity_chunks.unwrap_or(1),
            PoolScheme::Ec => self.parity_chunks.unwrap_or(0),
        }
    }

    /// Data chunks per stripe: 1 for replicated pools, pg_size - parity_chunks otherwise.
    pub fn data_chunks(&self) -> u32 {
        match self.scheme {
            PoolScheme::Replicated => 1,
            _ => self.pg_size.saturating_sub(self.parity_chunks()),
        }
    }

    pub fn failure_domain(&self) -> &str {
        self.failure_domain.as_deref().unwrap_or("host")
    }

    /// Vitastor CLI's default pg_minsize: replicated -> 2 if pg_size > 2 else 1;
    /// ec N+K -> N + (K > 1 ? 1 : 0).
    pub fn default_pg_minsize(scheme: PoolScheme, pg_size: u32, parity_chunks: u32) -> u32 {
        match scheme {
            PoolScheme::Replicated => {
                if pg_size > 2 {
                    2
                } else {
                    1
                }
            }
            _ => pg_size - parity_chunks + u32::from(parity_chunks > 1),
        }
    }

    /// Checks every field rule; the error names the pool, the field and the value.
    pub fn validate(&self, pool_id: &str) -> Result<(), SchemaError> {
        let field = |name: &str| format!("pool {pool_id} ({:?}) {name}", self.name);
        if self.name.trim().is_empty() {
            return Err(SchemaError::new(
                format!("pool {pool_id} name"),
                "must not be empty",
            ));
        }
        let erasure_coded = self.scheme != PoolScheme::Replicated;
        let min_size = if erasure_coded { 3 } else { 1 };
        if self.pg_size < min_size || self.pg_size > MAX_PG_SIZE {
            return Err(SchemaError::new(
                field("pg_size"),
                format!(
                    "{} is out of range {min_size}..={MAX_PG_SIZE} for scheme {:?}",
                    self.pg_size, self.scheme
                ),
            ));
        }
        match self.scheme {
            PoolScheme::Replicated => {}
            PoolScheme::Xor => {
                if self.parity_chunks() != 1 {
                    return Err(SchemaError::new(
                        field("parity_chunks"),
                        format!(
                            "{} is invalid: xor pools have exactly 1 parity chunk",
                            self.parity_chunks()
                        ),
                    ));
                }
            }
            PoolScheme::Ec => {
                let parity = self.parity_chunks();
                if parity < 1 || parity > self.pg_size - 2 {
                    return Err(SchemaError::new(
                        field("parity_chunks"),
                        format!(
                            "{parity} is out of range 1..={} for pg_size {}",
                            self.pg_size - 2,
                            self.pg_size
                        ),
                    ));
                }
            }
        }
        let min_minsize = if erasure_coded { self.data_chunks() } else { 1 };
        if self.pg_minsize < min_minsize || self.pg_minsize > self.pg_size {
            return Err(SchemaError::new(
                field("pg_minsize"),
                format!(
                    "{} is out of range {min_minsize}..={}",
                    self.pg_minsize, self.pg_size
                ),
            ));
        }
        if self.pg_count < 1 {
            return Err(SchemaError::new(
                field("pg_count"),
                "0 is invalid: must be at least 1",
            ));
        }
        if let Some(domain) = &self.failure_domain {
            if domain.trim().is_empty() {
                return Err(SchemaError::new(
                    field("failure_domain"),
                    "must not be empty",
                ));
            }
        }
        let block_size = self.block_size.unwrap_or(super::global::DEFAULT_BLOCK_SIZE);
        let granularity = self
            .bitmap_granularity
            .unwrap_or(super::global::DEFAULT_BITMAP_GRANULARITY);
        check_block_geometry(&field(""), block_size, granularity)?;
        if let Some(pg_stripe_size) = self.pg_stripe_size {
            let stripe = u64::from(block_size) * u64::from(self.data_chunks());
            if pg_stripe_size != 0 && pg_stripe_size % stripe != 0 {
                return Err(SchemaError::new(
                    field("pg_stripe_size"),
                    format!("{pg_stripe_size} is not a multiple of the stripe size {stripe}"),
                ));
            }
        }
        Ok(())
    }
}

/// Block size must be a power of two in range; bitmap granularity a power of two dividing it.
pub fn check_block_geometry(
    what: &str,
    block_size: u32,
    granularity: u32,
) -> Result<(), SchemaError> {
    let what = what.trim_end();
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(SchemaError::new(
            format!("{what} block_size"),
            format!("{block_size} must be a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"),
        ));
    }
    if !granularity.is_power_of_two()
        || granularity > block_size
        || !block_size.is_multiple_of(granularity)
    {
        return Err(SchemaError::new(
            format!("{what} bitmap_granularity"),
            format!("{granularity} must be a power of two dividing block_size {block_size}"),
        ));
    }
    Ok(())
}

/// Parses `/config/pools`, keeping every valid pool and reporting each invalid one, so that
/// one bad pool does not take the others down. Invalid JSON as a whole is an error.
pub fn parse_pools(
    json: &[u8],
) -> Result<(BTreeMap<PoolId, PoolConfig>, Vec<SchemaError>), SchemaError> {
    let raw: BTreeMap<String, serde_json::Value> = super::parse_value("config/pools", json)?;
    let mut pools = BTreeMap::new();
    let mut errors = Vec::new();
    for (id_text, value) in raw {
        let pool_id = match id_text
            .parse::<u32>()
            .map_err(|e| e.to_string())
            .and_then(PoolId::new)
        {
            Ok(pool_id) => pool_id,
            Err(problem) => {
                errors.push(SchemaError::new(format!("pool id {id_text:?}"), problem));
                continue;
            }
        };
        let pool: PoolConfig = match super::from_value_named(&format!("pool {id_text}"), value) {
            Ok(pool) => pool,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        match pool.validate(&id_text) {
            Ok(()) => {
                pools.insert(pool_id, pool);
            }
            Err(error) => errors.push(error),
        }
    }
    Ok((pools, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS_EXAMPLE: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":256,"failure_domain":"host"},"2":{"name":"ecpool","scheme":"ec","pg_size":4,"parity_chunks":2,"pg_minsize":2,"pg_count":256,"failure_domain":"host"}}"#;

    fn one_pool(json: &str) -> Result<PoolConfig, String> {
        let (pools, errors) =
            parse_pools(format!(r#"{{"1":{json}}}"#).as_bytes()).map_err(|e| e.to_string())?;
        if let Some(error) = errors.first() {
            return Err(error.to_string());
        }
        Ok(pools.into_values().next().unwrap())
    }

    #[test]
    fn facts_example_is_accepted() {
        let (pools, errors) = parse_pools(FACTS_EXAMPLE.as_bytes()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pools.len(), 2);
        let ec = &pools[&PoolId::new(2).unwrap()];
        assert_eq!(ec.data_chunks(), 2);
        assert_eq!(ec.failure_domain(), "host");
    }

    #[test]
    fn example_file_is_accepted() {
        let json = include_str!("../../../pools.example.json");
        let (pools, errors) = parse_pools(json.as_bytes()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(pools
            .values()
            .any(|pool| pool.scheme == PoolScheme::Replicated));
        assert!(pools.values().any(|pool| pool.scheme == PoolScheme::Ec));
    }

    #[test]
    fn unknown_fields_and_aliases() {
        let pool = one_pool(r#"{"name":"a","scheme":"jerasure","pg_size":3,"parity_chunks":1,"pg_minsize":2,"pg_count":8,"future":{"x":1},"osd_tags":"nvme"}"#).unwrap();
        assert_eq!(pool.scheme, PoolScheme::Ec);
        assert_eq!(pool.osd_tags, vec!["nvme".to_string()]);
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let cases = [
            (
                r#"{"name":"a","scheme":"replicated","pg_size":0,"pg_minsize":1,"pg_count":8}"#,
                "pg_size",
                "0",
            ),
            (
                r#"{"name":"a","scheme":"replicated","pg_size":300,"pg_minsize":1,"pg_count":8}"#,
                "pg_size",
                "300",
            ),
            (
                r#"{"name":"a","scheme":"ec","pg_size":2,"parity_chunks":1,"pg_minsize":1,"pg_count":8}"#,
                "pg_size",
                "2",
            ),
            (
                r#"{"name":"a","scheme":"ec","pg_size":4,"parity_chunks":3,"pg_minsize":2,"pg_count":8}"#,
                "parity_chunks",
                "3",
            ),
            (
                r#"{"name":"a","scheme":"ec","pg_size":4,"pg_minsize":2,"pg_count":8}"#,
                "parity_chunks",
                "0",
            ),
            (
                r#"{"name":"a","scheme":"xor","pg_size":3,"parity_chunks":2,"pg_minsize":2,"pg_count":8}"#,
                "parity_chunks",
                "2",
            ),
            (
                r#"{"name":"a","scheme":"ec","pg_size":4,"parity_chunks":2,"pg_minsize":1,"pg_count":8}"#,
                "pg_minsize",
                "1",
            ),
            (
                r#"{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":3,"pg_count":8}"#,
                "pg_minsize",
                "3",
            ),
            (
                r#"{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":0}"#,
                "pg_count",
                "0",
            ),
            (
                r#"{"name":"","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1}"#,
                "name",
                "empty",
            ),
            (
                r#"{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"block_size":100000}"#,
                "block_size",
                "100000",
            ),
            (
                r#"{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"bitmap_granularity":3000}"#,
                "bitmap_granularity",
                "3000",
            ),
            (
                r#"{"name":"a","scheme":"raid5","pg_size":2,"pg_minsize":1,"pg_count":1}"#,
                "scheme",
                "raid5",
            ),
            (
                r#"{"scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1}"#,
                "name",
                "name",
            ),
        ];
        for (json, field, value) in cases {
            let error = one_pool(json).expect_err(json);
            assert!(
                error.contains(field) && error.contains(value),
                "{json} -> {error}"
            );
        }
    }

    #[test]
    fn one_bad_pool_does_not_hide_the_others() {
        let json = r#"{"1":{"name":"good","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":4},"2":{"name":"bad","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":0},"x":{}}"#;
        let (pools, errors) = parse_pools(json.as_bytes()).unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(errors.len(), 2);
        assert!(parse_pools(b"{not json").is_err());
    }

    #[test]
    fn default_minsize_matches_the_cli() {
        assert_eq!(
            PoolConfig::default_pg_minsize(PoolScheme::Replicated, 3, 0),
            2
        );
        assert_eq!(
            PoolConfig::default_pg_minsize(PoolScheme::Replicated, 2, 0),
            1
        );
        assert_eq!(PoolConfig::default_pg_minsize(PoolScheme::Ec, 6, 2), 5);
        assert_eq!(PoolConfig::default_pg_minsize(PoolScheme::Ec, 3, 1), 2);
    }
}
