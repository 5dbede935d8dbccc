//! Length ordering for sharding: texts of similar length in one shard means little padding
//! inside the member's batches, and the longest shards go out first (longest-processing-time
//! first keeps the tail of a job short). Results are put back in input order afterwards.

/// A permutation of a job's texts by length, longest first (stable: equal lengths keep their
/// input order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthOrder {
    /// `order[k]` = input index of the text at sorted position `k`.
    order: Vec<usize>,
}

impl LengthOrder {
    /// Order `texts` by character count, longest first.
    pub fn longest_first<S: AsRef<str>>(texts: &[S]) -> Self {
        let lens: Vec<usize> = texts.iter().map(|t| t.as_ref().chars().count()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by(|&a, &b| lens[b].cmp(&lens[a]));
        LengthOrder { order }
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// `items` (in input order) rearranged into sorted order. `None` if the length differs.
    pub fn sort<T: Clone>(&self, items: &[T]) -> Option<Vec<T>> {
        if items.len() != self.order.len() {
            return None;
        }
        Some(self.order.iter().map(|&i| items[i].clone()).collect())
    }

    /// `sorted` (in sorted order) put back in input order. `None` if the length differs.
    pub fn restore<T>(&self, sorted: Vec<T>) -> Option<Vec<T>> {
        if sorted.len() != self.order.len() {
            return None;
        }
        let mut out: Vec<Option<T>> = (0..sorted.len()).map(|_| None).collect();
        for (k, item) in sorted.into_iter().enumerate() {
            out[self.order[k]] = Some(item);
        }
        out.into_iter().collect()
    }

    /// Rows of `dim` values (sorted order, flattened) put back in input order, flattened.
    /// `None` if `flat` is not exactly `len × dim` values.
    pub fn restore_rows(&self, flat: &[f32], dim: usize) -> Option<Vec<f32>> {
        if dim == 0 || flat.len() != self.order.len().checked_mul(dim)? {
            return None;
        }
        let mut out = vec![0.0f32; flat.len()];
        for (k, row) in flat.chunks_exact(dim).enumerate() {
            let i = self.order[k];
            out[i * dim..(i + 1) * dim].copy_from_slice(row);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_and_stable() {
        let texts = ["bb", "a", "dddd", "cc", "", "eeee"];
        let o = LengthOrder::longest_first(&texts);
        let sorted = o.sort(&texts).unwrap();
        assert_eq!(sorted, vec!["dddd", "eeee", "bb", "cc", "a", ""]);
        assert_eq!(o.restore(sorted).unwrap(), texts.to_vec());
    }

    #[test]
    fn counts_characters_not_bytes() {
        let texts = ["ééé", "abcd"]; // 6 bytes, 3 chars vs 4 bytes, 4 chars
        let o = LengthOrder::longest_first(&texts);
        assert_eq!(o.sort(&texts).unwrap(), vec!["abcd", "ééé"]);
    }

    #[test]
    fn restore_rows_inverts_the_sort() {
        let texts: Vec<String> = (0..37).map(|i| "x".repeat((i * 7919) % 23)).collect();
        let o = LengthOrder::longest_first(&texts);
        let dim = 3;
        // Row of input i = [i, i, i]; build it in sorted order, restore, compare.
        let sorted_idx = o.sort(&(0..texts.len()).collect::<Vec<_>>()).unwrap();
        let flat: Vec<f32> = sorted_idx.iter().flat_map(|&i| [i as f32; 3]).collect();
        let back = o.restore_rows(&flat, dim).unwrap();
        let want: Vec<f32> = (0..texts.len()).flat_map(|i| [i as f32; 3]).collect();
        assert_eq!(back, want);
        assert!(o.restore_rows(&flat[1..], dim).is_none());
        assert!(o.restore_rows(&flat, 0).is_none());
        assert!(o.restore(vec![0; 5]).is_none());
    }

    #[test]
    fn empty() {
        let o = LengthOrder::longest_first::<&str>(&[]);
        assert!(o.is_empty());
        assert_eq!(o.restore_rows(&[], 384), Some(vec![]));
    }
}
