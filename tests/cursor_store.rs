//! One behaviour suite for where sync cursors are kept, run against every backend: the
//! process's `MemoryCursors` (the `CursorStore` the worker reads), the Redis shared state
//! (`SharedState::{load,store}_cursor`, how a new leader continues where the old one
//! stopped) and the evidence store on PostgreSQL and on file (`EvidenceStore::{cursor,
//! set_cursor}`). Redis and PostgreSQL come from `REDIS_URL` / `DATABASE_URL`; without them
//! those tests fail, never skip. The suite's tests are listed once, in `cursor_suite!`.
//!
//! Only the memory store implements the `CursorStore` trait (synchronous, infallible); the
//! others keep cursors through async, fallible methods of their own. [`Cursors`] is the one
//! face the suite sees, so every backend is held to the same promises.

mod common;
mod pg_support;

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use iysgate::domain::BusinessCalendar;
use iysgate::sync::redis::SharedState;
use iysgate::sync::{BrandRef, Cursor, CursorStore, MemoryCursors, PullSource};
use iysgate::write::evidence::{Brand, EvidenceStore, FileStore, Provider};

/// Where the suite keeps and reads cursors.
trait Cursors: Send + Sync + 'static {
    fn get(
        &self,
        brand: BrandRef,
        source: PullSource,
    ) -> impl Future<Output = Option<Cursor>> + Send;
    fn put(
        &self,
        brand: BrandRef,
        source: PullSource,
        cursor: &Cursor,
    ) -> impl Future<Output = ()> + Send;
}

impl Cursors for MemoryCursors {
    async fn get(&self, brand: BrandRef, source: PullSource) -> Option<Cursor> {
        CursorStore::get(self, brand, source)
    }
    async fn put(&self, brand: BrandRef, source: PullSource, cursor: &Cursor) {
        CursorStore::put(self, brand, source, cursor.clone());
    }
}

impl Cursors for SharedState {
    async fn get(&self, brand: BrandRef, source: PullSource) -> Option<Cursor> {
        self.load_cursor(brand, source).await.unwrap()
    }
    async fn put(&self, brand: BrandRef, source: PullSource, cursor: &Cursor) {
        self.store_cursor(brand, source, cursor).await.unwrap();
    }
}

impl Cursors for EvidenceStore {
    async fn get(&self, brand: BrandRef, source: PullSource) -> Option<Cursor> {
        self.cursor(brand, source).await.unwrap()
    }
    async fn put(&self, brand: BrandRef, source: PullSource, cursor: &Cursor) {
        self.set_cursor(brand, source, cursor, at(0)).await.unwrap();
    }
}

const IYS_CODE: u32 = 600_000;
/// The brands every test uses (the evidence store knows them; the others need not).
const BRANDS: [BrandRef; 2] = [
    BrandRef {
        iys_code: IYS_CODE,
        brand_code: 600_001,
    },
    BrandRef {
        iys_code: IYS_CODE,
        brand_code: 600_002,
    },
];

/// `minute` minutes after a fixed instant, to the microsecond (what every backend keeps).
fn at(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_779_264_000_000_000 + minute * 60_000_000).unwrap()
}

fn cursor(after: &str, caught_up_minute: Option<i64>) -> Cursor {
    Cursor {
        after: Some(after.into()),
        caught_up_at: caught_up_minute.map(at),
    }
}

/// The suite: each function takes a fresh, empty backend and proves one promise.
mod suite {
    use super::*;

    /// Nothing stored reads as none, for every brand and source.
    pub async fn missing_is_none(store: impl Cursors) {
        for brand in BRANDS {
            for source in PullSource::BOTH {
                assert_eq!(store.get(brand, source).await, None, "{brand:?} {source:?}");
            }
        }
    }

    /// What was put is read back whole.
    pub async fn put_then_get(store: impl Cursors) {
        let stored = cursor("1597740617_abc", Some(5));
        store.put(BRANDS[0], PullSource::Iys, &stored).await;
        assert_eq!(store.get(BRANDS[0], PullSource::Iys).await, Some(stored));
    }

    /// A cursor saved mid-way through a first catch-up (never caught up yet, or no page
    /// yet) reads back as such: a new leader must not take it for a sync last caught up long
    /// ago, which would raise a false gap and resync seven days of files.
    pub async fn unset_parts_read_back_unset(store: impl Cursors) {
        let midway = Cursor {
            after: Some("1597740617_abc".into()),
            caught_up_at: None,
        };
        store.put(BRANDS[0], PullSource::Iys, &midway).await;
        assert_eq!(store.get(BRANDS[0], PullSource::Iys).await, Some(midway));
        let caught_up_empty = Cursor {
            after: None,
            caught_up_at: Some(at(1)),
        };
        store.put(BRANDS[0], PullSource::Hs, &caught_up_empty).await;
        assert_eq!(
            store.get(BRANDS[0], PullSource::Hs).await,
            Some(caught_up_empty)
        );
    }

