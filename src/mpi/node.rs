//! One rank's side of the cluster: the results it holds, the units it runs in its local
//! process pool (a thread waits on the pool so that this thread keeps serving MPI), and the
//! messages it answers. Rank 0 has one too: it runs tasks like every other rank.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use forkgraph_worker::{Registry, SpecArg, TaskSpec, Value};

use super::comm::{self, Owned, Sending, World};
use super::proto::{self, Input, Msg, WireKind, WireResult, WireTask};
use crate::engine::Output;
use crate::error::Error;
use crate::graph::{Arg, Graph, Task, TaskOptions};
use crate::key::{Key, Keys};
use crate::process::ProcessPool;
use crate::scheduler::{GetOptions, Scheduler};

/// What the node hands to its owner (rank 0's executor).
#[derive(Debug)]
pub(crate) enum Event {
    /// A unit finished on `rank`.
    Done {
        rank: usize,
        unit: u64,
        results: Vec<WireResult>,
        pid: u32,
    },
    /// A value asked for with [`Node::fetch`] arrived.
    Fetched { tag: u64, value: Option<Value> },
    /// A rank's counts.
    Counts {
        rank: usize,
        held: u64,
        segments: u64,
    },
    /// Rank 0 asked this rank to stop.
    Stop,
}

/// A unit whose inputs are on their way.
struct Pending {
    tasks: Vec<WireTask>,
    /// Per task, per input: its value once here (`None` for `Prev` and for inputs in flight).
    values: Vec<Vec<Option<Value>>>,
    missing: usize,
}

/// What an incoming `Data` is for.
enum Ticket {
    Input {
        unit: u64,
        task: usize,
        input: usize,
    },
    Fetch(u64),
}

/// A unit ready to run: its tasks and their input values (`None`: the previous task's result).
struct Ready {
    unit: u64,
    tasks: Vec<(WireTask, Vec<Option<Value>>)>,
}

/// A unit the pool thread finished: per task, its value or the wire failure.
struct Finished {
    unit: u64,
    results: Vec<Result<Value, WireResult>>,
}

/// One rank's state.
pub(crate) struct Node {
    pub(crate) world: World,
    held: HashMap<u64, Value>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
    /// Messages to this rank itself, not yet handled.
    inbox: Vec<Msg>,
    sending: Vec<Sending>,
    to_pool: Option<Sender<Ready>>,
    /// Batches the pool finished.
    from_pool: Receiver<Vec<Finished>>,
    pool_thread: Option<std::thread::JoinHandle<()>>,
    /// Messages sent to other ranks (this rank's count).
    pub(crate) messages: u64,
}

impl Node {
    /// A node running tasks in `pool`.
    pub(crate) fn new(world: World, pool: ProcessPool) -> Node {
        let (to_pool, rx) = crossbeam_channel::unbounded::<Ready>();
        let (tx, from_pool) = crossbeam_channel::unbounded();
        let pool_thread = std::thread::Builder::new()
            .name("forkgraph-mpi-pool".into())
            .spawn(move || pool_loop(&pool, &rx, &tx))
            .expect("spawn the rank's pool thread");
        Node {
            world,
            held: HashMap::new(),
            next_id: 0,
            pending: HashMap::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            inbox: Vec::new(),
            sending: Vec::new(),
            to_pool: Some(to_pool),
            from_pool,
            pool_thread: Some(pool_thread),
            messages: 0,
        }
    }

    /// Results held here now.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Sends `msg` to `dest` (to itself through the inbox).
    ///
    /// # Errors
    /// When MPI fails.
    pub(crate) fn send(&mut self, dest: usize, msg: Msg) -> Result<(), String> {
        if dest == self.world.rank {
            self.inbox.push(msg);
            return Ok(());
        }
        self.messages += 1;
        self.sending.push(Sending::start(
            Owned::Bytes(proto::encode(&msg)),
            dest,
            proto::TAG,
            proto::TAG + 1,
        )?);
        Ok(())
    }

    /// Answers a `Want`: each large array as a header and its raw bytes (sent from where they
    /// lie), the other values in one message.
    fn answer(&mut self, dest: usize, items: Vec<(u64, u64)>) -> Result<(), String> {
        let mut small = Vec::new();
        for (id, ticket) in items {
            match self.held.get(&id).cloned() {
                Some(Value::Array(a)) if a.as_bytes().len() >= proto::RAW_MIN => {
                    let len = a.as_bytes().len() as u64;
                    self.send(
                        dest,
                        Msg::RawData {
                            ticket,
                            dtype: a.dtype(),
                            len,
                        },
                    )?;
                    self.sending.push(Sending::start(
                        Owned::Array(a.buffer().clone()),
                        dest,
                        proto::RAW_TAG,
                        proto::RAW_TAG,
                    )?);
                }
                value => small.push((ticket, value)),
            }
        }
        if small.is_empty() {
            Ok(())
        } else {
            self.send(dest, Msg::Data { items: small })
        }
    }

