//! `[proxy]`: listen addresses, timeouts, limits, balancing, access logs.

use super::*;

/// `[proxy] access_log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// nginx's `combined`, then the request time, the instance, the
    /// release, the retries and whether it was held.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// How the proxy picks an instance for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The ready instance with the fewest requests in flight.
    #[default]
    LeastOutstanding,
    /// Each ready instance in turn.
    RoundRobin,
}

/// `[proxy]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Public addresses, IPv4 or IPv6. A single string is accepted too.
    pub listen: Spanned<Addresses>,
    /// Public HTTPS addresses, served with the `[tls]` certificates.
    #[serde(default)]
    pub https_listen: Option<Spanned<Addresses>>,
    /// Balancing policy.
    pub balance: Balance,
    /// How long a request waits for a ready instance before a 503.
    #[serde(with = "humantime_serde")]
    pub hold_timeout: Duration,
    /// How many requests may wait at once; more get 503 at once.
    pub hold_capacity: usize,
    /// How many times a request is retried on another instance: any
    /// request that none of reached an instance (a refused connect), an
    /// idempotent one also after an instance broke or timed out.
    pub retries: u32,
    /// Trust X-Forwarded-* headers that arrive from clients.
    pub trust_forwarded: bool,
    /// A client must send its whole request head within this time (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431.
    pub max_headers: usize,
    /// Idle pooled upstream connections are closed after this. Keep it below
    /// the app's own keep-alive timeout (Node's is 5 s).
    #[serde(with = "humantime_serde")]
    pub upstream_idle_timeout: Duration,
    /// Connecting to an instance may take this long (nginx's
    /// `proxy_connect_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// An instance must start its answer this long after the request was
    /// sent in full; else 504 (nginx's `proxy_read_timeout`, kamal-proxy's
    /// `--target-timeout`).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Longest silence between two pieces of a body, either way between
    /// Baton and an instance (nginx's `proxy_read_timeout` and
    /// `proxy_send_timeout`). Event streams (SSE) and WebSockets are exempt:
    /// they are quiet between events.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest silence between two pieces of a client's request body; else
    /// 408 (nginx's `client_body_timeout`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Largest request body; larger gets 413 (nginx's
    /// `client_max_body_size`). No limit when unset.
    pub max_body_size: Option<Spanned<Size>>,
    /// Timeouts of one instance within `fail_timeout` that take it out of
    /// rotation for `fail_timeout` (nginx's `max_fails`).
    pub max_fails: u32,
    /// See `max_fails` (nginx's `fail_timeout`).
    #[serde(with = "humantime_serde")]
    pub fail_timeout: Duration,
    /// A line per request in this file (relative to baton.toml's folder),
    /// rotated as `[daemon] log_max_size` and `log_keep` say.
    pub access_log: Option<PathBuf>,
    /// `combined` (nginx's) or `json`.
    pub access_log_format: AccessFormat,
}

/// What limits the proxy puts on one exchange with an instance.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeLimits {
    /// See [`ProxyConfig::connect_timeout`].
    pub connect: Duration,
    /// See [`ProxyConfig::response_timeout`].
    pub response: Duration,
    /// See [`ProxyConfig::read_timeout`].
    pub read: Duration,
    /// See [`ProxyConfig::upstream_idle_timeout`].
    pub idle: Duration,
}

impl ProxyConfig {
    /// The limits on each exchange with an instance.
    pub fn exchange_limits(&self) -> ExchangeLimits {
        ExchangeLimits {
            connect: self.connect_timeout,
            response: self.response_timeout,
            read: self.read_timeout,
            idle: self.upstream_idle_timeout,
        }
    }

    /// The largest request body, when one is set.
    pub fn body_limit(&self) -> Option<u64> {
        self.max_body_size.as_ref().map(|s| s.get_ref().0)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: Spanned::new(
                0..0,
                Addresses::One(Address(SocketAddr::from(([127, 0, 0, 1], 8080)))),
            ),
            https_listen: None,
            balance: Balance::default(),
            hold_timeout: Duration::from_secs(30),
            hold_capacity: 10_000,
            retries: 2,
            trust_forwarded: false,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            upstream_idle_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_body_size: None,
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            access_log: None,
            access_log_format: AccessFormat::default(),
        }
    }
}

/// One address or a list of them.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Addresses {
    /// `listen = "127.0.0.1:8080"`
    One(Address),
    /// `listen = ["127.0.0.1:8080", "[::1]:8080"]`
    Many(Vec<Address>),
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What the file holds, before each address is parsed (an
        /// untagged enum would hide which one is wrong).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let parse = |text: String| Address::parse(&text).map_err(serde::de::Error::custom);
        Ok(match Written::deserialize(d)? {
            Written::One(text) => Addresses::One(parse(text)?),
            Written::Many(texts) => {
                Addresses::Many(texts.into_iter().map(parse).collect::<Result<_, _>>()?)
            }
        })
    }
}

impl Addresses {
    /// Every address.
    pub fn as_slice(&self) -> &[Address] {
        match self {
            Addresses::One(s) => std::slice::from_ref(s),
            Addresses::Many(v) => v,
        }
    }
}

impl ProxyConfig {
    /// The listen addresses.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen
            .get_ref()
            .as_slice()
            .iter()
            .map(|a| a.0)
            .collect()
    }

    /// The HTTPS listen addresses.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        let addrs = self.https_listen.as_ref().map(|l| l.get_ref().as_slice());
        addrs.unwrap_or_default().iter().map(|a| a.0).collect()
    }
}
