//! Rank 0's executor for the engine: places units on ranks, keeps results where they were
//! produced, and hands the engine stand-ins for them.
//!
//! The engine is unchanged: a result kept on a rank is an `Arc<Value>` of its own (a `Null`
//! stand-in, or the real value when it was fetched) that this executor maps back to (rank, id,
//! bytes) by address when a dependent is submitted. The executor keeps one clone of each; when
//! it is the last one, the engine has released the slot (its last dependent finished), and the
//! result is freed on its rank. Requested outputs (and, with callbacks, every result) are
//! fetched to rank 0 when they finish, so that the engine collects real values.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use forkgraph_worker::Value;

use super::node::{Event, Node};
use super::proto::{self, Input, InputRef, Msg, WireResult, WireTask, WireTaskRef};
use super::{Backoff, Counters};
use crate::callbacks::WorkerId;
use crate::engine::{Done, Executor, Failure, Job, Ran};
use crate::error::Error;
use crate::plan::{Kind, Plan};
use crate::process::runner::RunTask;

/// Units a rank with `workers` workers may have queued or running: enough that each batch of
/// its pool amortizes the message and planning costs over many small tasks.
fn queue(workers: usize) -> usize {
    256 * workers.max(1)
}

/// A result kept on a rank.
#[derive(Debug, Clone, Copy)]
struct Handle {
    rank: usize,
    id: u64,
    bytes: u64,
}

struct Unit {
    rank: usize,
    nodes: Vec<u32>,
    /// Whether the engine wants every result back (callbacks watch values).
    fetch_all: bool,
    /// When it was sent (`host::now`, 0 when not timed): callbacks see a unit's tasks run
    /// from then until rank 0 learned they finished.
    sent: u64,
}

/// Where a staged task finds one input: `None` the previous task, else a held result or
/// (`Err`) the job's own input value, sent along.
type StagedInput = Option<Result<Handle, ()>>;

/// A unit submitted and not yet sent: the engine's jobs and where each input is.
struct Staged {
    unit: u64,
    jobs: Vec<Job>,
    inputs: Vec<Vec<StagedInput>>,
}

impl Staged {
    fn borrowed(&self) -> (u64, Vec<WireTaskRef<'_>>) {
        let tasks = self
            .jobs
            .iter()
            .zip(&self.inputs)
            .map(|(j, ins)| WireTaskRef {
                node: j.node,
                spec: j.spec.view(),
                inputs: ins
                    .iter()
                    .zip(&j.inputs)
                    .map(|(i, v)| match i {
                        None => InputRef::Prev,
                        Some(Ok(h)) => InputRef::Held {
                            rank: h.rank as u32,
                            id: h.id,
                        },
                        Some(Err(())) => InputRef::Inline(v),
                    })
                    .collect(),
                retries: j.options.retries,
                timeout_ms: j.options.timeout.map(|d| d.as_millis() as u64),
                send_back: j.send_back,
            })
            .collect();
        (self.unit, tasks)
    }

    /// The tasks as this rank's pool takes them, every held input being here.
    fn run_tasks(self, node: &Node) -> Result<Vec<RunTask>, String> {
        self.jobs
            .into_iter()
            .zip(self.inputs)
            .map(|(j, ins)| {
                let inputs = ins
                    .iter()
                    .zip(j.inputs)
                    .map(|(i, v)| match i {
                        None => Ok(Arc::clone(crate::engine::placeholder())),
                        Some(Ok(h)) => node
                            .held_value(h.id)
                            .ok_or_else(|| format!("result {} is not held on rank 0", h.id)),
                        Some(Err(())) => Ok(v),
                    })
                    .collect::<Result<_, String>>()?;
                Ok(RunTask {
                    spec: j.spec,
                    inputs,
                    prev: j.prev,
                    send_back: j.send_back,
                    options: j.options,
                    tag: 0,
                })
            })
            .collect()
    }

    fn owned(self) -> (u64, Vec<WireTask>) {
        let tasks = self
            .jobs
            .into_iter()
            .zip(self.inputs)
            .map(|(j, ins)| WireTask {
                node: j.node,
                spec: j.spec.to_spec(),
                inputs: ins
                    .into_iter()
                    .zip(&j.inputs)
                    .map(|(i, v)| match i {
                        None => Input::Prev,
                        Some(Ok(h)) => Input::Held {
                            rank: h.rank as u32,
                            id: h.id,
                        },
                        Some(Err(())) => Input::Inline(Value::clone(v)),
                    })
                    .collect(),
                retries: j.options.retries,
                timeout_ms: j.options.timeout.map(|d| d.as_millis() as u64),
                send_back: j.send_back,
            })
            .collect();
        (self.unit, tasks)
    }
}

