//! Load order under foreign keys: parents before children. Tables that reference each other (a
//! cycle, or a table referencing itself) form one unit loaded in one transaction, so cycles are
//! handled rather than refused.

/// Units of table indexes, in an order where every unit's parents come earlier. `edges` are
/// (child, parent) pairs of indexes into `0..n`.
pub fn load_units(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    // Tarjan's algorithm emits strongly connected components in reverse topological order of
    // the child -> parent graph, i.e. parents before children.
    let mut adj = vec![Vec::new(); n];
    for &(child, parent) in edges {
        adj[child].push(parent);
    }
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut work = vec![(start, 0usize)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut ei)) = work.last_mut() {
            if *ei < adj[v].len() {
                let w = adj[v][*ei];
                *ei += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut unit = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        unit.push(w);
                        if w == v {
                            break;
                        }
                    }
                    unit.sort_unstable();
                    out.push(unit);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(units: &[Vec<usize>], t: usize) -> usize {
        units.iter().position(|u| u.contains(&t)).unwrap()
    }

    #[test]
    fn parents_come_first_and_cycles_share_a_unit() {
        // 0 <- 1 <- 2 (chain), 3 <-> 4 (cycle), 5 references itself, 4 -> 0.
        let edges = [(1, 0), (2, 1), (3, 4), (4, 3), (5, 5), (4, 0)];
        let units = load_units(6, &edges);
        assert_eq!(units.iter().map(Vec::len).sum::<usize>(), 6);
        assert!(position(&units, 0) < position(&units, 1));
        assert!(position(&units, 1) < position(&units, 2));
        assert_eq!(position(&units, 3), position(&units, 4));
        assert!(position(&units, 0) < position(&units, 3));
        assert_eq!(units[position(&units, 5)], vec![5]);
        for (child, parent) in edges {
            assert!(position(&units, parent) <= position(&units, child));
        }
    }

    #[test]
    fn no_edges_keeps_every_table_alone() {
        assert_eq!(load_units(3, &[]).len(), 3);
        assert!(load_units(0, &[]).is_empty());
    }
}
