//! Baton's own answers: a static file, a refusal (no instance answered),
//! the redirect to HTTPS, an ACME check. One type, so that each server
//! has one writer for them and the response filters see them all.

use std::fs::File;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

/// An answer Baton gives without an instance.
#[derive(Debug)]
pub(crate) struct OwnAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Every field but Date and Connection, which the server writes.
    pub fields: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: Payload,
    /// The client's connection closes after it.
    pub close: bool,
}

/// The body of an [`OwnAnswer`].
#[derive(Debug)]
pub(crate) enum Payload {
    /// None (HEAD, 304, 416, a redirect).
    Empty,
    /// A short text (an error, an ACME key authorization).
    Text(Bytes),
    /// `len` bytes of `file` from `start`.
    File {
        /// The file.
        file: File,
        /// The first byte sent.
        start: u64,
        /// How many are sent.
        len: u64,
    },
}

impl OwnAnswer {
    /// `status` with `body` of `content_type`.
    pub(crate) fn with_body(
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    ) -> OwnAnswer {
        OwnAnswer {
            status,
            fields: vec![
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CONTENT_LENGTH, HeaderValue::from(body.len())),
            ],
            body: Payload::Text(body),
            close: false,
        }
    }

    /// Baton's own short answer: `status` with `text` as its body.
    pub(crate) fn text(status: StatusCode, text: &'static str) -> OwnAnswer {
        let text = Bytes::from_static(text.as_bytes());
        OwnAnswer::with_body(status, "text/plain; charset=utf-8", text)
    }

    /// 405, with the methods a file answers.
    pub(crate) fn not_allowed() -> OwnAnswer {
        let mut answer = OwnAnswer::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        answer
            .fields
            .push((header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        answer
    }

    /// A 308 to `location` (plain HTTP sent to HTTPS).
    pub(crate) fn redirect(location: HeaderValue) -> OwnAnswer {
        OwnAnswer {
            status: StatusCode::PERMANENT_REDIRECT,
            fields: vec![
                (header::LOCATION, location),
                (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
            ],
            body: Payload::Empty,
            close: false,
        }
    }

    /// The release whose file answered (its `x-baton-release`).
    pub(crate) fn release(&self) -> Option<std::sync::Arc<str>> {
        (self.fields.iter())
            .find(|(name, _)| name == "x-baton-release")
            .and_then(|(_, value)| value.to_str().ok())
            .map(std::sync::Arc::from)
    }

    /// The length of the body this answer sends (HEAD: none).
    pub(crate) fn body_len(&self) -> u64 {
        match &self.body {
            Payload::Empty => 0,
            Payload::Text(text) => text.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// The answer for hyper to send (h2, and HTTP/1 upgrades).
    pub(crate) fn into_response(self) -> http::Response<crate::body::ProxyBody> {
        use http_body_util::BodyExt;

        let body = match self.body {
            Payload::Empty => crate::body::full(Bytes::new()),
            Payload::Text(text) => crate::body::full(text),
            Payload::File { file, start, len } => {
                (crate::assets::body::FileBody::new(file, start, len))
                    .map_err(Into::into)
                    .boxed()
            }
        };
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status;
        response.headers_mut().extend(self.fields);
        response
    }
}
