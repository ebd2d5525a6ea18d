//! The monitor's decisions on synthetic etcd contents (no etcd server).

use super::*;

const NOW: f64 = 10_000.0;

/// A state with `hosts[i]` up OSDs on host `h<i>`, 1 TB each, and the given pools JSON.
fn cluster(hosts: &[usize], pools: &str) -> MonState {
    let mut state = MonState::default();
    let mut osd = 0;
    for (h, &count) in hosts.iter().enumerate() {
        for _ in 0..count {
            osd += 1;
            let stats = format!(
                r#"{{"time":"{NOW}","size":1000000000000,"free":1000000000000,"host":"h{h}"}}"#
            );
            state.apply(&format!("/osd/stats/{osd}"), Some(stats.as_bytes()), 1, NOW);
            set_up(&mut state, osd, true, NOW);
        }
    }
    state.apply("/config/pools", Some(pools.as_bytes()), 1, NOW);
    state
}

fn set_up(state: &mut MonState, osd: u64, up: bool, now: f64) {
    let value = format!(
        r#"{{"state":"up","addresses":["127.0.0.1"],"port":{}}}"#,
        20000 + osd
    );
    let key = format!("/osd/state/{osd}");
    state.apply(&key, up.then_some(value.as_bytes()), 2, now);
}

/// Applies the decision as if etcd had stored it and the watch delivered it back.
fn commit(state: &mut MonState, decision: &Decision) {
    let json = serde_json::to_vec(&decision.pg_config).unwrap();
    state.apply("/pg/config", Some(&json), 3, NOW);
    for ((pool, pg), history) in &decision.history {
        let json = serde_json::to_vec(history).unwrap();
        state.apply(&format!("/pg/history/{pool}/{pg}"), Some(&json), 3, NOW);
    }
}

fn sets(state: &MonState, pool: u32) -> BTreeMap<u32, Vec<u64>> {
    state
        .view
        .pg_config
        .iter()
        .filter(|((p, _), _)| *p == pool)
        .map(|((_, pg), item)| (*pg, item.osd_set.clone()))
        .collect()
}

const ONE_POOL: &str = r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"failure_domain":"host"}}"#;

#[test]
fn pools_example_json_is_placed_as_written() {
    let pools = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pools.example.json"
    ))
    .unwrap();
    let mut state = cluster(&[2, 2, 2, 2], &pools);
    let decision = decide(&state, NOW, 600.0);
    assert!(decision.changed, "{:?}", decision.notes);
    commit(&mut state, &decision);
    assert_eq!(sets(&state, 1).len(), 32);
    let ec = sets(&state, 2);
    assert_eq!(ec.len(), 32);
    assert!(ec
        .values()
        .all(|s| s.len() == 4 && s.iter().all(|&o| o != 0)));
    // Deciding again on the stored map changes nothing.
    assert!(!decide(&state, NOW, 600.0).changed);
}

#[test]
fn invalid_pool_is_skipped_and_the_others_work() {
    let pools = r#"{"1":{"name":"good","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8},"2":{"name":"bad","scheme":"replicated","pg_size":0,"pg_minsize":1,"pg_count":8}}"#;
    let state = cluster(&[1, 1, 1], pools);
    let decision = decide(&state, NOW, 600.0);
    assert_eq!(
        decision.pg_config.items.keys().collect::<Vec<_>>(),
        vec!["1"]
    );
}