/// A finished task whose value is on its way to rank 0.
struct Fetching {
    node: u32,
    handle: Handle,
    ran: Ran,
}

pub(crate) struct MpiExec<'a> {
    node: &'a mut Node,
    plan: &'a Plan,
    counters: &'a mut Counters,
    /// Nodes whose values rank 0 needs (requested, or read by a requested alias).
    needed: Vec<bool>,
    /// Workers per rank, and units in flight per rank.
    workers: Vec<usize>,
    load: Vec<usize>,
    /// Results kept on ranks, by the address of their stand-in.
    handles: HashMap<usize, Handle>,
    kept: Vec<Arc<Value>>,
    /// Ranks that received a copy of a result held elsewhere, by (holder, id): a rank fetches
    /// a result once and keeps the copy until the result is freed.
    copies: HashMap<(usize, u64), Vec<usize>>,
    /// Results kept since `kept` was last scanned for released ones.
    kept_since_scan: usize,
    units: HashMap<u64, Unit>,
    next_unit: u64,
    fetching: HashMap<u64, Fetching>,
    next_fetch: u64,
    done: Vec<Done>,
    error: Option<String>,
    events: Vec<Event>,
    /// Units submitted since the last wait, by rank: sent as one message per rank.
    outbox: Vec<Vec<Staged>>,
}

