//! The deploy machine and its owner, against a fake app whose instances
//! are puppets (no processes): the test decides when each one is ready or
//! fails, and checks what took traffic when. Time is tokio's paused clock,
//! so `watch_after_switch` and `drain_timeout` pass as soon as nothing
//! else can happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::owner::Deployer;
use super::{DeployError, Kind, Report, Runtime};
use crate::config::Loaded;
use crate::protocol::Progress;
use crate::release::Release;
use crate::supervisor::instance::Puppet;
use crate::supervisor::{Instance, State};

/// An app whose instances are puppets, handed to the test as they start.
struct FakeApp {
    config: Mutex<Loaded>,
    release: Mutex<Option<Release>>,
    serving: Mutex<Vec<Instance>>,
    /// The ids of the serving set after each swap, in order.
    swaps: Mutex<Vec<Vec<String>>>,
    deploying: Mutex<Option<String>>,
    started: mpsc::UnboundedSender<Puppet>,
    next: AtomicU64,
    stopping: CancellationToken,
}

impl Runtime for FakeApp {
    fn config(&self) -> Loaded {
        self.config.lock().unwrap().clone()
    }
    fn config_file(&self) -> std::path::PathBuf {
        self.config().path
    }
    fn set_config(&self, loaded: Loaded) {
        *self.config.lock().unwrap() = loaded;
    }
    fn current_release(&self) -> Option<Release> {
        self.release.lock().unwrap().clone()
    }
    fn serving(&self) -> Vec<Instance> {
        self.serving.lock().unwrap().clone()
    }
    fn singletons(&self) -> Vec<Instance> {
        Vec::new()
    }
    fn start_instance(&self, release: &Release) -> std::io::Result<Instance> {
        let (instance, puppet) =
            Puppet::start(self.next.fetch_add(1, Ordering::Relaxed), &release.id);
        let _ = self.started.send(puppet);
        Ok(instance)
    }
    fn swap(&self, release: Release, instances: Vec<Instance>) -> Vec<Instance> {
        *self.release.lock().unwrap() = Some(release);
        let ids = instances.iter().map(|i| i.id.to_string()).collect();
        self.swaps.lock().unwrap().push(ids);
        let old = std::mem::replace(&mut *self.serving.lock().unwrap(), instances.clone());
        let retired: Vec<Instance> = old
            .into_iter()
            .filter(|o| !instances.iter().any(|i| i.id == o.id))
            .collect();
        for i in &retired {
            i.set_draining();
        }
        retired
    }
    fn forget_drained(&self, _gone: &[Instance]) {}
    fn set_deploying(&self, what: Option<String>) {
        *self.deploying.lock().unwrap() = what;
    }
    fn record_release(&self, _release: Release) {}
    fn forget_release(&self, _id: &str) {}
    fn rollback_target(&self, _id: Option<&str>) -> Option<Release> {
        None
    }
    async fn replace_singletons(&self, _release: &Release, _report: Report<'_>) {}
    async fn restart_singleton(&self, _release: &Release, _old: &Instance, _report: Report<'_>) {}
    fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }
    fn set_canary(&self, _canary: super::canary::Canary) {}
    fn end_canary(&self) -> Vec<Instance> {
        Vec::new()
    }
    fn canary_orders(&self) -> mpsc::UnboundedReceiver<crate::protocol::CanaryOrder> {
        mpsc::unbounded_channel().1
    }
}

/// The fake app, serving `count` ready puppets of release "r1"; its
/// deployer; the puppets it starts from now on; and the old puppets.
struct Setup {
    app: Arc<FakeApp>,
    deployer: Deployer,
    started: mpsc::UnboundedReceiver<Puppet>,
    old: Vec<(Instance, Puppet)>,
    _dir: tempfile::TempDir,
}

fn setup(count: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baton.toml");
    std::fs::write(
        &file,
        format!(
            "[app]\nname = \"fake\"\n[web]\ncommand = \"true\"\ninstances = {count}\n\
             watch_after_switch = \"5s\"\ndrain_timeout = \"5s\"\n"
        ),
    )
    .unwrap();
    let loaded = crate::config::load(&file).unwrap();
    let release = Release {
        id: "r1".into(),
        source: "test".into(),
        dir: dir.path().to_path_buf(),
        config: loaded.clone(),
        created: std::time::SystemTime::now(),
        failed: false,
        size: None,
        retired: None,
    };
    let old: Vec<(Instance, Puppet)> = (0..count)
        .map(|n| Puppet::start(100 + u64::from(n), "r1"))
        .collect();
    for (_, p) in &old {
        p.ready();
    }
    let (tx, started) = mpsc::unbounded_channel();
    let app = Arc::new(FakeApp {
        config: Mutex::new(loaded),
        release: Mutex::new(Some(release)),
        serving: Mutex::new(old.iter().map(|(i, _)| i.clone()).collect()),
        swaps: Mutex::default(),
        deploying: Mutex::default(),
        started: tx,
        next: AtomicU64::new(1),
        stopping: CancellationToken::new(),
    });
    let deployer = Deployer::spawn(app.clone());
    Setup {
        app,
        deployer,
        started,
        old,
        _dir: dir,
    }
}

impl Setup {
    async fn next_puppet(&mut self) -> Puppet {
        self.started
            .recv()
            .await
            .expect("the deploy starts an instance")
    }

