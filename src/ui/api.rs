//! The tenant JSON API under `/.portcullis/api/...`: twins of the pages for scripts and
//! SPAs. `error.rs` holds its one mapping from refusal to response; its handlers are in
//! `ui/mod.rs` (sign-in, sessions, history, password) and `ui/admin.rs` (breakers).

mod error;

pub(super) use error::ApiError;
