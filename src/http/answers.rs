//! The error answers the operations share, as OpenAPI responses
//! (`#/components/responses/<name>`), and the sets of them several operations
//! give. The handlers name them in their `#[utoipa::path]`; `openapi.rs`
//! collects the handlers. Keeping them out of `openapi.rs` keeps the
//! dependencies one way: document → handlers → answers.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// Declares a reusable error answer (`#/components/responses/<name>`): the
/// `Error` body with `description`, and `Retry-After` when `retry` says so.
macro_rules! error_response {
    ($(#[$doc:meta])* $name:ident, $description:literal $(, retry = $retry:literal)?) => {
        $(#[$doc])*
        pub struct $name;
        impl<'s> utoipa::ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<Response>) {
                (stringify!($name), error_answer($description, false $(|| $retry)?).into())
            }
        }
    };
}

fn error_answer(description: &str, retry_after: bool) -> Response {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if retry_after {
        r = r.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(SchemaType::new(Type::Integer))
                        .minimum(Some(1)),
                )
                .description(Some("Seconds to wait."))
                .build(),
        );
    }
    r.build()
}

error_response!(BadRequest, "`invalid_request`: malformed JSON, missing `Content-Type: application/json`, unknown or missing fields, unknown query parameters, or a value outside its constraints; the message names the field.");
error_response!(
    Unauthorized,
    "`unauthorized`: the credential is missing or not valid."
);
error_response!(
    ForbiddenOrigin,
    "`forbidden`: the `Origin` header is not in the app's `allowed_origins`."
);
error_response!(
    AdminDisabled,
    "`forbidden`: the admin API is disabled (no `admin_token` configured)."
);
error_response!(NotFound, "`not_found`: no such session (or not this app's, or a wrong claim secret, or an id that is not 1..64 characters of `[A-Za-z0-9_-]`).");
error_response!(
    ConversationNotFound,
    "`not_found`: no such conversation (or not this app's, or purged 10 minutes after it ended)."
);
error_response!(
    ConversationEnded,
    "`expired`: the conversation has ended (for whatever reason; the message says which)."
);
error_response!(
    QrConflict,
    "`conflict`: the session is no longer `pending`, so its QR code can no longer be scanned."
);
error_response!(Expired, "`expired`: the session has expired.");
error_response!(
    PayloadTooLarge,
    "`payload_too_large`: the body is over 256 KiB."
);
error_response!(
    NotAnUpgrade,
    "`invalid_request`: not a WebSocket upgrade request."
);
error_response!(
    RateLimited,
    "`rate_limited`: retry after `Retry-After` seconds.",
    retry = true
);
error_response!(Unavailable, "`unavailable`: the session store is unreachable, or (for the operations that complete a session or answer a conversation request) the audit log cannot be written, in which case the operation was neither recorded nor performed. Retry after `Retry-After` seconds.", retry = true);
error_response!(CosignerForbidden, "`forbidden`: the admin API is disabled, or no co-signing service (`[cosigner] url`, `admin_token`) is configured.");
error_response!(
    CosignerUnavailable,
    "`unavailable`: the co-signing service cannot be reached, or refused the broker's admin token.",
    retry = true
);

/// Declares a set of refusals several operations share, each a reference to
/// one of the answers above: `responses((status = 200, ...), Set)`.
macro_rules! refusals {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $variant:ident($answer:ident)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(utoipa::IntoResponses)]
        pub enum $name {
            $(#[response(status = $status)] $variant(#[ref_response] $answer),)*
        }
    };
}

refusals!(
    /// What every browser endpoint (socket, events, QR images) may answer.
    BrowserRefusals {
        401 => Unauthorized(Unauthorized),
        403 => ForbiddenOrigin(ForbiddenOrigin),
        404 => NotFound(NotFound),
        503 => Unavailable(Unavailable),
    }
);
refusals!(
    /// What every operation of a conversation may answer.
    ConversationRefusals {
        401 => Unauthorized(Unauthorized),
        404 => ConversationNotFound(ConversationNotFound),
        503 => Unavailable(Unavailable),
    }
);
refusals!(
    /// What the WebSocket endpoints answer to a request that is not an upgrade.
    UpgradeRefusals {
        400 => NotAnUpgrade(NotAnUpgrade),
    }
);
refusals!(
    /// What the operator's revocation API may answer.
    AdminRefusals {
        401 => Unauthorized(Unauthorized),
        403 => AdminDisabled(AdminDisabled),
    }
);
refusals!(
    /// What the operator's relay to the co-signing service may answer.
    CosignerAdminRefusals {
        401 => Unauthorized(Unauthorized),
        403 => CosignerForbidden(CosignerForbidden),
        503 => CosignerUnavailable(CosignerUnavailable),
    }
);
refusals!(
    /// What the RP API (API key) may answer to any call.
    RpRefusals {
        401 => Unauthorized(Unauthorized),
        503 => Unavailable(Unavailable),
    }
);
