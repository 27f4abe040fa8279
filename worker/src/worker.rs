//! The loop of a worker process: receive units, run their tasks, send results back.

use std::time::Duration;

use crate::exec;
use crate::proto::{self, FromWorker, Inbox, Input, Limits, ToWorker, Unit, UnitDone};
use crate::registry::Registry;
use crate::sys::{self, SharedPage, Slot, Stream};
use crate::value::Value;

/// Results are sent at the latest this long after the first one of a batch was ready.
const FLUSH_AFTER: Duration = Duration::from_micros(200);

/// Serves the parent on `sock` until told to exit or the parent is gone; returns the exit code.
pub(crate) fn serve(sock: &Stream, page: &SharedPage, limits: Limits) -> i32 {
    let hello = FromWorker::Hello {
        pid: sys::getpid(),
        digest: Registry::global().digest(),
    };
    if proto::send(sock, &hello, &[]).is_err() {
        return 1;
    }
    let mut inbox = Inbox::new();
    loop {
        match proto::recv::<ToWorker>(sock, &mut inbox) {
            Ok(Some((ToWorker::Run(units), _))) => {
                if run_batch(sock, page, limits, units).is_err() {
                    return 1;
                }
            }
            Ok(Some((ToWorker::Exit, _))) | Ok(None) => return 0,
            Err(_) => return 2,
        }
    }
}

fn run_batch(
    sock: &Stream,
    page: &SharedPage,
    limits: Limits,
    units: Vec<Unit>,
) -> std::io::Result<()> {
    let mut done: Vec<UnitDone> = Vec::new();
    let mut first_ready = 0u64;
    for unit in units {
        let start = sys::monotonic_ns();
        page.set(Slot::Started, start);
        page.set(Slot::Task, 0);
        page.set(Slot::Unit, unit.seq);
        let results = run_unit(&unit, page, limits);
        let end = sys::monotonic_ns();
        done.push(UnitDone {
            seq: unit.seq,
            results,
            nanos: end.saturating_sub(start),
        });
        if done.len() == 1 {
            first_ready = end;
        }
        if end.saturating_sub(first_ready) >= FLUSH_AFTER.as_nanos() as u64 {
            proto::send(sock, &FromWorker::Done(std::mem::take(&mut done)), &[])?;
        }
    }
    page.set(Slot::Unit, 0);
    if !done.is_empty() {
        proto::send(sock, &FromWorker::Done(done), &[])?;
    }
    Ok(())
}

fn run_unit(
    unit: &Unit,
    page: &SharedPage,
    limits: Limits,
) -> Vec<Result<Option<Value>, exec::TaskFailure>> {
    let mut results = Vec::with_capacity(unit.tasks.len());
    let mut prev: Option<Value> = None;
    let last = unit.tasks.len().saturating_sub(1);
    for (i, task) in unit.tasks.iter().enumerate() {
        if i > 0 {
            page.set(Slot::Started, sys::monotonic_ns());
            page.set(Slot::Task, i as u64);
        }
        if let Some(secs) = limits.cpu_seconds {
            let _ = sys::limit_cpu_from_now(secs);
        }
        let out = {
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
    results
}
