//! Sets of UIDs as sorted, disjoint, inclusive ranges.

/// A set of message UIDs, kept as sorted, non-overlapping inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UidSet {
    ranges: Vec<(u32, u32)>,
}

impl UidSet {
    /// The empty set.
    pub fn new() -> Self {
        UidSet::default()
    }

    /// Every UID (`1:*`).
    pub fn all() -> Self {
        UidSet::range(1, u32::MAX)
    }

    /// One inclusive range; reversed bounds are swapped as IMAP does for `5:3`.
    pub fn range(a: u32, b: u32) -> Self {
        let mut s = UidSet::new();
        s.insert_range(a, b);
        s
    }

    /// One UID.
    pub fn single(uid: u32) -> Self {
        UidSet::range(uid, uid)
    }

    /// A set from any number of inclusive ranges (bounds in either order), merged once.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut set =
            UidSet { ranges: ranges.into_iter().map(|(a, b)| if a <= b { (a, b) } else { (b, a) }).collect() };
        set.normalize();
        set
    }

    /// Adds an inclusive range, merging with neighbours.
    pub fn insert_range(&mut self, a: u32, b: u32) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.ranges.push((lo, hi));
        self.normalize();
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.ranges = merged;
    }

    /// Adds one UID.
    pub fn insert(&mut self, uid: u32) {
        self.insert_range(uid, uid);
    }

    /// Whether `uid` is in the set.
    pub fn contains(&self, uid: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < uid);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= uid)
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Whether the set has no UID.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl FromIterator<u32> for UidSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut uids: Vec<u32> = iter.into_iter().collect();
        uids.sort_unstable();
        uids.dedup();
        let mut set = UidSet::new();
        for uid in uids {
            match set.ranges.last_mut() {
                Some(last) if uid == last.1.saturating_add(1) => last.1 = uid,
                _ => set.ranges.push((uid, uid)),
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_contains() {
        let mut s = UidSet::range(5, 3);
        s.insert_range(6, 8);
        s.insert(20);
        assert_eq!(s.ranges(), &[(3, 8), (20, 20)]);
        assert!(s.contains(3) && s.contains(8) && s.contains(20));
        assert!(!s.contains(2) && !s.contains(9) && !s.contains(21));
        let t: UidSet = [1, 2, 3, 7, 9, 8].into_iter().collect();
        assert_eq!(t.ranges(), &[(1, 3), (7, 9)]);
        assert!(UidSet::all().contains(u32::MAX));
    }
}
