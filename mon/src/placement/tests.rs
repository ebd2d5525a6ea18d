//! Placement on synthetic clusters (no etcd).

use super::*;
use proptest::prelude::*;

/// `hosts[i]` OSDs of weight 1 on host i; OSD numbers count from 1.
fn cluster(hosts: &[usize]) -> Vec<Candidate> {
    let mut osd = 0;
    let mut out = Vec::new();
    for (h, &count) in hosts.iter().enumerate() {
        for _ in 0..count {
            osd += 1;
            out.push(Candidate {
                osd,
                domain: format!("host{h}"),
                weight: 1.0,
                up: true,
            });
        }
    }
    out
}

fn request(candidates: Vec<Candidate>, pg_count: u32, pg_size: u32) -> PoolRequest {
    PoolRequest {
        pg_count,
        pg_size,
        candidates,
        ..Default::default()
    }
}

fn slots_per_osd(placement: &PoolPlacement) -> BTreeMap<u64, usize> {
    let mut count = BTreeMap::new();
    for set in placement.sets.values() {
        for &osd in set.iter().filter(|&&o| o != 0) {
            *count.entry(osd).or_default() += 1;
        }
    }
    count
}

/// Every set has pg_size positions, k distinct members from k distinct domains, all of
/// them candidates with weight, and an up primary among them when any member is up.
fn check_invariants(request: &PoolRequest, placement: &PoolPlacement) {
    let by_osd: BTreeMap<u64, &Candidate> = request.candidates.iter().map(|c| (c.osd, c)).collect();
    let domains: BTreeSet<&str> = request
        .candidates
        .iter()
        .filter(|c| c.weight > 0.0)
        .map(|c| c.domain.as_str())
        .collect();
    let k = (request.pg_size as usize).min(domains.len());
    assert_eq!(placement.sets.len(), request.pg_count as usize);
    for (pg, set) in &placement.sets {
        assert_eq!(set.len(), request.pg_size as usize, "PG {pg}: {set:?}");
        let members: Vec<u64> = set.iter().copied().filter(|&o| o != 0).collect();
        assert_eq!(members.len(), k, "PG {pg}: {set:?}");
        let member_domains: BTreeSet<&str> = members
            .iter()
            .map(|o| {
                let c = by_osd.get(o).expect("member is a candidate");
                assert!(c.weight > 0.0, "PG {pg}: weightless OSD {o}");
                c.domain.as_str()
            })
            .collect();
        assert_eq!(
            member_domains.len(),
            k,
            "PG {pg}: two members in one domain: {set:?}"
        );
        let primary = placement.primaries[pg];
        if members.iter().any(|o| by_osd[o].up) {
            assert!(members.contains(&primary) && by_osd[&primary].up, "PG {pg}");
        } else {
            assert_eq!(primary, 0);
        }
    }
}

fn with_current(mut request: PoolRequest, placement: &PoolPlacement) -> PoolRequest {
    request.current_sets = placement.sets.clone();
    request.current_primaries = placement.primaries.clone();
    request
}

#[test]
fn equal_weights_are_within_5_percent_of_the_mean() {
    for hosts in [vec![1; 12], vec![3; 4], vec![2, 2, 2, 3, 3]] {
        let req = request(cluster(&hosts), 256, 3);
        let placement = place_pool(&req).unwrap();
        check_invariants(&req, &placement);
        let counts = slots_per_osd(&placement);
        let osds = req.candidates.len();
        let mean = 256.0 * 3.0 / osds as f64;
        // Hosts of different sizes have different per-OSD shares when capped; only check
        // the equal-host layouts strictly.
        if hosts.iter().all(|&h| h == hosts[0]) {
            for (osd, &n) in &counts {
                assert!(
                    (n as f64 - mean).abs() <= mean * 0.05,
                    "{hosts:?}: OSD {osd} has {n} slots, mean {mean}"
                );
            }
        }
        assert_eq!(counts.values().sum::<usize>(), 768);
    }
}

#[test]
fn reweight_half_halves_the_share() {
    let mut candidates = cluster(&[1; 8]);
    candidates[0].weight = 0.5;
    let req = request(candidates, 512, 2);
    let placement = place_pool(&req).unwrap();
    check_invariants(&req, &placement);
    let counts = slots_per_osd(&placement);
    let full = counts[&2] as f64;
    let half = counts[&1] as f64;
    assert!((half / full - 0.5).abs() < 0.03, "{counts:?}");
}

#[test]
fn fewer_domains_than_pg_size_gives_undersized_sets() {
    let req = request(cluster(&[2, 2]), 16, 3);
    let placement = place_pool(&req).unwrap();
    check_invariants(&req, &placement);
    assert!(placement
        .sets
        .values()
        .all(|s| s.iter().filter(|&&o| o == 0).count() == 1));
    let empty = place_pool(&request(Vec::new(), 4, 2)).unwrap();
    assert!(empty.sets.values().all(|s| s == &vec![0, 0]));
    assert!(empty.primaries.values().all(|&p| p == 0));
}

