//! Authentication of people at the gateway: the sign-in service and what it is built of.
//! No HTTP: the pages and the JSON API parse requests and render answers; nothing here
//! logs a secret.
//!
//! # Layout
//! - [`password`]: argon2id hashing and checking on a bounded blocking pool.
//! - [`mfa`]: TOTP codes and recovery codes, the clock passed in.
//! - [`login`]: the sign-in service for local accounts and SSO: throttling and lock-outs,
//!   the TOTP replay guard, kill switches, auto-trip rules, sign-in history, sessions.
//! - [`accounts`]: the local accounts service every interface uses: create an account,
//!   change its password, reset its second factor, each audited.
//! - [`oidc`]: the relying-party checks of OpenID Connect (PKCE, ID and logout tokens,
//!   the MFA policy on `amr`), without I/O.
//! - [`oidc_client`]: talking to the tenant's IdP (discovery, JWKS, the code exchange),
//!   with the address checks of the production tiers.
//! - [`sso_admin`]: the self-service SSO wizard's service: drafts, test results,
//!   activation and roll-back of a tenant's OIDC settings, client secrets sealed at rest.
//! - [`preauth`]: signed short-lived cookies: who passed the password step (pre-MFA) and
//!   the state of an SSO sign-in in flight.

pub mod accounts;
pub mod login;
pub mod mfa;
pub mod oidc;
pub mod oidc_client;
pub mod password;
pub mod preauth;
pub mod sso_admin;
