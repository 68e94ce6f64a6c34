//! `baton logs` and `baton releases`: what the daemon keeps of an app.

use http::Method;

use crate::client::ApiClient;
use crate::find::Target;
use crate::protocol::{ReleaseReport, Route};
use crate::{app, output, Failure};

/// `baton logs`: the last `lines`, then new ones as they come (`follow`).
pub(crate) async fn logs(
    client: &ApiClient,
    target: &Target,
    lines: usize,
    follow: bool,
    instance: Option<&str>,
) -> Result<(), Failure> {
    let (lines, follow) = (lines.to_string(), follow.to_string());
    let mut query = vec![("lines", lines.as_str()), ("follow", follow.as_str())];
    query.extend(instance.map(|i| ("instance", i)));
    let url = Route::Logs.url(app(target), &query);
    client
        .stream_lines(Method::GET, &url, None, |l| println!("{l}"))
        .await?;
    Ok(())
}

/// `baton releases`.
pub(crate) async fn releases(
    client: &ApiClient,
    target: &Target,
    json: bool,
) -> Result<(), Failure> {
    let r: Vec<ReleaseReport> = client.get(&Route::Releases.url(app(target), &[])).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", output::releases_table(&r));
    }
    Ok(())
}
