//! Which lots and slots exist, indexed: the dimension data live events are checked against.
//!
//! The topology itself (lots and their sorted slot ids from `dim_slot`) is
//! `parkcast_warehouse::topology::Topology`; this is its dense index for the live state.
//!
//! Events name lots and slots by their string ids; the live state keeps them in dense vectors, so the
//! topology maps ids to indices once, at the edge. A slot id is looked up within its lot, which keeps
//! the maps small and makes "slot of another lot" an error rather than a silent cross-update.

use std::collections::HashMap;

/// Id lookups run once per event: foldhash is several times faster than the default SipHash on
/// short ids. Lookups of ids from the wire cannot degrade it (the maps are built once, from
/// the dimension data, never from input).
type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Index of a lot in the topology.
pub type LotIndex = u32;
/// Index of a slot within its lot.
pub type SlotIndex = u32;

/// One lot of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct LotTopology {
    /// The lot id.
    pub lot_id: String,
    /// Legal capacity (the slots known).
    pub capacity: u32,
    /// Slot ids in index order.
    pub slot_ids: Vec<String>,
    slots: IdMap<SlotIndex>,
}

/// Every known lot and slot, with dense indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopologyIndex {
    lots: Vec<LotTopology>,
    by_id: IdMap<LotIndex>,
}

/// Errors of building a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A lot id appears twice.
    #[error("lot {0:?} is listed twice")]
    DuplicateLot(String),
    /// A slot id appears twice in a lot.
    #[error("slot {slot_id:?} is listed twice in lot {lot_id:?}")]
    DuplicateSlot {
        /// The lot.
        lot_id: String,
        /// The slot.
        slot_id: String,
    },
    /// Too many lots or slots for the index types.
    #[error("too many lots or slots (at most 2^32 - 1)")]
    TooLarge,
}

impl TopologyIndex {
    /// A topology from (lot id, its slot ids) pairs, in the order given.
    pub fn new(
        lots: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<TopologyIndex, TopologyError> {
        let mut topology = TopologyIndex::default();
        for (lot_id, slot_ids) in lots {
            if topology.by_id.contains_key(&lot_id) {
                return Err(TopologyError::DuplicateLot(lot_id));
            }
            let mut slots = IdMap::with_capacity_and_hasher(
                slot_ids.len(),
                foldhash::fast::RandomState::default(),
            );
            for (position, slot_id) in slot_ids.iter().enumerate() {
                let index = SlotIndex::try_from(position).map_err(|_| TopologyError::TooLarge)?;
                if slots.insert(slot_id.clone(), index).is_some() {
                    return Err(TopologyError::DuplicateSlot {
                        lot_id,
                        slot_id: slot_id.clone(),
                    });
                }
            }
            let index =
                LotIndex::try_from(topology.lots.len()).map_err(|_| TopologyError::TooLarge)?;
            topology.by_id.insert(lot_id.clone(), index);
            topology.lots.push(LotTopology {
                lot_id,
                capacity: u32::try_from(slot_ids.len()).map_err(|_| TopologyError::TooLarge)?,
                slot_ids,
                slots,
            });
        }
        Ok(topology)
    }

    /// The lots, in index order.
    pub fn lots(&self) -> &[LotTopology] {
        &self.lots
    }

    /// The lots' ids in index order.
    pub fn lot_ids(&self) -> Vec<&str> {
        self.lots().iter().map(|lot| lot.lot_id.as_str()).collect()
    }

    /// A lot's index.
    pub fn lot(&self, lot_id: &str) -> Option<LotIndex> {
        self.by_id.get(lot_id).copied()
    }

    /// A slot's index within a lot.
    pub fn slot(&self, lot: LotIndex, slot_id: &str) -> Option<SlotIndex> {
        self.lots.get(lot as usize)?.slots.get(slot_id).copied()
    }

    /// Slots over all lots.
    pub fn slot_count(&self) -> usize {
        self.lots.iter().map(|lot| lot.slot_ids.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_indices_and_duplicates_are_refused() {
        let topology = TopologyIndex::new([
            ("a".to_owned(), vec!["a1".to_owned(), "a2".to_owned()]),
            ("b".to_owned(), vec!["b1".to_owned()]),
        ])
        .expect("valid");
        assert_eq!(topology.lot("b"), Some(1));
        assert_eq!(topology.slot(0, "a2"), Some(1));
        assert_eq!(topology.slot(1, "a2"), None, "a slot of another lot");
        assert_eq!(topology.slot_count(), 3);
        assert_eq!(topology.lots()[0].capacity, 2);
        assert!(matches!(
            TopologyIndex::new([("a".to_owned(), vec![]), ("a".to_owned(), vec![])]),
            Err(TopologyError::DuplicateLot(_))
        ));
        assert!(matches!(
            TopologyIndex::new([("a".to_owned(), vec!["x".to_owned(), "x".to_owned()])]),
            Err(TopologyError::DuplicateSlot { .. })
        ));
    }
}
