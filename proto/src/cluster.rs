//! A view of the cluster configuration kept in etcd (shared by the OSD, the monitor and
//! the client): global settings, pools, the PG
//! map, PG states and histories, and which OSDs are up.
//!
//! Values arrive one key at a time (initial load, then watch events). A value that does not
//! parse or validate is logged with its key and ignored, so the last valid value stays in
//! force; one invalid pool does not take down the others. Keys are relative to the prefix
//! (`/config/pools`, not `/vitastor/config/pools`).

use crate::etcd::{
    keys, parse_pools, parse_value, GlobalConfig, OsdState, PgConfig, PgConfigItem, PgHistory,
    PgState, PoolConfig,
};
use crate::PoolId;
use std::collections::BTreeMap;

/// A PG: (pool id, PG number).
pub type PgKey = (u32, u32);

#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub global: GlobalConfig,
    pub pools: BTreeMap<PoolId, PoolConfig>,
    pub pg_config: BTreeMap<PgKey, PgConfigItem>,
    pub pg_states: BTreeMap<PgKey, PgState>,
    pub pg_history: BTreeMap<PgKey, PgHistory>,
    /// OSDs whose `/osd/state/<n>` key exists (their lease is alive).
    pub osd_states: BTreeMap<u64, OsdState>,
    /// Pools whose current entry in `/config/pools` is invalid, with the reason (key and
    /// field). A pool here and not in `pools` (never seen valid) is unavailable; one in
    /// both runs on its last valid config.
    pub invalid_pools: BTreeMap<u32, String>,
    /// Why the current `/pg/config` value cannot be used (`None` = it is valid or absent).
    pub pg_config_error: Option<String>,
}

impl ClusterView {
    /// Applies a put (`Some(value)`) or a delete (`None`) of `key`. Returns whether the view
    /// changed. Invalid values are logged and change nothing.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        let result = if key == keys::CONFIG_GLOBAL {
            self.apply_global(key, value)
        } else if key == keys::CONFIG_POOLS {
            self.apply_pools(key, value)
        } else if key == keys::PG_CONFIG {
            self.apply_pg_config(key, value)
        } else if let Some(rest) = key.strip_prefix(keys::PG_STATE) {
            apply_pg_keyed(&mut self.pg_states, key, rest, value, |state: &PgState| {
                state.validate(key)
            })
        } else if let Some(rest) = key.strip_prefix(keys::PG_HISTORY) {
            apply_pg_keyed(&mut self.pg_history, key, rest, value, |_| Ok(()))
        } else if let Some(rest) = key.strip_prefix(keys::OSD_STATE) {
            match rest.parse::<u64>() {
                Ok(osd) if osd > 0 => apply_one(&mut self.osd_states, osd, key, value),
                _ => Err(format!("{key}: not an OSD number")),
            }
        } else {
            return false;
        };
        match result {
            Ok(changed) => changed,
            Err(problem) => {
                tracing::warn!(
                    key,
                    "ignoring invalid value, the last valid one stays in force: {problem}"
                );
                false
            }
        }
    }

    fn apply_global(&mut self, key: &str, value: Option<&[u8]>) -> Result<bool, String> {
        let global = match value {
            None => GlobalConfig::default(),
            Some(json) => {
                let global: GlobalConfig = parse_value(key, json).map_err(|e| e.to_string())?;
                global.validate().map_err(|e| e.to_string())?;
                global
            }
        };
        self.global = global;
        Ok(true)
    }

    fn apply_pools(&mut self, key: &str, value: Option<&[u8]>) -> Result<bool, String> {
        let Some(json) = value else {
            self.pools.clear();
            return Ok(true);
        };
        let (mut pools, errors) = parse_pools(json).map_err(|e| e.to_string())?;
        let named: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(json).map_err(|e| e.to_string())?;
        self.invalid_pools.clear();
        for error in &errors {
            tracing::warn!(
                key,
                "invalid pool, its last valid config stays in force: {error}"
            );
        }
        for id in named.keys() {
            let Ok(number) = id.parse::<u32>() else {
                continue;
            };
            if PoolId::new(number).is_ok_and(|pool_id| pools.contains_key(&pool_id)) {
                continue;
            }
            // parse_pools names every error "pool <id> ..."; keep the one of this pool.
            let prefix = format!("pool {id}");
            let reason = errors
                .iter()
                .find(|e| e.what == prefix || e.what.starts_with(&format!("{prefix} ")))
                .map_or_else(|| format!("{prefix}: invalid"), |e| e.to_string());
            self.invalid_pools
                .insert(number, format!("{key}: {reason}"));
        }
        // A pool that is present but invalid keeps its previous configuration.
        for (id, old) in &self.pools {
            if !pools.contains_key(id) && named.contains_key(&id.get().to_string()) {
                pools.insert(*id, old.clone());
            }
        }
        self.pools = pools;
        Ok(true)
    }

    /// Applies `/pg/config`; an invalid value keeps the last valid map and is remembered
    /// in `pg_config_error` (clients waiting for a first map report it).
    fn apply_pg_config(&mut self, key: &str, value: Option<&[u8]>) -> Result<bool, String> {
        self.pg_config_error = None;
        let Some(json) = value else {
            self.pg_config.clear();
            return Ok(true);
        };
        let config: PgConfig = parse_value(key, json).map_err(|e| {
            self.pg_config_error = Some(e.to_string());
            e.to_string()
        })?;
        let mut map = BTreeMap::new();
        for (pool, pgs) in &config.items {
            for (pg, item) in pgs {
                match (pool.parse::<u32>(), pg.parse::<u32>()) {
                    (Ok(pool), Ok(pg)) if pool > 0 && pool < 65536 && pg > 0 => {
                        map.insert((pool, pg), item.clone());
                    }
                    _ => tracing::warn!(key, pool, pg, "ignoring a PG with an invalid number"),
                }
            }
        }
        self.pg_config = map;
        Ok(true)
    }

    /// Whether OSD `osd` is up (its state key exists and says "up").
    pub fn is_up(&self, osd: u64) -> bool {
        self.osd_states.get(&osd).is_some_and(|s| s.state == "up")
    }
}

