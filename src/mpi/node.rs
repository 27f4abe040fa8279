//! One rank's side of the cluster: the results it holds, the units it runs in its local
//! process pool, and the messages it answers. Rank 0 has one too: it runs tasks like every
//! other rank.
//!
//! Units go straight to the pool's unit runner as one caller of the pool (no graph, no plan):
//! this thread submits them, and a pool thread waits for their tasks (leading the runner,
//! as a `get` would) so that this thread keeps serving MPI. Each task gets a local tag that
//! maps its result back to its unit.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use forkgraph_worker::exec::SpecRef;
use forkgraph_worker::Value;

use super::comm::{self, Owned, Sending, World};
use super::proto::{self, Input, Msg, WireKind, WireResult, WireTask};
use crate::engine::placeholder;
use crate::graph::TaskOptions;
use crate::key::Key;
use crate::process::runner::{Finished, Labels, PUnit, RunTask};
use crate::process::shared::Shared;
use crate::process::ProcessPool;

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
        received: u64,
    },
    /// Rank 0 asked this rank to stop.
    Stop,
}

/// A unit whose inputs are on their way.
struct Pending {
    tasks: Vec<WireTask>,
    /// Per task, per input: its value once here (`None` for `Prev` and for inputs in flight).
    values: Vec<Vec<Option<Arc<Value>>>>,
    missing: usize,
}

/// What an incoming `Data` is for.
enum Ticket {
    /// A copy of result `id` of `rank`, for the units waiting in `inbound`.
    Copy {
        rank: usize,
        id: u64,
    },
    Fetch(u64),
}

/// Where a unit waits for an input: (unit, task, input).
type Slot = (u64, usize, usize);

/// A unit in the local pool: its tasks' results so far.
struct Running {
    results: Vec<Option<WireResult>>,
    left: usize,
}

/// Log records of the rank's tasks carry no key (rank 0 holds the keys).
struct NoLabels;

impl Labels for NoLabels {
    fn label(&self, _tag: u32) -> Option<&Key> {
        None
    }
}

/// The rank's process pool, driven as one caller of its unit runner.
struct Local {
    /// Keeps the pool (and its workers) alive.
    _pool: ProcessPool,
    shared: Arc<Shared>,
    caller: u64,
    labels: Arc<dyn Labels>,
    /// Tasks submitted and not yet back (the pool thread sleeps while there are none).
    outstanding: Arc<AtomicUsize>,
    kicks: Option<Sender<()>>,
    from_pool: Receiver<Result<Vec<Finished>, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Units staged since the last poll (handed over in one go).
    staged: Vec<PUnit>,
    staged_tasks: usize,
    /// The pool's failure, once it failed: every later unit fails with it.
    broken: Option<String>,
    /// Whether the pool recycles segments (arrays from other ranks then land in recycled
    /// buffers).
    recycles: bool,
}

impl Local {
    fn new(pool: ProcessPool) -> Local {
        let shared = Arc::clone(pool.shared());
        let caller = shared.register(false);
        let outstanding = Arc::new(AtomicUsize::new(0));
        let (kicks, kicked) = crossbeam_channel::unbounded::<()>();
        let (tx, from_pool) = crossbeam_channel::unbounded();
        let thread = {
            let shared = Arc::clone(&shared);
            let outstanding = Arc::clone(&outstanding);
            std::thread::Builder::new()
                .name("forkgraph-mpi-pool".into())
                .spawn(move || pool_loop(&shared, caller, &kicked, &outstanding, &tx))
                .expect("spawn the rank's pool thread")
        };
        Local {
            recycles: pool.recycles_segments(),
            _pool: pool,
            shared,
            caller,
            labels: Arc::new(NoLabels),
            outstanding,
            kicks: Some(kicks),
            from_pool,
            thread: Some(thread),
            staged: Vec::new(),
            staged_tasks: 0,
            broken: None,
        }
    }

    /// Hands the staged units to the runner and wakes the pool thread.
    fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        self.outstanding
            .fetch_add(self.staged_tasks, Ordering::AcqRel);
        self.staged_tasks = 0;
        self.shared
            .submit(self.caller, std::mem::take(&mut self.staged));
        if let Some(k) = &self.kicks {
            let _ = k.send(());
        }
    }

    fn stop(&mut self) {
        self.kicks = None;
        if let Some(t) = self.thread.take() {
            // A thread still waiting for tasks returns at once.
            self.shared.cancel(self.caller);
            let _ = t.join();
        }
    }
}

