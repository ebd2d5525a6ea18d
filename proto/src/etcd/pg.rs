//! PG keys: `/pg/config`, `/pg/state/<pool>/<pg>`, `/pg/history/<pool>/<pg>`, `/pgstats/<pool>/<pg>`.

use super::lenient;
use super::SchemaError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `/pg/config`: `{"hash":..,"items":{"<pool>":{"<pg>":{"osd_set":[..],"primary":n}}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PgConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default)]
    pub items: BTreeMap<String, BTreeMap<String, PgConfigItem>>,
}

/// One PG's placement. `0` in `osd_set` is an empty slot; EC sets are ordered by chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgConfigItem {
    #[serde(deserialize_with = "lenient::osd_list")]
    pub osd_set: Vec<u64>,
    #[serde(deserialize_with = "lenient::osd_num")]
    pub primary: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

/// The base states of a PG: exactly one of these is in `state`.
pub const PG_BASE_STATES: [&str; 7] = [
    "starting",
    "peering",
    "incomplete",
    "active",
    "repeering",
    "stopping",
    "offline",
];
/// Flags that may accompany the base state.
pub const PG_STATE_FLAGS: [&str; 10] = [
    "degraded",
    "has_incomplete",
    "has_degraded",
    "has_misplaced",
    "has_unclean",
    "has_invalid",
    "has_corrupted",
    "has_inconsistent",
    "left_on_dead",
    "scrubbing",
];

/// `/pg/state/<pool>/<pg>`, written by the primary under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgState {
    #[serde(deserialize_with = "lenient::osd_num")]
    pub primary: u64,
    pub state: Vec<String>,
    #[serde(default, deserialize_with = "lenient::osd_list")]
    pub peers: Vec<u64>,
}

impl PgState {
    /// Exactly one base state, any number of known flags, no unknown words.
    pub fn validate(&self, key: &str) -> Result<(), SchemaError> {
        let base_count = self
            .state
            .iter()
            .filter(|s| PG_BASE_STATES.contains(&s.as_str()))
            .count();
        if base_count != 1 {
            return Err(SchemaError::new(
                format!("{key} state"),
                format!(
                    "{:?} must contain exactly one of {PG_BASE_STATES:?}",
                    self.state
                ),
            ));
        }
        if let Some(unknown) = self.state.iter().find(|s| {
            !PG_BASE_STATES.contains(&s.as_str()) && !PG_STATE_FLAGS.contains(&s.as_str())
        }) {
            return Err(SchemaError::new(
                format!("{key} state"),
                format!("unknown PG state {unknown:?}"),
            ));
        }
        Ok(())
    }

    pub fn base_state(&self) -> Option<&str> {
        self.state
            .iter()
            .map(String::as_str)
            .find(|s| PG_BASE_STATES.contains(s))
    }
}

/// `/pg/history/<pool>/<pg>`: earlier OSD sets that may still hold data of the PG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PgHistory {
    #[serde(default, deserialize_with = "lenient::osd_sets")]
    pub osd_sets: Vec<Vec<u64>>,
    #[serde(default, deserialize_with = "lenient::osd_list")]
    pub all_peers: Vec<u64>,
    #[serde(default)]
    pub epoch: u64,
    /// UNIX time (s) of the next scrub of this PG (Vitastor's key: set it to start a
    /// scrub by hand; the primary clears it, or moves it on by `scrub_interval` with
    /// `auto_scrub`, when the scrub is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scrub: Option<u64>,
}

/// `/pgstats/<pool>/<pg>`, written by the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PgStats {
    #[serde(default)]
    pub object_count: u64,
    #[serde(default)]
    pub clean_count: u64,
    #[serde(default)]
    pub misplaced_count: u64,
    #[serde(default)]
    pub degraded_count: u64,
    #[serde(default)]
    pub incomplete_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_osd_set: Option<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_examples_parse() {
        let config: PgConfig = serde_json::from_str(
            r#"{"hash":"abc","items":{"1":{"1":{"osd_set":[1,4,7],"primary":4},"2":{"osd_set":["2",0,"9"],"primary":"2","pause":true}}}}"#,
        )
        .unwrap();
        let pg2 = &config.items["1"]["2"];
        assert_eq!(pg2.osd_set, vec![2, 0, 9]);
        assert_eq!(pg2.primary, 2);
        assert!(pg2.pause);

        let state: PgState = serde_json::from_str(
            r#"{"primary":4,"state":["active","has_misplaced"],"peers":[1,4,7,9]}"#,
        )
        .unwrap();
        assert!(state.validate("pg/state/1/1").is_ok());
        assert_eq!(state.base_state(), Some("active"));

        let history: PgHistory =
            serde_json::from_str(r#"{"osd_sets":[[1,4,7]],"all_peers":[1,4,7,9],"epoch":17}"#)
                .unwrap();
        assert_eq!(history.epoch, 17);
        let stats: PgStats = serde_json::from_str(
            r#"{"object_count":5,"clean_count":5,"misplaced_count":0,"degraded_count":0,"incomplete_count":0}"#,
        )
        .unwrap();
        assert_eq!(stats.clean_count, 5);
    }

    #[test]
    fn invalid_states_are_named() {
        let two_bases = PgState {
            primary: 1,
            state: vec!["active".into(), "peering".into()],
            peers: vec![],
        };
        assert!(two_bases
            .validate("k")
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let unknown = PgState {
            primary: 1,
            state: vec!["active".into(), "sleepy".into()],
            peers: vec![],
        };
        assert!(unknown
            .validate("k")
            .unwrap_err()
            .to_string()
            .contains("sleepy"));
        assert!(serde_json::from_str::<PgConfigItem>(r#"{"osd_set":["x"],"primary":1}"#).is_err());
    }
}
