//! The daemon's switches: `baton stop`, `offline`/`online`, a canary's
//! `promote`/`abort`, and `reload` of a server file.

use std::time::{Duration, Instant};

use http::Method;

use crate::client::ApiClient;
use crate::find::Target;
use crate::protocol::{Route, ServerReloadReport, StatusReport};
use crate::{app, Failure};

/// `baton stop`: returns once the daemon is gone.
pub(crate) async fn stop(client: &ApiClient) -> Result<(), Failure> {
    let pid = client
        .get::<StatusReport>(&Route::Status.url(None, &[]))
        .await
        .ok()
        .map(|s| s.pid);
    client
        .send(Method::POST, &Route::Stop.url(None, &[]), None)
        .await?;
    // Stopped once the daemon let go of its state lock (every
    // instance stopped, the socket removed) and its process is
    // gone: a deploy in progress may hold it a moment longer.
    let deadline = Instant::now() + Duration::from_secs(600);
    while crate::daemon::lock::is_held(client.state_dir())
        || pid.is_some_and(crate::supervisor::procfs::is_running)
    {
        if Instant::now() > deadline {
            return Err(Failure::failed(
                "the daemon is still running after 10 minutes",
            ));
        }
        // Polled: there is no event for another process's exit.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("stopped");
    Ok(())
}

/// `baton offline` (`online: false`) and `baton online`.
pub(crate) async fn online(client: &ApiClient, online: bool) -> Result<(), Failure> {
    let route = if online {
        Route::Online
    } else {
        Route::Offline
    };
    client
        .send(Method::POST, &route.url(None, &[]), None)
        .await?;
    if online {
        println!("online");
    } else {
        println!("offline: /health answers 503");
    }
    Ok(())
}

/// `baton promote` (`promote: true`) and `baton abort`.
pub(crate) async fn canary(
    client: &ApiClient,
    target: &Target,
    promote: bool,
) -> Result<(), Failure> {
    let (order, done) = if promote {
        ("promote", "promoting the canary: it becomes the release")
    } else {
        (
            "abort",
            "aborting the canary: every client back on the stable release",
        )
    };
    let url = Route::Canary(order).url(app(target), &[]);
    let _: serde_json::Value = client.post(&url, None).await?;
    println!("{done}");
    Ok(())
}

/// `baton reload` at a server file: the file read again, apps added and
/// removed.
pub(crate) async fn reload_server(client: &ApiClient, json: bool) -> Result<(), Failure> {
    let url = Route::ServerReload.url(None, &[]);
    let report: ServerReloadReport = client.post(&url, None).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    let list = |names: &[String]| match names {
        [] => "none".to_string(),
        names => names.join(", "),
    };
    println!(
        "apps added: {}; removed: {}; kept as they run: {}",
        list(&report.added),
        list(&report.removed),
        list(&report.kept)
    );
    Ok(())
}
