//! The placement tree: which failure domain each OSD is in and whether it sits under a
//! pool's `root_node`.
//!
//! Built from `/config/node_placement` (`{"dc1":{"level":"dc"},"host1":{"level":"host",
//! "parent":"dc1"},"7":{"parent":"host1"}}`; a numeric name is an OSD), the host each OSD
//! reports in `/osd/stats` (an OSD without a parent in node_placement hangs under a node named
//! after its host, level `host`), and the level names of `placement_levels` in
//! `/config/global` (default `host` and `osd`).

use std::collections::{BTreeMap, BTreeSet};
use vitastor_proto::etcd::NodePlacement;

/// The levels every cluster has, whatever `placement_levels` says.
pub const DEFAULT_LEVELS: [&str; 2] = ["host", "osd"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    level: String,
    parent: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PlacementTree {
    nodes: BTreeMap<String, Node>,
}

impl PlacementTree {
    /// Builds the tree; problems (unknown level, a cycle, an OSD's level overridden) are
    /// returned as messages for the log, and the tree stays usable.
    pub fn build(
        node_placement: &BTreeMap<String, NodePlacement>,
        osd_hosts: &BTreeMap<u64, Option<String>>,
        placement_levels: Option<&BTreeMap<String, u32>>,
    ) -> (PlacementTree, Vec<String>) {
        let mut problems = Vec::new();
        let known_levels: BTreeSet<&str> = DEFAULT_LEVELS
            .iter()
            .copied()
            .chain(
                placement_levels
                    .into_iter()
                    .flat_map(|l| l.keys().map(String::as_str)),
            )
            .collect();
        let mut nodes = BTreeMap::new();
        for (name, entry) in node_placement {
            let is_osd = name.parse::<u64>().is_ok();
            let level = if is_osd {
                if entry.level.as_deref().is_some_and(|l| l != "osd") {
                    problems.push(format!(
                        "node_placement {name:?}: a numeric name is an OSD, its level stays \"osd\""
                    ));
                }
                "osd".to_string()
            } else {
                match entry.level.as_deref() {
                    Some(level) if known_levels.contains(level) => level.to_string(),
                    Some(level) => {
                        problems.push(format!(
                            "node_placement {name:?}: level {level:?} is not in placement_levels {known_levels:?}; node ignored"
                        ));
                        continue;
                    }
                    None => {
                        problems.push(format!("node_placement {name:?}: no level; node ignored"));
                        continue;
                    }
                }
            };
            nodes.insert(
                name.clone(),
                Node {
                    level,
                    parent: entry.parent.clone().filter(|p| !p.is_empty()),
                },
            );
        }
        for (osd, host) in osd_hosts {
            let name = osd.to_string();
            let has_parent = nodes.get(&name).is_some_and(|n: &Node| n.parent.is_some());
            if let (false, Some(host)) = (has_parent, host) {
                nodes.insert(
                    name,
                    Node {
                        level: "osd".into(),
                        parent: Some(host.clone()),
                    },
                );
                nodes.entry(host.clone()).or_insert_with(|| Node {
                    level: "host".into(),
                    parent: None,
                });
            } else {
                nodes.entry(name).or_insert_with(|| Node {
                    level: "osd".into(),
                    parent: None,
                });
            }
        }
        let mut tree = PlacementTree { nodes };
        // A parent that does not exist or a cycle leaves the node at the root.
        let names: Vec<String> = tree.nodes.keys().cloned().collect();
        for name in names {
            let mut seen = BTreeSet::new();
            let mut current = name.clone();
            while let Some(parent) = tree.nodes.get(&current).and_then(|n| n.parent.clone()) {
                if !tree.nodes.contains_key(&parent) || !seen.insert(parent.clone()) {
                    problems.push(format!(
                        "node_placement {current:?}: parent {parent:?} is unknown or makes a cycle; placed at the root"
                    ));
                    tree.nodes.get_mut(&current).expect("exists").parent = None;
                    break;
                }
                current = parent;
            }
        }
        (tree, problems)
    }

    /// The node itself, then its parents up to the root.
    fn chain(&self, osd: u64) -> impl Iterator<Item = (&str, &Node)> {
        let mut next = Some(osd.to_string());
        std::iter::from_fn(move || {
            let name = next.take()?;
            let (name, node) = self.nodes.get_key_value(&name)?;
            next = node.parent.clone();
            Some((name.as_str(), node))
        })
    }

    /// The failure domain of an OSD at `level`: the name of its ancestor (or itself) of that
    /// level. An OSD with no such ancestor is a domain of its own (`osd:<n>`), so that it
    /// never shares a domain with anything by accident.
    pub fn domain_of(&self, osd: u64, level: &str) -> String {
        self.chain(osd)
            .find(|(_, node)| node.level == level)
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| format!("osd:{osd}"))
    }

    /// Whether the OSD is `root` or lies below it.
    pub fn is_under(&self, osd: u64, root: &str) -> bool {
        self.chain(osd).any(|(name, _)| name == root)
    }

    /// Parent of a node, for `osd-tree` style listings.
    pub fn parent_of(&self, name: &str) -> Option<&str> {
        self.nodes.get(name)?.parent.as_deref()
    }

    pub fn level_of(&self, name: &str) -> Option<&str> {
        self.nodes.get(name).map(|n| n.level.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_tree() -> PlacementTree {
        let placement: BTreeMap<String, NodePlacement> = serde_json::from_str(
            r#"{"dc1":{"level":"dc"},"host1":{"level":"host","parent":"dc1"},"7":{"parent":"host1"}}"#,
        )
        .unwrap();
        let levels: BTreeMap<String, u32> =
            serde_json::from_str(r#"{"dc":90,"host":100,"osd":110}"#).unwrap();
        let hosts = BTreeMap::from([
            (7, Some("ignored-host".to_string())),
            (8, Some("host2".to_string())),
            (9, None),
        ]);
        let (tree, problems) = PlacementTree::build(&placement, &hosts, Some(&levels));
        assert!(problems.is_empty(), "{problems:?}");
        tree
    }

    #[test]
    fn facts_example_places_osds() {
        let tree = facts_tree();
        assert_eq!(tree.domain_of(7, "host"), "host1");
        assert_eq!(tree.domain_of(7, "dc"), "dc1");
        assert_eq!(tree.domain_of(8, "host"), "host2");
        assert_eq!(tree.domain_of(8, "dc"), "osd:8");
        assert_eq!(tree.domain_of(9, "host"), "osd:9");
        assert_eq!(tree.domain_of(9, "osd"), "9");
        assert!(tree.is_under(7, "dc1") && !tree.is_under(8, "dc1"));
    }

    #[test]
    fn bad_levels_and_cycles_are_reported_not_fatal() {
        let placement: BTreeMap<String, NodePlacement> = serde_json::from_str(
            r#"{"a":{"level":"host","parent":"b"},"b":{"level":"host","parent":"a"},"r":{"level":"rack"},"1":{"parent":"a"}}"#,
        )
        .unwrap();
        let (tree, problems) = PlacementTree::build(&placement, &BTreeMap::from([(1, None)]), None);
        assert!(problems.iter().any(|p| p.contains("rack")));
        assert!(problems.iter().any(|p| p.contains("cycle")));
        assert_eq!(tree.domain_of(1, "host"), "a");
    }
}
