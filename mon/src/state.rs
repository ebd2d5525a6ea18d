//! What the monitor knows of the cluster: the shared [`ClusterView`] (global config, pools,
//! PG map, PG states and histories, OSD states) plus the keys only the monitor reads:
//! `/osd/stats/<n>`, `/config/osd/<n>`, `/config/node_placement`, `/pgstats/<pool>/<pg>`,
//! and the etcd revisions its writes are conditioned on.
//!
//! Invalid values are logged with their key and ignored; the last valid value stays.

use std::collections::BTreeMap;
use vitastor_proto::cluster::{ClusterView, PgKey};
use vitastor_proto::etcd::{
    keys, parse_value, NodePlacement, OsdConfig, OsdStats, PgStats, SchemaError,
};

#[derive(Debug, Clone, Default)]
pub struct MonState {
    pub view: ClusterView,
    pub osd_stats: BTreeMap<u64, OsdStats>,
    pub osd_config: BTreeMap<u64, OsdConfig>,
    pub node_placement: BTreeMap<String, NodePlacement>,
    pub pgstats: BTreeMap<PgKey, PgStats>,
    /// mod_revision of `/pg/config` (0 = absent): the monitor's write is conditioned on it.
    pub pg_config_revision: i64,
    /// mod_revision of each `/pg/history/<pool>/<pg>`.
    pub pg_history_revisions: BTreeMap<PgKey, i64>,
    /// Unix time at which this monitor last saw each OSD's `/osd/state` (up).
    pub last_seen_up: BTreeMap<u64, f64>,
}

/// What a key change means to the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing that matters (or an invalid value).
    None,
    /// Statistics only.
    Stats,
    /// Something placement depends on: recompute.
    Placement,
}

impl MonState {
    /// Applies a put (`Some`) or delete (`None`) of `key` (relative to the prefix) at etcd
    /// revision `revision`; `now` is the Unix time.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>, revision: i64, now: f64) -> Change {
        if key == keys::PG_CONFIG {
            self.pg_config_revision = if value.is_some() { revision } else { 0 };
        }
        if let Some(rest) = key.strip_prefix(keys::PG_HISTORY) {
            if let Some(pg) = parse_pg_key(rest) {
                match value {
                    Some(_) => self.pg_history_revisions.insert(pg, revision),
                    None => self.pg_history_revisions.remove(&pg),
                };
            }
        }
        if let Some(osd) = key
            .strip_prefix(keys::OSD_STATE)
            .and_then(|n| n.parse::<u64>().ok())
        {
            // Up until now, whatever the new value says.
            if self.view.is_up(osd) || value.is_some() {
                self.last_seen_up.insert(osd, now);
            }
        }
        let result = if let Some(rest) = key.strip_prefix(keys::OSD_STATS) {
            self.apply_osd_stats(key, rest, value)
        } else if let Some(rest) = key.strip_prefix(keys::CONFIG_OSD) {
            self.apply_osd_config(key, rest, value)
        } else if key == keys::CONFIG_NODE_PLACEMENT {
            self.apply_node_placement(key, value)
        } else if let Some(rest) = key.strip_prefix(keys::PGSTATS) {
            apply_pgstats(&mut self.pgstats, key, rest, value)
        } else if key == keys::PG_CONFIG {
            // An unparsable /pg/config is a placement change too: the master rewrites it
            // (from the last valid map) instead of leaving new clients without one until
            // the next real change.
            let changed = self.view.apply(key, value);
            return if changed || self.view.pg_config_error.is_some() {
                Change::Placement
            } else {
                Change::None
            };
        } else if self.view.apply(key, value) {
            return if key.starts_with(keys::PG_HISTORY) {
                Change::None
            } else {
                Change::Placement
            };
        } else {
            return Change::None;
        };
        match result {
            Ok(change) => change,
            Err(error) => {
                tracing::warn!(
                    key,
                    "ignoring invalid value, the last valid one stays in force: {error}"
                );
                Change::None
            }
        }
    }

    fn apply_osd_stats(
        &mut self,
        key: &str,
        rest: &str,
        value: Option<&[u8]>,
    ) -> Result<Change, SchemaError> {
        let osd = parse_osd(key, rest)?;
        let Some(json) = value else {
            return Ok(if self.osd_stats.remove(&osd).is_some() {
                Change::Placement
            } else {
                Change::None
            });
        };
        let stats: OsdStats = parse_value(key, json)?;
        let old = self.osd_stats.insert(osd, stats.clone());
        // Only size and host matter to placement; the rest changes every report.
        Ok(match old {
            Some(old) if old.size == stats.size && old.host == stats.host => Change::Stats,
            _ => Change::Placement,
        })
    }

    fn apply_osd_config(
        &mut self,
        key: &str,
        rest: &str,
        value: Option<&[u8]>,
    ) -> Result<Change, SchemaError> {
        let osd = parse_osd(key, rest)?;
        match value {
            None => {
                self.osd_config.remove(&osd);
            }
            Some(json) => {
                let config: OsdConfig = parse_value(key, json)?;
                config.validate(osd)?;
                self.osd_config.insert(osd, config);
            }
        }
        Ok(Change::Placement)
    }

    fn apply_node_placement(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<Change, SchemaError> {
        self.node_placement = match value {
            None => BTreeMap::new(),
            Some(json) => parse_value(key, json)?,
        };
        Ok(Change::Placement)
    }

    /// Whether `osd` still counts for placement at `now`: up, or down for less than
    /// `osd_out_time`, or marked `noout`. Last seen = the later of the monitor's own
    /// observation and the OSD's last stats report (so a restarted monitor does not take
    /// every down OSD out at once, nor keep one in forever).
    pub fn is_in(&self, osd: u64, now: f64, osd_out_time: f64) -> bool {
        if self.view.is_up(osd) || self.osd_config.get(&osd).is_some_and(|c| c.noout) {
            return true;
        }
        let reported = self.osd_stats.get(&osd).map_or(0.0, |s| s.time);
        let seen = self.last_seen_up.get(&osd).copied().unwrap_or(0.0);
        now - reported.max(seen) < osd_out_time
    }
}

