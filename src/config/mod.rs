//! Resolved settings: every flag with its `RAGD_*` env fallback and default,
//! parsed into typed values so the rest of the server never re-parses strings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;

mod values;

pub use values::{Secret, parse_duration};
use values::{parse_net, parse_positive_duration};

/// Settings of `ragd serve`. Each flag falls back to `RAGD_<NAME>`.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Directory holding the database, uploaded files and the signing secret
    /// (created if missing).
    #[arg(long, env = "RAGD_DATA_DIR", default_value = "./data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Address and port to listen on.
    #[arg(
        long,
        env = "RAGD_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Whether anyone may create an account (`closed`: registration answers 403).
    #[arg(long, env = "RAGD_REGISTRATION", value_enum, default_value_t = Registration::Open)]
    pub registration: Registration,

    /// How long an issued token stays valid (e.g. 30m, 24h, 7d).
    #[arg(long, env = "RAGD_TOKEN_TTL", default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub token_ttl: Duration,

    /// Log line format on stderr.
    #[arg(long, env = "RAGD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// `full`: every acknowledged write survives power loss; `normal`: fewer
    /// fsyncs, the last moments before a power cut may be lost.
    #[arg(long, env = "RAGD_SYNC", value_enum, default_value_t = SyncMode::Full)]
    pub sync: SyncMode,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "RAGD_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// A proxy (address or CIDR, repeatable) whose `X-Forwarded-For` header
    /// is believed when it names the client IP. Nobody else's is.
    #[arg(long = "trusted-proxy", env = "RAGD_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_net, value_name = "CIDR")]
    pub trusted_proxies: Vec<IpNet>,

    /// Longest time a client may take to send a request's head, from its
    /// first byte (slow-header connections are closed).
    #[arg(long, env = "RAGD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub header_timeout: Duration,

    /// A connection with no request for this long is closed (keep-alive).
    #[arg(long, env = "RAGD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// A response the client does not read for this long closes its
    /// connection.
    #[arg(long, env = "RAGD_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub write_timeout: Duration,

    /// Longest wait for the next piece of a request body (408 after it).
    #[arg(long, env = "RAGD_BODY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub body_timeout: Duration,

    /// The least a request body must bring per second, counted over each
    /// window of `--body-timeout` (408 below it).
    #[arg(
        long,
        env = "RAGD_MIN_BODY_RATE",
        default_value_t = 1024,
        value_name = "BYTES"
    )]
    pub min_body_rate: u64,

    /// HTTP connections served at once; more wait until one closes.
    /// WebSockets are limited per user instead (`--max-sockets-per-user`).
    #[arg(long, env = "RAGD_MAX_CONNECTIONS", default_value_t = 512, value_name = "N")]
    pub max_connections: usize,

    /// HTTP connections one client address may hold at once (trusted
    /// proxies are not limited); more are closed at once.
    #[arg(
        long,
        env = "RAGD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64,
        value_name = "N"
    )]
    pub max_connections_per_ip: usize,

    /// A browser origin (e.g. `https://chat.example.com`, repeatable) allowed
    /// to open `/ws` besides the server's own (its `Host`), for a proxy that
    /// rewrites `Host`.
    #[arg(
        long = "allowed-origin",
        env = "RAGD_ALLOWED_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allowed_origins: Vec<String>,

    /// Accounts one client IP may create per hour (429 above it; 0: no limit).
    #[arg(
        long,
        env = "RAGD_REGISTRATIONS_PER_HOUR",
        default_value_t = 30,
        value_name = "N"
    )]
    pub registrations_per_hour: u32,

    /// Keep events at least this long for clients that reconnect with `since`.
    #[arg(long, env = "RAGD_EVENT_RETENTION", default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    pub event_retention: Duration,

    /// Always keep at least this many of each user's newest events.
    #[arg(
        long,
        env = "RAGD_EVENT_RETENTION_MIN",
        default_value_t = 10_000,
        value_name = "EVENTS"
    )]
    pub event_retention_min: u32,

    /// Interval of WebSocket heartbeats; a socket silent for two is closed.
    #[arg(long, env = "RAGD_HEARTBEAT", default_value = "25s", value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat: Duration,

    /// Open WebSockets allowed per user; one more is refused with 429.
    #[arg(
        long,
        env = "RAGD_MAX_SOCKETS_PER_USER",
        default_value_t = 16,
        value_name = "N"
    )]
    pub max_sockets_per_user: u32,

    /// How long a ticket from `POST /api/ws-ticket` stays usable.
    #[arg(long, env = "RAGD_WS_TICKET_TTL", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub ws_ticket_ttl: Duration,

    /// A socket whose frame cannot be written for this long is closed (4008).
    #[arg(long, env = "RAGD_WS_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub ws_write_timeout: Duration,

    /// A socket further behind than this many events is closed (4008).
    #[arg(long, env = "RAGD_WS_MAX_LAG", default_value_t = 5_000, value_name = "EVENTS")]
    pub ws_max_lag: u32,

    /// How often the background sweep runs (event pruning, expired keys).
    #[arg(long, env = "RAGD_SWEEP_INTERVAL", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub sweep_interval: Duration,

    /// Largest upload accepted, in MiB (413 above it).
    #[arg(long, env = "RAGD_MAX_UPLOAD_MB", default_value_t = 50, value_name = "MIB")]
    pub max_upload_mb: u64,

    /// Disk space kept in reserve in the data dir, in MiB (0: none): on a
    /// full disk it is released so that deleting documents and conversations
    /// still works.
    #[arg(long, env = "RAGD_DISK_RESERVE_MB", default_value_t = 16, value_name = "MIB")]
    pub disk_reserve_mb: u64,

    /// Document worker tasks (each with its own parser process).
    #[arg(long, env = "RAGD_WORKERS", default_value_t = 2, value_name = "N")]
    pub workers: u32,

    /// Retries of a parse job after transient failures.
    #[arg(long, env = "RAGD_JOB_MAX_RETRIES", default_value_t = 3, value_name = "N")]
    pub job_max_retries: u32,

    /// A parser running longer than this on one file is stopped (a crash).
    #[arg(long, env = "RAGD_JOB_TIMEOUT", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub job_timeout: Duration,

    /// How long a claimed job is held without a heartbeat.
    #[arg(long, env = "RAGD_JOB_LEASE", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub job_lease: Duration,

    /// How often a worker renews its lease while it works.
    #[arg(long, env = "RAGD_JOB_HEARTBEAT", default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
    pub job_heartbeat: Duration,

    /// Backoff base: retry n waits about base * 2^(n-1) (jittered, at most 10m).
    #[arg(long, env = "RAGD_JOB_RETRY_BASE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub job_retry_base: Duration,

    /// Address-space limit of each parser process, in MiB.
    #[arg(
        long,
        env = "RAGD_PARSE_MEMORY_MB",
        default_value_t = 1024,
        value_name = "MIB"
    )]
    pub parse_memory_mb: u64,

    /// Target chunk size in characters.
    #[arg(long, env = "RAGD_CHUNK_SIZE", default_value_t = 1000, value_name = "CHARS")]
    pub chunk_size: usize,

    /// Characters repeated between neighbouring chunks.
    #[arg(long, env = "RAGD_CHUNK_OVERLAP", default_value_t = 150, value_name = "CHARS")]
    pub chunk_overlap: usize,

    /// Who writes the answers: `extractive` (built in, offline) or `openai`
    /// (any OpenAI-compatible server: Ollama, llama.cpp, vLLM, OpenAI).
    #[arg(long, env = "RAGD_LLM_PROVIDER", value_enum, default_value_t = LlmProvider::Extractive)]
    pub llm_provider: LlmProvider,

    /// Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1.
    #[arg(long, env = "RAGD_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,

    /// Model name passed to the server (e.g. llama3.1:8b).
    #[arg(long, env = "RAGD_LLM_MODEL", value_name = "NAME")]
    pub llm_model: Option<String>,

    /// API key sent as a Bearer token (prefer the environment variable;
    /// never logged).
    #[arg(long, env = "RAGD_LLM_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub llm_api_key: Option<Secret>,

    /// Longest wait for the connection, the first token or the next chunk;
    /// a model that keeps streaming is never cut off.
    #[arg(long, env = "RAGD_LLM_TIMEOUT", default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub llm_timeout: Duration,

    /// Most tokens an answer may have (the server's default when unset).
    #[arg(long, env = "RAGD_LLM_MAX_TOKENS", value_name = "N")]
    pub llm_max_tokens: Option<u32>,

    /// Sampling temperature (the server's default when unset).
    #[arg(long, env = "RAGD_LLM_TEMPERATURE", value_name = "T")]
    pub llm_temperature: Option<f64>,

    /// Characters of retrieved passages put into the prompt.
    #[arg(
        long,
        env = "RAGD_LLM_CONTEXT_CHARS",
        default_value_t = 8_000,
        value_name = "CHARS"
    )]
    pub llm_context_chars: usize,

    /// A bearer token `GET /metrics` requires (at least 16 characters;
    /// prefer the environment variable). Without it `/metrics` is open:
    /// then keep it off the public internet.
    #[arg(
        long,
        env = "RAGD_METRICS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub metrics_token: Option<Secret>,

    /// JWT signing secret (at least 32 bytes). Prefer the environment
    /// variable; without it a secret is generated into `<data-dir>/secret.key`.
    #[arg(long, env = "RAGD_JWT_SECRET", hide = true, hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
}

impl Config {
    /// Parses serve flags as the command line would (env fallbacks included);
    /// tests use it to build a config the same way users do.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let matches = <Wrapper as clap::CommandFactory>::command().try_get_matches_from(
            std::iter::once(std::ffi::OsString::from("ragd")).chain(args.into_iter().map(Into::into)),
        )?;
        Ok(Wrapper::from_arg_matches(&matches)?.config)
    }

    /// Whether `ip` is one of the `--trusted-proxy` networks.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    Open,
    Closed,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmProvider {
    Extractive,
    Openai,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Normal,
}

/// A secret string whose `Debug` never shows its value.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_networks() {
        let config = Config::from_args(["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1"])
            .expect("valid flags");
        assert!(config.is_trusted_proxy("10.1.2.3".parse().unwrap()));
        assert!(config.is_trusted_proxy("127.0.0.1".parse().unwrap()));
        assert!(!config.is_trusted_proxy("127.0.0.2".parse().unwrap()));
    }
}
