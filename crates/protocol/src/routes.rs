//! The control API's routes, named once: the daemon's router registers
//! [`Route::path`], and the CLI asks for [`Route::url`].

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One route of the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET`: one app's [`crate::StatusReport`].
    Status,
    /// `GET`: every app's.
    Apps,
    /// `POST`: the server file read again.
    ServerReload,
    /// `GET`: an app's releases.
    Releases,
    /// `GET`: Prometheus metrics.
    Metrics,
    /// `POST`: a deploy, reload, rollback or scale, its progress streamed.
    Deploy,
    /// `GET`: an app's log lines, followed or not.
    Logs,
    /// `POST`: the daemon stops.
    Stop,
    /// `POST`: the daemon execs a new binary.
    Upgrade,
    /// `POST`: `promote` or `abort` a canary (`{order}` in the router).
    Canary(&'a str),
    /// `POST`: `/health` answers 503 from now on.
    Offline,
    /// `POST`: and 200 again.
    Online,
    /// `GET`: 200 unless offline.
    Health,
}

impl Route<'_> {
    /// The path, as the router matches it.
    pub fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Route::Status => "/status",
            Route::Apps => "/apps",
            Route::ServerReload => "/server/reload",
            Route::Releases => "/releases",
            Route::Metrics => "/metrics",
            Route::Deploy => "/deploy",
            Route::Logs => "/logs",
            Route::Stop => "/stop",
            Route::Upgrade => "/upgrade",
            Route::Canary(order) => return Cow::Owned(format!("/canary/{order}")),
            Route::Offline => "/offline",
            Route::Online => "/online",
            Route::Health => "/health",
        })
    }

    /// The path with `query` after it, and `app=` when a daemon of several
    /// apps is asked about one; values percent-encoded.
    pub fn url(&self, app: Option<&str>, query: &[(&str, &str)]) -> String {
        let mut url = self.path().into_owned();
        let app = app.map(|app| ("app", app));
        for (at, (name, value)) in query.iter().copied().chain(app).enumerate() {
            url.push(if at == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    /// The CLI's URLs: an app's name and an instance's `#` escaped.
    #[test]
    fn urls_escape_their_values() {
        assert_eq!(Route::Status.url(None, &[]), "/status");
        assert_eq!(
            Route::Status.url(Some("shop api"), &[]),
            "/status?app=shop%20api"
        );
        assert_eq!(
            Route::Logs.url(Some("a"), &[("lines", "5"), ("instance", "web#1")]),
            "/logs?lines=5&instance=web%231&app=a"
        );
        assert_eq!(Route::Canary("promote").url(None, &[]), "/canary/promote");
        assert_eq!(Route::Canary("{order}").path(), "/canary/{order}");
    }
}