/// One rank's state.
pub(crate) struct Node {
    pub(crate) world: World,
    held: HashMap<u64, Arc<Value>>,
    /// Copies of results held by other ranks, by (holder, id): fetched once for every unit
    /// here that reads them, kept until rank 0 frees the result.
    copies: HashMap<(usize, u64), Arc<Value>>,
    /// Copies on their way, and the (unit, task, input) slots waiting for each.
    inbound: HashMap<(usize, u64), Vec<Slot>>,
    /// Bytes of inputs fetched from other ranks so far.
    pub(crate) received: u64,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
    /// Messages to this rank itself, not yet handled.
    inbox: Vec<Msg>,
    sending: Vec<Sending>,
    local: Local,
    /// Units in the local pool, and the unit and task of each local tag.
    running: HashMap<u64, Running>,
    tags: HashMap<u32, (u64, u32)>,
    next_tag: u32,
    /// Messages sent to other ranks (this rank's count).
    pub(crate) messages: u64,
}

impl Node {
    /// A node running tasks in `pool`.
    pub(crate) fn new(world: World, pool: ProcessPool) -> Node {
        Node {
            world,
            held: HashMap::default(),
            copies: HashMap::default(),
            inbound: HashMap::default(),
            received: 0,
            next_id: 0,
            pending: HashMap::default(),
            tickets: HashMap::default(),
            next_ticket: 0,
            inbox: Vec::new(),
            sending: Vec::new(),
            local: Local::new(pool),
            running: HashMap::default(),
            tags: HashMap::default(),
            next_tag: 0,
            messages: 0,
        }
    }

