//! What this replica's ingestion owns, readable without its state lock.
//!
//! This is ingestion's own record of the partition each lot's events arrive on (it keeps no other
//! copy), kept here so request handlers can read it too.
//!
//! A request handler must know, for every request, whether this replica holds the lot asked for
//! or another replica of the group does ([`crate::replicas`]). Asking ingestion under its state
//! lock would put every request behind the consumer (a checkpoint capture holds that lock for
//! milliseconds), so ingestion mirrors its ownership here as it changes it: the partition each
//! lot's events arrive on (set on a lot's first event and on restore, cleared when the partition
//! leaves) and the partitions owned with the time each was assigned. Reads are atomic loads and
//! an uncontended read lock; writes happen on assignment, revocation and a lot's first event
//! (ingestion is the only writer; the writers are public for tests of the readers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::topology::LotIndex;

/// A partition this replica owns, and the lots seen on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPartition {
    /// The input partition.
    pub partition: i32,
    /// When it was assigned to this replica, Unix ms (wall clock).
    pub assigned_ms: i64,
    /// Lots whose state this replica keeps for it, in index order.
    pub lots: Vec<LotIndex>,
}

/// Ingestion's ownership, mirrored for lock-free reads.
#[derive(Debug)]
pub struct Holdings {
    /// Partition of each lot's events (-1: none seen, or its partition left).
    lot_partition: Box<[AtomicI32]>,
    /// Owned partitions and when each was assigned.
    owned: RwLock<BTreeMap<i32, i64>>,
    /// Bumped on every change, so a reader can tell when to look again.
    generation: AtomicU64,
}

impl Holdings {
    /// Nothing owned, for a topology of `lots` lots.
    pub fn new(lots: usize) -> Holdings {
        Holdings {
            lot_partition: (0..lots).map(|_| AtomicI32::new(-1)).collect(),
            owned: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Records the partition a lot's events arrive on (-1: forgotten). Called for every message
    /// applied: a load, and a store only when the partition changes (ingestion is the only
    /// writer, so no read-modify-write is needed).
    pub fn set_lot(&self, lot: LotIndex, partition: i32) {
        if let Some(slot) = self.lot_partition.get(lot as usize)
            && slot.load(Ordering::Acquire) != partition
        {
            slot.store(partition, Ordering::Release);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The partition `lot`'s events arrive on, if any has been seen (owned or not: after a failed
    /// consumer its lots keep theirs until the next assignment).
    pub fn partition_of(&self, lot: LotIndex) -> Option<i32> {
        self.lot_partition
            .get(lot as usize)
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|partition| *partition >= 0)
    }

    /// The lots whose events arrive on `partition`, in index order.
    pub fn lots_of(&self, partition: i32) -> Vec<LotIndex> {
        (0..self.lot_partition.len())
            .filter_map(|lot| LotIndex::try_from(lot).ok())
            .filter(|lot| self.partition_of(*lot) == Some(partition))
            .collect()
    }

    /// Records a partition assigned at `now_ms` (one already owned keeps its time).
    pub fn own(&self, partition: i32, now_ms: i64) {
        let mut owned = self.owned.write().unwrap_or_else(PoisonError::into_inner);
        if let std::collections::btree_map::Entry::Vacant(entry) = owned.entry(partition) {
            entry.insert(now_ms);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Records a partition that left.
    pub fn disown(&self, partition: i32) {
        let mut owned = self.owned.write().unwrap_or_else(PoisonError::into_inner);
        if owned.remove(&partition).is_some() {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Records that nothing is owned any more (the consumer failed).
    pub fn disown_all(&self) {
        let mut owned = self.owned.write().unwrap_or_else(PoisonError::into_inner);
        if !owned.is_empty() {
            owned.clear();
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Whether this replica owns the lot's partition and has seen the lot on it.
    pub fn holds(&self, lot: LotIndex) -> bool {
        let Some(partition) = self.partition_of(lot) else {
            return false;
        };
        self.owned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&partition)
    }

    /// Changes so far: a reader that saw this number has seen every change before it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The owned partitions with their lots, by partition.
    pub fn snapshot(&self) -> Vec<HeldPartition> {
        let owned = self
            .owned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut held: BTreeMap<i32, HeldPartition> = owned
            .into_iter()
            .map(|(partition, assigned_ms)| {
                (
                    partition,
                    HeldPartition {
                        partition,
                        assigned_ms,
                        lots: Vec::new(),
                    },
                )
            })
            .collect();
        for (lot, slot) in self.lot_partition.iter().enumerate() {
            let partition = slot.load(Ordering::Acquire);
            if let (Some(entry), Ok(lot)) = (held.get_mut(&partition), LotIndex::try_from(lot)) {
                entry.lots.push(lot);
            }
        }
        held.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lot_is_held_while_its_partition_is_owned() {
        let holdings = Holdings::new(3);
        assert!(!holdings.holds(0));
        holdings.set_lot(0, 2);
        holdings.set_lot(1, 5);
        assert!(!holdings.holds(0), "partition 2 not owned yet");
        assert_eq!(
            (holdings.partition_of(0), holdings.partition_of(2)),
            (Some(2), None)
        );
        assert_eq!(holdings.lots_of(5), vec![1]);
        let before = holdings.generation();
        holdings.own(2, 1_000);
        holdings.own(2, 9_000);
        assert!(holdings.holds(0) && !holdings.holds(1) && !holdings.holds(2));
        assert!(!holdings.holds(7), "a lot outside the topology is nobody's");
        assert_eq!(
            holdings.snapshot(),
            vec![HeldPartition {
                partition: 2,
                assigned_ms: 1_000,
                lots: vec![0],
            }],
            "the first assignment's time stays"
        );
        assert_eq!(holdings.generation(), before + 1);
        holdings.set_lot(0, 2);
        assert_eq!(
            holdings.generation(),
            before + 1,
            "no change, no new generation"
        );
        holdings.disown(2);
        assert!(!holdings.holds(0));
        holdings.own(5, 2_000);
        assert!(holdings.holds(1));
        holdings.disown_all();
        assert!(!holdings.holds(1) && holdings.snapshot().is_empty());
    }
}
