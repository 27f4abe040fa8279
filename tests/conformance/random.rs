//! Random-ish graphs with a reference evaluation computed while they are built, so that every
//! scheduler and every option can be checked against an oracle that shares no code with them.

use forkgraph::{Arg, Graph, Key, Keys, Node, Output, Task, Value};

#[forkgraph::task]
fn rnd_inc(x: i64) -> i64 {
    x.wrapping_add(1)
}

#[forkgraph::task]
fn rnd_add(x: i64, y: i64) -> i64 {
    x.wrapping_add(y)
}

#[forkgraph::task]
fn rnd_sum(xs: Vec<i64>) -> i64 {
    xs.iter().fold(0i64, |a, &b| a.wrapping_add(b))
}

#[forkgraph::task]
fn rnd_sum2(xss: Vec<Vec<i64>>) -> i64 {
    xss.iter()
        .flatten()
        .fold(0i64, |a, &b| a.wrapping_mul(3).wrapping_add(b))
}

#[forkgraph::task]
fn rnd_mix(m: std::collections::BTreeMap<String, i64>) -> i64 {
    m["a"]
        .wrapping_mul(3)
        .wrapping_add(m["b"].wrapping_mul(5))
        .wrapping_sub(m["c"])
}

/// A small deterministic generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn small(&mut self) -> i64 {
        self.below(2001) as i64 - 1000
    }
}

/// A graph, its keys in creation order, and the value of every key.
pub(crate) struct RandomGraph {
    pub(crate) graph: Graph,
    pub(crate) keys: Vec<Key>,
    pub(crate) values: Vec<i64>,
}

impl RandomGraph {
    /// A random request (nested lists, duplicates) and the output it must produce.
    pub(crate) fn request(&self, rng: &mut Rng) -> (Keys, Output) {
        self.request_at(rng, 0)
    }

    fn request_at(&self, rng: &mut Rng, depth: usize) -> (Keys, Output) {
        if depth > 0 && rng.chance(60) || depth > 2 {
            let i = rng.below(self.keys.len());
            return (
                Keys::One(self.keys[i].clone()),
                Output::Value(Value::Int(self.values[i])),
            );
        }
        let len = rng.below(5);
        let (ks, os) = (0..len).map(|_| self.request_at(rng, depth + 1)).unzip();
        (Keys::List(ks), Output::List(os))
    }
}

/// A graph of `n` nodes: literals, aliases and tasks reading earlier nodes (mostly recent ones,
/// so that there are chains to fuse) through plain, nested, list, nested-list and map arguments,
/// under string and tuple keys.
pub(crate) fn random_graph(seed: u64, n: usize) -> RandomGraph {
    let mut rng = Rng::new(seed);
    let mut g = Graph::with_capacity(n);
    let mut keys: Vec<Key> = Vec::with_capacity(n);
    let mut values: Vec<i64> = Vec::with_capacity(n);
    for i in 0..n {
        let k: Key = if rng.chance(30) {
            Key::from(("n", i))
        } else {
            Key::from(format!("n{i}"))
        };
        let pick = |rng: &mut Rng| -> usize {
            if rng.chance(70) {
                i - 1 - rng.below(i.min(4))
            } else {
                rng.below(i)
            }
        };
        let (node, v) = if i < 2 || rng.chance(12) {
            let v = rng.small();
            (Node::Value(Value::Int(v)), v)
        } else if rng.chance(10) {
            let j = pick(&mut rng);
            (Node::Alias(keys[j].clone()), values[j])
        } else {
            let r = |j: usize| Arg::Key(keys[j].clone());
            match rng.below(7) {
                0 | 1 => {
                    let j = pick(&mut rng);
                    (task("rnd_inc", vec![r(j)]), values[j].wrapping_add(1))
                }
                2 => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    (
                        task("rnd_add", vec![r(a), r(b)]),
                        values[a].wrapping_add(values[b]),
                    )
                }
                3 => {
                    let (a, c) = (pick(&mut rng), rng.small());
                    let inner = Arg::Task(Task::new("rnd_inc", vec![r(a)]));
                    (
                        task("rnd_add", vec![inner, Arg::Value(Value::Int(c))]),
                        values[a].wrapping_add(1).wrapping_add(c),
                    )
                }
                4 => {
                    let len = rng.below(5);
                    let mut items = Vec::new();
                    let mut v = 0i64;
                    for _ in 0..len {
                        if rng.chance(80) {
                            let j = pick(&mut rng);
                            items.push(r(j));
                            v = v.wrapping_add(values[j]);
                        } else {
                            let c = rng.small();
                            items.push(Arg::Value(Value::Int(c)));
                            v = v.wrapping_add(c);
                        }
                    }
                    (task("rnd_sum", vec![Arg::List(items)]), v)
                }
                5 => {
                    let mut outer = Vec::new();
                    let mut v = 0i64;
                    for _ in 0..rng.below(4) {
                        let mut inner = Vec::new();
                        for _ in 0..rng.below(3) {
                            let j = pick(&mut rng);
                            inner.push(r(j));
                            v = v.wrapping_mul(3).wrapping_add(values[j]);
                        }
                        outer.push(Arg::List(inner));
                    }
                    (task("rnd_sum2", vec![Arg::List(outer)]), v)
                }
                _ => {
                    let (a, b, c) = (pick(&mut rng), pick(&mut rng), rng.small());
                    let m = vec![
                        ("c".to_owned(), Arg::Value(Value::Int(c))),
                        ("a".to_owned(), r(a)),
                        ("b".to_owned(), Arg::Task(Task::new("rnd_inc", vec![r(b)]))),
                    ];
                    let v = values[a]
                        .wrapping_mul(3)
                        .wrapping_add(values[b].wrapping_add(1).wrapping_mul(5))
                        .wrapping_sub(c);
                    (task("rnd_mix", vec![Arg::Map(m)]), v)
                }
            }
        };
        g.insert(k.clone(), node);
        keys.push(k);
        values.push(v);
    }
    RandomGraph {
        graph: g,
        keys,
        values,
    }
}

fn task(f: &str, args: Vec<Arg>) -> Node {
    Node::Task(Task::new(f, args))
}