#[test]
fn a_heavy_host_cannot_take_more_than_one_slot_per_pg() {
    let mut candidates = cluster(&[1, 1, 1]);
    candidates[0].weight = 10.0;
    let req = request(candidates, 64, 3);
    let placement = place_pool(&req).unwrap();
    check_invariants(&req, &placement);
    assert!(slots_per_osd(&placement).values().all(|&n| n == 64));
}

#[test]
fn adding_an_osd_moves_at_most_one_and_a_half_times_the_ideal() {
    for (hosts, new_host) in [(vec![1; 12], true), (vec![3; 4], false)] {
        let req = request(cluster(&hosts), 256, 3);
        let before = place_pool(&req).unwrap();
        let mut candidates = req.candidates.clone();
        candidates.push(Candidate {
            osd: 13,
            domain: if new_host {
                "host12".into()
            } else {
                "host0".into()
            },
            weight: 1.0,
            up: true,
        });
        let grown = with_current(request(candidates, 256, 3), &before);
        let after = place_pool(&grown).unwrap();
        check_invariants(&grown, &after);
        let ideal = 768.0 / 13.0;
        assert!(
            (after.moved_slots as f64) <= 1.5 * ideal,
            "{hosts:?}: moved {} slots, ideal {ideal:.1}",
            after.moved_slots
        );
        let new_share = slots_per_osd(&after)[&13] as f64;
        assert!(
            (new_share - ideal).abs() <= ideal * 0.05,
            "new OSD has {new_share}"
        );
    }
}

#[test]
fn removing_an_osd_moves_only_its_slots() {
    for hosts in [vec![1; 12], vec![3; 4]] {
        let req = request(cluster(&hosts), 256, 3);
        let before = place_pool(&req).unwrap();
        let held = slots_per_osd(&before)[&5];
        let candidates: Vec<Candidate> = req
            .candidates
            .iter()
            .filter(|c| c.osd != 5)
            .cloned()
            .collect();
        let shrunk = with_current(request(candidates, 256, 3), &before);
        let after = place_pool(&shrunk).unwrap();
        check_invariants(&shrunk, &after);
        assert_eq!(after.moved_slots, held, "{hosts:?}");
        for (pg, set) in &after.sets {
            for osd in before.sets[pg].iter().filter(|&&o| o != 5) {
                assert!(set.contains(osd), "{hosts:?}: PG {pg} lost OSD {osd}");
            }
        }
    }
}

#[test]
fn a_down_osd_loses_primaries_but_keeps_its_data() {
    let req = request(cluster(&[1; 6]), 64, 3);
    let before = place_pool(&req).unwrap();
    let mut candidates = req.candidates.clone();
    candidates[2].up = false;
    let down = with_current(request(candidates, 64, 3), &before);
    let after = place_pool(&down).unwrap();
    check_invariants(&down, &after);
    assert_eq!(after.sets, before.sets);
    assert_eq!(after.moved_slots, 0);
    assert!(after.primaries.values().all(|&p| p != 3));
}

#[test]
fn ec_sets_keep_chunk_positions() {
    let req = request(cluster(&[1; 8]), 32, 6);
    let before = place_pool(&req).unwrap();
    let candidates: Vec<Candidate> = req
        .candidates
        .iter()
        .filter(|c| c.osd != 2)
        .cloned()
        .collect();
    let shrunk = with_current(request(candidates, 32, 6), &before);
    let after = place_pool(&shrunk).unwrap();
    for (pg, set) in &after.sets {
        for (i, osd) in before.sets[pg].iter().enumerate() {
            if *osd != 2 {
                assert_eq!(set[i], *osd, "PG {pg} chunk {i} moved");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_set_ever_holds_two_osds_of_one_domain(
        hosts in proptest::collection::vec(1usize..5, 1..9),
        weights in proptest::collection::vec(0u32..4, 40),
        pg_size in 1u32..5,
        pg_count in 1u32..80,
        removed in 0usize..40,
        extra_host in 0usize..9,
    ) {
        let mut candidates = cluster(&hosts);
        for (c, w) in candidates.iter_mut().zip(&weights) {
            c.weight = f64::from(*w) * 0.5;
        }
        let req = request(candidates.clone(), pg_count, pg_size);
        let first = place_pool(&req).unwrap();
        check_invariants(&req, &first);
        // Change the cluster: drop one OSD, add one on some host, and place again.
        if removed < candidates.len() {
            candidates.remove(removed);
        }
        candidates.push(Candidate { osd: 100, domain: format!("host{extra_host}"), weight: 1.0, up: true });
        let next = with_current(request(candidates, pg_count, pg_size), &first);
        let second = place_pool(&next).unwrap();
        check_invariants(&next, &second);
    }
}
