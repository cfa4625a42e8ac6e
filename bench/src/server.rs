//! The server under test: a fresh `ragd serve` child process on a temp data
//! dir (or a server already running at `--url`), and a sampler that reads
//! its memory and CPU time from `/proc/<pid>/status` and `/proc/<pid>/stat`
//! (its parser children included, reported apart).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Common, Result, err};

/// What to start.
pub struct Spec {
    /// Extra `ragd serve` flags of the scenario (e.g. a socket limit).
    pub args: Vec<String>,
    /// An existing data dir (the sweep scenario builds one); `None`: a
    /// fresh temp dir.
    pub data_dir: Option<PathBuf>,
    /// Longest wait for the server to listen.
    pub start_timeout: Duration,
}

impl Spec {
    pub fn new(args: &[String]) -> Spec {
        Spec {
            args: args.to_vec(),
            data_dir: None,
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// The server a scenario talks to.
pub struct Target {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub server: Option<Server>,
    /// Samples the server process (`None` for `--url` without `--pid`).
    pub sampler: Option<Sampler>,
}

/// A spawned `ragd serve`.
pub struct Server {
    child: Child,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    keep: bool,
    /// Whether to say that the data dir was kept (`--keep-data`).
    announce_keep: bool,
    /// From spawn to the "listening" log line (start-up sweeps done).
    pub listening_after: Duration,
    /// From spawn to the first `GET /healthz` answered 200.
    pub healthy_after: Duration,
    stopped: bool,
}

/// A fresh temp directory `ragd-bench-<pid>-<n>` under the system temp dir.
pub fn temp_dir(label: &str) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("ragd-bench-{label}-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The `ragd` binary: `--ragd`, else the one next to this executable.
pub fn ragd_binary(common: &Common) -> Result<PathBuf> {
    if let Some(path) = &common.ragd {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(|e| err(format!("cannot find this executable: {e}")))?;
    let path = me
        .parent()
        .map(|dir| dir.join("ragd"))
        .ok_or_else(|| err("this executable has no directory"))?;
    if path.exists() {
        Ok(path)
    } else {
        Err(err(format!(
            "no ragd binary at {} (build it with `cargo build --release --bins`, or pass --ragd)",
            path.display()
        )))
    }
}

impl Target {
    /// Starts a fresh server (or adopts `--url`) and waits until it serves.
    pub async fn start(common: &Common, sync: &str, spec: Spec) -> Result<Target> {
        if let Some(url) = &common.url {
            if !spec.args.is_empty() {
                eprintln!(
                    "ragd-bench: --url given: the server must already run with {}",
                    spec.args.join(" ")
                );
            }
            let base = url.trim_end_matches('/').to_owned();
            check_loopback(&base)?;
            let sampler = common.pid.map(Sampler::start);
            return Ok(Target {
                base,
                server: None,
                sampler,
            });
        }
        let binary = ragd_binary(common)?;
        let (data_dir, keep_dir) = match spec.data_dir {
            Some(dir) => (dir, true),
            None => (temp_dir("data")?, common.keep_data),
        };
        let log_path = data_dir.with_extension("log");
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--sync", sync])
            .args(&spec.args)
            .args(&common.server_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Reproducible settings: no RAGD_* from the caller's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RAGD_") {
                command.env_remove(name);
            }
        }
        // A load tool is one address with many accounts and connections: the
        // per-address limits would measure themselves. Set through the
        // environment, which builds that predate these limits ignore.
        command
            .env("RAGD_REGISTRATIONS_PER_HOUR", "0")
            .env("RAGD_MAX_CONNECTIONS", "1000000")
            .env("RAGD_MAX_CONNECTIONS_PER_IP", "1000000");
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| err(format!("cannot start {}: {e}", binary.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| err("no stderr pipe"))?;
        let address = follow_log(stderr, &log_path)?;
        let sampler = Sampler::start(child.id());
        let mut server = Server {
            child,
            data_dir,
            log_path,
            keep: keep_dir,
            announce_keep: common.keep_data,
            listening_after: Duration::ZERO,
            healthy_after: Duration::ZERO,
            stopped: false,
        };
        let address = match address.recv_timeout(spec.start_timeout) {
            Ok(address) => address,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                let tail = log_tail(&server.log_path);
                server.kill();
                return Err(err(format!(
                    "ragd did not start listening within {:?} (exit status {status:?}); log tail:\n{tail}",
                    spec.start_timeout
                )));
            }
        };
        server.listening_after = spawned_at.elapsed();
        let base = format!("http://{address}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + spec.start_timeout;
        loop {
            let healthy = client
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                break;
            }
            if Instant::now() > deadline {
                server.kill();
                return Err(err("ragd listens but /healthz never answered 200"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.healthy_after = spawned_at.elapsed();
        crate::progress(format!(
            "ragd serve (pid {}) ready at {base} after {:.2} s (data dir {})",
            server.child.id(),
            server.healthy_after.as_secs_f64(),
            server.data_dir.display()
        ));
        Ok(Target {
            base,
            server: Some(server),
            sampler: Some(sampler),
        })
    }

    /// A reading of the server process now (zeros without a sampler).
    pub fn reading(&self) -> Reading {
        self.sampler.as_ref().map(Sampler::read_now).unwrap_or_default()
    }

    /// Starts measuring a phase (CPU time and peak memory over it).
    pub fn phase(&self) -> Phase {
        Phase {
            start: Instant::now(),
            server: self.reading(),
            client: Reading::of(std::process::id()),
        }
    }

    /// Ends a phase started with [`Target::phase`].
    pub fn end_phase(&self, phase: &Phase) -> PhaseUsage {
        let wall = phase.start.elapsed();
        let server = self.reading();
        let client = Reading::of(std::process::id());
        let peak_rss_kb = self.sampler.as_ref().map_or(server.rss_kb, |s| {
            s.peak_rss_since(phase.start).max(server.rss_kb)
        });
        let secs = wall.as_secs_f64().max(1e-9);
        let tick = clock_ticks_per_second();
        let cpu = |a: u64, b: u64| b.saturating_sub(a) as f64 / tick;
        PhaseUsage {
            wall,
            server_cpu_s: cpu(phase.server.cpu_ticks, server.cpu_ticks),
            children_cpu_s: cpu(phase.server.children_cpu_ticks, server.children_cpu_ticks),
            client_cpu_s: cpu(phase.client.cpu_ticks, client.cpu_ticks),
            rss_start_kb: phase.server.rss_kb,
            rss_end_kb: server.rss_kb,
            rss_peak_kb: peak_rss_kb,
            secs,
        }
    }

    /// Stops the server (SIGTERM, bounded wait) and removes its data dir
    /// unless kept. Returns whether it exited cleanly.
    pub async fn stop(mut self) -> Option<bool> {
        if let Some(sampler) = self.sampler.take() {
            sampler.stop();
        }
        let server = self.server.take()?;
        Some(
            tokio::task::spawn_blocking(move || server.shutdown())
                .await
                .unwrap_or(false),
        )
    }
}

/// Only loopback targets: this tool never loads another machine.
fn check_loopback(base: &str) -> Result<()> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| err("--url must be http://127.x.y.z:port"))?;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => Err(err(format!(
            "--url must name a loopback address (127.0.0.0/8), not {host:?}"
        ))),
    }
}

/// Copies the server's log lines to `path` and hands over the address of
/// its "listening" line.
fn follow_log(stderr: std::process::ChildStderr, path: &Path) -> Result<mpsc::Receiver<String>> {
    let mut file = std::fs::File::create(path).map_err(|e| err(format!("create {}: {e}", path.display())))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("ragd-log".into())
        .spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if !sent && let Some(address) = listening_address(&line) {
                    sent = tx.send(address).is_ok();
                }
            }
        })
        .map_err(|e| err(format!("cannot start the log thread: {e}")))?;
    Ok(rx)
}

/// The `host:port` of a JSON log line "ragd listening on http://host:port".
fn listening_address(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    // Flattened (ragd's JSON format) or nested under "fields".
    let message = value["message"]
        .as_str()
        .or_else(|| value["fields"]["message"].as_str())?;
    let rest = message.split("listening on http://").nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Server {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped = true;
    }

    fn shutdown(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let clean = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!("ragd-bench: the server did not stop within 30 s; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break false;
                }
            }
        };
        self.stopped = true;
        clean
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            self.kill();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            let _ = std::fs::remove_file(&self.log_path);
        } else if self.announce_keep {
            eprintln!(
                "ragd-bench: kept the data dir {} and log {}",
                self.data_dir.display(),
                self.log_path.display()
            );
        }
    }
}

