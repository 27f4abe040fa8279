//! Compressed sparse rows: the graph's adjacency lists, laid out densely by node id.

/// Compressed adjacency lists: `items[offsets[i]..offsets[i + 1]]` belong to node `i`.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    offsets: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    /// Builds from offsets (`n + 1` of them, starting at 0, not decreasing) and items.
    pub(crate) fn from_parts(offsets: Vec<u32>, items: Vec<u32>) -> Csr {
        debug_assert!(offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]));
        Csr { offsets, items }
    }

    /// Builds from per-node lists.
    pub fn from_lists<I: IntoIterator<Item = Vec<u32>>>(lists: I) -> Csr {
        let mut offsets = vec![0u32];
        let mut items = Vec::new();
        for l in lists {
            items.extend_from_slice(&l);
            offsets.push(items.len() as u32);
        }
        Csr { offsets, items }
    }

    /// The transpose: for every `j` in list `i`, `i` in list `j`, in ascending order of `i`.
    pub fn transpose(&self) -> Csr {
        let n = self.len();
        let mut counts = vec![0u32; n + 1];
        for &j in &self.items {
            counts[j as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut items = vec![0u32; self.items.len()];
        for i in 0..n {
            for &j in self.get(i as u32) {
                items[fill[j as usize] as usize] = i as u32;
                fill[j as usize] += 1;
            }
        }
        Csr { offsets, items }
    }

    /// The length of every list.
    pub(crate) fn lens(&self) -> Vec<u32> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list of node `i`.
    pub fn get(&self, i: u32) -> &[u32] {
        let i = i as usize;
        &self.items[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}