    fn swaps(&self) -> Vec<Vec<String>> {
        self.app.swaps.lock().unwrap().clone()
    }
}

/// Waits for a progress step whose message contains `text`.
async fn step(progress: &mut mpsc::UnboundedReceiver<Progress>, text: &str) {
    while let Some(p) = progress.recv().await {
        if let Progress::Step { message, .. } = &p {
            if message.contains(text) {
                return;
            }
        }
    }
    panic!("the progress stream ended before a step saying {text:?}");
}

/// Blue-green: the route table changes once, after every new instance is
/// ready, and only then do the old ones drain and stop.
#[tokio::test(start_paused = true)]
async fn blue_green_switches_once_after_every_new_instance_is_ready() {
    let mut s = setup(2);
    let mut ticket = s.deployer.submit(Kind::Restart, false);
    let first = s.next_puppet().await;
    let second = s.next_puppet().await;
    first.ready();
    step(&mut ticket.progress, "ready 1/2").await;
    assert!(
        s.swaps().is_empty(),
        "switched with one new instance of two ready"
    );
    assert!(
        s.app.deploying.lock().unwrap().is_some(),
        "the deploy is not described while it runs"
    );
    second.ready();
    let outcome = ticket.outcome().await;
    assert_eq!(outcome.unwrap(), "r1");
    assert_eq!(
        s.swaps(),
        vec![vec!["web#1".to_string(), "web#2".to_string()]]
    );
    for (old, _) in &s.old {
        assert_eq!(old.status().state, State::Stopped, "{} still runs", old.id);
    }
    assert!(
        s.app.deploying.lock().unwrap().is_none(),
        "the deploy is still described after its end"
    );
}

/// A release whose instance fails before it is ready never takes traffic:
/// no swap, the old instances serve on, the new ones are stopped.
#[tokio::test(start_paused = true)]
async fn a_release_that_fails_before_ready_never_takes_traffic() {
    let mut s = setup(2);
    let ticket = s.deployer.submit(Kind::Restart, false);
    let first = s.next_puppet().await;
    let _second = s.next_puppet().await;
    first.fail("exited with code 1");
    let outcome = ticket.outcome().await;
    assert!(
        matches!(outcome, Err(DeployError::NotReady(ref m)) if m.contains("exited with code 1")),
        "{outcome:?}"
    );
    assert!(
        s.swaps().is_empty(),
        "a failing release was switched to: {:?}",
        s.swaps()
    );
    for (old, _) in &s.old {
        assert_eq!(old.status().state, State::Ready, "{} was touched", old.id);
    }
}

/// A new instance that dies within watch_after_switch sends traffic back
/// to the old instances, which were never stopped.
#[tokio::test(start_paused = true)]
async fn a_release_that_dies_after_the_switch_hands_traffic_back() {
    let mut s = setup(1);
    let mut ticket = s.deployer.submit(Kind::Restart, false);
    let fresh = s.next_puppet().await;
    fresh.ready();
    step(&mut ticket.progress, "watch_after_switch").await;
    fresh.fail("killed by SIGSEGV");
    let outcome = ticket.outcome().await;
    assert!(
        matches!(outcome, Err(DeployError::NotReady(ref m)) if m.contains("went back")),
        "{outcome:?}"
    );
    assert_eq!(
        s.swaps(),
        vec![vec!["web#1".to_string()], vec!["web#100".to_string()]]
    );
    assert_ne!(
        s.old[0].0.status().state,
        State::Stopped,
        "the old instance was stopped"
    );
}

/// One deploy at a time: a second one is refused while the first runs,
/// unless it asked to wait, and then it runs after the first.
#[tokio::test(start_paused = true)]
async fn a_second_deploy_is_refused_or_queued() {
    let mut s = setup(1);
    let first = s.deployer.submit(Kind::Restart, false);
    let fresh = s.next_puppet().await;
    let refused = s.deployer.submit(Kind::Restart, false).outcome().await;
    assert!(
        matches!(refused, Err(DeployError::Busy(ref what)) if what.starts_with("restart since")),
        "{refused:?}"
    );
    let mut queued = s.deployer.submit(Kind::Reload, true);
    step(&mut queued.progress, "waiting for the running deploy").await;
    fresh.ready();
    assert!(first.outcome().await.is_ok());
    // The queued one starts only now.
    let after = s.next_puppet().await;
    after.ready();
    assert!(queued.outcome().await.is_ok());
    assert_eq!(s.swaps().len(), 2);
}

/// Under a hold (`baton upgrade`), no deploy starts; once the hold goes,
/// they do again. A hold is refused while a deploy runs.
#[tokio::test(start_paused = true)]
async fn a_hold_keeps_deploys_off() {
    let mut s = setup(1);
    let hold = s.deployer.hold().await.expect("idle: the hold is granted");
    let refused = s.deployer.submit(Kind::Restart, true).outcome().await;
    assert!(matches!(refused, Err(DeployError::Busy(_))), "{refused:?}");
    // Dropped, then at once a deploy: it is not refused.
    drop(hold);
    let ticket = s.deployer.submit(Kind::Restart, false);
    let fresh = s.next_puppet().await;
    assert!(s.deployer.hold().await.is_err(), "held while a deploy runs");
    fresh.ready();
    assert!(ticket.outcome().await.is_ok());
}
