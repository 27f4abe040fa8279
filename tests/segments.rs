//! Large results travel as sealed shared segments: zero-copy, read-only for everybody,
//! released with their key, bounded by a budget, and gone when their producer crashes.

mod common;

use std::sync::{Arc, Mutex};

use common::watchdog;
use forkgraph::{
    graph, key, segment_stats, Array, Callbacks, Error, GetOptions, Key, ProcessPool, Scheduler,
    SharedVec, SyncScheduler, TaskErrorKind, Value,
};

const MIB: usize = 1 << 20;

/// Segment counts are per process: tests that read them take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, (i, &b)| {
            (h ^ (b as u64 ^ i as u64)).wrapping_mul(0x100_0000_01b3)
        })
}

/// Deterministic pseudo-random bytes, written straight into a shared segment.
#[forkgraph::task]
fn produce(mib: usize, seed: u64) -> Result<SharedVec<u8>, String> {
    let mut v = SharedVec::<u8>::zeroed(mib * MIB).map_err(|e| e.to_string())?;
    let mut x = seed | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Ok(v)
}

/// A heap result (a plain Vec) above the threshold: copied once into a segment to travel.
#[forkgraph::task]
fn produce_heap(mib: usize) -> Vec<u8> {
    (0..mib * MIB).map(|i| (i % 251) as u8).collect()
}

/// (pid, checksum (62 bits, so that it fits an integer value), whether the input was a mapped
/// shared segment).
#[forkgraph::task]
fn consume(data: &Array) -> (i64, i64, bool) {
    (
        std::process::id() as i64,
        (checksum(data.as_bytes()) >> 2) as i64,
        data.buffer().is_shared(),
    )
}

#[forkgraph::task]
fn sum_bytes(data: &[u8]) -> u64 {
    data.iter().map(|&b| b as u64).sum()
}

/// Writes through a pointer into its (read-only, sealed) input: the kernel kills the worker.
#[forkgraph::task]
fn scribble(data: &[u8]) -> u64 {
    let p = data.as_ptr() as *mut u8;
    // SAFETY: none; this task attacks its input to show that the mapping is read-only.
    unsafe { p.write_volatile(0xff) };
    0
}

/// Tries every other way to write to its input segment and reports what the kernel said.
#[forkgraph::task]
fn try_reopen_for_writing(data: &[u8]) -> String {
    use std::io::Write;
    let start = data.as_ptr() as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            (a..b).contains(&start)
        })
        .expect("the input is mapped");
    let mut report = Vec::new();
    // 1. Reopen the mapped file read-write through /proc and write to it.
    let range = line.split_whitespace().next().unwrap();
    let path = format!("/proc/self/map_files/{range}");
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(mut f) => match f.write_all(b"evil") {
            Ok(()) => report.push("WRITE ACCEPTED".to_string()),
            Err(e) => report.push(format!("write refused: {e}")),
        },
        Err(e) => report.push(format!("reopen refused: {e}")),
    }
    report.join("; ")
}

/// Fills half of a large shared vector, then dies: the segment must vanish with it.
#[forkgraph::task]
fn crash_mid_write(mib: usize) -> Result<SharedVec<u8>, String> {
    let mut v = SharedVec::<u8>::zeroed(mib * MIB).map_err(|e| e.to_string())?;
    let half = v.len() / 2;
    v[..half].fill(7);
    std::process::abort()
}

