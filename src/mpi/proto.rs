//! Messages between ranks (postcard after an 8-byte length), and the wire form of task
//! failures.

use forkgraph_worker::{CallError, TaskSpec, TaskView, Value};
use serde::{Deserialize, Serialize};

use crate::error::TaskErrorKind;
use crate::key::Key;

/// Tag of every message's first part; later parts of a long message carry `TAG + 1`.
pub(crate) const TAG: i32 = 17;
/// Tag of an array's raw bytes, sent after a [`Msg::RawData`] header.
pub(crate) const RAW_TAG: i32 = 20;
/// Arrays at least this large travel as raw bytes after their header (smaller ones inside it).
pub(crate) const RAW_MIN: usize = 64 * 1024;

/// Where a unit's task finds one input.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Input {
    /// A literal (or a value rank 0 holds itself), sent along.
    Inline(Value),
    /// A result held by `rank` under `id`.
    Held { rank: u32, id: u64 },
    /// The result of the unit's previous task (a chain link).
    Prev,
}

/// [`Input`] borrowed, for encoding without cloning (same wire form).
#[derive(Serialize)]
pub(crate) enum InputRef<'a> {
    Inline(&'a Value),
    Held { rank: u32, id: u64 },
    Prev,
}

/// [`WireTask`] borrowed, for encoding without cloning (same wire form).
#[derive(Serialize)]
pub(crate) struct WireTaskRef<'a> {
    pub(crate) node: u32,
    pub(crate) spec: TaskView<'a>,
    pub(crate) inputs: Vec<InputRef<'a>>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) send_back: bool,
}

/// [`Msg::Run`] borrowed (its variant index must stay that of `Msg::Run`: the first).
#[derive(Serialize)]
enum RunRef<'a> {
    Run {
        units: &'a [(u64, Vec<WireTaskRef<'a>>)],
    },
}

/// A [`Msg::Run`] of borrowed tasks as bytes (as [`encode`] would write the owned message).
pub(crate) fn encode_run(units: &[(u64, Vec<WireTaskRef<'_>>)]) -> Vec<u8> {
    let buf = vec![0u8; 8];
    let mut buf = postcard::to_extend(&RunRef::Run { units }, buf).expect("encodable message");
    let len = (buf.len() - 8) as u64;
    buf[..8].copy_from_slice(&len.to_le_bytes());
    buf
}

/// One task of a unit.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireTask {
    /// The engine's node id (labels the task; rank 0 maps results back by it).
    pub(crate) node: u32,
    pub(crate) spec: TaskSpec,
    pub(crate) inputs: Vec<Input>,
    pub(crate) retries: Option<u32>,
    pub(crate) timeout_ms: Option<u64>,
    /// Whether rank 0 needs to know its result (false only for chain links whose one reader
    /// is the next link: the value stays in the worker).
    pub(crate) send_back: bool,
}

/// A finished task's result: where it is kept, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireResult {
    /// Kept on the rank that ran it under `id`; `bytes` estimates its size.
    Held { id: u64, bytes: u64 },
    /// A chain link whose value stayed in its worker (it was not to be sent back).
    Unsent,
    /// The task failed.
    Failed { function: String, kind: WireKind },
    /// The rank could not run the unit at all (the rank's pool failed).
    Broken(String),
}

/// A [`TaskErrorKind`] on the wire (an upstream key is named by its node).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireKind {
    Upstream(u32),
    Call(CallError),
    WorkerDied {
        pid: i32,
        signal: Option<i32>,
        exit_code: Option<i32>,
        stderr_tail: String,
    },
    KilledWorkers {
        deaths: u32,
        last: String,
    },
    TimedOut {
        millis: u64,
    },
    CpuTimeExceeded {
        seconds: u64,
    },
    OutOfMemory {
        limit: u64,
        detail: String,
    },
    Output {
        expected: String,
        got: String,
    },
}

impl WireKind {
    /// The wire form; `node_of` maps an upstream key of the rank's sub-graph to its node.
    pub(crate) fn from_kind(kind: TaskErrorKind, node_of: impl Fn(&Key) -> u32) -> WireKind {
        match kind {
            TaskErrorKind::Upstream { key } => WireKind::Upstream(node_of(&key)),
            TaskErrorKind::Call(e) => WireKind::Call(e),
            TaskErrorKind::WorkerDied {
                pid,
                signal,
                exit_code,
                stderr_tail,
            } => WireKind::WorkerDied {
                pid,
                signal,
                exit_code,
                stderr_tail,
            },
            TaskErrorKind::KilledWorkers { deaths, last } => {
                WireKind::KilledWorkers { deaths, last }
            }
            TaskErrorKind::TimedOut { millis } => WireKind::TimedOut { millis },
            TaskErrorKind::CpuTimeExceeded { seconds } => WireKind::CpuTimeExceeded { seconds },
            TaskErrorKind::OutOfMemory { limit, detail } => WireKind::OutOfMemory { limit, detail },
            TaskErrorKind::Output { expected, got } => WireKind::Output { expected, got },
        }
    }

