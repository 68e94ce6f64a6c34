//! Which scheme a client connection speaks: what X-Forwarded-Proto says,
//! what the redirect to HTTPS and HSTS look at, and which status a host
//! no app serves gets.

/// The scheme of a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Plain TCP.
    Http,
    /// TLS.
    Https,
}

impl Proto {
    /// As X-Forwarded-Proto writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }

    /// The status for a host (and path) that no app serves: 404 on plain
    /// HTTP; 421 on HTTPS, where the connection's certificate was chosen
    /// for a name this server does not serve (RFC 9110 §15.5.20).
    pub fn no_app_status(self) -> http::StatusCode {
        match self {
            Proto::Http => http::StatusCode::NOT_FOUND,
            Proto::Https => http::StatusCode::MISDIRECTED_REQUEST,
        }
    }
}
