//! The cleaning rules of all adapters, and the tally an adapter keeps of them.
//!
//! One enum names every rule so that a rule means the same in every source and its description is
//! written once. Each adapter lists the rules it applies, in the order it applies them; the tally
//! reports exactly those, zeros included, so a reader sees what was checked and not only what fired.

use super::RuleCount;

/// What a rule does to the rows it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleEffect {
    /// The rows are not written; they count against `rows_read` when reconciling.
    Dropped,
    /// The rows are written with a value altered (or a time interpreted).
    Changed,
    /// Counts something about the data (a capacity change, bays); no row is dropped or altered.
    Noted,
}

/// Every cleaning rule of every adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rule {
    DstAmbiguousResolved,
    DstGapShifted,
    NoDataSentinelDropped,
    CapacityFilledFromLot,
    CapacityInferredFromMaxFree,
    FreeAboveCapacityClipped,
    NegativeDropped,
    ExactDuplicateDropped,
    ConflictingDuplicateKeptLast,
    FrozenValueDropped,
    AboveCapacityClipped,
    CapacityChanged,
    DepartureMissingKeptOpen,
    DepartureBeforeArrivalDropped,
    OverlappingStayTrimmed,
    BayWithoutLocation,
    InitialFreeAssumed,
}

impl Rule {
    const ALL: [Rule; 17] = [
        Rule::DstAmbiguousResolved,
        Rule::DstGapShifted,
        Rule::NoDataSentinelDropped,
        Rule::CapacityFilledFromLot,
        Rule::CapacityInferredFromMaxFree,
        Rule::FreeAboveCapacityClipped,
        Rule::NegativeDropped,
        Rule::ExactDuplicateDropped,
        Rule::ConflictingDuplicateKeptLast,
        Rule::FrozenValueDropped,
        Rule::AboveCapacityClipped,
        Rule::CapacityChanged,
        Rule::DepartureMissingKeptOpen,
        Rule::DepartureBeforeArrivalDropped,
        Rule::OverlappingStayTrimmed,
        Rule::BayWithoutLocation,
        Rule::InitialFreeAssumed,
    ];