/// `/pg/state/<pool>/<pg>`-style keys.
fn apply_pg_keyed<T: serde::de::DeserializeOwned + PartialEq>(
    map: &mut BTreeMap<PgKey, T>,
    key: &str,
    rest: &str,
    value: Option<&[u8]>,
    validate: impl Fn(&T) -> Result<(), crate::etcd::SchemaError>,
) -> Result<bool, String> {
    let pg_key = rest
        .split_once('/')
        .and_then(|(pool, pg)| Some((pool.parse::<u32>().ok()?, pg.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("{key}: expected <pool>/<pg>"))?;
    if let Some(json) = value {
        let parsed: T = parse_value(key, json).map_err(|e| e.to_string())?;
        validate(&parsed).map_err(|e| e.to_string())?;
    }
    apply_one(map, pg_key, key, value)
}

fn apply_one<K: Ord, T: serde::de::DeserializeOwned + PartialEq>(
    map: &mut BTreeMap<K, T>,
    map_key: K,
    key: &str,
    value: Option<&[u8]>,
) -> Result<bool, String> {
    match value {
        None => Ok(map.remove(&map_key).is_some()),
        Some(json) => {
            let parsed: T = parse_value(key, json).map_err(|e| e.to_string())?;
            let changed = map.get(&map_key) != Some(&parsed);
            map.insert(map_key, parsed);
            Ok(changed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_values_keep_the_last_valid_one() {
        let mut view = ClusterView::default();
        let pools =
            br#"{"1":{"name":"a","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":4}}"#;
        assert!(view.apply("/config/pools", Some(pools)));
        assert!(!view.apply("/config/pools", Some(b"{not json")));
        assert_eq!(view.pools.len(), 1);
        // Pool 1 becomes invalid, pool 2 is new and valid: 1 keeps its old config.
        let mixed = br#"{"1":{"name":"a","scheme":"replicated","pg_size":0,"pg_count":4},"2":{"name":"b","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":2}}"#;
        assert!(view.apply("/config/pools", Some(mixed)));
        assert_eq!(view.pools.len(), 2);
        assert_eq!(view.pools[&PoolId::new(1).unwrap()].pg_size, 2);

        assert!(view.apply(
            "/pg/config",
            Some(br#"{"items":{"1":{"1":{"osd_set":[1,"2"],"primary":1}}}}"#)
        ));
        assert!(!view.apply(
            "/pg/config",
            Some(br#"{"items":{"1":{"1":{"osd_set":"x"}}}}"#)
        ));
        assert_eq!(view.pg_config[&(1, 1)].osd_set, vec![1, 2]);
        assert!(view
            .pg_config_error
            .as_deref()
            .unwrap()
            .contains("/pg/config"));
        assert!(view.invalid_pools.contains_key(&1));
        assert!(view.apply(
            "/pg/config",
            Some(br#"{"items":{"1":{"1":{"osd_set":[1,"2"],"primary":1}}}}"#)
        ));
        assert_eq!(view.pg_config_error, None);

        assert!(view.apply(
            "/osd/state/3",
            Some(br#"{"state":"up","addresses":["127.0.0.1"],"port":1000}"#)
        ));
        assert!(view.is_up(3));
        assert!(!view.apply("/osd/state/3", Some(b"[]")));
        assert!(view.is_up(3));
        assert!(view.apply("/osd/state/3", None));
        assert!(!view.is_up(3));
        assert!(!view.apply("/pg/state/1", Some(b"{}")));
        assert!(!view.apply("/pg/state/1/1", Some(br#"{"primary":1,"state":["bogus"]}"#)));
        assert!(view.apply(
            "/pg/state/1/1",
            Some(br#"{"primary":1,"state":["active"],"peers":[1]}"#)
        ));
        assert!(!view.apply("/osd/stats/1", Some(b"{}")));
    }
}
