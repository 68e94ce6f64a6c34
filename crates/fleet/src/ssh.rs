//! One host of a fleet, reached with the user's own `ssh` and `scp`: their
//! keys, their `~/.ssh/config` (or `--ssh-config`), no agent of Baton's and
//! no port beyond sshd.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// A host: an ssh destination and the folder of the app's baton.toml there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `[user@]host`, or a `Host` of the ssh config.
    pub destination: String,
    /// The app's folder on that host.
    pub dir: String,
}

/// How hosts are reached.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// An ssh config file instead of `~/.ssh/config`.
    pub config: Option<PathBuf>,
    /// The `baton` to run on the hosts.
    pub baton: String,
}

/// What a remote command printed, and whether it exited 0.
#[derive(Debug)]
pub(crate) struct Ran {
    /// Its exit code; None when ssh itself failed or a signal ended it.
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (ssh's own errors too).
    pub stderr: String,
}

impl Ssh {
    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(config) = &self.config {
            cmd.arg("-F").arg(config);
        }
        // Never a password prompt in the middle of a rollout.
        cmd.args(["-o", "BatchMode=yes"]);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// The remote command line: `baton ARGS` run in the host's folder,
    /// every word quoted for the remote shell.
    fn line(&self, host: &Host, args: &[&str]) -> String {
        let mut line = format!("cd {} && exec {}", quote(&host.dir), quote(&self.baton));
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        line
    }

    /// Runs `baton ARGS` on `host` and waits for it.
    ///
    /// # Errors
    /// When ssh cannot be run at all.
    pub(crate) async fn run(&self, host: &Host, args: &[&str]) -> std::io::Result<Ran> {
        let out = self
            .ssh()
            .arg(&host.destination)
            .arg("--")
            .arg(self.line(host, args))
            .output()
            .await?;
        Ok(Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `baton ARGS` on `host`, calling `line` for each line it prints
    /// (standard output and error), as it prints it.
    ///
    /// # Errors
    /// When ssh cannot be run at all.
    pub(crate) async fn stream(
        &self,
        host: &Host,
        args: &[&str],
        mut line: impl FnMut(&str),
    ) -> std::io::Result<Option<i32>> {
        let mut child = self
            .ssh()
            .arg(&host.destination)
            .arg("--")
            .arg(format!("{} 2>&1", self.line(host, args)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut out = BufReader::new(stdout).lines();
        let mut err = BufReader::new(stderr).lines();
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            tokio::select! {
                l = out.next_line(), if out_open => match l {
                    Ok(Some(l)) => line(&l),
                    _ => out_open = false,
                },
                l = err.next_line(), if err_open => match l {
                    Ok(Some(l)) => line(&l),
                    _ => err_open = false,
                },
            }
        }
        Ok(child.wait().await?.code())
    }

    /// Removes `path` on `host` (a shipped tarball, once deployed).
    ///
    /// # Errors
    /// When ssh cannot be run at all.
    pub(crate) async fn remove(&self, host: &Host, path: &str) -> std::io::Result<()> {
        self.ssh()
            .arg(&host.destination)
            .arg("--")
            .arg(format!("rm -f {}", quote(path)))
            .output()
            .await
            .map(|_| ())
    }

    /// Copies `local` to `remote` (a path on `host`) with scp.
    ///
    /// # Errors
    /// When scp fails, with what it said.
    pub(crate) async fn copy(&self, host: &Host, local: &Path, remote: &str) -> Result<(), String> {
        let mut cmd = Command::new("scp");
        if let Some(config) = &self.config {
            cmd.arg("-F").arg(config);
        }
        let out = cmd
            .args(["-q", "-o", "BatchMode=yes"])
            .arg(local)
            .arg(format!("{}:{}", host.destination, remote))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run scp: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scp to {} failed: {}",
                host.destination,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// `word` quoted for a POSIX shell.
pub(crate) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("/srv/shop"), "/srv/shop");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
        assert_eq!(quote(""), "''");
        let ssh = Ssh {
            config: None,
            baton: "baton".into(),
        };
        let host = Host {
            destination: "web1".into(),
            dir: "/srv/my shop".into(),
        };
        assert_eq!(
            ssh.line(&host, &["deploy", "/tmp/x.tgz", "--json"]),
            "cd '/srv/my shop' && exec baton deploy /tmp/x.tgz --json"
        );
    }
}
