//! Authentication: the token file (issue point 8); the token before the model, failed HELLOs
//! limited per address, and results that are not finite (9).

use std::io::Write;
use std::process::Stdio;

use edgecut_tests::scratch;
use edgecut_wire::{Encoding, ErrorCode, Frame};

use crate::support::*;

/// `serve_args` with the token file replaced by one holding `token`.
fn with_token(token: &[u8], name: &str) -> std::process::Command {
    let f = scratch().join(format!("{name}-{}", std::process::id()));
    std::fs::write(&f, token).unwrap();
    let mut args = serve_args(&[]);
    let i = args.iter().position(|a| a == "--token-file").unwrap();
    args[i + 1] = f.to_string_lossy().into_owned();
    let mut cmd = command();
    cmd.args(args);
    cmd
}

#[test]
fn token_files_are_taken_byte_for_byte_and_checked_at_start() {
    let _g = serial();
    let (_, id) = session();
    // Over the 512 bytes a HELLO carries: no client could ever match it.
    let out = with_token(&[b'k'; 600], "long-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    let exited = wait_exit(&mut out, std::time::Duration::from_secs(20));
    if exited.is_none() {
        let _ = out.kill();
    }
    let status = out.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&status.stderr).into_owned();
    println!(
        "a 600-byte token file: exited {exited:?} with {:?}: {}",
        status.status,
        err.trim()
    );
    assert!(exited.is_some() && !status.status.success());
    assert!(err.contains("512"), "{err}");

    // Binary tokens: two byte strings that read the same as lossy UTF-8 are different tokens.
    let srv = spawn(with_token(b"\xff\xfe\n", "binary-token"));
    let mut c = raw(&srv.addr);
    c.write_all(&hello(id, b"\xfe\xff")).unwrap();
    let wrong = code(next(&mut c));
    let mut c = raw(&srv.addr);
    c.write_all(&hello(id, b"\xff\xfe")).unwrap();
    let right = next(&mut c);
    println!("token file ff fe: HELLO with fe ff -> {wrong:?}; with ff fe -> {right:?}");
    assert_eq!(wrong, Some(ErrorCode::Unauthorized));
    assert!(matches!(right, Some(Frame::HelloOk(_))));
}

#[test]
fn unauthenticated_clients_learn_nothing_and_cannot_guess_at_line_rate() {
    let _g = serial();
    let srv = start(&["--failed-hellos-per-minute", "5"]);
    let (s, id) = session();
    // A wrong model with a wrong token: told about the token, not the model.
    let mut c = raw_from(&srv.addr, "127.0.0.2");
    c.write_all(&hello([1; 32], b"guess")).unwrap();
    let first = code(next(&mut c));
    // Four more wrong guesses use up the address's five; then even the right token is refused
    // unchecked, from that address only.
    for i in 0..4 {
        let mut c = raw_from(&srv.addr, "127.0.0.2");
        c.write_all(&hello(id, format!("guess{i}").as_bytes()))
            .unwrap();
        assert_eq!(code(next(&mut c)), Some(ErrorCode::Unauthorized));
    }
    let mut c = raw_from(&srv.addr, "127.0.0.2");
    c.write_all(&hello(id, b"s3cret")).unwrap();
    let limited = next(&mut c);
    let lat = legit(&s, &srv.addr);
    let mut c = raw_from(&srv.addr, "127.0.0.3");
    c.write_all(&hello(id, b"s3cret")).unwrap();
    let other = next(&mut c);
    println!(
        "wrong model + wrong token -> {first:?}; the right token after 5 failures from one \
         address -> {limited:?}; from another address -> {other:?}; a legitimate client \
         (127.0.0.1) took {lat:.1?}"
    );
    assert_eq!(first, Some(ErrorCode::Unauthorized));
    match limited {
        Some(Frame::Error { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert!(message.contains("too many failed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(other, Some(Frame::HelloOk(_))));
    assert_eq!(metric(&srv, "edgecut_rate_limited_total"), Some(1.0));
}

#[test]
fn results_that_are_not_finite_are_refused_not_sent() {
    let _g = serial();
    let srv = start(&[]);
    let (s, id) = session();
    let mut c = authed(&srv.addr, id);
    // Finite values near f32's largest overflow in the first layer norm.
    let (f, _) = timed(&mut c, &infer_frame(3, Encoding::F32, 2, 8, 384, 3.0e38));
    let mut c2 = authed(&srv.addr, id);
    let (g, _) = timed(&mut c2, &infer_frame(3, Encoding::F32, 2, 8, 384, 0.5));
    let seen = match &f {
        Some(Frame::Result(r)) => format!(
            "a RESULT with {} of {} values NaN",
            r.values.iter().filter(|v| v.is_nan()).count(),
            r.values.len()
        ),
        other => format!("{other:?}"),
    };
    println!("activations of 3e38: {seen}");
    match f {
        Some(Frame::Error { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("not finite"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    match g {
        Some(Frame::Result(r)) => assert!(r.values.iter().all(|v| v.is_finite())),
        other => panic!("{other:?}"),
    }
    legit(&s, &srv.addr);
}
