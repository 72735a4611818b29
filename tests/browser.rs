//! The browser suite (tests/browser/suite.py) in a real headless Chromium against the real
//! binary: accounts made with `iysgate user add/grant/reset`, then `iysgate demo` with the
//! panel on a free port, then the Python suite driving Debian's chromium and chromedriver
//! through python3-selenium (`scripts/test-services.sh` installs them). It fails, never
//! skips, when any of them is missing.
//!
//! Screenshots go to a temporary directory; `IYSGATE_SCREENSHOTS=docs/screenshots` keeps them
//! (that is how the README's images are made).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_iysgate");

/// A child process ended when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iysgate(dir: &Path, args: &[&str], password: Option<&str>) -> String {
    let evidence = dir.join("evidence.log");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--evidence-file")
        .arg(&evidence)
        .env_remove("DATABASE_URL")
        .env_remove("IYSGATE_USER_PASSWORD");
    if let Some(p) = password {
        cmd.env("IYSGATE_USER_PASSWORD", p);
    }
    let out = cmd.output().expect("run iysgate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "iysgate {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_panel_in_headless_chromium() {
    let dir = std::env::temp_dir().join(format!("iysgate-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The demo's brands first, so that accounts can be granted them before the demo starts.
    for (code, name) in [
        ("600001", "Anadolu Market"),
        ("600002", "Anadolu Market Online"),
    ] {
        iysgate(
            &dir,
            &[
                "brand",
                "add",
                "--iys-code",
                "600000",
                "--brand-code",
                code,
                "--name",
                name,
            ],
            None,
        );
    }
    let admin = "yonetici-parola-1";
    let out = iysgate(
        &dir,
        &["user", "add", "--name", "yonetici", "--role", "admin"],
        Some(admin),
    );
    assert!(
        out.contains("panel account yonetici (admin) added"),
        "{out}"
    );
    assert!(!out.contains(admin), "a given password is not printed");
    iysgate(
        &dir,
        &[
            "user",
            "add",
            "--name",
            "uyum",
            "--role",
            "compliance",
            "--brand",
            "600001",
        ],
        Some("uyum-parola-12"),
    );
    // Without IYSGATE_USER_PASSWORD the password is generated and printed once.
    let out = iysgate(
        &dir,
        &["user", "add", "--name", "izleyici", "--role", "viewer"],
        None,
    );
    let viewer = out
        .lines()
        .find_map(|l| l.strip_prefix("its password (shown once): "))
        .unwrap_or_else(|| panic!("a generated password: {out}"))
        .to_owned();
    let out = iysgate(
        &dir,
        &["user", "grant", "--name", "izleyici", "--brand", "600001"],
        None,
    );
    assert!(out.contains("izleyici: brand 600001 granted"), "{out}");
    iysgate(
        &dir,
        &["user", "grant", "--name", "izleyici", "--brand", "600002"],
        None,
    );
    iysgate(
        &dir,
        &[
            "user", "grant", "--name", "izleyici", "--brand", "600002", "--revoke",
        ],
        None,
    );
    // The account the rate limit locks: its first password reset, the new one printed.
    iysgate(
        &dir,
        &["user", "add", "--name", "kilit", "--role", "viewer"],
        Some("kilit-parola-1"),
    );
    let out = iysgate(&dir, &["user", "reset", "--name", "kilit"], None);
    let locked = out
        .lines()
        .find_map(|l| l.strip_prefix("panel account kilit: new password (shown once): "))
        .unwrap_or_else(|| panic!("a new password: {out}"))
        .to_owned();
    let list = iysgate(&dir, &["user", "list"], None);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .to_owned()
    };
    assert!(row("yonetici").contains("admin") && row("yonetici").ends_with('*'));
    assert!(row("uyum").contains("compliance") && row("uyum").ends_with("600001"));
    assert!(
        row("izleyici").ends_with("600001"),
        "600002 revoked: {list}"
    );
    // A brand the store does not know is refused.
    let refused = Command::new(BIN)
        .args(["user", "grant", "--name", "uyum", "--brand", "999999"])
        .arg("--evidence-file")
        .arg(dir.join("evidence.log"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no brand 999999"));

    let panel_port = free_port();
    let panel_addr = format!("127.0.0.1:{panel_port}");
    let mut demo = Command::new(BIN);
    demo.args([
        "demo",
        "--records",
        "20000",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--panel-listen",
        &panel_addr,
        "--log",
        "warn",
        "--evidence-file",
    ])
    .arg(dir.join("evidence.log"))
    .env_remove("DATABASE_URL")
    .env_remove("IYSGATE_REDIS_URL")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut demo = Running(demo.spawn().expect("start iysgate demo"));
    // The demo prints its tour when it is ready; then the panel answers.
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_mins(2);
    // The tour ends with the NoRecord line; by then the panel's port is bound.
    let mut tour = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "the demo's panel did not start");
        if let Some(status) = demo.0.try_wait().unwrap() {
            panic!("iysgate demo ended: {status}");
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.starts_with("compliance panel:") {
                assert!(line.contains(&panel_addr), "{line}");
            }
            let last = line.trim_start().starts_with("NoRecord:");
            tour.push(line);
            if last {
                break;
            }
        }
    }
    while std::net::TcpStream::connect(&panel_addr).is_err() {
        assert!(Instant::now() < deadline, "the demo's panel did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the gRPC Check answers for each of the tour's sample recipients, asked by the CLI
    // client (not through the panel): the panel's lookup must show the same reason.
    let key = tour
        .iter()
        .find_map(|l| l.trim().strip_prefix("export IYSGATE_API_KEY="))
        .expect("the tour prints the API key")
        .to_owned();
    let mut samples = Vec::new();
    for line in &tour {
        let Some(at) = line.find("iysgate check ") else {
            continue;
        };
        if line.contains("--retailer") {
            continue; // the lookup asks without a retailer
        }
        let words: Vec<&str> = line[at + "iysgate check ".len()..]
            .split_whitespace()
            .collect();
        let value = |flag: &str| {
            let i = words.iter().position(|w| *w == flag).unwrap();
            words[i + 1].to_owned()
        };
        let recipient = line[line.find('\'').unwrap() + 1..line.rfind('\'').unwrap()].to_owned();
        let out = Command::new(BIN)
            .args([
                "check",
                "--addr",
                &value("--addr"),
                "--brand",
                &value("--brand"),
            ])
            .args(["--channel", &value("--channel")])
            .arg(&recipient)
            .env("IYSGATE_API_KEY", &key)
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        let reason = answer
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        assert!(!reason.is_empty(), "iysgate check {recipient}: {answer}");
        samples.push(format!("{}|{recipient}|{reason}", value("--channel")));
    }
    assert!(samples.len() >= 4, "the tour's samples: {tour:?}");

    let shots: PathBuf = std::env::var_os("IYSGATE_SCREENSHOTS").map_or_else(
        || dir.join("screenshots"),
        |d| Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
    );
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/suite.py");
    let out = Command::new("/usr/bin/python3")
        .arg(&suite)
        .args(["--base", &format!("http://{panel_addr}")])
        .args(["--admin", &format!("yonetici:{admin}")])
        .args(["--compliance", "uyum:uyum-parola-12"])
        .args(["--viewer", &format!("izleyici:{viewer}")])
        .args(["--locked", &format!("kilit:{locked}")])
        .args(
            samples
                .iter()
                .flat_map(|sample| ["--sample", sample.as_str()]),
        )
        .arg("--screenshots")
        .arg(&shots)
        .output()
        .expect("run /usr/bin/python3 (scripts/test-services.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the browser suite failed:\n{text}");
    assert!(text.contains("browser scenarios passed"), "{text}");
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}
