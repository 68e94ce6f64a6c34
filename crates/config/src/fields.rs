//! Field types that parse themselves: a wrong value is refused while the
//! file is read, so the error names its line and field (toml gives the
//! value's span), and the rest of Baton gets the typed value, never a
//! string to check again.

use std::net::SocketAddr;

use nix::sys::signal::Signal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signal, by name: `"SIGTERM"`, `"TERM"` or `"term"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        parse_signal(&name)
            .map(SignalName)
            .ok_or_else(|| D::Error::custom(format!("{name:?} is not a signal name")))
    }
}

impl Serialize for SignalName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// `SIGTERM`, `TERM` and `term` name the same signal.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// An address with a port: `"127.0.0.1:8080"`, `"[::1]:8080"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address(pub SocketAddr);

impl Address {
    /// Parses one address.
    ///
    /// # Errors
    /// Why it is not one, for a person.
    pub fn parse(text: &str) -> Result<Address, String> {
        text.parse().map(Address).map_err(|_| {
            format!(
                "{text:?} is not an address with a port (like \"127.0.0.1:8080\" or \"[::1]:8080\")"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Address::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `[web] drain_notice`: how draining instances are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainNotice {
    /// `{"type":"drain"}` over the Node IPC channel (`"ipc"`).
    Ipc,
    /// A signal to the process group (its name).
    Signal(Signal),
}

impl<'de> Deserialize<'de> for DrainNotice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "ipc" {
            return Ok(DrainNotice::Ipc);
        }
        parse_signal(&text).map(DrainNotice::Signal).ok_or_else(|| {
            D::Error::custom(format!("{text:?} is neither \"ipc\" nor a signal name"))
        })
    }
}

impl Serialize for DrainNotice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DrainNotice::Ipc => s.serialize_str("ipc"),
            DrainNotice::Signal(sig) => s.serialize_str(sig.as_str()),
        }
    }
}

/// A cron pattern, 5 fields or 6 with seconds first: `"0 4 * * *"`.
#[derive(Debug, Clone)]
pub struct CronPattern {
    text: String,
    cron: croner::Cron,
}

impl CronPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed schedule.
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

impl PartialEq for CronPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for CronPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let cron = parse_cron(&text).map_err(D::Error::custom)?;
        Ok(CronPattern { text, cron })
    }
}

impl Serialize for CronPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Parses a cron pattern (seconds optional).
///
/// # Errors
/// The parser's message.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}
