//! TLS and AUTH to the stores: a private `redis-server` and a private PostgreSQL, each started
//! by the test in a temp dir on a free port, serving certificates the test makes with the
//! `openssl` command. Redis: `rediss://user:password@` with `--redis-ca-file`'s CA carries the
//! shared state; a client trusting another CA and a wrong password are refused, and the error
//! does not show the password. PostgreSQL (`hostssl` only): `sslmode=verify-full` with
//! `sslrootcert` opens the evidence store and runs its migrations, `sslmode=require` connects,
//! `sslmode=disable` is refused by the server.
//!
//! Needs `openssl`, `redis-server` and PostgreSQL's server binaries (`/usr/lib/postgresql/*/bin`;
//! `scripts/test-services.sh` installs all three); without them the tests fail, never skip.
//! As root, PostgreSQL runs as the `postgres` user (it refuses root).

mod certs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use iysgate::domain::BusinessCalendar;
use iysgate::sync::redis::SharedState;
use iysgate::write::evidence::PgStore;
use sqlx::postgres::PgConnectOptions;

use certs::{make_ca, make_cert};

/// A server certificate `name`.pem / `name`.key for 127.0.0.1 and localhost, signed by `ca`.
fn make_server_cert(dir: &Path, ca: &str, name: &str) {
    make_cert(
        dir,
        ca,
        name,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
}

/// A temp dir with two CAs and a server certificate of the first; removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("iysgate-store-tls-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        make_server_cert(&dir, "ca", "server");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The private PostgreSQL, stopped on drop (as root its process is `runuser`'s child, so
/// killing the child would leave it running).
struct Postgres {
    child: Child,
    data: PathBuf,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const REDIS_USER: &str = "iysgate";
const REDIS_PASSWORD: &str = "s3cret-Redis-pass";

/// `redis-server` on TLS only (`--port 0`), with an ACL user of its own and the default user
/// off, so every connection must `AUTH` as that user.
fn start_redis(pki: &Pki) -> (Running, u16) {
    let port = free_port();
    let acl = pki.path("users.acl");
    std::fs::write(
        &acl,
        format!("user default off\nuser {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n"),
    )
    .unwrap();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&pki.dir)
        .arg("--tls-cert-file")
        .arg(pki.path("server.pem"))
        .arg("--tls-key-file")
        .arg(pki.path("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(pki.path("ca.pem"))
        .args(["--tls-auth-clients", "no"])
        .arg("--aclfile")
        .arg(&acl)
        .stdout(Stdio::null())
        .spawn()
        .expect("this test needs redis-server (apt-get install redis-server)");
    wait_for_port(port, "redis-server", &mut child);
    (Running(child), port)
}

#[tokio::test]
async fn rediss_with_the_ca_file_carries_the_shared_state() {
    let pki = Pki::new("redis-ok");
    let (_redis, port) = start_redis(&pki);
    let url = format!("rediss://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{port}");
    let ca = pki.path("ca.pem");
    let writer = SharedState::connect_with_ca(&url, "tls-test", Some(&ca))
        .await
        .expect("rediss:// with the server's CA");
    let (epoch, created) = writer.ensure_epoch().await.unwrap();
    assert!(created, "a fresh server has no epoch");
    writer.heartbeat(chrono::Utc::now()).await.unwrap();
    // A second connection reads what the first wrote.
    let reader = SharedState::connect_with_ca(&url, "tls-test", Some(&ca))
        .await
        .unwrap();
    assert_eq!(reader.epoch().await.unwrap(), Some(epoch));

    // By IP too: the certificate names 127.0.0.1.
    let by_ip = format!("rediss://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{port}");
    let reader = SharedState::connect_with_ca(&by_ip, "tls-test", Some(&ca))
        .await
        .expect("rediss:// to 127.0.0.1");
    assert!(reader.epoch().await.unwrap().is_some());
}

#[tokio::test]
async fn rediss_refuses_a_server_of_another_ca_and_plain_text_and_the_system_roots() {
    let pki = Pki::new("redis-ca");
    let (_redis, port) = start_redis(&pki);
    let url = format!("rediss://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{port}");
    let Err(e) =
        SharedState::connect_with_ca(&url, "tls-test", Some(&pki.path("other-ca.pem"))).await
    else {
        panic!("a client trusting another CA connected");
    };
    let text = e.to_string();
    assert!(!text.contains(REDIS_PASSWORD), "{text}");
    // The system's roots do not know the test's CA either.
    assert!(
        SharedState::connect(&url, "tls-test").await.is_err(),
        "the system roots trusted the test's CA"
    );
    // A CA file that cannot be read names its path.
    let Err(e) =
        SharedState::connect_with_ca(&url, "tls-test", Some(&pki.path("missing.pem"))).await
    else {
        panic!("a missing CA file was accepted");
    };
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // Plain text to the TLS port does not get through.
    let plain = format!("redis://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{port}");
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        SharedState::connect(&plain, "tls-test"),
    )
    .await;
    assert!(
        !matches!(result, Ok(Ok(_))),
        "plain text reached the TLS port"
    );
}

#[tokio::test]
async fn a_wrong_redis_password_is_refused_without_showing_it() {
    let pki = Pki::new("redis-auth");
    let (_redis, port) = start_redis(&pki);
    let ca = pki.path("ca.pem");
    let wrong = "not-the-Pa55word";
    for url in [
        format!("rediss://{REDIS_USER}:{wrong}@localhost:{port}"),
        // The default user is off: no password is no access.
        format!("rediss://localhost:{port}"),
    ] {
        // Connecting may succeed without AUTH; the first command may not.
        let used = match SharedState::connect_with_ca(&url, "tls-test", Some(&ca)).await {
            Ok(state) => state.epoch().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let Err(e) = used else {
            panic!("{url} was served");
        };
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains(wrong),
            "the error shows the password: {text}"
        );
        assert!(!text.contains(REDIS_PASSWORD), "{text}");
    }
    // The token store opens its client the same way.
    let bad = format!("rediss://{REDIS_USER}:{wrong}@localhost:{port}");
    let Err(e) =
        iysgate::iys::token::RedisTokenStore::connect_with_ca(&bad, "p", "u", Some(&ca)).await
    else {
        panic!("the token store connected with a wrong password");
    };
    assert!(!e.to_string().contains(wrong), "{e}");
    let good = format!("rediss://{REDIS_USER}:{REDIS_PASSWORD}@localhost:{port}");
    iysgate::iys::token::RedisTokenStore::connect_with_ca(&good, "p", "u", Some(&ca))
        .await
        .expect("the token store over TLS");
}

/// PostgreSQL's server binaries, newest version first.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("this test needs PostgreSQL's server (apt-get install postgresql)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bin").join(name).exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| {
            panic!("no /usr/lib/postgresql/*/bin/{name}: apt-get install postgresql")
        })
        .join("bin")
        .join(name)
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A command of PostgreSQL's, as the `postgres` user when this test runs as root.
fn pg_command(name: &str) -> Command {
    let bin = pg_bin(name);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", path.display());
    }
}

