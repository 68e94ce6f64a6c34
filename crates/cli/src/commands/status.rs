//! `baton status` (one app, or every app of a server; `--watch`) and
//! `baton apps`, with the exit of `systemctl status`.

use crate::client::ApiClient;
use crate::find::Target;
use crate::protocol::{Health, Route, StatusReport};
use crate::{app, output, watch, Failure};

/// `baton status`.
pub(crate) async fn status(
    client: &ApiClient,
    target: &Target,
    json: bool,
    watch: bool,
) -> Result<(), Failure> {
    if watch {
        return watch_status(client, target, json).await;
    }
    if target.at_server {
        let all: Vec<StatusReport> = client.get(&Route::Apps.url(None, &[])).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        } else {
            for s in &all {
                print!("{}", output::status_table(s));
                println!();
            }
        }
        return exit_for(all.iter().map(output::health).max());
    }
    let s: StatusReport = client.get(&Route::Status.url(app(target), &[])).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        print!("{}", output::status_table(&s));
    }
    exit_for(Some(output::health(&s)))
}

/// `baton apps`.
pub(crate) async fn apps(client: &ApiClient, json: bool) -> Result<(), Failure> {
    let all: Vec<StatusReport> = client.get(&Route::Apps.url(None, &[])).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        print!("{}", output::apps_table(&all));
    }
    Ok(())
}

// `baton status --watch`: a frame a second until the user stops it.
async fn watch_status(client: &ApiClient, target: &Target, json: bool) -> Result<(), Failure> {
    let mut screen = watch::Screen::open();
    loop {
        let reports: Vec<StatusReport> = if target.at_server {
            client.get(&Route::Apps.url(None, &[])).await?
        } else {
            vec![client.get(&Route::Status.url(app(target), &[])).await?]
        };
        let frame = if json {
            let value = if target.at_server {
                serde_json::to_value(&reports)
            } else {
                serde_json::to_value(&reports[0])
            };
            value.map(|v| v.to_string()).unwrap_or_default()
        } else {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let tables: Vec<String> = reports.iter().map(output::status_table).collect();
            format!("{stamp}   q or Ctrl-C to quit\n\n{}", tables.join("\n"))
        };
        screen.draw(&frame);
        if !screen.wait().await {
            return Ok(());
        }
    }
}

/// The exit of `baton status`, as `systemctl status` tells health: 3
/// degraded, 4 down (the worst app's, at a server).
fn exit_for(health: Option<Health>) -> Result<(), Failure> {
    match health {
        None | Some(Health::Healthy) => Ok(()),
        Some(Health::Degraded) => Err(Failure::quiet(3)),
        Some(Health::Down) => Err(Failure::quiet(4)),
    }
}
