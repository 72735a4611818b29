//! TLS and mTLS on the gRPC port and the metrics listener, tested with a client that is not
//! ours (Python grpcio, `tests/python/tls_client.py`) against the real binary, on certificates
//! the test makes with the `openssl` command: a CA-signed server certificate is served, a
//! client certificate of another CA is refused under mTLS, and a certificate rotated in place
//! is served to new connections without a restart.

mod certs;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use certs::{make_ca, make_cert};

const KEY: &str = "iysk_test_tls_client";

/// The Python with grpcio: `IYSGATE_TEST_PYTHON`, else Debian's (where `python3-grpcio` installs).
fn python() -> String {
    std::env::var("IYSGATE_TEST_PYTHON").unwrap_or_else(|_| {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str = "extendedKeyUsage=clientAuth\n";

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("iysgate-tls-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_ca(&dir, "ca1");
        make_ca(&dir, "ca2");
        make_cert(&dir, "ca1", "server1", SERVER_EXT);
        make_cert(&dir, "ca2", "server2", SERVER_EXT);
        make_cert(&dir, "ca1", "client1", CLIENT_EXT);
        make_cert(&dir, "ca2", "rogue", CLIENT_EXT);
        // What the server is given: copies it may see replaced.
        std::fs::copy(dir.join("server1.pem"), dir.join("served.pem")).unwrap();
        std::fs::copy(dir.join("server1.key"), dir.join("served.key")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(pki: &Pki, port_base: u16, extra: &[&str]) -> Server {
    let port = common::private_port(port_base);
    let addr = format!("127.0.0.1:{port}");
    let digest = iysgate::auth::to_hex(&iysgate::auth::hash_key(KEY));
    let mut args = vec![
        "serve".to_owned(),
        "--listen".into(),
        addr.clone(),
        "--client".into(),
        format!("name=tls;sha256={digest};brands=600001"),
        "--evidence-file".into(),
        pki.path("evidence.log"),
        "--tls-cert".into(),
        pki.path("served.pem"),
        "--tls-key".into(),
        pki.path("served.key"),
        "--log".into(),
        "warn".into(),
        "--panel-listen".into(),
        "off".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let child = Command::new(env!("CARGO_BIN_EXE_iysgate"))
        .args(&args)
        .spawn()
        .expect("the iysgate binary");
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, addr }
}

/// One Check through grpcio: `OK <verdict>` or `ERROR <code>`.
fn grpcio_check(addr: &str, ca: &str, client: Option<(&str, &str)>) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/tls_client.py"
    ))
    .args([addr, ca, KEY]);
    if let Some((cert, key)) = client {
        cmd.args([cert, key]);
    }
    let out = cmd.output().expect("python3 for the grpcio client");
    assert!(
        out.status.success(),
        "the grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// DENY (the server has no records): the call went through.
const ANSWERED: &str = "OK 3";

#[test]
fn grpcio_checks_over_tls_and_metrics_are_served_over_https() {
    let pki = Pki::new("plain");
    let metrics_port = common::private_port(15_000);
    let metrics = format!("127.0.0.1:{metrics_port}");
    let server = serve(&pki, 16_000, &["--metrics-listen", &metrics]);
    assert_eq!(
        grpcio_check(&server.addr, &pki.path("ca1.pem"), None),
        ANSWERED
    );
    // A client that trusts another CA does not accept the server.
    assert_eq!(
        grpcio_check(&server.addr, &pki.path("ca2.pem"), None),
        "ERROR UNAVAILABLE"
    );
    // The metrics listener serves the same certificate.
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/tls_client.py"
        ))
        .args([
            "--metrics",
            &format!("https://{metrics}/metrics"),
            &pki.path("ca1.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP 200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plaintext to the TLS port gets no answer.
    let plain = std::process::Command::new(env!("CARGO_BIN_EXE_iysgate"))
        .args([
            "check",
            "--addr",
            &format!("http://{}", server.addr),
            "--brand",
            "600001",
        ])
        .args(["--channel", "MESAJ", "--api-key", KEY, "+905321234567"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "a plaintext call to the TLS port must fail"
    );
}

#[test]
fn mtls_refuses_a_client_certificate_of_another_ca() {
    let pki = Pki::new("mtls");
    let server = serve(
        &pki,
        17_000,
        &[
            "--metrics-listen",
            "off",
            "--tls-client-ca",
            &pki.path("ca1.pem"),
        ],
    );
    let ca = pki.path("ca1.pem");
    let (good_cert, good_key) = (pki.path("client1.pem"), pki.path("client1.key"));
    let (rogue_cert, rogue_key) = (pki.path("rogue.pem"), pki.path("rogue.key"));
    assert_eq!(
        grpcio_check(&server.addr, &ca, Some((&good_cert, &good_key))),
        ANSWERED
    );
    assert_eq!(
        grpcio_check(&server.addr, &ca, Some((&rogue_cert, &rogue_key))),
        "ERROR UNAVAILABLE"
    );
    assert_eq!(grpcio_check(&server.addr, &ca, None), "ERROR UNAVAILABLE");
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new("rotate");
    let server = serve(
        &pki,
        18_000,
        &["--metrics-listen", "off", "--tls-reload", "200ms"],
    );
    assert_eq!(
        grpcio_check(&server.addr, &pki.path("ca1.pem"), None),
        ANSWERED
    );
    assert_eq!(
        grpcio_check(&server.addr, &pki.path("ca2.pem"), None),
        "ERROR UNAVAILABLE"
    );
    // Rotate: a certificate of the second CA replaces the files (key first, as a Secret
    // update would land both).
    std::fs::copy(pki.dir.join("server2.key"), pki.dir.join("served.key")).unwrap();
    std::fs::copy(pki.dir.join("server2.pem"), pki.dir.join("served.pem")).unwrap();
    let started = Instant::now();
    loop {
        let seen = grpcio_check(&server.addr, &pki.path("ca2.pem"), None);
        if seen == ANSWERED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rotated certificate was not served ({seen})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        grpcio_check(&server.addr, &pki.path("ca1.pem"), None),
        "ERROR UNAVAILABLE",
        "the old certificate is no longer served"
    );
}
