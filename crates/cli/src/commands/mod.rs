//! One file per command (or per family of commands), each a function of
//! the parsed arguments; `cli::run` dispatches to them.

pub(super) mod check;
pub(super) mod control;
pub(super) mod deploy;
pub(super) mod docs;
pub(super) mod fleet;
pub(super) mod import;
pub(super) mod init;
pub(super) mod logs;
pub(super) mod probe;
pub(super) mod status;
pub(super) mod up;
pub(super) mod upgrade;
