//! Authentication of people at the gateway: local passwords and the gateway's own second
//! factor. OIDC (`oidc.rs`) will join them here.
//!
//! Plain Rust with no HTTP and no storage: `password` hashes and checks passwords on a
//! bounded blocking pool, `mfa` generates and checks TOTP codes and recovery codes with the
//! clock passed in. Callers (the login and MFA pages) own throttling, the replay guard and
//! the mapping of these errors to statuses; nothing here logs a secret.
//!
//! `login` is the sign-in flow over the store; `accounts` the service that creates local
//! accounts, changes their passwords and resets their second factor, for every interface.

pub mod accounts;
pub mod login;
pub mod mfa;
pub mod oidc;
pub mod oidc_client;
pub mod password;
pub mod preauth;