    /// Back to a [`TaskErrorKind`]; `key_of` names a node.
    pub(crate) fn into_kind(self, key_of: impl Fn(u32) -> Key) -> TaskErrorKind {
        match self {
            WireKind::Upstream(n) => TaskErrorKind::Upstream { key: key_of(n) },
            WireKind::Call(e) => TaskErrorKind::Call(e),
            WireKind::WorkerDied {
                pid,
                signal,
                exit_code,
                stderr_tail,
            } => TaskErrorKind::WorkerDied {
                pid,
                signal,
                exit_code,
                stderr_tail,
            },
            WireKind::KilledWorkers { deaths, last } => {
                TaskErrorKind::KilledWorkers { deaths, last }
            }
            WireKind::TimedOut { millis } => TaskErrorKind::TimedOut { millis },
            WireKind::CpuTimeExceeded { seconds } => TaskErrorKind::CpuTimeExceeded { seconds },
            WireKind::OutOfMemory { limit, detail } => TaskErrorKind::OutOfMemory { limit, detail },
            WireKind::Output { expected, got } => TaskErrorKind::Output { expected, got },
        }
    }
}

/// A message between ranks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Rank 0 to a rank: units to run, each a list of tasks to run back to back (the units
    /// submitted since rank 0 last waited travel in one message).
    Run { units: Vec<(u64, Vec<WireTask>)> },
    /// A rank to rank 0: units finished (per unit, one result per task, in order); `pid` is
    /// the rank's process.
    Done {
        units: Vec<(u64, Vec<WireResult>)>,
        pid: u32,
    },
    /// To the rank holding results: send them back, as (result id, ticket) pairs (the reply
    /// is one [`Msg::Data`] for the small ones and a [`Msg::RawData`] for each large array).
    Want { items: Vec<(u64, u64)> },
    /// Held values by ticket (`None` when the holder no longer has one).
    Data { items: Vec<(u64, Option<Value>)> },
    /// A held array: `len` bytes of `dtype` follow as raw parts with [`RAW_TAG`], received
    /// straight into a shared segment the rank's workers map.
    RawData {
        ticket: u64,
        dtype: forkgraph_worker::DType,
        len: u64,
    },
    /// Rank 0 to a rank: drop these results, and the copies of results held elsewhere, by
    /// (holder rank, id).
    Free {
        ids: Vec<u64>,
        copies: Vec<(u32, u64)>,
    },
    /// Rank 0 to a rank: report [`Msg::Counts`].
    Count,
    /// Results held and shared segments mapped on the sender now, and the bytes of inputs
    /// it has fetched from other ranks so far.
    Counts {
        held: u64,
        segments: u64,
        received: u64,
    },
    /// Rank 0 to a rank: stop serving, finalize and exit.
    Stop,
}

/// `msg` as bytes: its length (u64 little-endian) and postcard.
pub(crate) fn encode(msg: &Msg) -> Vec<u8> {
    let mut buf = vec![0u8; 8];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf)).expect("encodable message");
    let len = (buf.len() - 8) as u64;
    buf[..8].copy_from_slice(&len.to_le_bytes());
    buf
}

/// The message in `buf` (after its length).
///
/// # Errors
/// When the bytes are not a message.
pub(crate) fn decode(buf: &[u8]) -> Result<Msg, String> {
    postcard::from_bytes(&buf[8..]).map_err(|e| format!("undecodable message: {e}"))
}

/// The total length announced by a message's first part.
pub(crate) fn announced(first: &[u8]) -> Result<usize, String> {
    let b: [u8; 8] = first
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("a message shorter than its header")?;
    Ok(u64::from_le_bytes(b) as usize + 8)
}

/// An estimate of a value's size for placement: array and string bytes, 8 per scalar.
pub(crate) fn bytes(v: &Value) -> u64 {
    match v {
        Value::Array(a) => return a.as_bytes().len() as u64,
        Value::Encoded(_, b) => return b.len() as u64,
        Value::Str(s) => return s.len() as u64,
        Value::List(_) | Value::Map(_) => {}
        _ => return 8,
    }
    let mut n = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        n += match v {
            Value::Array(a) => a.as_bytes().len() as u64,
            Value::Encoded(_, b) => b.len() as u64,
            Value::Str(s) => s.len() as u64,
            Value::List(l) => {
                stack.extend(l.iter());
                8
            }
            Value::Map(m) => {
                stack.extend(m.values());
                8
            }
            _ => 8,
        };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_run_decodes_as_the_owned_one() {
        let spec = TaskSpec {
            func: 3,
            args: vec![forkgraph_worker::SpecArg::Input(0)],
        };
        let v = Value::Int(7);
        let borrowed = vec![(
            5u64,
            vec![WireTaskRef {
                node: 9,
                spec: spec.view(),
                inputs: vec![
                    InputRef::Inline(&v),
                    InputRef::Held { rank: 2, id: 11 },
                    InputRef::Prev,
                ],
                retries: Some(1),
                timeout_ms: None,
                send_back: false,
            }],
        )];
        let bytes = encode_run(&borrowed);
        let Msg::Run { units } = decode(&bytes).expect("a message") else {
            panic!("not a Run message");
        };
        assert_eq!(units.len(), 1);
        let (unit, tasks) = &units[0];
        assert_eq!(*unit, 5);
        let t = &tasks[0];
        assert_eq!(
            (t.node, t.spec.func, t.retries, t.send_back),
            (9, 3, Some(1), false)
        );
        assert!(matches!(t.inputs[0], Input::Inline(Value::Int(7))));
        assert!(matches!(t.inputs[1], Input::Held { rank: 2, id: 11 }));
        assert!(matches!(t.inputs[2], Input::Prev));
        assert_eq!(bytes.len(), announced(&bytes).expect("a length"));
    }
}
