//! The evidence store of the embedded default, an append-only file, through the same
//! behaviour suite as PostgreSQL (`tests/evidence_suite`): one set of promises, two backends.
//! What only the file does (replay, a torn last line, the lock) is tested beside it, in
//! `src/evidence/file/tests.rs`.

mod evidence_suite;

use std::path::PathBuf;

use iysgate::domain::BusinessCalendar;
use iysgate::write::evidence::{EvidenceStore, FileStore};

/// A fresh log path of its own for one test, in a new directory under the system temp dir.
fn fresh_path(test: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "iysgate-evidence-{test}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("evidence.jsonl")
}

/// Runs suite functions, each on a new file that is removed when it passes.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let path = fresh_path(stringify!($name));
            let store = FileStore::open(&path, BusinessCalendar::embedded()).await.unwrap();
            evidence_suite::$name(EvidenceStore::from(store)).await;
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    )*};
}

suite!(
    record_reads_back,
    same_key_is_stored_once,
    concurrent_duplicates_store_one,
    failing_batch_stores_nothing,
    uploads_follow_the_state_machine,
    superseded_is_final_and_kept,
    lapsed_lease_is_reclaimed,
    deadlines_follow_the_calendar,
    concurrent_claimers_never_share,
    brands_and_clients,
    cursors_and_reports,
);
