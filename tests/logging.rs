//! Logs as a log pipeline reads them: the built binary serves with `--log-format json` to a
//! pipe, answers Checks about a phone number and an e-mail address, and stops on SIGTERM; every
//! line it wrote must be a JSON object with `level`, `target` and `message`, carry no ESC byte,
//! and name neither recipient. The same run in `text` to a pipe carries no ESC byte either.

use std::io::{BufRead, BufReader};
mod bin_support;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bin_support::iysgate;

const KEY: &str = "iysk_test_logging";
const BRAND: &str = "600001";
const PHONE: &str = "+905321234567";
const EMAIL: &str = "ayse.yilmaz@example.com";

/// Serves with `format`, checks both recipients, stops it, and returns every line it wrote.
fn run_server(format: &str, extra_env: &[(&str, &str)]) -> Vec<String> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One evidence file per run: the server holds its file locked.
    let dir = std::env::temp_dir().join(format!("iysgate-logging-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let digest = iysgate::auth::to_hex(&iysgate::auth::hash_key(KEY));
    let mut cmd = iysgate();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
    ])
    .args(["--panel-listen", "off", "--log-format", format])
    .args([
        "--client",
        &format!("name=log;sha256={digest};brands={BRAND}"),
    ])
    .arg("--evidence-file")
    .arg(dir.join("evidence.log"))
    .args(["--shutdown-delay", "0s"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut server: Child = cmd.spawn().expect("the iysgate binary");
    let (tx, rx) = mpsc::channel();
    let stdout = server.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    // The listen address from the "serving" line (port 0 was asked for).
    let mut addr = None;
    while addr.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs that it is serving");
        if line.contains("serving") {
            addr = line
                .split(|c: char| c == '"' || c.is_whitespace() || c == '=')
                .find(|w| w.starts_with("127.0.0.1:"))
                .map(str::to_owned);
        }
    }
    let addr = format!("http://{}", addr.unwrap());
    for (channel, recipient) in [("MESAJ", PHONE), ("EPOSTA", EMAIL)] {
        let out = iysgate()
            .args(["check", "--addr", &addr, "--api-key", KEY, "--brand", BRAND])
            .args(["--channel", channel, recipient])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(recipient),
            "the check was answered: {out:?}"
        );
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(server.wait().unwrap().success());
    let mut lines = reader.join().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    lines.extend(stderr.lines().map(str::to_owned));
    lines
}

#[test]
fn json_lines_have_level_target_and_message_and_no_recipient() {
    let lines = run_server("json", &[("RUST_LOG", "info,iysgate=trace")]);
    assert!(lines.len() >= 3, "start, drain and stop lines: {lines:?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ESC in {line:?}");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field} in {line}");
        }
        assert!(
            !line.contains("5321234567") && !line.contains(EMAIL),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"serving\"")),
        "{lines:?}"
    );
}

#[test]
fn text_to_a_pipe_has_no_colour_codes() {
    let lines = run_server("text", &[]);
    assert!(lines.iter().any(|l| l.contains("serving")), "{lines:?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "ESC in {line:?}");
        assert!(
            !line.contains("5321234567") && !line.contains(EMAIL),
            "{line}"
        );
    }
}

#[test]
fn rust_log_is_the_filter_when_no_log_flag_is_given() {
    let lines = run_server("json", &[("RUST_LOG", "warn,iysgate::app::run=info")]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"target\":\"iysgate::app::run\"")),
        "{lines:?}"
    );
    // The drain's info lines come from `iysgate::app::serving`, held back by `warn`.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"target\":\"iysgate::app::serving\"")),
        "{lines:?}"
    );
    let all = run_server("json", &[("RUST_LOG", "info")]);
    assert!(
        all.iter()
            .any(|l| l.contains("\"target\":\"iysgate::app::serving\"")),
        "{all:?}"
    );
}
