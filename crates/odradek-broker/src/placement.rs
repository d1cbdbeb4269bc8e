//! Where a new partition's replicas go: spread over the brokers, and over racks where
//! `broker.rack` is set, as Kafka's `StripedReplicaPlacer` does.

use std::collections::BTreeMap;

/// The brokers in an order that alternates racks (rack a's first broker, rack b's first,
/// …, then each rack's second), so that consecutive picks land on different racks. Brokers
/// without a rack form one group of their own. Ids are sorted within a rack, so every
/// node computes the same order.
pub fn rack_alternated(brokers: &[(i32, Option<&str>)]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(*rack).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

/// Checks a replica assignment given in CreateTopics or CreatePartitions: one replica per
/// partition (until replication lands), each a known broker, none repeated.
pub fn check_assignment(
    assignment: &[Vec<i32>],
    known: impl Fn(i32) -> bool,
) -> Result<(), String> {
    for (partition, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(format!("partition {partition} is assigned no replica"));
        }
        let mut seen = replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != replicas.len() {
            return Err(format!(
                "partition {partition} lists a broker twice: {replicas:?}"
            ));
        }
        if let Some(unknown) = replicas.iter().find(|id| !known(**id)) {
            return Err(format!(
                "partition {partition} is assigned to broker {unknown}, which is not registered"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_alternate_and_every_broker_appears_once() {
        let brokers = [
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
        ];
        assert_eq!(rack_alternated(&brokers), [1, 3, 5, 2, 4]);
        assert_eq!(rack_alternated(&[(3, None), (1, None)]), [1, 3]);
        assert!(rack_alternated(&[]).is_empty());
    }

    #[test]
    fn assignments_name_known_brokers_without_repeats() {
        let known = |id: i32| (1..=3).contains(&id);
        assert!(check_assignment(&[vec![1], vec![3]], known).is_ok());
        assert!(
            check_assignment(&[vec![4]], known)
                .unwrap_err()
                .contains("broker 4")
        );
        assert!(
            check_assignment(&[vec![1, 1]], known)
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            check_assignment(&[vec![]], known)
                .unwrap_err()
                .contains("no replica")
        );
    }
}