    /// Receives the raw bytes announced by a [`Msg::RawData`] into a new shared segment.
    fn recv_array(
        source: usize,
        dtype: forkgraph_worker::DType,
        len: u64,
    ) -> Result<Value, String> {
        use forkgraph_worker::IntoValue;
        let mut seg = forkgraph_worker::SharedVec::<u8>::zeroed(len as usize)
            .map_err(|e| format!("cannot make a {len}-byte segment for an input: {e}"))?;
        comm::recv_parts(source, proto::RAW_TAG, &mut seg)?;
        let Value::Array(a) = seg.into_value() else {
            return Err("a shared vector that is not an array".into());
        };
        forkgraph_worker::Array::from_buffer(dtype, a.buffer().clone())
            .map(Value::Array)
            .map_err(|e| format!("an array from rank {source}: {e}"))
    }

    /// Asks the holder of result `id` for it; an [`Event::Fetched`] with `tag` follows.
    ///
    /// # Errors
    /// When MPI fails.
    pub(crate) fn fetch(&mut self, rank: usize, id: u64, tag: u64) -> Result<(), String> {
        if rank == self.world.rank {
            let value = self.held.get(&id).cloned();
            let ticket = self.ticket(Ticket::Fetch(tag));
            self.inbox.push(Msg::Data {
                items: vec![(ticket, value)],
            });
            return Ok(());
        }
        let ticket = self.ticket(Ticket::Fetch(tag));
        self.send(
            rank,
            Msg::Want {
                items: vec![(id, ticket)],
            },
        )
    }

    fn ticket(&mut self, t: Ticket) -> u64 {
        let n = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(n, t);
        n
    }

    /// Handles everything that arrived (MPI, own inbox, the local pool) and finishes sends;
    /// appends what the owner must see. Returns whether anything happened.
    ///
    /// # Errors
    /// When MPI fails or a peer sent nonsense: the job cannot go on.
    pub(crate) fn poll(&mut self, events: &mut Vec<Event>) -> Result<bool, String> {
        let mut progress = false;
        let mut i = 0;
        while i < self.sending.len() {
            if self.sending[i].test()? {
                self.sending.swap_remove(i);
            } else {
                i += 1;
            }
        }
        while let Some((source, first)) = comm::try_recv(proto::TAG)? {
            progress = true;
            let total = proto::announced(&first)?;
            let msg = if total > first.len() {
                let mut whole = first;
                let got = whole.len();
                whole.resize(total, 0);
                comm::recv_parts(source, proto::TAG + 1, &mut whole[got..])?;
                proto::decode(&whole)?
            } else {
                proto::decode(&first)?
            };
            self.handle(source, msg, events)?;
        }
        while !self.inbox.is_empty() {
            progress = true;
            let me = self.world.rank;
            for m in std::mem::take(&mut self.inbox) {
                self.handle(me, m, events)?;
            }
        }
        while let Ok(f) = self.from_pool.try_recv() {
            progress = true;
            self.finished(f)?;
        }
        Ok(progress)
    }

    /// Waits up to `d` for the local pool (the idle back-off: no busy polling).
    pub(crate) fn idle(&mut self, d: Duration) -> Result<(), String> {
        if let Ok(f) = self.from_pool.recv_timeout(d) {
            self.finished(f)?;
        }
        Ok(())
    }

    /// Whether sends are still in flight.
    pub(crate) fn sends_pending(&self) -> bool {
        !self.sending.is_empty()
    }

