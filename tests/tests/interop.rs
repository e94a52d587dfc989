//! Interop with a real third-party STOMP client: runs tests/interop/test_stomp_py.py, which
//! drives the broker with stomp.py (the Python client, `pip install stomp.py`), against an
//! in-process broker on a fresh PostgreSQL database.
//!
//! The Python interpreter is `$POSTBUS_PYTHON`, else `tests/.venv/bin/python` when it exists,
//! else `python3`. A missing stomp.py is a failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use postbus_tests::TestBroker;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(30);

const HOW_TO_INSTALL: &str = "install it with `pip install stomp.py` for that interpreter (or set \
     POSTBUS_PYTHON to a python that has it), or run the README's test command, which creates \
     tests/.venv with stomp.py in it";

/// The interpreter to run the script with.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POSTBUS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Output of a finished (or killed) child process.
struct Run {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

async fn read_all<R: AsyncRead + Unpin>(r: Option<R>) -> String {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut buf).await;
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs a command to completion, killing it after `timeout`; keeps whatever it printed.
async fn run(mut cmd: Command, timeout: Duration) -> std::io::Result<Run> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (Some(status?), false),
        Err(_) => {
            let _ = child.kill().await;
            (None, true)
        }
    };
    Ok(Run {
        status,
        timed_out,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_py_interop() {
    let python = python();

    // The client library must be there: a missing stomp.py fails the test, with what to do.
    let mut check = Command::new(&python);
    check
        .arg("-c")
        .arg("import stomp; print(stomp.__version__)");
    let checked = match run(check, IMPORT_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => panic!(
            "cannot run {} ({e}): the stomp.py interop test needs Python 3 with stomp.py; {HOW_TO_INSTALL}",
            python.display()
        ),
    };
    assert!(
        checked.status.is_some_and(|s| s.success()),
        "{} cannot `import stomp` (stomp.py is not installed for it); {HOW_TO_INSTALL}\n\
         --- stdout ---\n{}\n--- stderr ---\n{}",
        python.display(),
        checked.stdout,
        checked.stderr,
    );

    let b = TestBroker::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/test_stomp_py.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .env("STOMP_ADDR", &b.addr)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run(cmd, SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    println!("--- stdout ---\n{}", out.stdout);
    println!("--- stderr ---\n{}", out.stderr);
    assert!(
        !out.timed_out,
        "{} did not finish within {SCRIPT_TIMEOUT:?} (killed)\n--- stdout ---\n{}\n--- stderr ---\n{}",
        script.display(),
        out.stdout,
        out.stderr,
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "stomp.py interop failed ({:?}; rerun alone with `STOMP_ADDR=host:port {} {}`)\n\
         --- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        python.display(),
        script.display(),
        out.stdout,
        out.stderr,
    );
}
