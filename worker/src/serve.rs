//! The serve loop of a worker process: receive units, run their tasks, send results back.

use std::collections::HashMap;
use std::time::Duration;

use crate::exec;
use crate::frame::{self, Inbox};
use crate::logs;
use crate::proto::{FromWorker, Input, Limits, ToWorker, Unit, UnitDone};
use crate::registry::Registry;
use crate::segments::recycler;
use crate::sys::{self, SharedPage, Slot, Stream};
use crate::value::Buffer;
use crate::value::Value;

/// Results are sent at the latest this long after the first one of a batch was ready...
const FLUSH_AFTER: Duration = Duration::from_micros(200);
/// ...or before a unit expected to take longer than this (or of unknown duration).
const LONG_UNIT: Duration = Duration::from_micros(50);

/// Serves the parent on `sock` until told to exit or the parent is gone; returns the exit code.
pub(crate) fn serve(
    sock: &Stream,
    page: &SharedPage,
    limits: Limits,
    init: Option<&crate::exec::TaskSpec>,
) -> i32 {
    crate::logs::install(sock, limits.log_level, limits.trace_level);
    recycler::set_cache_bytes(limits.cache_bytes);
    let init = init.and_then(|spec| exec::run(spec, &[] as &[Value]).err());
    let failed = init.is_some();
    let hello = FromWorker::Hello {
        pid: sys::getpid(),
        digest: Registry::global().digest(),
        init,
    };
    if let Err(e) = logs::with_socket(sock, |s| frame::send(s, &hello, &[])) {
        return protocol_exit(1, "cannot greet the parent", &e);
    }
    if failed {
        return 3;
    }
    let mut inbox = Inbox::new();
    let mut costs = Costs::default();
    loop {
        match frame::recv::<ToWorker>(sock, &mut inbox) {
            Ok(Some((ToWorker::Run(units), _))) => {
                if let Err(e) = run_batch(sock, page, limits, units, &mut costs) {
                    return protocol_exit(1, "cannot send results to the parent", &e);
                }
            }
            Ok(Some((ToWorker::Free(inodes), _))) => recycler::free(&inodes),
            Ok(None) => return 0,
            Err(e) => return protocol_exit(2, "cannot read what the parent sent", &e),
        }
    }
}

/// Says on stderr (which the parent shows with the death) why the worker gives up, and
/// returns the exit code: the parent sees an exit code, this line says what the worker saw
/// (a task closed or wrote to the worker's socket, a message too large, a full fd table).
fn protocol_exit(code: i32, what: &str, e: &std::io::Error) -> i32 {
    eprintln!(
        "forkgraph worker {}: {what}: {e}; exiting (a task may have closed or written to the \
         worker's socket to the parent)",
        sys::getpid()
    );
    code
}

fn run_batch(
    sock: &Stream,
    page: &SharedPage,
    limits: Limits,
    units: Vec<Unit>,
    costs: &mut Costs,
) -> std::io::Result<()> {
    let mut done: Vec<UnitDone> = Vec::new();
    let mut first_ready = 0u64;
    // Recyclable input segments the units not yet run refer to, per inode.
    let mut ahead: HashMap<u64, u32> = HashMap::new();
    let inputs_of = |unit: &Unit| {
        let mut inodes = Vec::new();
        for t in &unit.tasks {
            for i in &t.inputs {
                if let Input::Value(v) = i {
                    recyclable_inodes(v, &mut inodes);
                }
            }
        }
        inodes
    };
    let per_unit: Vec<Vec<u64>> = units.iter().map(inputs_of).collect();
    for ino in per_unit.iter().flatten() {
        *ahead.entry(*ino).or_insert(0) += 1;
    }
    for (unit, inodes) in units.into_iter().zip(per_unit) {
        let waited = sys::monotonic_ns().saturating_sub(first_ready);
        if !done.is_empty()
            && (unit.timed
                || costs.expected(&unit) > LONG_UNIT.as_nanos() as u64
                || waited >= FLUSH_AFTER.as_nanos() as u64)
        {
            // Do not hold finished results back while a long unit runs.
            send_done(sock, std::mem::take(&mut done), limits)?;
        }
        let start = sys::monotonic_ns();
        page.set(Slot::Started, start);
        page.set(Slot::Task, 0);
        // A unit the parent cancelled after sending it is not run: its (empty) result says so.
        let skipped = page.start_unit(unit.seq);
        logs::set_current(unit.seq, 0);
        let (results, ends) = match skipped {
            true => (Vec::new(), Vec::new()),
            false => run_unit(&unit, page, limits, start),
        };
        let end = sys::monotonic_ns();
        if !skipped {
            costs.record(&unit, end.saturating_sub(start));
        }
        let (seq, timed) = (unit.seq, unit.timed);
        // Drop the unit's inputs before reporting it: whatever still maps them now was kept by
        // a task, and the parent must not let those segments be recycled.
        drop(unit);
        for ino in &inodes {
            if let Some(n) = ahead.get_mut(ino) {
                *n -= 1;
            }
        }
        let retained = recycler::retained(&inodes, &ahead);
        done.push(UnitDone {
            seq,
            results,
            nanos: end.saturating_sub(start),
            start,
            ends,
            retained,
        });
        if timed {
            // The parent times the next unit from this result's arrival.
            send_done(sock, std::mem::take(&mut done), limits)?;
        } else if done.len() == 1 {
            first_ready = end;
        }
    }
    // The page keeps naming the last unit until its result is out: a death while encoding or
    // sending it (say, out of memory) is that unit's.
    if !done.is_empty() {
        send_done(sock, done, limits)?;
    }
    page.set(Slot::Unit, 0);
    logs::set_current(0, 0);
    Ok(())
}

