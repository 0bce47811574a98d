//! The records the stores keep: plain data with the few rules that belong to the data
//! itself (liveness of a session, what a kill switch covers, a change request's digest).
//! Depends on nothing but [`crate::account`]; the store, the services and the edges all
//! read these types, so they sit at the bottom of the crate.
//!
//! # Layout
//! - [`session`]: [`SessionRecord`], [`Revocation`] and the ids made from a session token.
//! - [`user`]: local accounts ([`UserRecord`]) and sign-in history ([`LoginEvent`]).
//! - [`kill_switch`]: [`Scope`] and the stored [`KillSwitch`].
//! - [`change`]: four-eyes [`ChangeRequest`]s.
//! - [`sso`]: a tenant's self-service SSO configurations ([`SsoVersion`]).
//!
//! Audit records live in [`crate::audit`] with their hash chain, which is also a leaf.

pub mod change;
pub mod kill_switch;
pub mod session;
pub mod sso;
pub mod user;

pub use change::{ChangeKind, ChangeRequest, ChangeStatus};
pub use kill_switch::{KillSwitch, Scope};
pub use session::{Revocation, SessionRecord, session_id_hash};
pub use sso::{SealedSecret, SsoMfa, SsoState, SsoTest, SsoVersion};
pub use user::{LoginEvent, UserRecord};
