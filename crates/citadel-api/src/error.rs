//! One exhaustive map from a control-plane error to an HTTP answer. A new
//! `ControlError` variant does not compile until it is placed here. A 5xx
//! body says nothing internal: its kind and the request id to quote.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use citadel_control::ControlError;
use serde_json::json;

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable machine-readable kind (`forbidden`, `not_found`, …).
    pub kind: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), retry_after_secs: None }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        use ControlError as E;
        use StatusCode as S;
        let (status, kind) = match &e {
            E::Denied { .. } | E::SelfApproval { .. } => (S::FORBIDDEN, "forbidden"),
            E::Unauthenticated(_) => (S::UNAUTHORIZED, "unauthenticated"),
            E::NotFound(_) | E::NoSubjectRows { .. } => (S::NOT_FOUND, "not_found"),
            E::Conflict(_) | E::AlreadyInitialized(_) => (S::CONFLICT, "conflict"),
            E::Invalid(_) | E::Types(_) | E::Policy(citadel_policy::PolicyError::UnknownRole(_)) => {
                (S::BAD_REQUEST, "bad_request")
            }
            E::Policy(citadel_policy::PolicyError::BadScope(_)) => (S::BAD_REQUEST, "bad_request"),
            E::ScanBlocked { .. }
            | E::GateFailed { .. }
            | E::RetiredSigningKey { .. }
            | E::RetiredModel { .. }
            | E::DataRejected { .. }
            | E::SubjectTooBroad { .. }
            | E::PurposeNotAllowed { .. }
            | E::ErasedSource { .. }
            | E::ErasedTrainingData { .. } => (S::UNPROCESSABLE_ENTITY, "refused"),
            E::Data(_) | E::Signing(_) => (S::UNPROCESSABLE_ENTITY, "unprocessable"),
            E::Store(store) => store_status(store),
            // Fail closed, and say nothing of the inside.
            E::Policy(citadel_policy::PolicyError::Gate { .. })
            | E::Config(_)
            | E::UnreadableRecord { .. }
            | E::NoKeys(_)
            | E::Crypto(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status.is_server_error() {
            "the server could not complete the request; its log has the cause".to_string()
        } else {
            e.to_string()
        };
        ApiError::new(status, kind, message)
    }
}

/// The store's errors: what names a thing the caller asked for is theirs to
/// fix; the rest is the server's (and says nothing of its inside).
fn store_status(e: &citadel_store::StoreError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    use citadel_store::StoreError as E;
    match e {
        E::ArtifactNotFound(_) => (S::NOT_FOUND, "not_found"),
        E::Ambiguous(_) => (S::BAD_REQUEST, "bad_request"),
        E::OutputExists(_) => (S::CONFLICT, "conflict"),
        E::GcRunning { .. } | E::PutsInProgress { .. } => (S::SERVICE_UNAVAILABLE, "busy"),
        E::Db(_)
        | E::Connect { .. }
        | E::DbUrl(_)
        | E::SchemaTooNew { .. }
        | E::MigrationChecksum { .. }
        | E::Object { .. }
        | E::OutOfSpace { .. }
        | E::StorageUrl(_)
        | E::Io { .. }
        | E::NotRegular { .. }
        | E::MissingObject { .. }
        | E::Corrupt { .. }
        | E::Crypto(_)
        | E::Malformed(_)
        | E::Task(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.message, "kind": self.kind}))).into_response();
        if let Some(s) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_says_nothing_internal_and_client_errors_say_what_to_fix() {
        let inner = citadel_store::StoreError::Malformed("secret table layout at /var/lib/citadel".into());
        let e = ApiError::from(ControlError::Store(inner));
        assert_eq!((e.status, e.kind), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert!(!e.message.contains("/var/lib") && !e.message.contains("layout"), "{}", e.message);
        let e = ApiError::from(ControlError::SelfApproval { principal: "sam".into(), request: "r-1".into() });
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("separation of duties"));
        let e = ApiError::from(ControlError::NotFound("model x".into()));
        assert_eq!((e.status, e.kind), (StatusCode::NOT_FOUND, "not_found"));
    }
}
