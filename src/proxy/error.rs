//! What can stop a Slack request, by who is at fault, and the one place that maps it to an
//! HTTP status and a short reason for the client (the log gets the detail).

use http::{header, HeaderValue, Response, StatusCode};

use crate::http::{text, Body};
use crate::slack::payload::PayloadError;
use crate::slack::signature::SignatureError;
use crate::store::StoreError;

/// Everything that can stop a Slack request, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("method not allowed: Slack sends POST")]
    MethodNotAllowed,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("gateway busy: too many request body bytes in flight")]
    Busy,
    #[error("invalid signature: {0}")]
    Signature(SignatureError),
    #[error("{0}")]
    Payload(#[from] PayloadError),
    #[error("installation store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Rotation(#[from] crate::oauth::rotation::RotationError),
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
}

impl ProxyError {
    /// The one mapping from error to status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Signature(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Payload(PayloadError::UnsupportedContentType) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ProxyError::Payload(_) => StatusCode::BAD_REQUEST,
            ProxyError::Store(_) | ProxyError::Rotation(_) | ProxyError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short reason sent to the client: no internals, no secrets.
    pub fn client_reason(&self) -> String {
        match self {
            ProxyError::Store(_) => "store_unavailable".to_owned(),
            ProxyError::Rotation(_) => "token refresh failed".to_owned(),
            ProxyError::UpstreamUnavailable(_) => "upstream unavailable".to_owned(),
            ProxyError::UpstreamTimeout(_) => "upstream timed out".to_owned(),
            ProxyError::Payload(PayloadError::MalformedJson(_)) => "malformed JSON body".to_owned(),
            ProxyError::Payload(PayloadError::MalformedPayload(_)) => {
                "malformed payload field".to_owned()
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut r = text(status, self.client_reason());
        match self {
            ProxyError::MethodNotAllowed => {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            // The rest of the body may still come: the connection cannot carry another
            // request.
            ProxyError::BodyTimeout(_) | ProxyError::BodyTooLarge(_) => {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Its body was never read.
            ProxyError::Busy => {
                r = closing(r);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        r
    }
}

/// `r` with `Connection: close`: the request's body was not read, so the connection cannot
/// carry another request.
pub(super) fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub(super) use crate::store::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ProxyError::MethodNotAllowed, 405),
            (ProxyError::BodyTooLarge(10), 413),
            (ProxyError::BodyRead("x".into()), 400),
            (ProxyError::Signature(SignatureError::Mismatch), 401),
            (
                ProxyError::Payload(PayloadError::UnsupportedContentType),
                415,
            ),
            (ProxyError::Payload(PayloadError::MalformedForm), 400),
            (
                ProxyError::Payload(PayloadError::MalformedJson("x".into())),
                400,
            ),
            (ProxyError::Store(StoreError::InvalidId("x".into())), 503),
            (ProxyError::UpstreamUnavailable("x".into()), 502),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn client_reasons_hide_internals() {
        let e = ProxyError::UpstreamUnavailable("tcp connect error: 127.0.0.1:8080 refused".into());
        assert_eq!(e.client_reason(), "upstream unavailable");
        assert_eq!(
            ProxyError::Signature(SignatureError::StaleTimestamp).client_reason(),
            "invalid signature: stale_timestamp"
        );
    }
}
