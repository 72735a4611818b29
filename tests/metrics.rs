//! `/metrics` of a running server (the built binary): every `iysgate_` series has HELP text,
//! the build, data age, index size and process series are there, and calls are counted by
//! method and status code — a refused call under its code, an answered one under OK.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
mod bin_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bin_support::iysgate;

const KEY: &str = "iysk_test_metrics";
const BRAND: &str = "600001";

fn scrape(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the series `name{labels}` as rendered (labels e.g. `method="Check"`).
fn raw<'a>(text: &'a str, series: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn value(text: &str, series: &str) -> f64 {
    raw(text, series).parse().unwrap()
}

#[test]
fn metrics_have_help_and_count_calls_by_method_and_code() {
    let dir = std::env::temp_dir().join(format!("iysgate-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let digest = iysgate::auth::to_hex(&iysgate::auth::hash_key(KEY));
    let mut server = iysgate()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--panel-listen", "off", "--log-format", "json"])
        .args([
            "--client",
            &format!("name=m;sha256={digest};brands={BRAND}"),
        ])
        .arg("--evidence-file")
        .arg(dir.join("evidence.log"))
        .args(["--shutdown-delay", "0s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the iysgate binary");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let serving: serde_json::Value = loop {
        let line = lines.next().expect("a serving line").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "serving" {
            break v;
        }
    };
    let grpc = format!("http://{}", serving["listen"].as_str().unwrap());
    let metrics = serving["metrics"].as_str().unwrap().to_owned();
    let check = |key: &str| {
        iysgate()
            .args(["check", "--addr", &grpc, "--api-key", key, "--brand", BRAND])
            .args(["--channel", "MESAJ", "+905321234567"])
            .output()
            .unwrap()
    };
    assert!(check(KEY).status.success());
    assert!(!check("iysk_not_a_key").status.success());
    assert!(!check("iysk_not_a_key").status.success());

    let text = scrape(&metrics);
    let calls = |code: &str| {
        raw(
            &text,
            &format!("iysgate_grpc_requests_total{{method=\"Check\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(calls("OK"), "1");
    assert_eq!(
        calls("UNAUTHENTICATED"),
        "2",
        "each refused call under its code"
    );
    assert_eq!(calls("INVALID_ARGUMENT"), "0");
    assert_eq!(
        raw(
            &text,
            "iysgate_grpc_requests_total{method=\"Filter\",code=\"OK\"}"
        ),
        "0"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        raw(
            &text,
            &format!("iysgate_build_info{{version=\"{version}\"}}")
        ),
        "1"
    );
    let age = value(&text, "iysgate_data_age_seconds");
    assert!(
        (0.0..5.0).contains(&age),
        "the embedded default is fresh: {age}"
    );
    assert_eq!(raw(&text, "iysgate_index_records"), "0");
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "process_open_fds") > 3.0);
    assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(value(&text, "process_start_time_seconds") > 1.7e9);
    // Every iysgate_ series is described, with its unit in the name or the HELP.
    let mut names: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iysgate_"))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
        })
        .collect();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    assert!(text.contains("# HELP iysgate_data_age_seconds "), "{text}");
    assert!(
        text.contains("# HELP iysgate_grpc_requests_total "),
        "{text}"
    );

    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}
