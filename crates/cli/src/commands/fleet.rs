//! `baton fleet deploy|rollback|status`.

use crate::args::FleetCommand;
use crate::output;
use crate::Failure;

/// `baton fleet deploy|rollback|status`.
pub(crate) async fn fleet(what: &FleetCommand) -> Result<(), Failure> {
    let (hosts, json) = match what {
        FleetCommand::Deploy { hosts, rollout, .. }
        | FleetCommand::Rollback { hosts, rollout, .. } => (hosts, rollout.json),
        FleetCommand::Status { hosts, json } => (hosts, *json),
    };
    let here = std::env::current_dir().map_err(Failure::failed)?;
    let default_dir = hosts
        .remote_dir
        .clone()
        .unwrap_or_else(|| here.display().to_string());
    let list = crate::fleet::hosts(&hosts.hosts, hosts.hosts_file.as_deref(), &default_dir)
        .map_err(Failure::usage)?;
    let ssh = crate::fleet::Ssh {
        config: hosts.ssh_config.clone(),
        baton: hosts.remote_baton.clone(),
    };
    let (change, batch, lb_wait, _packed) = match what {
        FleetCommand::Status { .. } => {
            let states = crate::fleet::status(&ssh, &list).await;
            print_fleet(&states, json);
            return match states.iter().find_map(|s| s.error.as_ref()) {
                Some(e) => Err(Failure::failed(e)),
                None => Ok(()),
            };
        }
        FleetCommand::Deploy {
            source, rollout, ..
        } => {
            let packed = match source {
                Some(s) => Some(crate::fleet::tarball(s).map_err(Failure::usage)?),
                None => None,
            };
            let tarball = packed.as_ref().map(|(_, t)| t.clone());
            (
                crate::fleet::Change::Deploy { tarball },
                rollout.batch,
                rollout.lb_wait,
                packed,
            )
        }
        FleetCommand::Rollback { id, rollout, .. } => (
            crate::fleet::Change::Rollback { to: id.clone() },
            rollout.batch,
            rollout.lb_wait,
            None,
        ),
    };
    let rollout = crate::fleet::Rollout {
        hosts: list,
        batch,
        lb_wait,
        ssh,
        json,
    };
    let outcome = rollout.run(&change).await;
    if json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        print_fleet(&outcome.hosts, false);
    }
    match outcome.error {
        Some(e) => Err(Failure::failed(format!("the rollout stopped: {e}"))),
        None => Ok(()),
    }
}

/// The fleet table (or JSON): host, release, online, ready instances.
fn print_fleet(states: &[crate::fleet::HostState], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(states).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![["HOST", "RELEASE", "ONLINE", "READY", "NOTE"]
        .map(String::from)
        .to_vec()];
    for s in states {
        rows.push(vec![
            s.host.clone(),
            s.release.clone().unwrap_or_else(|| "-".into()),
            if s.online { "yes" } else { "no" }.into(),
            s.ready.to_string(),
            s.error.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", output::table(rows));
}
