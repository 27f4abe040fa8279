//! `tracing` events for scheduler events: off unless a subscriber listens at TRACE/DEBUG for
//! the `forkgraph::*` targets; then they show tasks ready, dispatched and finished, units sent
//! to workers and done, segments mapped and freed, deaths and replacements.

use std::sync::Mutex;

use forkgraph::{graph, key, ProcessPool, SyncScheduler};

static SEEN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Events;

struct Msg(String);

impl tracing::field::Visit for Msg {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            self.0 = format!("{v:?}");
        }
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target().starts_with("forkgraph::")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut m = Msg(String::new());
        e.record(&mut m);
        SEEN.lock()
            .unwrap()
            .push((e.metadata().target().to_owned(), m.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[forkgraph::task]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[forkgraph::task]
fn total(v: &[f64]) -> f64 {
    v.iter().sum()
}

#[test]
fn scheduler_events_reach_a_tracing_subscriber() {
    tracing::subscriber::set_global_default(Events).unwrap();
    let g = graph! { "v" => (ramp, 100_000usize), "t" => (total, key("v")) };
    let expected = SyncScheduler.get(&g, vec!["v", "t"]).unwrap();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(pool.get(&g, vec!["v", "t"]).unwrap(), expected);
    let seen = SEEN.lock().unwrap().clone();
    let has = |target: &str, msg: &str| seen.iter().any(|(t, m)| t == target && m == msg);
    for msg in ["ready", "dispatched", "finished"] {
        assert!(has("forkgraph::engine", msg), "{msg}: {seen:?}");
    }
    for msg in ["units sent", "unit done"] {
        assert!(has("forkgraph::pool", msg), "{msg}: {seen:?}");
    }
    // The 800 KB array `v` came back as a shared segment.
    assert!(has("forkgraph::segments", "segment mapped"), "{seen:?}");
}
