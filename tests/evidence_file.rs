//! The evidence store of the embedded default, an append-only file, through the same
//! behaviour suite as PostgreSQL (`tests/evidence_suite`): one set of promises, two backends.
//! What only the file does (replay, a torn last line, the lock) is tested beside it, in
//! `src/write/evidence/file/tests.rs`.

#[macro_use]
mod evidence_suite;

use std::path::PathBuf;

use evidence_suite::Backend;
use iysgate::domain::BusinessCalendar;
use iysgate::write::evidence::{EvidenceStore, FileStore};

/// Each test on a new log file in a directory of its own under the system temp dir.
struct FileBackend {
    dir: PathBuf,
}

impl Backend for FileBackend {
    async fn fresh(test: &str) -> (Self, EvidenceStore) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "iysgate-evidence-{test}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = FileStore::open(&dir.join("evidence.jsonl"), BusinessCalendar::embedded())
            .await
            .unwrap();
        (Self { dir }, EvidenceStore::from(store))
    }

    async fn tidy(self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

evidence_suite!(FileBackend);