impl MonState {
    /// Whether some down OSD reached its `osd_out_time` between `since` and `now`, so the
    /// placement must be recomputed even though etcd did not change.
    pub fn out_deadline_passed(&self, since: f64, now: f64, osd_out_time: f64) -> bool {
        self.osd_stats.iter().any(|(&osd, stats)| {
            if self.view.is_up(osd) || self.osd_config.get(&osd).is_some_and(|c| c.noout) {
                return false;
            }
            let seen = self.last_seen_up.get(&osd).copied().unwrap_or(0.0);
            let deadline = stats.time.max(seen) + osd_out_time;
            since < deadline && deadline <= now
        })
    }
}

fn parse_osd(key: &str, rest: &str) -> Result<u64, SchemaError> {
    match rest.parse::<u64>() {
        Ok(osd) if osd > 0 => Ok(osd),
        _ => Err(SchemaError::new(key, "not an OSD number")),
    }
}

fn parse_pg_key(rest: &str) -> Option<PgKey> {
    let (pool, pg) = rest.split_once('/')?;
    Some((pool.parse().ok()?, pg.parse().ok()?))
}

fn apply_pgstats(
    map: &mut BTreeMap<PgKey, PgStats>,
    key: &str,
    rest: &str,
    value: Option<&[u8]>,
) -> Result<Change, SchemaError> {
    let pg = parse_pg_key(rest).ok_or_else(|| SchemaError::new(key, "expected <pool>/<pg>"))?;
    match value {
        None => {
            map.remove(&pg);
        }
        Some(json) => {
            map.insert(pg, parse_value(key, json)?);
        }
    }
    Ok(Change::Stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_and_invalid_values_ignored() {
        let mut state = MonState::default();
        let stats = br#"{"time":"100.5","size":1000,"free":900,"host":"h1"}"#;
        assert_eq!(
            state.apply("/osd/stats/1", Some(stats), 5, 100.0),
            Change::Placement
        );
        let later = br#"{"time":"101.5","size":1000,"free":800,"host":"h1"}"#;
        assert_eq!(
            state.apply("/osd/stats/1", Some(later), 6, 101.0),
            Change::Stats
        );
        assert_eq!(
            state.apply("/osd/stats/x", Some(later), 7, 101.0),
            Change::None
        );
        assert_eq!(
            state.apply("/config/osd/1", Some(br#"{"reweight":7}"#), 8, 101.0),
            Change::None
        );
        assert_eq!(
            state.apply(
                "/config/osd/1",
                Some(br#"{"reweight":0.5,"noout":true}"#),
                9,
                101.0
            ),
            Change::Placement
        );
        assert!(state.osd_config[&1].noout);
        assert_eq!(
            state.apply("/config/node_placement", Some(b"[1]"), 10, 101.0),
            Change::None
        );
        assert_eq!(
            state.apply("/pg/config", Some(br#"{"items":{}}"#), 11, 101.0),
            Change::Placement
        );
        assert_eq!(state.pg_config_revision, 11);
        assert_eq!(
            state.apply("/pg/history/1/2", Some(br#"{"epoch":3}"#), 12, 101.0),
            Change::None
        );
        assert_eq!(state.pg_history_revisions[&(1, 2)], 12);
        assert_eq!(
            state.apply("/pgstats/1/2", Some(br#"{"object_count":3}"#), 13, 101.0),
            Change::Stats
        );
    }

    #[test]
    fn out_time_counts_from_the_last_sign_of_life() {
        let mut state = MonState::default();
        let up = br#"{"state":"up","addresses":["127.0.0.1"],"port":1}"#;
        state.apply("/osd/state/1", Some(up), 1, 1000.0);
        assert!(state.is_in(1, 5000.0, 600.0), "up OSDs are always in");
        state.apply("/osd/state/1", None, 2, 1010.0);
        assert!(state.is_in(1, 1500.0, 600.0));
        assert!(!state.is_in(1, 1700.0, 600.0));
        state.apply("/config/osd/1", Some(br#"{"noout":true}"#), 3, 1700.0);
        assert!(state.is_in(1, 9999.0, 600.0), "noout keeps it in");
        // Known only from an old stats report: out.
        state.apply(
            "/osd/stats/2",
            Some(br#"{"time":10,"size":1,"free":1}"#),
            4,
            1700.0,
        );
        assert!(!state.is_in(2, 1700.0, 600.0));
    }
}