    /// Results held here now (copies of other ranks' results included).
    pub(crate) fn held(&self) -> usize {
        self.held.len() + self.copies.len()
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

    /// Sends a message already encoded (see [`proto::encode`]) to another rank.
    ///
    /// # Errors
    /// When MPI fails.
    pub(crate) fn send_bytes(&mut self, dest: usize, bytes: Vec<u8>) -> Result<(), String> {
        self.messages += 1;
        self.sending.push(Sending::start(
            Owned::Bytes(bytes),
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
            let value = self.held.get(&id).cloned();
            match value.as_deref() {
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
                _ => small.push((ticket, value.map(|v| Value::clone(&v)))),
            }
        }
        if small.is_empty() {
            Ok(())
        } else {
            self.send(dest, Msg::Data { items: small })
        }
    }

    /// Receives the raw bytes announced by a [`Msg::RawData`] straight into shared memory the
    /// rank's workers map: a recycled landing buffer when the pool recycles segments (its
    /// pages are already faulted in, and it is reused once nobody maps it), else a new sealed
    /// segment.
    fn recv_array(
        &self,
        source: usize,
        dtype: forkgraph_worker::DType,
        len: u64,
    ) -> Result<Value, String> {
        use forkgraph_worker::segments::landing::Landing;
        use forkgraph_worker::{Array, Buffer};
        let n = usize::try_from(len).map_err(|_| format!("an array of {len} bytes"))?;
        let buffer = if self.local.recycles {
            let mut landing = Landing::new(n)
                .map_err(|e| format!("cannot make a {len}-byte segment for an input: {e}"))?;
            comm::recv_parts(source, proto::RAW_TAG, landing.bytes_mut())?;
            let seg = landing
                .finish()
                .map_err(|e| format!("cannot share a {len}-byte input: {e}"))?;
            Buffer::from_storage(Arc::new(seg))
        } else {
            let mut seg = forkgraph_worker::SharedVec::<u8>::zeroed(n)
                .map_err(|e| format!("cannot make a {len}-byte segment for an input: {e}"))?;
            comm::recv_parts(source, proto::RAW_TAG, &mut seg)?;
            let Value::Array(a) = seg
                .try_into_value()
                .map_err(|e| format!("cannot share a {len}-byte input: {e}"))?
            else {
                return Err("a shared vector that is not an array".into());
            };
            a.buffer().clone()
        };
        Array::from_buffer(dtype, buffer)
            .map(Value::Array)
            .map_err(|e| format!("an array from rank {source}: {e}"))
    }

    /// Asks the holder of result `id` for it; an [`Event::Fetched`] with `tag` follows.
    ///
    /// # Errors
    /// When MPI fails.
    pub(crate) fn fetch(&mut self, rank: usize, id: u64, tag: u64) -> Result<(), String> {
        if rank == self.world.rank {
            let value = self.held.get(&id).map(|v| Value::clone(v));
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
        self.local.flush();
        while let Ok(f) = self.local.from_pool.try_recv() {
            progress = true;
            self.finished(f)?;
        }
        Ok(progress)
    }

    /// Waits up to `d` for the local pool (the idle back-off: no busy polling).
    pub(crate) fn idle(&mut self, d: Duration) -> Result<(), String> {
        self.local.flush();
        if let Ok(f) = self.local.from_pool.recv_timeout(d) {
            self.finished(f)?;
        }
        Ok(())
    }

    /// Whether sends are still in flight.
    pub(crate) fn sends_pending(&self) -> bool {
        !self.sending.is_empty()
    }

    /// Keeps the results of finished tasks and reports the units they complete to rank 0 in
    /// one message.
    fn finished(&mut self, batch: Result<Vec<Finished>, String>) -> Result<(), String> {
        let mut units = Vec::new();
        match batch {
            Ok(batch) => {
                for f in batch {
                    let Some((unit, i)) = self.tags.remove(&f.tag) else {
                        continue;
                    };
                    let r = match f.result {
                        Ok(v) if Arc::ptr_eq(&v, placeholder()) => WireResult::Unsent,
                        Ok(v) => {
                            let id = self.next_id;
                            self.next_id += 1;
                            let bytes = proto::bytes(&v);
                            self.held.insert(id, v);
                            WireResult::Held { id, bytes }
                        }
                        Err(e) => WireResult::Failed {
                            function: e.function,
                            kind: WireKind::from_kind(e.kind, |_| u32::MAX),
                        },
                    };
                    let Some(run) = self.running.get_mut(&unit) else {
                        continue;
                    };
                    run.results[i as usize] = Some(r);
                    run.left -= 1;
                    if run.left == 0 {
                        let run = self.running.remove(&unit).expect("a running unit");
                        units.push((unit, run.results.into_iter().flatten().collect()));
                    }
                }
            }
            Err(e) => {
                // The pool failed: every unit in it fails, and so does every later one.
                self.tags.clear();
                for (unit, run) in self.running.drain() {
                    let results = run
                        .results
                        .iter()
                        .map(|_| WireResult::Broken(e.clone()))
                        .collect();
                    units.push((unit, results));
                }
                self.local.broken = Some(e);
            }
        }
        if units.is_empty() {
            return Ok(());
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
                let value = self.recv_array(source, dtype, len)?;
                self.deliver(source, ticket, Some(value), events)?;
            }
            Msg::Data { items } => {
                for (ticket, value) in items {
                    self.deliver(source, ticket, value, events)?;
                }
            }
            Msg::Free { ids, copies } => {
                for id in ids {
                    self.held.remove(&id);
                }
                for (rank, id) in copies {
                    self.copies.remove(&(rank as usize, id));
                }
            }
            Msg::Count => {
                let counts = Msg::Counts {
                    held: self.held() as u64,
                    segments: forkgraph_worker::segments::stats().0,
                    received: self.received,
                };
                self.send(source, counts)?;
            }
            Msg::Counts {
                held,
                segments,
                received,
            } => events.push(Event::Counts {
                rank: source,
                held,
                segments,
                received,
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
            Some(Ticket::Copy { rank, id }) => {
                let v = Arc::new(value.ok_or_else(|| {
                    format!("rank {source} no longer holds result {id}, an input of a unit")
                })?);
                self.received += proto::bytes(&v);
                self.copies.insert((rank, id), Arc::clone(&v));
                for (unit, task, input) in self.inbound.remove(&(rank, id)).unwrap_or_default() {
                    let p = self
                        .pending
                        .get_mut(&unit)
                        .ok_or("an input for an unknown unit")?;
                    p.values[task][input] = Some(Arc::clone(&v));
                    p.missing -= 1;
                    if p.missing == 0 {
                        let p = self.pending.remove(&unit).expect("pending unit");
                        self.ready(unit, p)?;
                    }
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
                    Input::Inline(v) => Some(Arc::new(v.clone())),
                    Input::Prev => None,
                    Input::Held { rank, id } if *rank as usize == self.world.rank => {
                        Some(self.held.get(id).cloned().ok_or_else(|| {
                            format!("rank {}: result {id} is not held here", self.world.rank)
                        })?)
                    }
                    Input::Held { rank, id } => {
                        let key = (*rank as usize, *id);
                        if let Some(v) = self.copies.get(&key) {
                            Some(Arc::clone(v))
                        } else {
                            p.missing += 1;
                            let waiting = self.inbound.entry(key).or_default();
                            if waiting.is_empty() {
                                wants.push(key);
                            }
                            waiting.push((unit, ti, ii));
                            None
                        }
                    }
                });
            }
            p.values.push(vals);
        }
        p.tasks = tasks;
        // One request per holding rank, one item per result not already on its way.
        let mut by_rank: HashMap<usize, Vec<(u64, u64)>> = HashMap::default();
        for (rank, id) in wants {
            let ticket = self.ticket(Ticket::Copy { rank, id });
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

    /// Stages a unit whose inputs are all here for the local pool (handed over at the end of
    /// this poll).
    fn ready(&mut self, unit: u64, p: Pending) -> Result<(), String> {
        let jobs = run_tasks(p.tasks.into_iter().zip(p.values).collect());
        self.run_here(unit, jobs)
    }

    /// A result held here (for rank 0's executor: inputs of units it runs here).
    pub(crate) fn held_value(&self, id: u64) -> Option<Arc<Value>> {
        self.held.get(&id).cloned()
    }

    /// Stages a unit whose inputs are all here for the local pool (handed over at the end of
    /// this poll); its tasks' tags are assigned here.
    pub(crate) fn run_here(&mut self, unit: u64, mut jobs: Vec<RunTask>) -> Result<(), String> {
        let n = jobs.len();
        if let Some(e) = &self.local.broken {
            let results = (0..n).map(|_| WireResult::Broken(e.clone())).collect();
            let done = Msg::Done {
                units: vec![(unit, results)],
                pid: std::process::id(),
            };
            return self.send(0, done);
        }
        for (i, j) in jobs.iter_mut().enumerate() {
            j.tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            self.tags.insert(j.tag, (unit, i as u32));
        }
        self.running.insert(
            unit,
            Running {
                results: (0..n).map(|_| None).collect(),
                left: n,
            },
        );
        self.local.staged_tasks += n;
        self.local.staged.push(PUnit::new(
            self.local.caller,
            Arc::clone(&self.local.labels),
            jobs,
        ));
        Ok(())
    }

    /// Stops the pool thread (the pool itself stops when its last handle drops).
    pub(crate) fn shut_down(&mut self) {
        self.local.stop();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The pool thread: waits for the rank's units in the local pool (leading its runner while
/// they run, as a `get` does) and hands finished tasks to the MPI thread; sleeps on `kicks`
/// while nothing is outstanding.
fn pool_loop(
    shared: &Shared,
    caller: u64,
    kicks: &Receiver<()>,
    outstanding: &AtomicUsize,
    tx: &Sender<Result<Vec<Finished>, String>>,
) {
    let mut out = Vec::new();
    loop {
        if outstanding.load(Ordering::Acquire) == 0 {
            if kicks.recv().is_err() {
                break;
            }
            continue;
        }
        while kicks.try_recv().is_ok() {}
        match shared.wait(caller, &mut out, None) {
            Ok(_) => {
                outstanding.fetch_sub(out.len(), Ordering::AcqRel);
                if tx.send(Ok(std::mem::take(&mut out))).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                break;
            }
        }
    }
    shared.leave(caller);
}

/// A unit's tasks as the runner takes them (tags assigned later), inputs in order (the
/// previous task's slot holds the engine's placeholder).
fn run_tasks(tasks: Vec<(WireTask, Vec<Option<Arc<Value>>>)>) -> Vec<RunTask> {
    tasks
        .into_iter()
        .map(|(t, vals)| {
            let prev = t
                .inputs
                .iter()
                .position(|i| matches!(i, Input::Prev))
                .map(|i| i as u32);
            let mut options = TaskOptions::new();
            options.retries = t.retries;
            options.timeout = t.timeout_ms.map(Duration::from_millis);
            RunTask {
                spec: SpecRef::new(t.spec),
                inputs: vals
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| Arc::clone(placeholder())))
                    .collect(),
                prev,
                send_back: t.send_back,
                options,
                tag: 0,
            }
        })
        .collect()
}