    /// Keeps a finished batch's results and reports them to rank 0 in one message.
    fn finished(&mut self, batch: Vec<Finished>) -> Result<(), String> {
        let mut units = Vec::with_capacity(batch.len());
        for f in batch {
            let results = f
                .results
                .into_iter()
                .map(|r| match r {
                    Ok(v) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        let bytes = proto::bytes(&v);
                        self.held.insert(id, v);
                        WireResult::Held { id, bytes }
                    }
                    Err(w) => w,
                })
                .collect();
            units.push((f.unit, results));
        }
        self.send(
            0,
            Msg::Done {
                units,
                pid: std::process::id(),
            },
        )
    }

    fn handle(&mut self, source: usize, msg: Msg, events: &mut Vec<Event>) -> Result<(), String> {
        match msg {
            Msg::Run { units } => {
                for (unit, tasks) in units {
                    self.accept(unit, tasks)?;
                }
            }
            Msg::Want { items } => self.answer(source, items)?,
            Msg::RawData { ticket, dtype, len } => {
                let value = Node::recv_array(source, dtype, len)?;
                self.deliver(source, ticket, Some(value), events)?;
            }
            Msg::Data { items } => {
                for (ticket, value) in items {
                    self.deliver(source, ticket, value, events)?;
                }
            }
            Msg::Free { ids } => {
                for id in ids {
                    self.held.remove(&id);
                }
            }
            Msg::Count => {
                let counts = Msg::Counts {
                    held: self.held.len() as u64,
                    segments: forkgraph_worker::segments::stats().0,
                };
                self.send(source, counts)?;
            }
            Msg::Counts { held, segments } => events.push(Event::Counts {
                rank: source,
                held,
                segments,
            }),
            Msg::Done { units, pid } => {
                events.extend(units.into_iter().map(|(unit, results)| Event::Done {
                    rank: source,
                    unit,
                    results,
                    pid,
                }));
            }
            Msg::Stop => events.push(Event::Stop),
        }
        Ok(())
    }

    /// A value asked for with `ticket` arrived from `source`.
    fn deliver(
        &mut self,
        source: usize,
        ticket: u64,
        value: Option<Value>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        match self.tickets.remove(&ticket) {
            Some(Ticket::Fetch(tag)) => events.push(Event::Fetched { tag, value }),
            Some(Ticket::Input { unit, task, input }) => {
                let v = value
                    .ok_or_else(|| format!("rank {source} no longer holds an input of a unit"))?;
                let p = self
                    .pending
                    .get_mut(&unit)
                    .ok_or("an input for an unknown unit")?;
                p.values[task][input] = Some(v);
                p.missing -= 1;
                if p.missing == 0 {
                    let p = self.pending.remove(&unit).expect("pending unit");
                    self.ready(unit, p)?;
                }
            }
            None => return Err(format!("an answer from rank {source} nobody asked for")),
        }
        Ok(())
    }

    /// Takes a unit: asks for its inputs held elsewhere, or queues it at once.
    fn accept(&mut self, unit: u64, tasks: Vec<WireTask>) -> Result<(), String> {
        let mut p = Pending {
            values: Vec::with_capacity(tasks.len()),
            tasks: Vec::new(),
            missing: 0,
        };
        let mut wants = Vec::new();
        for (ti, t) in tasks.iter().enumerate() {
            let mut vals = Vec::with_capacity(t.inputs.len());
            for (ii, inp) in t.inputs.iter().enumerate() {
                vals.push(match inp {
                    Input::Inline(v) => Some(v.clone()),
                    Input::Prev => None,
                    Input::Held { rank, id } if *rank as usize == self.world.rank => {
                        Some(self.held.get(id).cloned().ok_or_else(|| {
                            format!("rank {}: result {id} is not held here", self.world.rank)
                        })?)
                    }
                    Input::Held { rank, id } => {
                        p.missing += 1;
                        wants.push((*rank as usize, *id, ti, ii));
                        None
                    }
                });
            }
            p.values.push(vals);
        }
        p.tasks = tasks;
        // One request per holding rank.
        let mut by_rank: HashMap<usize, Vec<(u64, u64)>> = HashMap::new();
        for (rank, id, task, input) in wants {
            let ticket = self.ticket(Ticket::Input { unit, task, input });
            by_rank.entry(rank).or_default().push((id, ticket));
        }
        for (rank, items) in by_rank {
            self.send(rank, Msg::Want { items })?;
        }
        if p.missing == 0 {
            self.ready(unit, p)?;
        } else {
            self.pending.insert(unit, p);
        }
        Ok(())
    }

    fn ready(&mut self, unit: u64, p: Pending) -> Result<(), String> {
        let ready = Ready {
            unit,
            tasks: p.tasks.into_iter().zip(p.values).collect(),
        };
        self.to_pool
            .as_ref()
            .and_then(|t| t.send(ready).ok())
            .ok_or_else(|| "the rank's pool thread is gone".to_owned())
    }

    /// Stops the pool thread (the pool itself stops when its last handle drops).
    pub(crate) fn shut_down(&mut self) {
        self.to_pool = None;
        if let Some(t) = self.pool_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The pool thread: runs every ready unit queued at the moment as one sub-graph of the rank's
/// pool (`keep_going`, so one task's failure is that task's alone).
fn pool_loop(pool: &ProcessPool, rx: &Receiver<Ready>, tx: &Sender<Vec<Finished>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        if tx.send(run_batch(pool, batch)).is_err() {
            return;
        }
    }
}

