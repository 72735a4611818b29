//! The command line's commands that are not the server itself: the client of the check
//! (`check`, `filter`) and the administration of brands and clients over the evidence store.

pub mod admin;
pub mod client;
