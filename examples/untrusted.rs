//! Running untrusted native code: a hostile task on a sandboxed pool (README "Running untrusted
//! code"). It prints which sandbox layers this kernel provides, then what the task tried and
//! whether it was refused, and finally that the pool still computes.
//!
//! Run: `cargo run --example untrusted`

use forkgraph::{graph, ProcessPool, Sandbox, Value};

/// Tries what a malicious task would: read secrets, write outside its directory, reach the
/// network, signal and read the pool's process, fork, exec. One line per attempt.
#[forkgraph::task]
fn hostile(pool_pid: i64, scratch: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut report = |what: &str, r: Result<String, String>| {
        out.push(match r {
            Ok(s) => format!("ALLOWED  {what}: {s}"),
            Err(e) => format!("refused  {what}: {e}"),
        })
    };
    let errno = || std::io::Error::last_os_error().to_string();
    report(
        "read /etc/passwd",
        std::fs::read_to_string("/etc/passwd")
            .map(|s| format!("{} bytes", s.len()))
            .map_err(|e| e.to_string()),
    );
    report(
        "write /tmp/forkgraph-untrusted-was-here",
        std::fs::write("/tmp/forkgraph-untrusted-was-here", "x")
            .map(|()| "written".into())
            .map_err(|e| e.to_string()),
    );
    let mine = format!("{scratch}/result.txt");
    report(
        &format!("write {mine} (its read-write directory)"),
        std::fs::write(&mine, "x")
            .map(|()| "written".into())
            .map_err(|e| e.to_string()),
    );
    report(
        "connect to 1.1.1.1:53",
        std::net::TcpStream::connect("1.1.1.1:53")
            .map(|_| "connected".into())
            .map_err(|e| e.to_string()),
    );
    report(
        "read $HOME",
        std::env::var("HOME").map_err(|e| e.to_string()),
    );
    // SAFETY: kill with signal 0 only checks permission; it sends nothing.
    let r = unsafe { libc::kill(pool_pid as i32, 0) };
    report(
        "signal the pool's process",
        if r == 0 {
            Ok("allowed".into())
        } else {
            Err(errno())
        },
    );
    report(
        "read the pool's memory",
        std::fs::read(format!("/proc/{pool_pid}/environ"))
            .map(|b| format!("{} bytes of its environment", b.len()))
            .map_err(|e| e.to_string()),
    );
    // SAFETY: the child (if any) exits at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child: ends it at once.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    report(
        "fork",
        if pid > 0 {
            Ok(format!("child {pid}"))
        } else {
            Err(errno())
        },
    );
    let sh = c"/bin/sh";
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        c"true".as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: execve with NUL-terminated strings and null-terminated arrays; it returns only on
    // failure (on success this worker would become `sh`).
    unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), [std::ptr::null()].as_ptr()) };
    report("execve /bin/sh", Err(errno()));
    out
}

#[forkgraph::task]
fn square(x: i64) -> i64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = std::env::temp_dir().join(format!("forkgraph-untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let sandbox = Sandbox::strict()
        .read_write([&scratch])
        .allow_network(false)
        .max_processes(1)
        .memory_limit(512 << 20)
        .best_effort();
    println!("sandbox layers on this kernel:");
    for layer in sandbox.report().layers {
        println!("  {:<13} {}", layer.name, layer.status);
    }
    let pool = ProcessPool::builder().workers(1).sandbox(sandbox).build()?;
    let me = std::process::id() as i64;
    let g = graph! { "attack" => (hostile, me, scratch.to_string_lossy().as_ref()) };
    println!("\nwhat the hostile task tried:");
    if let Some(Value::List(lines)) = pool.get(&g, "attack")?.as_value() {
        for l in lines {
            if let Value::Str(s) = l {
                println!("  {s}");
            }
        }
    }
    let g = graph! { "s" => (square, 12i64) };
    println!(
        "\nthe pool still computes: 12 * 12 = {:?}",
        pool.get(&g, "s")?.as_value()
    );
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