fn task_key(node: u32) -> Key {
    Key::from(("\u{1}forkgraph-mpi", i64::from(node)))
}

fn run_batch(pool: &ProcessPool, batch: Vec<Ready>) -> Vec<Finished> {
    let mut g = Graph::new();
    let mut requested = Vec::new();
    let mut inputs = 0i64;
    let mut node_of: HashMap<Key, u32> = HashMap::new();
    let mut sizes = Vec::new();
    for r in &batch {
        sizes.push(r.tasks.len());
        let mut prev: Option<Key> = None;
        for (t, vals) in &r.tasks {
            let keys: Vec<Key> = vals
                .iter()
                .map(|v| match v {
                    Some(v) => {
                        let k = Key::from(("\u{1}forkgraph-mpi-input", inputs));
                        inputs += 1;
                        g.insert(k.clone(), v.clone());
                        k
                    }
                    None => prev.clone().expect("a chain link after the first"),
                })
                .collect();
            let key = task_key(t.node);
            g.insert(key.clone(), to_task(&t.spec, &keys));
            if t.retries.is_some() || t.timeout_ms.is_some() {
                let mut o = TaskOptions::new();
                o.retries = t.retries;
                o.timeout = t.timeout_ms.map(Duration::from_millis);
                g.set_options(key.clone(), o);
            }
            node_of.insert(key.clone(), t.node);
            requested.push(Keys::One(key.clone()));
            prev = Some(key);
        }
    }
    let out = pool.get_with(
        &g,
        &Keys::List(requested),
        &GetOptions::new().keep_going(true),
    );
    let mut flat: Vec<Result<Value, WireResult>> = match out {
        Ok(Output::List(l)) => l
            .into_iter()
            .map(|o| match o {
                Output::Value(v) => Ok(v),
                Output::Failed(e) => Err(WireResult::Failed {
                    function: e.function.clone(),
                    kind: WireKind::from_kind(e.kind.clone(), |k| {
                        node_of.get(k).copied().unwrap_or(u32::MAX)
                    }),
                }),
                Output::List(_) => Err(WireResult::Broken("a nested output".into())),
            })
            .collect(),
        Ok(_) => vec![],
        Err(Error::Task(e)) => sizes
            .iter()
            .flat_map(|&n| std::iter::repeat_n((), n))
            .map(|()| {
                Err(WireResult::Failed {
                    function: e.function.clone(),
                    kind: WireKind::from_kind(e.kind.clone(), |k| {
                        node_of.get(k).copied().unwrap_or(u32::MAX)
                    }),
                })
            })
            .collect(),
        Err(e) => sizes
            .iter()
            .flat_map(|&n| std::iter::repeat_n((), n))
            .map(|()| Err(WireResult::Broken(e.to_string())))
            .collect(),
    };
    let mut out = Vec::with_capacity(batch.len());
    let mut rest = flat.drain(..);
    for (r, n) in batch.iter().zip(sizes) {
        let results: Vec<_> = rest.by_ref().take(n).collect();
        out.push(Finished {
            unit: r.unit,
            results,
        });
    }
    out
}

/// The task of `spec` with input `i` read from key `inputs[i]`.
fn to_task(spec: &TaskSpec, inputs: &[Key]) -> Task {
    let name = Registry::global()
        .get(spec.func)
        .map_or("?", |f| f.name)
        .to_owned();
    Task::new(name, spec.args.iter().map(|a| to_arg(a, inputs)).collect())
}

fn to_arg(a: &SpecArg, inputs: &[Key]) -> Arg {
    match a {
        SpecArg::Lit(v) => Arg::Value(v.clone()),
        SpecArg::Input(i) => Arg::Key(inputs[*i as usize].clone()),
        SpecArg::List(l) => Arg::List(l.iter().map(|a| to_arg(a, inputs)).collect()),
        SpecArg::Map(m) => Arg::Map(
            m.iter()
                .map(|(k, a)| (k.clone(), to_arg(a, inputs)))
                .collect(),
        ),
        SpecArg::Task(t) => Arg::Task(to_task(t, inputs)),
    }
}
