//! `baton status --watch`: the status table redrawn each second in place,
//! as `pm2 monit` and `top` do. On a terminal the screen is switched to the
//! alternate one and each frame overwrites the last line by line (no
//! clearing, so no flicker); `q` or Ctrl-C ends it and gives the screen
//! back. Without a terminal each frame is printed after the last (one JSON
//! document per line with `--json`).

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// How often the table is redrawn.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// The terminal's settings before, put back when the watch ends, however
/// it ends.
struct RawInput {
    saved: Termios,
}

impl RawInput {
    /// Keys arrive one by one, unechoed; Ctrl-C still interrupts.
    fn enter() -> Option<RawInput> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawInput { saved })
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// Where frames go, and how the user says stop.
pub(crate) struct Screen {
    /// On a terminal: its input in raw mode (put back on drop).
    terminal: Option<Option<RawInput>>,
    /// `q` (on a terminal) or Ctrl-C.
    quit: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Screen {
    /// A terminal screen when stdout is one, else plain output. Call it
    /// inside the runtime: Ctrl-C is taken from here on.
    pub(crate) fn open() -> Screen {
        let (tx, quit) = tokio::sync::mpsc::unbounded_channel();
        let on_interrupt = tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = on_interrupt.send(());
            }
        });
        if !std::io::stdout().is_terminal() {
            return Screen {
                terminal: None,
                quit,
            };
        }
        let raw = std::io::stdin()
            .is_terminal()
            .then(RawInput::enter)
            .flatten();
        if raw.is_some() {
            // A blocking read of stdin, on a thread of its own.
            std::thread::spawn(move || {
                let mut key = [0u8; 1];
                while std::io::stdin().read(&mut key).is_ok_and(|n| n == 1) {
                    if matches!(key[0], b'q' | b'Q') {
                        let _ = tx.send(());
                        return;
                    }
                }
            });
        }
        // The alternate screen, without the cursor.
        print!("\x1b[?1049h\x1b[?25l");
        Screen {
            terminal: Some(raw),
            quit,
        }
    }

    /// Shows one frame.
    pub(crate) fn draw(&self, frame: &str) {
        let mut out = std::io::stdout().lock();
        if self.terminal.is_some() {
            // Home, each line over the last frame's (then the rest of that
            // line cleared), then everything below cleared.
            let mut text = String::with_capacity(frame.len() + 64);
            text.push_str("\x1b[H");
            for line in frame.lines() {
                text.push_str(line);
                text.push_str("\x1b[K\r\n");
            }
            text.push_str("\x1b[J");
            let _ = out.write_all(text.as_bytes());
        } else {
            let _ = out.write_all(frame.as_bytes());
            if !frame.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
        }
        let _ = out.flush();
    }

    /// Waits for the next frame's time; false when the user asked to stop.
    pub(crate) async fn wait(&mut self) -> bool {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => true,
            _ = self.quit.recv() => false,
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal.is_some() {
            // The main screen back, with the cursor (the input's mode goes
            // back as the RawInput drops, after this).
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
    }
}
