//! The configuration file as the binary sees it: precedence flag > environment > file >
//! default, one test per level and one where all four disagree, `IYSGATE_CONFIG`, the
//! `…_FILE` variables, and `iysgate config check`'s output and exit codes. Each test runs the
//! built binary with an environment of its own (the test process's is never changed).

use std::path::PathBuf;
mod bin_support;

use std::process::Output;

use bin_support::iysgate;

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iysgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with no `IYSGATE_` variable of the caller's.
fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The `grace` line of `config check FILE serve FLAGS…` under `env`.
fn grace(file: &str, env: Option<&str>, flags: &[&str]) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = temp(&format!("grace-{n}.toml"), file);
    let mut cmd = iysgate();
    cmd.args(["config", "check"])
        .arg(&path)
        .arg("serve")
        .args(flags);
    if let Some(v) = env {
        cmd.env("IYSGATE_GRACE", v);
    }
    let text = stdout(&cmd.output().unwrap());
    text.lines()
        .find(|l| l.starts_with("grace = "))
        .unwrap_or_else(|| panic!("no grace line in {text}"))
        .to_owned()
}

#[test]
fn the_default_when_nothing_else_is_given() {
    assert_eq!(grace("", None, &[]), "grace = \"10s\" # default");
}

#[test]
fn the_file_over_the_default() {
    assert_eq!(
        grace("grace = \"3s\"\n", None, &[]),
        "grace = \"3s\" # file"
    );
}

#[test]
fn the_environment_over_the_file() {
    assert_eq!(
        grace("grace = \"3s\"\n", Some("4s"), &[]),
        "grace = \"4s\" # environment"
    );
}

#[test]
fn the_flag_over_the_environment() {
    assert_eq!(
        grace("", Some("4s"), &["--grace", "5s"]),
        "grace = \"5s\" # flag"
    );
}

#[test]
fn all_four_disagree_and_the_flag_wins() {
    // default 10s, file 3s, environment 4s, flag 5s.
    assert_eq!(
        grace("grace = \"3s\"\n", Some("4s"), &["--grace", "5s"]),
        "grace = \"5s\" # flag"
    );
}

#[test]
fn iysgate_config_names_the_file_and_a_bad_key_stops_the_start() {
    let path = temp(
        "bad-key.toml",
        "listen = \"127.0.0.1:0\"\nredis_url = \"redis://x\"\n",
    );
    let out = iysgate()
        .arg("serve")
        .env("IYSGATE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `redis_url`"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn config_check_exits_1_with_the_error() {
    let path = temp("bad-value.toml", "max-staleness = \"soon\"\n");
    let out = iysgate()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`max-staleness`") && err.contains("\"soon\""),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // Settings that disagree are checked too.
    let path = temp("disagree.toml", "iys-timeout = \"20s\"\n");
    let out = iysgate()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-staleness"));
}

#[test]
fn secret_file_variables_are_read_and_never_printed() {
    let password = temp("iys-password", "iys-s3cret\n");
    let redis = temp("redis-url", "redis://app:redis-s3cret@cache:6379\n");
    let path = temp(
        "sync.toml",
        concat!(
            "iys-url = \"https://api.iys.org.tr\"\niys-username = \"api-user\"\n",
            "brand = [\"700000:700001\", \"700000:700002\"]\ninterval = \"2s\"\n"
        ),
    );
    let out = iysgate()
        .args(["config", "check"])
        .arg(&path)
        .arg("sync")
        .env("IYSGATE_IYS_PASSWORD_FILE", &password)
        .env("IYSGATE_REDIS_URL_FILE", &redis)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("iys-password = \"***\" # environment, read from --iys-password-file"),
        "{text}"
    );
    assert!(
        text.contains("redis-url = \"redis://app:***@cache:6379\" # environment"),
        "{text}"
    );
    assert!(
        text.contains("brand = [\"700000:700001\", \"700000:700002\"] # file"),
        "{text}"
    );
    // A file that is not there: the variable's flag and path, and no content.
    let out = iysgate()
        .args(["config", "check"])
        .arg(&path)
        .arg("sync")
        .env("IYSGATE_IYS_PASSWORD_FILE", "/nonexistent/iys-password")
        .env("IYSGATE_REDIS_URL_FILE", &redis)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--iys-password-file /nonexistent/iys-password"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
