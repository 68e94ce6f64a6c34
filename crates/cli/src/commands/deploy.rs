//! `baton deploy`, `reload`, `rollback` and `scale`: an order to the
//! app's deploy owner, its progress printed until the end.

use http::Method;

use crate::client::ApiClient;
use crate::find::Target;
use crate::protocol::{CanaryAsk, DeployRequest, Order, Progress, Route};
use crate::{progress, Failure};

/// `baton deploy`.
pub(crate) async fn deploy(
    client: &ApiClient,
    target: &Target,
    ask: &crate::args::DeployArgs,
) -> Result<(), Failure> {
    let source = ask.source.as_ref().map(|s| {
        std::path::absolute(s)
            .unwrap_or(s.clone())
            .display()
            .to_string()
    });
    let wants_canary = ask.canary.is_some() || ask.canary_for.is_some() || !ask.steps.is_empty();
    let canary = wants_canary.then(|| CanaryAsk {
        share: ask.canary.flatten(),
        step_ms: ask.canary_for.map(|d| d.as_millis() as u64),
        steps: ask.steps.clone(),
    });
    let order = Order::Deploy {
        source,
        git: ask.git.clone(),
        canary,
    };
    watch_deploy(client, target, order, ask.wait, ask.json).await
}

/// `baton scale web=N`.
pub(crate) async fn scale(
    client: &ApiClient,
    target: &Target,
    spec: &str,
    wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let (process, count) = spec.split_once('=').ok_or_else(|| {
        Failure::usage(format!("expected PROCESS=COUNT like web=4, got {spec:?}"))
    })?;
    if !crate::protocol::Role::from(process).is_web() {
        return Err(Failure::usage(format!(
            "unknown process {process:?}; Baton runs `web`"
        )));
    }
    let count: u32 = count
        .parse()
        .map_err(|_| Failure::usage(format!("{count:?} is not a whole number")))?;
    let order = Order::Scale { instances: count };
    watch_deploy(client, target, order, wait, json).await
}

/// Prints a deploy's progress until its end; exit 0 only once the new
/// release serves all traffic.
pub(crate) async fn watch_deploy(
    client: &ApiClient,
    target: &Target,
    order: Order,
    wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut outcome: Option<Result<(), Failure>> = None;
    let app = target.app.clone();
    let body = serde_json::to_value(DeployRequest { order, wait, app })
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut steps = (!json).then(progress::Steps::for_stdout);
    client
        .stream_lines(Method::POST, &Route::Deploy.url(None, &[]), Some(body), |line| {
            if json {
                println!("{line}");
            }
            match serde_json::from_str::<Progress>(line) {
                Ok(Progress::Step { message, .. }) => {
                    if let Some(steps) = &mut steps {
                        steps.step(&message);
                    }
                }
                Ok(Progress::Done { release, switch_ms, total_ms }) => {
                    if let Some(steps) = &mut steps {
                        steps.end(true);
                        println!("release {release} serves all traffic (switched after {switch_ms} ms, done in {total_ms} ms)");
                    }
                    outcome = Some(Ok(()));
                }
                Ok(Progress::Failed {
                    message,
                    config_error,
                }) => {
                    if let Some(steps) = &mut steps {
                        steps.end(false);
                    }
                    outcome = Some(Err(if config_error {
                        Failure::usage(message)
                    } else {
                        Failure::failed(message)
                    }))
                }
                _ => {}
            }
        })
        .await?;
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(failure)) => Err(failure),
        None => Err(Failure::failed(
            "the daemon closed the progress stream before the end",
        )),
    }
}