/// One look at a process: resident memory and CPU time (clock ticks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub rss_kb: u64,
    /// Peak resident memory of the process so far (`VmHWM`).
    pub hwm_kb: u64,
    /// utime + stime of the process, plus cutime + cstime (its reaped children).
    pub cpu_ticks: u64,
    /// Live child processes (the parser children): RSS and CPU ticks.
    pub children_rss_kb: u64,
    pub children_cpu_ticks: u64,
}

impl Reading {
    /// Reads `/proc/<pid>` and its children's.
    pub fn of(pid: u32) -> Reading {
        let (rss_kb, hwm_kb) = status_memory(pid);
        let mut reading = Reading {
            rss_kb,
            hwm_kb,
            cpu_ticks: stat_ticks(pid, true),
            ..Reading::default()
        };
        for child in children(pid) {
            reading.children_rss_kb += status_memory(child).0;
            reading.children_cpu_ticks += stat_ticks(child, true);
        }
        reading
    }
}

fn status_memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime (+ cutime + cstime) from `/proc/<pid>/stat`.
fn stat_ticks(pid: u32, with_reaped: bool) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: split after it.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of stat(5), so field n is fields[n - 3].
    let get = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let own = get(14) + get(15);
    if with_reaped { own + get(16) + get(17) } else { own }
}

