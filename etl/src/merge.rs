//! Merging a window's rows into what a file already holds: by key, the newer version wins.

use std::collections::BTreeMap;

/// `existing` with every row of `changed` put in place of the row with its key (or added), in key
/// order. Loading the same window twice gives the same rows: what makes a rerun after a crash
/// harmless.
pub fn by_key<R, K: Ord>(existing: Vec<R>, changed: Vec<R>, key: impl Fn(&R) -> K) -> Vec<R> {
    let mut rows: BTreeMap<K, R> = existing.into_iter().map(|row| (key(&row), row)).collect();
    for row in changed {
        rows.insert(key(&row), row);
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_row_replaces_its_old_version_and_a_repeat_changes_nothing() {
        let existing = vec![(1, "a"), (2, "b")];
        let changed = vec![(2, "b2"), (3, "c")];
        let once = by_key(existing, changed.clone(), |row| row.0);
        assert_eq!(once, vec![(1, "a"), (2, "b2"), (3, "c")]);
        let twice = by_key(once.clone(), changed, |row| row.0);
        assert_eq!(twice, once);
    }
}