#[test]
fn tags_and_root_node_filter_candidates() {
    let pools = r#"{"1":{"name":"fast","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":16,"osd_tags":"nvme"},"2":{"name":"dc2","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":8,"root_node":"dc2"}}"#;
    let mut state = cluster(&[2, 2, 2], pools);
    for osd in [1, 3] {
        state.apply(
            &format!("/config/osd/{osd}"),
            Some(br#"{"tags":["nvme"]}"#),
            4,
            NOW,
        );
    }
    state.apply(
        "/config/node_placement",
        Some(br#"{"dc2":{"level":"dc"},"h2":{"level":"host","parent":"dc2"}}"#),
        4,
        NOW,
    );
    state.apply(
        "/config/global",
        Some(br#"{"placement_levels":{"dc":90}}"#),
        4,
        NOW,
    );
    let decision = decide(&state, NOW, 600.0);
    commit(&mut state, &decision);
    let fast: BTreeSet<u64> = sets(&state, 1).values().flatten().copied().collect();
    assert_eq!(fast, BTreeSet::from([1, 3]));
    let dc2: BTreeSet<u64> = sets(&state, 2).values().flatten().copied().collect();
    assert_eq!(dc2, BTreeSet::from([5, 6]), "h2 holds OSDs 5 and 6");
}

#[test]
fn down_osd_loses_primaries_at_once_and_data_after_out_time() {
    let mut state = cluster(&[1, 1, 1, 1], ONE_POOL);
    let first = decide(&state, NOW, 600.0);
    commit(&mut state, &first);
    let before = sets(&state, 1);
    set_up(&mut state, 2, false, NOW + 1.0);
    let down = decide(&state, NOW + 2.0, 600.0);
    commit(&mut state, &down);
    assert_eq!(
        sets(&state, 1),
        before,
        "no data moves while the OSD may come back"
    );
    assert!(state
        .view
        .pg_config
        .values()
        .all(|item| item.primary != 2 && item.primary != 0));
    assert!(down.history.is_empty());

    let out = decide(&state, NOW + 700.0, 600.0);
    assert!(out.changed);
    commit(&mut state, &out);
    let after = sets(&state, 1);
    assert!(after.values().all(|s| !s.contains(&2)));
    // Every PG that lost OSD 2 remembers its old set.
    for (pg, set) in &before {
        if set.contains(&2) {
            let history = &state.view.pg_history[&(1, *pg)];
            assert!(history.osd_sets.contains(set), "PG {pg}: {history:?}");
            assert!(history.all_peers.contains(&2));
        }
    }
}

#[test]
fn noout_keeps_a_down_osd_in() {
    let mut state = cluster(&[1, 1, 1], ONE_POOL);
    let first = decide(&state, NOW, 600.0);
    commit(&mut state, &first);
    let before = sets(&state, 1);
    state.apply("/config/osd/3", Some(br#"{"noout":true}"#), 5, NOW);
    set_up(&mut state, 3, false, NOW);
    let later = decide(&state, NOW + 10_000.0, 600.0);
    commit(&mut state, &later);
    assert_eq!(sets(&state, 1), before);
}

#[test]
fn pg_count_change_pauses_first_then_waits_for_osds_then_resizes() {
    let mut state = cluster(&[1, 1, 1], ONE_POOL);
    let first = decide(&state, NOW, 600.0);
    commit(&mut state, &first);
    let old_sets = sets(&state, 1);
    state.apply(
        "/pg/state/1/1",
        Some(br#"{"primary":1,"state":["active"],"peers":[1,2]}"#),
        6,
        NOW,
    );
    state.apply(
        "/config/pools",
        Some(
            ONE_POOL
                .replace("\"pg_count\":16", "\"pg_count\":32")
                .as_bytes(),
        ),
        6,
        NOW,
    );

    let pause = decide(&state, NOW, 600.0);
    commit(&mut state, &pause);
    assert_eq!(state.view.pg_config.len(), 16);
    assert!(state.view.pg_config.values().all(|item| item.pause));

    let wait = decide(&state, NOW, 600.0);
    assert!(!wait.changed, "PG 1/1 is still served");
    state.apply("/pg/state/1/1", None, 7, NOW);

    let resized = decide(&state, NOW, 600.0);
    commit(&mut state, &resized);
    assert_eq!(state.view.pg_config.len(), 32);
    assert!(state.view.pg_config.values().all(|item| !item.pause));
    // gcd(16, 32) = 16: new PG 17 may hold objects of old PG 1.
    let history = &state.view.pg_history[&(1, 17)];
    assert!(history.osd_sets.contains(&old_sets[&1]), "{history:?}");
}

#[test]
fn a_pool_with_no_candidates_keeps_its_map() {
    let mut state = cluster(&[1, 1], ONE_POOL);
    let first = decide(&state, NOW, 600.0);
    commit(&mut state, &first);
    let before = sets(&state, 1);
    state.apply("/osd/stats/1", None, 8, NOW);
    state.apply("/osd/stats/2", None, 8, NOW);
    let decision = decide(&state, NOW, 600.0);
    assert!(!decision.changed);
    assert_eq!(sets(&state, 1), before);
}

/// Issue 18: a `/pg/config` that cannot be parsed is a placement change and is rewritten
/// (with the same map), not left broken until the next real change.
#[test]
fn an_unparsable_pg_config_is_rewritten() {
    let mut state = cluster(&[1, 1, 1], ONE_POOL);
    let first = decide(&state, NOW, 600.0);
    commit(&mut state, &first);
    assert!(!decide(&state, NOW, 600.0).changed, "settled");
    let change = state.apply("/pg/config", Some(b"garbage{"), 4, NOW);
    assert_eq!(change, crate::state::Change::Placement);
    let again = decide(&state, NOW, 600.0);
    assert!(again.changed, "the garbage is replaced");
    assert_eq!(
        again.pg_config.items, first.pg_config.items,
        "by the same map"
    );
    commit(&mut state, &again);
    assert!(!decide(&state, NOW, 600.0).changed);
}