/// Runs a unit's tasks; returns their results and when each task but the last ended (in ns
/// after `start`, read where the progress page needs the clock anyway).
fn run_unit(
    unit: &Unit,
    page: &SharedPage,
    limits: Limits,
    start: u64,
) -> (Vec<Result<Option<Value>, exec::TaskFailure>>, Vec<u64>) {
    let mut results = Vec::with_capacity(unit.tasks.len());
    // Allocated only for a chain (a unit of one task has no intermediate end).
    let mut ends = Vec::new();
    let mut prev: Option<Value> = None;
    let last = unit.tasks.len().saturating_sub(1);
    for (i, task) in unit.tasks.iter().enumerate() {
        if i > 0 {
            let now = sys::monotonic_ns();
            ends.push(now.saturating_sub(start));
            page.set(Slot::Started, now);
            page.set(Slot::Task, i as u64);
            logs::set_current(unit.seq, i as u64);
        }
        if let Some(secs) = limits.cpu_seconds {
            let _ = sys::limit_cpu_from_now(secs);
        }
        let sandboxed = limits.sandboxed;
        if sandboxed {
            let _ = sys::sandbox::take_denied();
        }
        let mut out = {
            let inputs: Vec<&Value> = task
                .inputs
                .iter()
                .map(|inp| match inp {
                    Input::Value(v) => &**v,
                    Input::Prev => prev.as_ref().unwrap_or(&Value::Null),
                })
                .collect();
            exec::run(&task.spec, inputs.as_slice())
        };
        if sandboxed {
            if let Some(call) = sys::sandbox::take_denied() {
                name_denied_call(&mut out, &call);
            }
        }
        match out {
            Ok(v) => {
                if i == last {
                    results.push(Ok(task.send_back.then_some(v)));
                } else {
                    results.push(Ok(task.send_back.then(|| v.clone())));
                    prev = Some(v);
                }
            }
            Err(f) => {
                results.push(Err(f));
                break;
            }
        }
    }
    (results, ends)
}

/// A task of a sandboxed worker made a system call the sandbox denies (it got `EPERM`): its
/// failure says which; a task that succeeded anyway gets a line on stderr.
fn name_denied_call(out: &mut Result<Value, exec::TaskFailure>, call: &str) {
    let note = format!("the pool's sandbox denied system call {call} (it returned EPERM)");
    match out {
        Err(f) => match &mut f.error {
            crate::registry::CallError::Returned(r) => r.add_note(note),
            crate::registry::CallError::Panicked(s) | crate::registry::CallError::Failed(s) => {
                s.push_str("; ");
                s.push_str(&note);
            }
            _ => {}
        },
        Ok(_) => eprintln!("forkgraph worker {}: {note}", sys::getpid()),
    }
}

/// Average run time per function, to guess how long a unit will take.
#[derive(Default)]
struct Costs(std::collections::HashMap<crate::registry::FnId, u64>);

impl Costs {
    /// Expected nanoseconds of a unit; `u64::MAX` when a function has not run here yet.
    fn expected(&self, unit: &Unit) -> u64 {
        unit.tasks.iter().fold(0u64, |acc, t| {
            acc.saturating_add(self.0.get(&t.spec.func()).copied().unwrap_or(u64::MAX))
        })
    }

    fn record(&mut self, unit: &Unit, nanos: u64) {
        let per = nanos / unit.tasks.len().max(1) as u64;
        for t in &unit.tasks {
            let e = self.0.entry(t.spec.func()).or_insert(per);
            *e = (*e * 3 + per) / 4;
        }
    }
}

/// Sends finished units; their large results travel as (recyclable) segments.
fn send_done(sock: &Stream, done: Vec<UnitDone>, limits: Limits) -> std::io::Result<()> {
    let threshold = limits.segment_threshold.map(|t| t as usize);
    logs::with_socket(sock, |s| {
        frame::send_shared(
            s,
            &FromWorker::Done(done),
            threshold,
            limits.recycle_segments,
        )
    })?;
    sys::write_stderr(crate::proto::STDERR_MARK);
    Ok(())
}

/// The recyclable segments a value refers to, once per reference (arrays, encoded values,
/// inside lists and maps).
fn recyclable_inodes(v: &Value, out: &mut Vec<u64>) {
    let mut push = |b: &Buffer| {
        if let Some(seg) = b.segment() {
            if seg.recyclable() {
                out.push(seg.ino());
            }
        }
    };
    match v {
        Value::Array(a) => push(a.buffer()),
        Value::Encoded(_, b) => push(b),
        Value::List(l) => l.iter().for_each(|x| recyclable_inodes(x, out)),
        Value::Map(m) => m.values().for_each(|x| recyclable_inodes(x, out)),
        _ => {}
    }
}
