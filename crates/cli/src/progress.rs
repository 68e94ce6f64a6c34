//! A deploy's steps as the CLI shows them (deploy, rollback, reload, scale).
//! On a terminal: a live line with the running step and how long it has
//! run, each finished step kept above it with the time it took. Elsewhere
//! (a pipe, CI, a log file, `TERM=dumb`): one plain line per step, which
//! scripts read. `--json` bypasses both.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the steps go.
pub(crate) enum Steps {
    /// A live display on a terminal.
    Live {
        /// The line that shows the running step.
        bar: ProgressBar,
        /// The running step and when it began.
        running: Option<(String, Instant)>,
    },
    /// One line per step.
    Plain,
}

impl Steps {
    /// Live when stdout is a terminal that can redraw a line, plain
    /// otherwise.
    pub(crate) fn for_stdout() -> Steps {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if !std::io::stdout().is_terminal() || dumb {
            return Steps::Plain;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("  {spinner:.cyan} {msg} {elapsed:.dim}")
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        bar.set_style(style);
        bar.set_message("asking the daemon");
        bar.enable_steady_tick(Duration::from_millis(100));
        Steps::Live { bar, running: None }
    }

    /// A new step: the one before it is done.
    pub(crate) fn step(&mut self, message: &str) {
        match self {
            Steps::Plain => println!("  {message}"),
            Steps::Live { bar, running } => {
                if let Some((done, began)) = running.take() {
                    bar.println(finished("✓", &done, began.elapsed()));
                }
                *running = Some((message.to_string(), Instant::now()));
                bar.reset_elapsed();
                bar.set_message(message.to_string());
            }
        }
    }

    /// The end: the last step is kept (marked failed unless `ok`), the
    /// live line goes.
    pub(crate) fn end(&mut self, ok: bool) {
        if let Steps::Live { bar, running } = self {
            if let Some((last, began)) = running.take() {
                let mark = if ok { "✓" } else { "✗" };
                bar.println(finished(mark, &last, began.elapsed()));
            }
            bar.finish_and_clear();
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        // Interrupted or failed on the way: never leave a spinner behind.
        if let Steps::Live { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// A finished step's line: its mark, its message and the time it took.
fn finished(mark: &str, message: &str, took: Duration) -> String {
    format!("  {mark} {message} ({:.1}s)", took.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_step_says_how_long_it_took() {
        assert_eq!(
            finished("✓", "ready 2/2 (web#3)", Duration::from_millis(1260)),
            "  ✓ ready 2/2 (web#3) (1.3s)"
        );
    }
}
