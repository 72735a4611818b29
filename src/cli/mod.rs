//! The command line's commands other than `serve` and `sync` (which are [`crate::app::run`]):
//! the client of the check (`check`, `filter`), the administration of brands and clients over
//! the evidence store, the demo and its tour, `import` with its progress, `keygen`, and with
//! the `dev-tools` feature the mock İYS and the load generator.

pub mod admin;
pub mod client;
pub mod demo;
pub mod import;
pub mod keygen;
#[cfg(feature = "dev-tools")]
pub mod load;
#[cfg(feature = "dev-tools")]
pub mod mock_iys;
