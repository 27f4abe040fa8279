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
        // Counted two places up, summed, then used one place up as the fill cursor of each
        // list: once filled, `offsets[j + 1]` is where list `j` ends. One array, no copy.
        let mut offsets = vec![0u32; n + 2];
        for &j in &self.items {
            offsets[j as usize + 2] += 1;
        }
        for k in 2..n + 2 {
            offsets[k] += offsets[k - 1];
        }
        let mut items = vec![0u32; self.items.len()];
        for (i, list) in self.lists().enumerate() {
            for &j in list {
                let at = &mut offsets[j as usize + 1];
                items[*at as usize] = i as u32;
                *at += 1;
            }
        }
        offsets.truncate(n + 1);
        Csr { offsets, items }
    }

    /// Every list, in node order.
    pub(crate) fn lists(&self) -> impl ExactSizeIterator<Item = &[u32]> + '_ {
        self.offsets
            .windows(2)
            .map(|w| &self.items[w[0] as usize..w[1] as usize])
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

#[cfg(test)]
mod tests {
    use super::Csr;

    /// The transpose holds every edge reversed, each list ascending, whatever the lists (empty
    /// ones, repeats, nodes nobody lists).
    #[test]
    fn transpose_reverses_every_edge() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        assert_eq!(Csr::default().transpose().len(), 0);
        for _ in 0..200 {
            let n = 1 + rand(40) as usize;
            let lists: Vec<Vec<u32>> = (0..n)
                .map(|_| (0..rand(5)).map(|_| rand(n as u64) as u32).collect())
                .collect();
            let t = Csr::from_lists(lists.clone()).transpose();
            assert_eq!(t.len(), n);
            for j in 0..n as u32 {
                let expected: Vec<u32> = (0..n as u32)
                    .flat_map(|i| {
                        let times = lists[i as usize].iter().filter(|&&x| x == j).count();
                        std::iter::repeat_n(i, times)
                    })
                    .collect();
                assert_eq!(t.get(j), expected.as_slice(), "list {j} of {lists:?}");
            }
        }
    }
}
