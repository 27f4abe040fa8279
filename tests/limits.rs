//! What building and using a pool does to the program's own limits.

mod common;

use common::{assert_helper_prints, is_helper, watchdog};
use forkgraph::{Arg, Graph, Keys, ProcessPool};

#[forkgraph::task]
fn bytes64(i: i64) -> Vec<u8> {
    vec![i as u8; 64]
}

fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

/// The helper: soft open-file limit 256, hard 4096. A pool leaves the soft limit alone until the
/// results it holds need more fds, then raises it (never above the hard limit), and never
/// lowers it.
#[test]
fn helper_fd_limit() {
    if !is_helper("helper_fd_limit") {
        return;
    }
    let r = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 4096,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    let pool = ProcessPool::builder()
        .workers(2)
        .segment_threshold(Some(16))
        .build()
        .unwrap();
    let mut small = Graph::new();
    small.task("x", "bytes64", vec![Arg::Value(1.into())]);
    pool.get(&small, "x").unwrap();
    assert_eq!(nofile(), (256, 4096), "untouched while not needed");
    let mut g = Graph::new();
    let mut keys = Vec::new();
    for i in 0..1000i64 {
        g.task(("b", i), "bytes64", vec![Arg::Value(i.into())]);
        keys.push(Keys::from(("b", i)));
    }
    let out = pool.get(&g, Keys::List(keys)).unwrap();
    assert_eq!(out.as_list().unwrap().len(), 1000);
    let (soft, hard) = nofile();
    assert!(
        soft > 1000 && soft <= 4096 && hard == 4096,
        "raised as needed: {soft} {hard}"
    );
    drop(out);
    pool.get(&small, "x").unwrap();
    assert_eq!(nofile().0, soft, "never lowered");
    println!("LIMITS OK");
}

#[test]
fn the_open_file_limit_is_raised_only_when_needed_and_never_lowered() {
    watchdog(120, || {
        assert_helper_prints("helper_fd_limit", "LIMITS OK");
    });
}

/// The helper: no fds left for the fork server's socket: the build error keeps the system error
/// as its `source()`.
#[test]
fn helper_build_error_source() {
    if !is_helper("helper_build_error_source") {
        return;
    }
    let mut open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    open = open.saturating_sub(1);
    let r = libc::rlimit {
        rlim_cur: open,
        rlim_max: open,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0);
    let e = ProcessPool::builder().workers(1).build().unwrap_err();
    let source = std::error::Error::source(&e).expect("an io::Error source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.raw_os_error(), Some(libc::EMFILE), "{e}");
    println!("SOURCE OK {e}");
}

#[test]
fn a_build_error_keeps_its_system_cause() {
    watchdog(60, || {
        assert_helper_prints("helper_build_error_source", "SOURCE OK");
    });
}
