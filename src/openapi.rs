//! What the two OpenAPI documents (the admin API's and the tenant JSON API's) share: one
//! refusal response, `{"error","message","request_id"}`, as every operation's `default`
//! answer, and the security requirement on the operations that need a credential.
//!
//! Owns no document; each API's `openapi` module builds its own and calls
//! [`add_refusals_and_security`].

use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};

/// Gives every operation of `doc` the refusal body (the `ErrorBody` schema, which the
/// document must hold) as its `default` response, and the security scheme `scheme` when
/// `needs_credential(path)` says its path needs one.
pub fn add_refusals_and_security(doc: &mut OpenApi, scheme: &str, needs_credential: impl Fn(&str) -> bool) {
    let refusal = ResponseBuilder::new()
        .description("Refused: `{\"error\",\"message\",\"request_id\"}` (the status says why).")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
        .build();
    let requirement = SecurityRequirement::new(scheme, Vec::<String>::new());
    for (path, item) in doc.paths.paths.iter_mut() {
        let needs = needs_credential(path);
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .insert("default".into(), RefOr::T(refusal.clone()));
            if needs {
                op.security = Some(vec![requirement.clone()]);
            }
        }
    }
}