fn pool() -> ProcessPool {
    ProcessPool::builder().workers(2).build().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn one_producer_many_consumers_in_different_workers_read_the_same_bytes() {
    let _turn = serial();
    watchdog(120, || {
        let p = pool();
        let mut g = graph! { "data" => (produce, 16, 42) };
        let mut keys = Vec::new();
        for i in 0..8i64 {
            g.task(
                ("c", i),
                "consume",
                vec![forkgraph::Arg::Key("data".into())],
            );
            keys.push(forkgraph::Keys::from(("c", i)));
        }
        keys.push("data".into());
        let out = p.get(&g, keys).unwrap();
        let items = out.as_list().unwrap();
        let data = items[8].as_value().unwrap();
        let Value::Array(a) = data else {
            panic!("{data:?}")
        };
        assert!(
            a.buffer().is_shared(),
            "the caller's result is the mapped segment"
        );
        let expected = (checksum(a.as_bytes()) >> 2) as i64;
        let mut pids = std::collections::BTreeSet::new();
        for item in &items[..8] {
            let (pid, sum, shared): (i64, i64, bool) = match item.as_value().unwrap() {
                Value::List(l) => (l[0].to().unwrap(), l[1].to().unwrap(), l[2].to().unwrap()),
                v => panic!("{v:?}"),
            };
            assert_eq!(sum, expected);
            assert!(
                shared,
                "consumers map the segment instead of receiving a copy"
            );
            pids.insert(pid);
        }
        assert!(pids.len() >= 2, "consumers ran in {pids:?}");
        // The same computation on the sync scheduler (heap, no segments) gives the same bytes.
        let sync = SyncScheduler
            .get(&graph! { "d" => (produce, 16, 42) }, "d")
            .unwrap();
        let Value::Array(b) = sync.as_value().unwrap() else {
            panic!()
        };
        assert_eq!((checksum(b.as_bytes()) >> 2) as i64, expected);
    });
}

#[test]
fn segments_and_fds_return_to_zero_after_get() {
    let _turn = serial();
    watchdog(120, || {
        let p = pool();
        let g = graph! {
            "a" => (produce, 4, 1),
            "b" => (produce_heap, 4),
            "sa" => (sum_bytes, key("a")),
            "sb" => (sum_bytes, key("b")),
        };
        // Warm up: the pool's own fds exist from here on.
        p.get(&g, vec!["sa", "sb"]).unwrap();
        let fds = open_fds();
        for _ in 0..20 {
            let out = p.get(&g, vec!["sa", "sb"]).unwrap();
            assert_eq!(out.as_list().unwrap().len(), 2);
            assert_eq!(segment_stats().count, 0, "intermediates released");
            assert_eq!(open_fds(), fds);
        }
        // A requested large result stays valid while held, and goes when dropped.
        let held = p.get(&g, "a").unwrap();
        assert_eq!(segment_stats().count, 1);
        let Value::Array(arr) = held.as_value().unwrap() else {
            panic!()
        };
        assert_eq!(arr.len(), 4 * MIB);
        drop(held);
        assert_eq!(segment_stats().count, 0);
        assert_eq!(open_fds(), fds);
    });
}

#[test]
fn a_dependent_that_writes_into_its_input_faults_and_others_read_intact_data() {
    struct Seen(Mutex<Vec<(Key, Value)>>);
    impl Callbacks for Seen {
        fn posttask(&self, key: &Key, value: &Value) {
            self.0.lock().unwrap().push((key.clone(), value.clone()));
        }
    }
    let _turn = serial();
    watchdog(120, || {
        let p = pool();
        let g = graph! {
            "data" => (produce, 8, 7),
            "r1" => (consume, key("data")),
            "attack" => (try_reopen_for_writing, key("data")),
            "r2" => (consume, key("data")),
            "scribble" => (scribble, key("data")),
        };
        let expected = {
            let v = SyncScheduler.get(&g, "data").unwrap().into_value();
            let Value::Array(a) = v else { panic!() };
            (checksum(a.as_bytes()) >> 2) as i64
        };
        let seen = Arc::new(Seen(Mutex::new(Vec::new())));
        let r = p.get_with(
            &g,
            &vec!["r1", "attack", "r2", "scribble"].into(),
            &GetOptions::new().callback(seen.clone()),
        );
        let e = match r {
            Err(Error::Task(t)) => t,
            other => panic!("expected the scribbler to fail, got {other:?}"),
        };
        assert_eq!(e.key, Key::from("scribble"));
        assert!(
            matches!(e.kind, TaskErrorKind::WorkerDied { signal: Some(s), .. } if s == libc::SIGSEGV || s == libc::SIGBUS),
            "{e}"
        );
        let seen = seen.0.lock().unwrap();
        let get = |k: &str| {
            seen.iter()
                .find(|(key, _)| key == &Key::from(k))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{k} did not finish: {seen:?}"))
        };
        for r in ["r1", "r2"] {
            let Value::List(l) = get(r) else { panic!() };
            assert_eq!(l[1].to::<i64>().unwrap(), expected, "{r} read intact data");
        }
        let report: String = get("attack").to().unwrap();
        assert!(!report.contains("ACCEPTED"), "{report}");
        assert!(report.contains("refused"), "{report}");
    });
}

#[test]
fn a_producer_that_crashes_mid_write_leaves_no_segment() {
    let _turn = serial();
    watchdog(120, || {
        let p = pool();
        let g = graph! { "half" => (crash_mid_write, 32), "n" => (sum_bytes, key("half")) };
        // Warm up (lazily made statics).
        p.get(&graph! { "x" => (produce_heap, 0) }, "x").unwrap();
        let before = (segment_stats().count, open_fds());
        let e = match p.get(&g, "n") {
            Err(Error::Task(t)) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.key, Key::from("half"));
        assert!(
            matches!(
                e.kind,
                TaskErrorKind::WorkerDied {
                    signal: Some(6),
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!((segment_stats().count, open_fds()), before);
        // Nothing named was left anywhere either: segments are anonymous memory files.
        let shm: Vec<_> = std::fs::read_dir("/dev/shm")
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            !shm.iter()
                .any(|n| n.to_string_lossy().contains("forkgraph")),
            "{shm:?}"
        );
    });
}

#[test]
fn the_segment_budget_holds_back_producers() {
    let _turn = serial();
    watchdog(120, || {
        let p = ProcessPool::builder()
            .workers(2)
            .segment_budget(3 * MIB as u64)
            .build()
            .unwrap();
        let mut g = forkgraph::Graph::new();
        let mut keys = Vec::new();
        for i in 0..12i64 {
            g.task(
                ("p", i),
                "produce",
                vec![
                    forkgraph::Arg::Value(1i64.into()),
                    forkgraph::Arg::Value(i.into()),
                ],
            );
            g.task(
                ("s", i),
                "sum_bytes",
                vec![forkgraph::Arg::Key(("p", i).into())],
            );
            keys.push(forkgraph::Keys::from(("s", i)));
        }
        forkgraph::reset_segment_peak();
        let out = p.get(&g, keys.clone()).unwrap();
        let peak = segment_stats().peak_bytes;
        assert_eq!(out, SyncScheduler.get(&g, keys).unwrap());
        // Budget plus at most one result started while nothing else ran.
        assert!(
            peak <= 4 * MIB as u64,
            "peak {peak} bytes over a 3 MiB budget"
        );
    });
}

#[test]
fn small_results_stay_inline_and_threshold_is_configurable() {
    let _turn = serial();
    watchdog(120, || {
        let inline = ProcessPool::builder()
            .workers(1)
            .segment_threshold(None)
            .build()
            .unwrap();
        // Two consumers: one may run right after the producer in its worker (reading its heap
        // result in place); the other gets the result from the parent.
        let g = graph! {
            "d" => (produce_heap, 1),
            "c1" => (consume, key("d")),
            "c2" => (consume, key("d")),
        };
        let shared_inputs = |p: &ProcessPool| -> Vec<bool> {
            let out = p.get(&g, vec!["c1", "c2"]).unwrap();
            out.as_list()
                .unwrap()
                .iter()
                .map(|o| match o.as_value().unwrap() {
                    Value::List(l) => l[2].to::<bool>().unwrap(),
                    v => panic!("{v:?}"),
                })
                .collect()
        };
        assert_eq!(
            shared_inputs(&inline),
            vec![false, false],
            "threshold None: all inline"
        );
        let shared = pool();
        assert!(
            shared_inputs(&shared).contains(&true),
            "1 MiB is over the default 64 KiB threshold"
        );
    });
}

#[test]
fn shared_vectors_work_on_every_scheduler() {
    let _turn = serial();
    let g = graph! { "d" => (produce, 1, 3), "s" => (sum_bytes, key("d")) };
    let a = SyncScheduler.get(&g, "s").unwrap();
    let b = forkgraph::ThreadPool::builder()
        .threads(2)
        .build()
        .unwrap()
        .get(&g, "s")
        .unwrap();
    let c = pool().get(&g, "s").unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Histogram {
    name: String,
    counts: Vec<u64>,
}

#[forkgraph::task]
fn big_histogram(n: usize) -> forkgraph::Serde<Histogram> {
    forkgraph::Serde(Histogram {
        name: "h".into(),
        counts: (0..n as u64).map(|i| i * 3).collect(),
    })
}

/// (whether the encoded value arrived as a shared segment, sum of its counts).
#[forkgraph::task]
fn inspect_histogram(raw: &Value, h: forkgraph::Serde<Histogram>) -> (bool, i64) {
    let shared = matches!(raw, Value::Encoded(_, b) if b.is_shared());
    (shared, h.0.counts.iter().sum::<u64>() as i64)
}

#[test]
fn large_serde_values_travel_as_segments_too() {
    let _turn = serial();
    watchdog(120, || {
        let p = pool();
        let g = graph! {
            "h" => (big_histogram, 1_000_000),
            "a" => (inspect_histogram, key("h"), key("h")),
            "b" => (inspect_histogram, key("h"), key("h")),
        };
        let out = p.get(&g, vec!["a", "b"]).unwrap();
        let expected: i64 = (0..1_000_000i64).map(|i| i * 3).sum();
        let mut any_shared = false;
        for o in out.as_list().unwrap() {
            let Value::List(l) = o.as_value().unwrap() else {
                panic!()
            };
            any_shared |= l[0].to::<bool>().unwrap();
            assert_eq!(l[1].to::<i64>().unwrap(), expected);
        }
        assert!(
            any_shared,
            "an 8 MB encoded value reached a consumer as a segment"
        );
        assert_eq!(segment_stats().count, 0);
    });
}

/// Inode of the memory file behind `data` (0 when it is not a mapped file), read from
/// /proc/self/maps.
#[forkgraph::task]
fn inode_of(data: &[u8]) -> i64 {
    let start = data.as_ptr() as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let range = f.next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        if (a..b).contains(&start) {
            let inode = f.nth(3).unwrap();
            return inode.parse().unwrap();
        }
    }
    0
}

#[test]
fn segments_are_recycled_once_nothing_maps_them_and_never_while_held() {
    let _turn = serial();
    watchdog(120, || {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        let g = graph! {
            "d" => (produce_heap, 4),
            "i1" => (inode_of, key("d")),
            "i2" => (inode_of, key("d")),
            "s" => (sum_bytes, key("d")),
        };
        let expected: u64 = (0..4 * MIB).map(|i| (i % 251) as u64).sum();
        let inode = |out: &forkgraph::Output| -> i64 {
            let l = out.as_list().unwrap();
            l[0].to::<i64>().unwrap().max(l[1].to::<i64>().unwrap())
        };
        // Hold a result of the first get: its segment must not be reused while held.
        let held = p.get(&g, vec!["i1", "i2", "d"]).unwrap();
        let first = inode(&held);
        assert!(first > 0, "one consumer read the result as a segment");
        let Value::Array(kept) = held.as_list().unwrap()[2].as_value().unwrap().clone() else {
            panic!()
        };
        let second = inode(&p.get(&g, vec!["i1", "i2"]).unwrap());
        assert_ne!(second, first, "a held segment is not reused");
        // Nothing holds the second get's segment now: the third get reuses it.
        let third = inode(&p.get(&g, vec!["i1", "i2"]).unwrap());
        assert_eq!(third, second, "a segment nobody maps is reused");
        let sum = p.get(&g, "s").unwrap().to::<u64>().unwrap();
        assert_eq!(sum, expected);
        // The held result still has its own bytes after all that reuse.
        let now: u64 = kept.as_bytes().iter().map(|&b| b as u64).sum();
        assert_eq!(now, expected);
        drop(kept);
        drop(held);
        assert_eq!(segment_stats().count, 0);
    });
}

/// Arrays kept by tasks beyond their call (this worker process's own state).
static KEPT: Mutex<Vec<Array>> = Mutex::new(Vec::new());

#[forkgraph::task]
fn fill(mib: usize, v: i64) -> Vec<u8> {
    vec![v as u8; mib * MIB]
}

/// Keeps a clone of its input (safe code may do this); says whether it was a segment.
#[forkgraph::task]
fn keep(data: &Array) -> bool {
    KEPT.lock().unwrap().push(data.clone());
    data.buffer().is_shared()
}

/// The distinct byte values in each kept array (each must still hold one value: its fill).
#[forkgraph::task]
fn kept_values(_x: i64) -> Vec<Vec<i64>> {
    KEPT.lock()
        .unwrap()
        .iter()
        .map(|a| {
            let mut v: Vec<i64> = a.as_bytes().iter().map(|&b| b as i64).collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect()
}

#[test]
fn a_segment_a_task_kept_is_never_recycled_under_it() {
    let _turn = serial();
    watchdog(120, || {
        let p = ProcessPool::builder().workers(1).build().unwrap();
        let g = graph! {
            "d" => (fill, 4, 1),
            "k1" => (keep, key("d")),
            "k2" => (keep, key("d")),
        };
        let out = p.get(&g, vec!["k1", "k2"]).unwrap();
        let shared: Vec<bool> = out
            .as_list()
            .unwrap()
            .iter()
            .map(|o| o.to::<bool>().unwrap())
            .collect();
        assert!(
            shared.contains(&true),
            "a kept input was a segment: {shared:?}"
        );
        // Results of the same size, produced and released again and again: candidates for
        // the kept segment's memory.
        for v in 2..6 {
            let g = graph! {
                "d" => (fill, 4, v),
                "s1" => (sum_bytes, key("d")),
                "s2" => (sum_bytes, key("d")),
            };
            let out = p.get(&g, vec!["s1", "s2"]).unwrap();
            assert_eq!(
                out.as_list().unwrap()[1].to::<u64>().unwrap(),
                v as u64 * 4 * MIB as u64
            );
        }
        let kept = p.get(&graph! { "v" => (kept_values, 0) }, "v").unwrap();
        let kept: Vec<Vec<i64>> = kept.to().unwrap();
        assert_eq!(
            kept,
            vec![vec![1], vec![1]],
            "kept inputs still hold their own bytes"
        );
    });
}

#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
struct Counts {
    name: String,
    counts: Vec<u64>,
}

#[forkgraph::task]
fn big_counts(n: usize) -> forkgraph::Rkyv<Counts> {
    forkgraph::Rkyv(Counts {
        name: "c".into(),
        counts: (0..n as u64).collect(),
    })
}

/// Reads the archive in place: (its sum, whether the archived data lies inside the shared
/// segment the raw value maps, i.e. nothing was copied or deserialized).
#[forkgraph::task]
fn sum_archived(raw: &Value, c: forkgraph::Archived<'_, Counts>) -> (i64, bool) {
    let sum: u64 = c.counts.iter().map(|x| x.to_native()).sum();
    let in_place = match raw {
        Value::Encoded(_, b) => {
            let r = b.as_bytes().as_ptr_range();
            let p = c.counts.as_ptr() as *const u8;
            b.is_shared() && r.contains(&p)
        }
        _ => false,
    };
    assert_eq!(c.name.as_str(), "c");
    (sum as i64, in_place)
}

#[test]
fn archived_values_are_read_in_place_from_segments() {
    let _turn = serial();
    watchdog(120, || {
        let n = 1_000_000usize;
        let expected = (n as i64 - 1) * n as i64 / 2;
        let g = graph! {
            "c" => (big_counts, n),
            "a" => (sum_archived, key("c"), key("c")),
            "b" => (sum_archived, key("c"), key("c")),
        };
        let p = pool();
        let out = p.get(&g, vec!["a", "b"]).unwrap();
        let mut in_place = false;
        for o in out.as_list().unwrap() {
            let Value::List(l) = o.as_value().unwrap() else {
                panic!()
            };
            assert_eq!(l[0].to::<i64>().unwrap(), expected);
            in_place |= l[1].to::<bool>().unwrap();
        }
        assert!(
            in_place,
            "a consumer read the archive inside the mapped segment"
        );
        // Same task code on sync: the archive is read in place from the heap.
        let s = SyncScheduler.get(&g, "a").unwrap();
        let Value::List(l) = s.as_value().unwrap() else {
            panic!()
        };
        assert_eq!(l[0].to::<i64>().unwrap(), expected);
        // A wrong type is a clear mismatch, not undefined behaviour.
        let bad = graph! { "x" => 5, "a" => (sum_archived, key("x"), key("x")) };
        let e = SyncScheduler.get(&bad, "a").unwrap_err().to_string();
        assert!(e.contains("rkyv:") && e.contains("Counts"), "{e}");
    });
}

/// Returns its input array unchanged (the same segment, when it came as one).
#[forkgraph::task]
fn pass_on(data: &Array) -> Array {
    data.clone()
}

/// A result of a recycling pool (a recyclable segment) passed to a pool that does not recycle
/// goes there sealed: that pool's parent refuses recyclable segments from its workers (their
/// producer may still write them), so a task that returns its input must not carry one back.
#[test]
fn a_recycled_result_passes_through_a_pool_that_does_not_recycle() {
    let _s = serial();
    watchdog(60, || {
        let a = ProcessPool::builder().workers(1).build().unwrap();
        let v = a
            .get(&graph! { "p" => (produce_heap, 1usize) }, "p")
            .unwrap()
            .into_value();
        let b = ProcessPool::builder()
            .workers(1)
            .recycle_segments(false)
            .build()
            .unwrap();
        let g = graph! { "v" => v.clone(), "same" => (pass_on, key("v")) };
        let back = b.get(&g, "same").unwrap().into_value();
        assert_eq!(back, v);
        let total = b
            .get(&graph! { "v" => v, "s" => (sum_bytes, key("v")) }, "s")
            .unwrap();
        let want: u64 = (0..MIB).map(|i| (i % 251) as u64).sum();
        assert_eq!(total.to::<u64>().unwrap(), want);
    });
}
