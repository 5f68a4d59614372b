//! Which slots each lot has: the one topology of a warehouse, read from `dim_slot`.
//!
//! The live consumer checks sensor events against it (serving indexes it densely), the archiver's
//! roll-up counts occupancy over it, and a replay synthesizes heartbeats for its slots. Lots are
//! sorted by id, and so are the slots of a lot, so the order is the same whatever order the files
//! hold them in: checkpoints, which store slot state by position, rely on that.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::WarehouseError;
use crate::rows::SlotRow;
use crate::schema::Table;
use crate::store::Warehouse;

/// Errors of reading a topology.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// `dim_slot` could not be read.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// A consumer was asked to serve a warehouse without slots.
    #[error("the warehouse at {} has no slots in dim_slot", .0.display())]
    NoSlots(std::path::PathBuf),
    /// `dim_slot` puts one slot in two lots.
    #[error("slot {slot_id:?} belongs to both {first_lot:?} and {second_lot:?} in dim_slot")]
    SlotInTwoLots {
        /// The slot.
        slot_id: String,
        /// One lot.
        first_lot: String,
        /// The other lot.
        second_lot: String,
    },
}

/// One lot and its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotSlots {
    /// The lot.
    pub lot_id: String,
    /// Its slots, sorted by id.
    pub slot_ids: Vec<String>,
}

/// Which slots each lot has (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    lots: Vec<LotSlots>,
}

impl Topology {
    /// The topology of a warehouse's `dim_slot` (empty when the warehouse has no slots, as for
    /// counter sources).
    pub fn read(warehouse: &Warehouse) -> Result<Topology, TopologyError> {
        if !warehouse.has_table(Table::DimSlot) {
            return Ok(Topology::default());
        }
        let rows: Vec<SlotRow> = warehouse.read_rows()?;
        Topology::from_slots(rows.into_iter().map(|row| (row.lot_id, row.slot_id)))
    }

    /// [`Topology::read`], refusing a warehouse without slots: what a live consumer serves.
    pub fn read_served(warehouse: &Warehouse) -> Result<Topology, TopologyError> {
        let topology = Topology::read(warehouse)?;
        if topology.lots.is_empty() {
            return Err(TopologyError::NoSlots(warehouse.root().to_path_buf()));
        }
        Ok(topology)
    }

    /// A topology from (lot id, slot id) pairs; a pair listed twice counts once.
    pub fn from_slots(
        slots: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Topology, TopologyError> {
        let mut lot_of_slot: HashMap<String, String> = HashMap::new();
        let mut by_lot: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (lot_id, slot_id) in slots {
            if let Some(first_lot) = lot_of_slot.get(&slot_id) {
                if *first_lot != lot_id {
                    return Err(TopologyError::SlotInTwoLots {
                        slot_id,
                        first_lot: first_lot.clone(),
                        second_lot: lot_id,
                    });
                }
                continue;
            }
            lot_of_slot.insert(slot_id.clone(), lot_id.clone());
            by_lot.entry(lot_id).or_default().insert(slot_id);
        }
        let lots = by_lot
            .into_iter()
            .map(|(lot_id, slot_ids)| LotSlots {
                lot_id,
                slot_ids: slot_ids.into_iter().collect(),
            })
            .collect();
        Ok(Topology { lots })
    }

    /// The lots, sorted by id.
    pub fn lots(&self) -> &[LotSlots] {
        &self.lots
    }

    /// Slots over all lots.
    pub fn slot_count(&self) -> usize {
        self.lots.iter().map(|lot| lot.slot_ids.len()).sum()
    }

    /// Keeps the lots named.
    pub fn retain_lots(&mut self, lot_ids: &BTreeSet<String>) {
        self.lots.retain(|lot| lot_ids.contains(&lot.lot_id));
    }

    /// (lot id, slot ids) pairs, the shape `parkcast_archive::rollup::OccupancyRollup::new` takes.
    pub fn pairs(&self) -> impl Iterator<Item = (String, Vec<String>)> + '_ {
        self.lots
            .iter()
            .map(|lot| (lot.lot_id.clone(), lot.slot_ids.clone()))
    }
}

impl IntoIterator for Topology {
    type Item = (String, Vec<String>);
    type IntoIter = std::iter::Map<std::vec::IntoIter<LotSlots>, fn(LotSlots) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        let pair: fn(LotSlots) -> Self::Item = |lot| (lot.lot_id, lot.slot_ids);
        self.lots.into_iter().map(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_are_sorted_deduplicated_and_refuse_a_slot_in_two_lots() {
        let pair = |lot: &str, slot: &str| (lot.to_owned(), slot.to_owned());
        let topology = Topology::from_slots([
            pair("lot-b", "b2"),
            pair("lot-a", "a1"),
            pair("lot-b", "b1"),
            pair("lot-b", "b2"),
        ])
        .expect("a valid topology");
        let pairs: Vec<(String, Vec<String>)> = topology.clone().into_iter().collect();
        assert_eq!(
            pairs,
            vec![
                ("lot-a".to_owned(), vec!["a1".to_owned()]),
                ("lot-b".to_owned(), vec!["b1".to_owned(), "b2".to_owned()]),
            ]
        );
        assert_eq!(topology.pairs().collect::<Vec<_>>(), pairs);
        assert_eq!(topology.slot_count(), 3);
        assert!(matches!(
            Topology::from_slots([pair("lot-a", "x"), pair("lot-b", "x")]),
            Err(TopologyError::SlotInTwoLots { .. })
        ));
    }
}
