//! What tasks log inside worker processes reaches the parent's `log` logger and `tracing`
//! subscriber, tagged with the worker and the task's key.

use std::sync::{Mutex, Once};

use forkgraph::{graph, ProcessPool};

static LOGGED: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());
static TRACED: Mutex<Vec<(tracing::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            LOGGED
                .lock()
                .unwrap()
                .push((r.level(), r.target().to_owned(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// A subscriber that records each event's fields as `name=value` text.
struct Events;

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", f.name(), v));
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut t = Text(format!("target={} ", e.metadata().target()));
        e.record(&mut t);
        TRACED.lock().unwrap().push((*e.metadata().level(), t.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Info);
        tracing::subscriber::set_global_default(Events).unwrap();
    });
}

#[forkgraph::task]
fn chatty(x: i64) -> i64 {
    log::info!("log record from a task, x = {x}");
    log::debug!("a debug record nobody enabled");
    tracing::info!(answer = 42, "tracing event from a task");
    tracing::debug!("a debug event nobody enabled");
    x + 1
}

#[test]
fn records_emitted_in_a_worker_reach_the_parent_with_worker_and_key() {
    install();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let worker = pool.worker_pids()[0];
    let g = graph! { "talk" => (chatty, 7) };
    assert_eq!(pool.get(&g, "talk").unwrap().to::<i64>().unwrap(), 8);

    let logged = LOGGED.lock().unwrap().clone();
    let ours: Vec<_> = logged
        .iter()
        .filter(|(_, _, m)| m.contains("from a task"))
        .collect();
    assert_eq!(ours.len(), 1, "{logged:?}");
    let (level, target, message) = ours[0];
    assert_eq!(*level, log::Level::Info);
    assert_eq!(target, "logging", "the task's own target");
    assert!(message.contains("x = 7"), "{message}");
    assert!(message.contains(&format!("worker {worker}")), "{message}");
    assert!(message.contains("talk"), "the key: {message}");
    assert!(!logged.iter().any(|(_, _, m)| m.contains("nobody enabled")));

    let traced = TRACED.lock().unwrap().clone();
    let ours: Vec<_> = traced
        .iter()
        .filter(|(_, t)| t.contains("tracing event from a task"))
        .collect();
    assert_eq!(ours.len(), 1, "{traced:?}");
    let (level, text) = ours[0];
    assert_eq!(*level, tracing::Level::INFO);
    assert!(text.contains(&format!("worker={worker}")), "{text}");
    assert!(text.contains("key=talk"), "{text}");
    assert!(text.contains("answer=42"), "{text}");
    assert!(text.contains("origin=logging"), "{text}");
    assert!(!traced.iter().any(|(_, t)| t.contains("nobody enabled")));
}