/// Child pids of `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`,
/// 100 on Linux when it cannot be asked).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Samples a process every 100 ms on its own thread, for peaks between
/// the explicit readings.
pub struct Sampler {
    pid: u32,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let _ = std::thread::Builder::new()
            .name("proc-sampler".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    let (rss, _) = status_memory(pid);
                    if rss == 0 {
                        break; // gone
                    }
                    if let Ok(mut v) = s.lock() {
                        v.push((Instant::now(), rss));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        Sampler { pid, samples, stop }
    }

    pub fn read_now(&self) -> Reading {
        Reading::of(self.pid)
    }

    pub fn peak_rss_since(&self, since: Instant) -> u64 {
        self.samples.lock().map_or(0, |v| {
            v.iter()
                .filter(|(t, _)| *t >= since)
                .map(|(_, rss)| *rss)
                .max()
                .unwrap_or(0)
        })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The start of a measured phase.
pub struct Phase {
    pub start: Instant,
    server: Reading,
    client: Reading,
}

/// CPU and memory of the server over a phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseUsage {
    pub wall: Duration,
    pub server_cpu_s: f64,
    pub children_cpu_s: f64,
    pub client_cpu_s: f64,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_peak_kb: u64,
    secs: f64,
}

impl PhaseUsage {
    /// Cores the server used on average (1.0 = one core busy).
    pub fn server_cores(&self) -> f64 {
        self.server_cpu_s / self.secs
    }

    pub fn to_json(self) -> Value {
        use crate::stats::round3;
        json!({
            "wall_s": round3(self.wall.as_secs_f64()),
            "server_cpu_s": round3(self.server_cpu_s),
            "server_cores": round3(self.server_cores()),
            "parser_children_cpu_s": round3(self.children_cpu_s),
            "client_cpu_s": round3(self.client_cpu_s),
            "client_cores": round3(self.client_cpu_s / self.secs),
            "server_rss_start_kb": self.rss_start_kb,
            "server_rss_end_kb": self.rss_end_kb,
            "server_rss_peak_kb": self.rss_peak_kb,
        })
    }

    pub fn line(&self) -> String {
        format!(
            "server {:.2} cores ({:.1} s CPU, parsers {:.1} s), bench {:.2} cores; server RSS {:.1} -> {:.1} MiB (peak {:.1})",
            self.server_cores(),
            self.server_cpu_s,
            self.children_cpu_s,
            self.client_cpu_s / self.secs,
            self.rss_start_kb as f64 / 1024.0,
            self.rss_end_kb as f64 / 1024.0,
            self.rss_peak_kb as f64 / 1024.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let r = Reading::of(std::process::id());
        assert!(r.rss_kb > 0);
        assert!(r.hwm_kb >= r.rss_kb);
    }

    #[test]
    fn finds_the_listening_line() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"ragd listening on http://127.0.0.1:4567","address":"127.0.0.1:4567"},"target":"ragd::app"}"#;
        assert_eq!(listening_address(line).as_deref(), Some("127.0.0.1:4567"));
        let flat = r#"{"timestamp":"x","level":"INFO","message":"ragd listening on http://127.0.0.1:9","target":"ragd::app"}"#;
        assert_eq!(listening_address(flat).as_deref(), Some("127.0.0.1:9"));
        assert_eq!(listening_address("not json"), None);
    }

    #[test]
    fn only_loopback_urls() {
        assert!(check_loopback("http://127.0.0.1:8080").is_ok());
        assert!(check_loopback("http://127.3.2.1:80/x").is_ok());
        assert!(check_loopback("http://10.0.0.1:8080").is_err());
        assert!(check_loopback("http://example.com").is_err());
    }
}
