//! The server's side of a parser child: start it, send one request at a
//! time, and turn a child that dies or runs out of time into a crash.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::child_main::ChildLimits;
use super::policy::Failure;
use super::protocol::{ParseRequest, ParseResponse};
use crate::ingest::ParseError;
use crate::types::ChunkText;

pub struct ParserChild {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ParserChild {
    pub fn spawn(exe: &Path, limits: ChildLimits) -> std::io::Result<ParserChild> {
        let mut child = Command::new(exe)
            .arg("parse")
            .arg("--memory-bytes")
            .arg(limits.memory_bytes.to_string())
            .arg("--cpu-seconds")
            .arg(limits.cpu_seconds.to_string())
            .args(limits.parent_pid.map(|pid| format!("--parent-pid={pid}")))
            .env_remove("RAGD_JWT_SECRET")
            .env_remove("RAGD_LLM_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // A server that stops, however it stops, takes its child along
            // (and the child exits on its own when its stdin closes).
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("child has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("child has no stdout"))?;
        Ok(ParserChild {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// CPU seconds the child has used so far (from /proc), to restart it
    /// before its CPU-time limit could hit a healthy job.
    pub fn cpu_seconds(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the ")" that ends the command name; utime and stime
        // are fields 14 and 15 of the whole line.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks / 100)
    }

    /// Parses one file. `Err` carries how the attempt failed; after a
    /// `Crash` the child is dead and must be dropped.
    pub async fn parse(
        &mut self,
        request: &ParseRequest,
        timeout: Duration,
    ) -> Result<Vec<ChunkText>, Failure> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| Failure::Permanent(format!("bad request: {e}")))?;
        line.push(b'\n');
        let exchange = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await?;
            let mut answer = String::new();
            let n = self.stdout.read_line(&mut answer).await?;
            Ok::<_, std::io::Error>((n, answer))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                self.kill().await;
                Err(Failure::Crash(format!(
                    "timeout: the parser ran longer than {}s and was stopped",
                    timeout.as_secs()
                )))
            }
            Ok(Ok((n, answer))) if n > 0 => match serde_json::from_str::<ParseResponse>(&answer) {
                Ok(ParseResponse::Chunks(chunks)) => Ok(chunks),
                Ok(ParseResponse::Failed(ParseError::Permanent(m))) => Err(Failure::Permanent(m)),
                Ok(ParseResponse::Failed(ParseError::Transient(m))) => Err(Failure::Transient(m)),
                Err(err) => {
                    self.kill().await;
                    Err(Failure::Crash(format!("the parser answered garbage: {err}")))
                }
            },
            Ok(_) => Err(Failure::Crash(self.died().await)),
        }
    }

    async fn died(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => describe(status),
            _ => {
                self.kill().await;
                "the parser process stopped answering".to_owned()
            }
        }
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(9) => "the parser process was killed (out of memory or CPU time)".to_owned(),
        Some(6) => "the parser process aborted (out of memory or a fatal error)".to_owned(),
        Some(24) => "the parser process ran out of CPU time".to_owned(),
        Some(signal) => format!("the parser process died from signal {signal}"),
        None => format!("the parser process exited unexpectedly ({status})"),
    }
}
