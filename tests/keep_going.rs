//! `GetOptions::keep_going` (`make -k`): after a task fails, independent branches still run;
//! each requested key is its value or the error that stopped it, on every scheduler.

mod common;

use common::watchdog;
use forkgraph::{
    graph, key, Error, GetOptions, Keys, Output, ProcessPool, Scheduler, SyncScheduler,
    TaskErrorKind, ThreadPool,
};

#[forkgraph::task]
fn inc(x: i64) -> i64 {
    x + 1
}

#[forkgraph::task]
fn refuse(x: i64) -> Result<i64, String> {
    Err(format!("refused {x}"))
}

fn check(s: &dyn Scheduler) {
    let g = graph! {
        "a" => (inc, 1),
        "bad" => (refuse, key("a")),
        "c" => (inc, key("bad")),
        "d" => (inc, key("c")),
        "alias" => key("d"),
        "e" => (inc, key("a")),
        "f" => (inc, key("e")),
    };
    let keys = Keys::from(vec!["bad", "c", "d", "alias", "e", "f", "a"]);
    // Without it: the first error.
    let e = s.get_with(&g, &keys, &GetOptions::new()).unwrap_err();
    assert!(matches!(&e, Error::Task(t) if t.key == "bad".into()), "{e}");
    // With it: every key, value or error.
    let out = s
        .get_with(&g, &keys, &GetOptions::new().keep_going(true))
        .unwrap();
    let l = out.as_list().unwrap();
    let own = l[0].error().expect("bad failed");
    assert_eq!(own.key, "bad".into());
    assert!(own.to_string().contains("refused 2"), "{own}");
    for (i, k) in [(1, "c"), (2, "d"), (3, "alias")] {
        let e = l[i].error().unwrap_or_else(|| panic!("{k}: {:?}", l[i]));
        assert_eq!(e.key, k.into());
        assert_eq!(
            e.kind,
            TaskErrorKind::Upstream { key: "bad".into() },
            "{k} names the task that failed: {e}"
        );
    }
    assert_eq!(l[4], Output::Value(3.into()));
    assert_eq!(l[5], Output::Value(4.into()));
    assert_eq!(l[6], Output::Value(2.into()));
}

#[test]
fn independent_branches_run_and_every_key_reports_its_fate() {
    watchdog(60, || {
        check(&SyncScheduler);
        check(&ThreadPool::builder().threads(2).build().unwrap());
        check(&ProcessPool::builder().workers(2).build().unwrap());
    });
}
