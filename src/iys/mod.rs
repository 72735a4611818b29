//! Talking to İYS (İleti Yönetim Sistemi): the REST client and its token manager, the wire
//! types, and a faithful mock of the İYS API for tests, load tests and the embedded default.

pub mod client;
/// İYS's H-codes and their messages, as İYS answers them (the mock's answers and the write
/// path's refusals).
pub mod codes;
#[cfg(feature = "dev-tools")]
pub mod mock;
pub mod token;
/// İYS's field validation (the 422 layer), shared by the mock İYS and `ConsentRecords`.
pub mod validate;
pub mod wire;
