//! Talking to İYS (İleti Yönetim Sistemi): the REST client and its token manager, the wire
//! types, and a faithful mock of the İYS API for tests, load tests and the embedded default.

pub mod client;
pub mod mock;
pub mod token;
pub mod wire;