    /// A later put replaces the earlier one.
    pub async fn put_overwrites(store: impl Cursors) {
        store
            .put(BRANDS[0], PullSource::Iys, &cursor("1_a", Some(1)))
            .await;
        let next = cursor("2_b", Some(2));
        store.put(BRANDS[0], PullSource::Iys, &next).await;
        assert_eq!(store.get(BRANDS[0], PullSource::Iys).await, Some(next));
    }

    /// Each (brand, source) has a cursor of its own: putting one changes no other.
    pub async fn brands_and_sources_are_independent(store: impl Cursors) {
        let mut expected = HashMap::new();
        for (i, brand) in BRANDS.into_iter().enumerate() {
            for (j, source) in PullSource::BOTH.into_iter().enumerate() {
                let c = cursor(&format!("{i}{j}_x"), Some((i * 2 + j) as i64));
                store.put(brand, source, &c).await;
                expected.insert((brand, source), c);
            }
        }
        let replaced = cursor("99_y", Some(99));
        store.put(BRANDS[1], PullSource::Hs, &replaced).await;
        expected.insert((BRANDS[1], PullSource::Hs), replaced);
        for ((brand, source), c) in expected {
            assert_eq!(
                store.get(brand, source).await,
                Some(c),
                "{brand:?} {source:?}"
            );
        }
    }
}

/// One `#[tokio::test]` per suite test, each on a fresh backend from `$make` (an async fn
/// given the test's name, returning the store and what to tidy once the test passed). The
/// one list of the suite's tests.
macro_rules! cursor_suite {
    ($make:path) => {
        cursor_suite!(@tests $make;
            missing_is_none,
            put_then_get,
            unset_parts_read_back_unset,
            put_overwrites,
            brands_and_sources_are_independent,
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, tidy) = $make(stringify!($name)).await;
            $crate::suite::$name(store).await;
            tidy.tidy().await;
        }
    )*};
}

/// What a backend leaves behind, removed once its test passed.
enum Tidy {
    Nothing,
    Redis(String),
    Schema(Box<pg_support::Schema>),
    Dir(std::path::PathBuf),
}

impl Tidy {
    async fn tidy(self) {
        match self {
            Self::Nothing => {}
            Self::Redis(prefix) => common::wipe(&prefix).await,
            Self::Schema(schema) => (*schema).drop().await,
            Self::Dir(dir) => std::fs::remove_dir_all(dir).unwrap(),
        }
    }
}

/// The provider and brands the evidence store needs before it keeps their cursors.
async fn with_brands(store: EvidenceStore) -> EvidenceStore {
    let provider = Provider {
        iys_code: IYS_CODE,
        name: "Örnek A.Ş.".into(),
        credentials_ref: "env:IYS_PASSWORD".into(),
    };
    store.add_provider(&provider, at(0)).await.unwrap();
    for brand in BRANDS {
        let brand = Brand {
            brand_code: brand.brand_code,
            iys_code: IYS_CODE,
            name: format!("Örnek {}", brand.brand_code),
            policy: iysgate::domain::BrandPolicy::default(),
        };
        store.add_brand(&brand, at(0)).await.unwrap();
    }
    store
}

mod memory {
    use super::*;

    #[allow(clippy::unused_async)] // the suite awaits every backend's `fresh`
    async fn fresh(_test: &str) -> (MemoryCursors, Tidy) {
        (MemoryCursors::default(), Tidy::Nothing)
    }

    cursor_suite!(fresh);
}

mod redis {
    use super::*;

    async fn fresh(test: &str) -> (SharedState, Tidy) {
        let prefix = common::prefix(test);
        (common::shared(&prefix).await, Tidy::Redis(prefix))
    }

    // Before the fix, an unset `caught_up_at` was written as 0 and read back as 1970-01-01:
    // a leader taking over mid first catch-up reported a false sync gap.
    cursor_suite!(fresh);
}

mod pg {
    use super::*;

    async fn fresh(test: &str) -> (EvidenceStore, Tidy) {
        let schema = pg_support::Schema::new(test).await;
        let store = with_brands(schema.store().await).await;
        (store, Tidy::Schema(Box::new(schema)))
    }

    cursor_suite!(fresh);
}

mod file {
    use super::*;

    async fn fresh(test: &str) -> (EvidenceStore, Tidy) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "iysgate-cursors-{test}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = FileStore::open(&dir.join("evidence.jsonl"), BusinessCalendar::embedded())
            .await
            .unwrap();
        let store = with_brands(EvidenceStore::from(store)).await;
        (store, Tidy::Dir(dir))
    }

    cursor_suite!(fresh);
}