/// A private PostgreSQL: `ssl=on` with the test's certificate, `hostssl` only, trust for the
/// `postgres` user and scram passwords for `app`.
fn start_postgres(pki: &Pki) -> (Postgres, u16) {
    let port = free_port();
    let data = pki.path("pgdata");
    chown_to_postgres(&pki.dir);
    let out = pg_command("initdb")
        .args(["-U", "postgres", "--auth", "trust", "-D"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all postgres 127.0.0.1/32 trust\nhostssl all app 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    // The key must be the server user's and private.
    std::fs::copy(pki.path("server.pem"), data.join("server.crt")).unwrap();
    std::fs::copy(pki.path("server.key"), data.join("server.key")).unwrap();
    chown_to_postgres(&data);
    let chmod = Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key"))
        .status()
        .unwrap();
    assert!(chmod.success());
    let mut child = pg_command("postgres")
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"])
        .args(["-c", "ssl_key_file=server.key"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", pki.dir.display()))
        .stdout(Stdio::null())
        // Its log (the refusals this test causes) in the temp dir, not in the test's output.
        .stderr(std::fs::File::create(pki.path("postgres.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port, "postgres", &mut child);
    (Postgres { child, data }, port)
}

const PG_PASSWORD: &str = "pg-Secret-99";

#[tokio::test]
async fn postgres_over_tls_verify_full_opens_the_evidence_store_and_plain_text_is_refused() {
    let pki = Pki::new("pg");
    let (_pg, port) = start_postgres(&pki);
    let ca = pki.path("ca.pem");
    let base = format!("postgres://postgres@localhost:{port}/postgres");

    // verify-full: the CA and the host name are checked; the store runs its migrations.
    let verify_full = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let store = tokio::time::timeout(
        Duration::from_secs(30),
        PgStore::connect(&verify_full, BusinessCalendar::embedded()),
    )
    .await
    .expect("connect in time")
    .expect("sslmode=verify-full with the server's CA opens the evidence store");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(tables > 0, "the migrations made no tables");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(ssl, "the connection is not encrypted");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE app LOGIN PASSWORD '{PG_PASSWORD}'"
    )))
    .execute(store.pool())
    .await
    .unwrap();

    // verify-ca with the same CA, by IP.
    let verify_ca = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
        ca.display()
    );
    connect(&verify_ca)
        .await
        .expect("sslmode=verify-ca with the server's CA");

    // require: encrypted, the certificate not checked (libpq's meaning without a root file).
    connect(&format!("{base}?sslmode=require"))
        .await
        .expect("sslmode=require");

    // verify-full against another CA is refused by the client.
    let other = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        pki.path("other-ca.pem").display()
    );
    assert!(
        connect(&other).await.is_err(),
        "verify-full trusted another CA"
    );

    // Plain text: the server has only hostssl lines, so it refuses.
    let Err(e) = connect(&format!("{base}?sslmode=disable")).await else {
        panic!("sslmode=disable connected");
    };
    assert!(
        e.to_string().contains("pg_hba.conf"),
        "refused by the server's pg_hba.conf: {e}"
    );

    // A password user over TLS, and a wrong password's error does not show it.
    let app = |password: &str| {
        format!(
            "postgres://app:{password}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };
    connect(&app(PG_PASSWORD))
        .await
        .expect("the password user over TLS");
    let wrong = "wrong-Pg-pass";
    let Err(e) = PgStore::connect(&app(wrong), BusinessCalendar::embedded()).await else {
        panic!("a wrong password connected");
    };
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(wrong),
        "the error shows the password: {text}"
    );
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let options = PgConnectOptions::from_str(url)?;
    tokio::time::timeout(
        Duration::from_secs(20),
        sqlx::PgConnection::connect_with(&options),
    )
    .await
    .expect("an answer in time")
}
