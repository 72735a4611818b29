//! Talking to İYS (İleti Yönetim Sistemi).

pub mod client;
pub mod token;
