//! Running the `edgecut` binary from the CLI tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `edgecut args`, with `stdin` on standard input (none: an empty, closed input).
pub fn edgecut(args: &[&str], stdin: Option<&str>) -> Output {
    let piped = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecut"))
        .args(args)
        .stdin(piped)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgecut");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Standard output of a run that must have succeeded.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "edgecut failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}