impl<'a> MpiExec<'a> {
    pub(crate) fn new(
        node: &'a mut Node,
        plan: &'a Plan,
        workers: Vec<usize>,
        counters: &'a mut Counters,
    ) -> MpiExec<'a> {
        let n = plan.len();
        let mut needed = vec![false; n];
        for i in 0..n {
            if !plan.requested[i] {
                continue;
            }
            let mut j = i;
            loop {
                needed[j] = true;
                match plan.kinds[j] {
                    Kind::Alias => j = plan.deps.get(j as u32)[0] as usize,
                    _ => break,
                }
            }
        }
        let ranks = workers.len();
        MpiExec {
            node,
            plan,
            counters,
            needed,
            workers,
            load: vec![0; ranks],
            handles: HashMap::default(),
            kept: Vec::new(),
            kept_since_scan: 0,
            copies: HashMap::default(),
            units: HashMap::default(),
            next_unit: 0,
            fetching: HashMap::default(),
            next_fetch: 0,
            done: Vec::new(),
            error: None,
            events: Vec::new(),
            outbox: (0..ranks).map(|_| Vec::new()).collect(),
        }
    }

    /// The rank for a unit whose held inputs are `held`: the one holding most input bytes if
    /// its queue has room, else the least loaded.
    fn place(&self, held: &[Handle]) -> usize {
        let ranks = self.workers.len();
        let mut by_rank = vec![0u64; ranks];
        for h in held {
            by_rank[h.rank] += h.bytes;
        }
        let room = |r: usize| self.load[r] < queue(self.workers[r]);
        let best = (0..ranks).max_by_key(|&r| (by_rank[r], std::cmp::Reverse(r)));
        if let Some(b) = best.filter(|&b| by_rank[b] > 0 && room(b)) {
            return b;
        }
        (0..ranks)
            .min_by(|&a, &b| {
                let la = self.load[a] as f64 / self.workers[a].max(1) as f64;
                let lb = self.load[b] as f64 / self.workers[b].max(1) as f64;
                la.total_cmp(&lb)
            })
            .unwrap_or(0)
    }

    fn input(&self, v: &Arc<Value>) -> Result<Handle, ()> {
        self.handles
            .get(&(Arc::as_ptr(v) as usize))
            .copied()
            .ok_or(())
    }

    fn submit_unit(&mut self, jobs: Vec<Job>) -> Result<(), String> {
        let fetch_all = jobs.iter().any(|j| j.timed);
        let mut held = Vec::new();
        let mut wire_inputs = Vec::with_capacity(jobs.len());
        for j in &jobs {
            let mut inputs = Vec::with_capacity(j.inputs.len());
            for (i, v) in j.inputs.iter().enumerate() {
                if j.prev == Some(i as u32) {
                    inputs.push(None);
                    continue;
                }
                match self.input(v) {
                    Ok(h) => {
                        held.push(h);
                        inputs.push(Some(Ok(h)));
                    }
                    Err(v) => inputs.push(Some(Err(v))),
                }
            }
            wire_inputs.push(inputs);
        }
        // Each held result counts once however many tasks read it.
        held.sort_by_key(|h| (h.rank, h.id));
        held.dedup_by_key(|h| (h.rank, h.id));
        let rank = self.place(&held);
        for h in &held {
            if h.rank != rank {
                let have = self.copies.entry((h.rank, h.id)).or_default();
                if !have.contains(&rank) {
                    have.push(rank);
                    self.counters.moved_bytes += h.bytes;
                    self.counters.moves += 1;
                }
            }
        }
        let unit = self.next_unit;
        self.next_unit += 1;
        self.units.insert(
            unit,
            Unit {
                rank,
                nodes: jobs.iter().map(|j| j.node).collect(),
                fetch_all,
                sent: if fetch_all {
                    forkgraph_worker::host::now()
                } else {
                    0
                },
            },
        );
        self.load[rank] += 1;
        self.outbox[rank].push(Staged {
            unit,
            jobs,
            inputs: wire_inputs,
        });
        Ok(())
    }

    /// Sends the units submitted since the last call: to another rank encoded from the jobs
    /// as they are (no copy of specs or literals), to this rank as owned tasks.
    fn flush(&mut self) -> Result<(), String> {
        for rank in 0..self.outbox.len() {
            if self.outbox[rank].is_empty() {
                continue;
            }
            let staged = std::mem::take(&mut self.outbox[rank]);
            if rank == self.node.world.rank {
                let me = rank;
                let mut units = Vec::new();
                for s in staged {
                    // Inputs all here: straight to this rank's pool, nothing copied.
                    let here = |i: &StagedInput| !matches!(i, Some(Ok(h)) if h.rank != me);
                    if s.inputs.iter().flatten().all(here) {
                        let unit = s.unit;
                        let tasks = s.run_tasks(self.node)?;
                        self.node.run_here(unit, tasks)?;
                    } else {
                        units.push(s.owned());
                    }
                }
                if !units.is_empty() {
                    self.node.send(rank, Msg::Run { units })?;
                }
            } else {
                let units: Vec<_> = staged.iter().map(Staged::borrowed).collect();
                self.node.send_bytes(rank, proto::encode_run(&units))?;
            }
        }
        Ok(())
    }

    fn unit_done(
        &mut self,
        rank: usize,
        unit: u64,
        results: Vec<WireResult>,
        pid: u32,
    ) -> Result<(), String> {
        let u = self
            .units
            .remove(&unit)
            .ok_or_else(|| format!("rank {rank} finished a unit it was not given"))?;
        self.load[u.rank] -= 1;
        let ran = Ran {
            worker: WorkerId::Process {
                slot: rank,
                pid: pid as i32,
            },
            start: u.sent,
            end: if u.fetch_all {
                forkgraph_worker::host::now()
            } else {
                0
            },
            started: true,
        };
        for (node, r) in u.nodes.into_iter().zip(results) {
            let result = match r {
                WireResult::Held { id, bytes } => {
                    let handle = Handle { rank, id, bytes };
                    if u.fetch_all || self.needed[node as usize] {
                        let tag = self.next_fetch;
                        self.next_fetch += 1;
                        self.fetching.insert(tag, Fetching { node, handle, ran });
                        if rank != 0 {
                            self.counters.fetched_bytes += bytes;
                        }
                        self.node.fetch(rank, id, tag)?;
                        continue;
                    }
                    Ok(self.keep(Arc::new(Value::Null), handle))
                }
                WireResult::Unsent => Ok(Arc::clone(crate::engine::placeholder())),
                WireResult::Failed { function, kind } => Err(Box::new(Failure {
                    function,
                    kind: kind.into_kind(|n| self.plan.keys[n as usize].clone()),
                })),
                WireResult::Broken(e) => return Err(format!("rank {rank}: {e}")),
            };
            self.done.push(Done { node, result, ran });
        }
        Ok(())
    }

    fn keep(&mut self, v: Arc<Value>, h: Handle) -> Arc<Value> {
        self.handles.insert(Arc::as_ptr(&v) as usize, h);
        self.kept.push(Arc::clone(&v));
        self.kept_since_scan += 1;
        v
    }

    /// Frees, on their ranks, the results the engine no longer holds (`all`: every one).
    /// Unless `all`, it looks only once results kept since the last look are an eighth of
    /// those kept (each look costs one step per kept result; so a result costs at most eight
    /// steps however many are kept, and a released one is freed within that many results).
    fn release(&mut self, all: bool) -> Result<(), String> {
        if !all && self.kept_since_scan.saturating_mul(8) < self.kept.len() {
            return Ok(());
        }
        self.kept_since_scan = 0;
        let ranks = self.workers.len();
        // Per rank: results to drop, and copies to drop by (holder, id).
        type Frees = (Vec<u64>, Vec<(u32, u64)>);
        let mut free: Vec<Frees> = vec![(Vec::new(), Vec::new()); ranks];
        let handles = &mut self.handles;
        let copies = &mut self.copies;
        self.kept.retain(|v| {
            if all || Arc::strong_count(v) == 1 {
                if let Some(h) = handles.remove(&(Arc::as_ptr(v) as usize)) {
                    free[h.rank].0.push(h.id);
                    for r in copies.remove(&(h.rank, h.id)).unwrap_or_default() {
                        free[r].1.push((h.rank as u32, h.id));
                    }
                }
                false
            } else {
                true
            }
        });
        for (rank, (ids, copies)) in free.into_iter().enumerate() {
            if !ids.is_empty() || !copies.is_empty() {
                self.node.send(rank, Msg::Free { ids, copies })?;
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<bool, String> {
        let progress = self.node.poll(&mut self.events)?;
        for e in std::mem::take(&mut self.events) {
            match e {
                Event::Done {
                    rank,
                    unit,
                    results,
                    pid,
                } => self.unit_done(rank, unit, results, pid)?,
                Event::Fetched { tag, value } => {
                    let f = self
                        .fetching
                        .remove(&tag)
                        .ok_or("a fetched value nobody asked for")?;
                    let v = value.ok_or_else(|| {
                        format!("rank {} no longer holds a requested result", f.handle.rank)
                    })?;
                    let v = self.keep(Arc::new(v), f.handle);
                    self.done.push(Done {
                        node: f.node,
                        result: Ok(v),
                        ran: f.ran,
                    });
                }
                Event::Counts { .. } | Event::Stop => {}
            }
        }
        Ok(progress)
    }

    /// Frees every result still kept (after the engine returned).
    pub(crate) fn finish(mut self) -> Result<(), String> {
        self.release(true)
    }
}

impl Executor for MpiExec<'_> {
    fn slots(&self) -> usize {
        self.workers.iter().map(|&w| queue(w)).sum()
    }

    fn parallelism(&self) -> usize {
        self.workers.iter().map(|w| *w.max(&1)).sum()
    }

    fn chains(&self) -> bool {
        true
    }

    fn submit(&mut self, job: Job) {
        self.submit_chain(vec![job]);
    }

    fn submit_chain(&mut self, jobs: Vec<Job>) {
        if self.error.is_none() {
            if let Err(e) = self.submit_unit(jobs) {
                self.error = Some(e);
            }
        }
    }

    fn wait(&mut self, out: &mut Vec<Done>) -> Result<(), Error> {
        let mut idle = Backoff::new();
        loop {
            if let Some(e) = self.error.take() {
                return Err(Error::Scheduler(e));
            }
            if let Err(e) = self.flush().and_then(|()| self.release(false)) {
                return Err(Error::Scheduler(e));
            }
            match self.step() {
                Ok(true) => idle.reset(),
                Ok(false) => {}
                Err(e) => return Err(Error::Scheduler(e)),
            }
            if !self.done.is_empty() {
                out.append(&mut self.done);
                return Ok(());
            }
            if self.units.is_empty() && self.fetching.is_empty() {
                return Err(Error::Scheduler(
                    "the MPI executor waited with nothing in flight".into(),
                ));
            }
            if let Err(e) = self.node.idle(idle.next()) {
                return Err(Error::Scheduler(e));
            }
        }
    }

    fn stand_in_bytes(&self, v: &Arc<Value>) -> Option<usize> {
        if !matches!(**v, Value::Null) {
            return None; // A fetched value: the engine sizes it itself.
        }
        let h = self.handles.get(&(Arc::as_ptr(v) as usize))?;
        Some(usize::try_from(h.bytes).unwrap_or(usize::MAX))
    }

    fn workers(&self) -> Vec<WorkerId> {
        (0..self.workers.len())
            .map(|r| WorkerId::Process { slot: r, pid: 0 })
            .collect()
    }
}