    /// The rule's name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rule::DstAmbiguousResolved => "dst_ambiguous_resolved",
            Rule::DstGapShifted => "dst_gap_shifted",
            Rule::NoDataSentinelDropped => "no_data_sentinel_dropped",
            Rule::CapacityFilledFromLot => "capacity_filled_from_lot",
            Rule::CapacityInferredFromMaxFree => "capacity_inferred_from_max_free",
            Rule::FreeAboveCapacityClipped => "free_above_capacity_clipped",
            Rule::NegativeDropped => "negative_dropped",
            Rule::ExactDuplicateDropped => "exact_duplicate_dropped",
            Rule::ConflictingDuplicateKeptLast => "conflicting_duplicate_kept_last",
            Rule::FrozenValueDropped => "frozen_value_dropped",
            Rule::AboveCapacityClipped => "above_capacity_clipped",
            Rule::CapacityChanged => "capacity_changed",
            Rule::DepartureMissingKeptOpen => "departure_missing_kept_open",
            Rule::DepartureBeforeArrivalDropped => "departure_before_arrival_dropped",
            Rule::OverlappingStayTrimmed => "overlapping_stay_trimmed",
            Rule::BayWithoutLocation => "bay_without_location",
            Rule::InitialFreeAssumed => "initial_free_assumed",
        }
    }

    /// One sentence saying what the rule does.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Rule::DstAmbiguousResolved => {
                "ambiguous local time (autumn fall-back) read with the earlier offset, or the later one when \
                 the earlier would not be after the lot's previous reading"
            }
            Rule::DstGapShifted => {
                "non-existent local time (spring gap) shifted forward by the length of the gap"
            }
            Rule::NoDataSentinelDropped => {
                "free count -1 or empty (the source's 'no data') dropped"
            }
            Rule::CapacityFilledFromLot => {
                "missing capacity filled with the lot's nearest known capacity in time"
            }
            Rule::CapacityInferredFromMaxFree => {
                "lot that never reports a capacity given the largest free count it ever reported"
            }
            Rule::FreeAboveCapacityClipped => "free count above capacity read as occupied 0",
            Rule::NegativeDropped => "negative occupied or free count dropped",
            Rule::ExactDuplicateDropped => {
                "repeated reading of a lot at the same instant with the same values dropped"
            }
            Rule::ConflictingDuplicateKeptLast => {
                "reading of a lot at the same instant as a later one in the file with other values dropped (last kept)"
            }
            Rule::FrozenValueDropped => {
                "count unchanged for more than 24 hours (a frozen feed): all but the run's first reading dropped"
            }
            Rule::AboveCapacityClipped => "occupied count above capacity set to capacity",
            Rule::CapacityChanged => {
                "lot capacity differs from its previous reading (noted, rows unchanged)"
            }
            Rule::DepartureMissingKeptOpen => {
                "departure 1900-01-01 00:00:00 or empty (the source's null) kept as an open stay"
            }
            Rule::DepartureBeforeArrivalDropped => {
                "stay whose departure is before its arrival dropped"
            }
            Rule::OverlappingStayTrimmed => {
                "stay starting before the bay's previous stay ended: the previous stay ends at this arrival"
            }
            Rule::BayWithoutLocation => {
                "bays missing from the location file, put in lot mel:unlocated (noted, bays)"
            }
            Rule::InitialFreeAssumed => {
                "bays assumed free at the start of the occupancy grid, as the source only has stays that begin \
                 on the day (noted, bays)"
            }
        }
    }

    /// Whether the rule drops, changes or notes.
    pub(crate) fn effect(self) -> RuleEffect {
        match self {
            Rule::NoDataSentinelDropped
            | Rule::NegativeDropped
            | Rule::ExactDuplicateDropped
            | Rule::ConflictingDuplicateKeptLast
            | Rule::FrozenValueDropped
            | Rule::DepartureBeforeArrivalDropped => RuleEffect::Dropped,
            Rule::DstAmbiguousResolved
            | Rule::DstGapShifted
            | Rule::CapacityFilledFromLot
            | Rule::CapacityInferredFromMaxFree
            | Rule::FreeAboveCapacityClipped
            | Rule::AboveCapacityClipped
            | Rule::DepartureMissingKeptOpen
            | Rule::OverlappingStayTrimmed => RuleEffect::Changed,
            Rule::CapacityChanged | Rule::BayWithoutLocation | Rule::InitialFreeAssumed => {
                RuleEffect::Noted
            }
        }
    }

    /// The rule of a name.
    pub(crate) fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.name() == name)
    }
}

/// Counts of the rules one adapter applies, in its order.
#[derive(Debug, Clone)]
pub(crate) struct RuleTally {
    counts: Vec<(Rule, u64)>,
}

impl RuleTally {
    /// A tally of `rules`, all at 0.
    pub(crate) fn new(rules: &[Rule]) -> Self {
        RuleTally {
            counts: rules.iter().map(|rule| (*rule, 0)).collect(),
        }
    }

    /// Adds `count` to a rule.
    pub(crate) fn add(&mut self, rule: Rule, count: u64) {
        let entry = self
            .counts
            .iter_mut()
            .find(|(listed, _)| *listed == rule)
            .expect("an adapter should only count rules it lists");
        entry.1 += count;
    }

    /// The count of a rule so far.
    #[cfg(test)]
    pub(crate) fn get(&self, rule: Rule) -> u64 {
        self.counts
            .iter()
            .find(|(listed, _)| *listed == rule)
            .map_or(0, |(_, count)| *count)
    }

    /// The counts for the report.
    pub(crate) fn into_counts(self) -> Vec<RuleCount> {
        self.counts
            .into_iter()
            .map(|(rule, count)| RuleCount {
                rule: rule.name(),
                description: rule.description(),
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_found_by_its_name() {
        for rule in Rule::ALL {
            assert_eq!(Rule::from_name(rule.name()), Some(rule));
        }
        assert_eq!(Rule::from_name("no_such_rule"), None);
    }

    #[test]
    fn the_tally_reports_listed_rules_in_order_with_zeros() {
        let mut tally = RuleTally::new(&[Rule::NegativeDropped, Rule::AboveCapacityClipped]);
        tally.add(Rule::AboveCapacityClipped, 3);
        tally.add(Rule::AboveCapacityClipped, 1);
        let counts = tally.into_counts();
        let summary: Vec<_> = counts
            .iter()
            .map(|count| (count.rule, count.count))
            .collect();
        assert_eq!(
            summary,
            vec![("negative_dropped", 0), ("above_capacity_clipped", 4)]
        );
    }
}
