//! A bounded load generator for MCP `tools/call`, over Streamable HTTP or stdio.
//!
//! It opens `--sessions` MCP sessions with rmcp's own client, then keeps
//! `--concurrency` calls in flight (spread over the sessions) for
//! `--duration`, and reports calls/s, latency percentiles and errors. The
//! first `--warmup` of the run is not counted. Used by
//! `scripts/bench-http.sh`; see BENCHMARKS.md.
//!
//! With `--rate N` the load is open-loop instead: a call is due every 1/N s
//! whatever the server does, at most `--concurrency` are in flight, and each
//! latency is measured from the moment the call was due (so time spent
//! waiting for a free slot counts; no coordinated omission), and every call
//! due in the window is counted, however late it ends, so an overloaded
//! server shows as latency, not as fewer calls. tokio's timer fires up to
//! ~1 ms after a call is due; that delay is in every target's figures alike.
//! Two servers loaded at the same rate are compared at the same work, which
//! is how added latency is read; the closed loop measures capacity.
//!
//! ```sh
//! # Streamable HTTP (loopback only), with an API key:
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/mcp --token "$TOKEN" \
//!     --tool echo --args '{"message":"hi"}' --concurrency 32 --sessions 4 --duration 10s
//! # stdio: everything after `--` is the server command, started once per session.
//! cargo run --release --example loadgen -- --concurrency 1 --duration 5s -- \
//!     target/release/tollgate serve --principal alice
//! ```
//!
//! Errors are counted, not fatal: `transport` errors (the call failed at the
//! protocol level) and `tool` errors (the result had `isError: true`, e.g. a
//! refusal by tollgate). A run with errors is not a valid speed measurement.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

/// Upper bounds, so a typo cannot turn a benchmark into a flood.
const MAX_CONCURRENCY: usize = 1024;
const MAX_SESSIONS: usize = 64;
const MAX_DURATION: Duration = Duration::from_secs(120);
/// One call longer than this counts as a transport error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest `--rate`.
const MAX_RATE: f64 = 100_000.0;

#[derive(Parser, Debug)]
#[command(about = "Fire MCP tools/call at a loopback server and report calls/s and latency")]
struct Args {
    /// Streamable HTTP endpoint; must be a loopback address. Ignored with a stdio command.
    #[arg(long, default_value = "http://127.0.0.1:8080/mcp")]
    url: String,
    /// Bearer token (e.g. a `tollgate keys create` API key), sent as `Authorization: Bearer`.
    #[arg(long, env = "LOADGEN_TOKEN")]
    token: Option<String>,
    /// Tool to call.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Arguments of every call, a JSON object.
    #[arg(long, default_value = r#"{"message":"hi"}"#)]
    args: String,
    /// Calls in flight at any moment (with `--rate`: at most).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Open loop: start this many calls per second, measuring each from
    /// when it was due (see the module docs). Without it, each of the
    /// `--concurrency` workers calls again as soon as its call returns.
    #[arg(long, value_name = "CALLS_PER_S")]
    rate: Option<f64>,
    /// MCP sessions to spread the calls over (at most one per concurrent call).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// How long to measure, e.g. 5s, after the warm-up.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls made before measuring starts are not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also report this process's CPU time per counted call (read from
    /// /proc/PID/stat at the start and end of the measured window), e.g. the
    /// server's pid. Stdio servers are measured this way automatically.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// A label echoed in the report, e.g. "governed".
    #[arg(long, default_value = "")]
    label: String,
    /// Serve over stdio instead: the server command, started once per session.
    #[arg(last = true, value_name = "STDIO_COMMAND")]
    stdio: Vec<String>,
}

type Client = RunningService<RoleClient, ()>;

/// What one worker saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// Every successful reply, warm-up and late ones included: each of
    /// these must have a committed receipt on a governed server.
    acknowledged: u64,
    transport_errors: u64,
    tool_errors: u64,
    first_error: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    check_bounds(&args)?;
    let call_args: Map<String, Value> = match serde_json::from_str(&args.args)? {
        Value::Object(m) => m,
        _ => return Err("--args must be a JSON object".into()),
    };
    let sessions = args.sessions.clamp(1, args.concurrency);

    let mut clients = Vec::with_capacity(sessions);
    let mut clients_pids = Vec::new();
    let per_session = args.concurrency.div_ceil(sessions);
    for _ in 0..sessions {
        let (client, pid) = connect(&args, per_session)
            .await
            .map_err(|e| format!("cannot open an MCP session: {e}"))?;
        clients.push(client);
        clients_pids.extend(pid);
    }
    let peers: Vec<Peer<RoleClient>> = clients.iter().map(|c| c.peer().clone()).collect();

    let params = CallToolRequestParams::new(args.tool.clone()).with_arguments(call_args);
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let stop_at = measure_from + args.duration;
    // CPU time of the server(s) and of this client over the measured window.
    let mut pids: Vec<u32> = clients_pids.clone();
    pids.extend(args.server_pid);
    let cpu_window = tokio::spawn(cpu_during(pids, measure_from, stop_at));
    let window = Window {
        measure_from,
        stop_at,
    };
    let total = match args.rate {
        Some(rate) => open_loop(&peers, &params, rate, args.concurrency, start, window).await?,
        None => {
            let mut workers = Vec::with_capacity(args.concurrency);
            for w in 0..args.concurrency {
                let peer = peers[w % sessions].clone();
                let params = params.clone();
                workers.push(tokio::spawn(worker(peer, params, window)));
            }
            let mut total = Tally::default();
            for w in workers {
                total.merge(w.await?);
            }
            total
        }
    };
    let cpu = cpu_window.await?;
    for c in clients {
        let _ = c.cancel().await;
    }

    let report = report(&args, sessions, total, cpu);
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Loopback only, and bounded in concurrency, sessions and time.
fn check_bounds(args: &Args) -> Result<(), String> {
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
    }
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        return Err(format!("--sessions must be 1..={MAX_SESSIONS}"));
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate <= MAX_RATE)
    {
        return Err(format!("--rate must be more than 0 and at most {MAX_RATE}"));
    }
    if args.duration.is_zero() || args.duration + args.warmup > MAX_DURATION {
        return Err(format!(
            "--duration + --warmup must be more than 0 and at most {}s",
            MAX_DURATION.as_secs()
        ));
    }
    if args.stdio.is_empty() {
        let url = reqwest::Url::parse(&args.url).map_err(|e| format!("--url: {e}"))?;
        let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "--url {} is not a loopback address; loadgen only loads local servers",
                args.url
            ));
        }
    }
    Ok(())
}

/// Open one MCP session (initialize handshake included); for stdio, also
/// the server process's pid.
async fn connect(
    args: &Args,
    in_flight: usize,
) -> Result<(Client, Option<u32>), Box<dyn std::error::Error>> {
    if let Some((program, rest)) = args.stdio.split_first() {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(rest);
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = transport.id();
        return Ok((().serve(transport).await?, pid));
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(args.url.as_str())
        .max_concurrent_requests(in_flight);
    if let Some(token) = &args.token {
        config = config.auth_header(token.clone());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    Ok((().serve(transport).await?, None))
}

/// CPU seconds (user + system) used during the window by `pids` together and
/// by this process; `None` where /proc cannot tell (not Linux, process gone).
#[derive(Clone, Copy, Default)]
struct Cpu {
    server_s: Option<f64>,
    client_s: Option<f64>,
}

async fn cpu_during(pids: Vec<u32>, from: Instant, to: Instant) -> Cpu {
    let read = |pids: &[u32]| -> Option<f64> {
        pids.iter()
            .map(|&p| cpu_seconds(&format!("/proc/{p}/stat")))
            .sum()
    };
    tokio::time::sleep_until(from.into()).await;
    let (s0, c0) = (read(&pids), cpu_seconds("/proc/self/stat"));
    tokio::time::sleep_until(to.into()).await;
    let (s1, c1) = (read(&pids), cpu_seconds("/proc/self/stat"));
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    Cpu {
        server_s: if pids.is_empty() { None } else { diff(s0, s1) },
        client_s: diff(c0, c1),
    }
}

/// utime + stime of a /proc/PID/stat file, in seconds (all threads).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture tollgate runs on.
    Some(ticks / 100.0)
}

/// The measured part of a run: calls that begin before `measure_from` or
/// end after `stop_at` are not counted.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
}

type Outcome =
    Result<Result<rmcp::model::CallToolResult, rmcp::ServiceError>, tokio::time::error::Elapsed>;

impl Tally {
    /// Count one call that began (or was due) at `begun` and ended at `done`.
    fn add(&mut self, outcome: Outcome, begun: Instant, done: Instant, window: Window) {
        if matches!(&outcome, Ok(Ok(result)) if result.is_error != Some(true)) {
            self.acknowledged += 1;
        }
        if begun < window.measure_from || done > window.stop_at {
            return;
        }
        match outcome {
            Ok(Ok(result)) if result.is_error != Some(true) => {
                let us = done.duration_since(begun).as_micros();
                self.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(Ok(result)) => {
                self.tool_errors += 1;
                self.first_error.get_or_insert_with(|| {
                    let text = result.content.first().and_then(|c| c.as_text());
                    format!(
                        "tool error: {}",
                        text.map(|t| t.text.as_str()).unwrap_or("?")
                    )
                });
            }
            Ok(Err(e)) => {
                self.transport_errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("transport error: {e}"));
            }
            Err(_) => {
                self.transport_errors += 1;
                self.first_error
                    .get_or_insert_with(|| "call timed out".to_string());
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.acknowledged += other.acknowledged;
        self.transport_errors += other.transport_errors;
        self.tool_errors += other.tool_errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// Closed loop: call again as soon as the last call returned, until the window ends.
async fn worker(peer: Peer<RoleClient>, params: CallToolRequestParams, window: Window) -> Tally {
    let mut tally = Tally::default();
    loop {
        let begun = Instant::now();
        if begun >= window.stop_at {
            break;
        }
        let outcome = tokio::time::timeout(CALL_TIMEOUT, peer.call_tool(params.clone())).await;
        tally.add(outcome, begun, Instant::now(), window);
    }
    tally
}

/// Open loop: call `n` is due at `start + n / rate`; at most `slots` run at
/// once; each latency runs from when its call was due.
async fn open_loop(
    peers: &[Peer<RoleClient>],
    params: &CallToolRequestParams,
    rate: f64,
    slots: usize,
    start: Instant,
    window: Window,
) -> Result<Tally, Box<dyn std::error::Error>> {
    // Every call due in the window counts, whenever it ends.
    let counted = Window {
        stop_at: window.stop_at + Duration::from_secs(86_400),
        ..window
    };
    let free = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
    let mut calls = tokio::task::JoinSet::new();
    let mut total = Tally::default();
    for n in 0u64.. {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= window.stop_at {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let slot = std::sync::Arc::clone(&free).acquire_owned().await?;
        let peer = peers[(n as usize) % peers.len()].clone();
        let params = params.clone();
        calls.spawn(async move {
            let outcome = tokio::time::timeout(CALL_TIMEOUT, peer.call_tool(params)).await;
            drop(slot);
            let mut one = Tally::default();
            one.add(outcome, due, Instant::now(), counted);
            one
        });
        // Collect what has finished, so memory stays bounded.
        while let Some(done) = calls.try_join_next() {
            total.merge(done?);
        }
    }
    while let Some(done) = calls.join_next().await {
        total.merge(done?);
    }
    Ok(total)
}

fn report(args: &Args, sessions: usize, mut t: Tally, cpu: Cpu) -> Value {
    t.latencies_us.sort_unstable();
    let n = t.latencies_us.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        f64::from(t.latencies_us[rank.min(n) - 1]) / 1000.0
    };
    let mean = if n == 0 {
        0.0
    } else {
        t.latencies_us.iter().map(|&l| f64::from(l)).sum::<f64>() / n as f64 / 1000.0
    };
    let secs = args.duration.as_secs_f64();
    let per_call_us = |s: Option<f64>| s.filter(|_| n > 0).map(|s| s * 1e6 / n as f64);
    json!({
        "label": args.label,
        "target": if args.stdio.is_empty() { args.url.clone() } else { args.stdio.join(" ") },
        "transport": if args.stdio.is_empty() { "http" } else { "stdio" },
        "tool": args.tool,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "sessions": sessions,
        "duration_s": secs,
        "calls": n,
        "acknowledged": t.acknowledged,
        "calls_per_s": n as f64 / secs,
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "p999_ms": pct(99.9),
        "max_ms": pct(100.0),
        "mean_ms": mean,
        "server_cpu_us_per_call": per_call_us(cpu.server_s),
        "client_cpu_us_per_call": per_call_us(cpu.client_s),
        "transport_errors": t.transport_errors,
        "tool_errors": t.tool_errors,
        "first_error": t.first_error,
    })
}

fn print_text(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "{} {} tool={} concurrency={} sessions={} duration={}s",
        r["transport"].as_str().unwrap_or(""),
        r["target"].as_str().unwrap_or(""),
        r["tool"].as_str().unwrap_or(""),
        r["concurrency"],
        r["sessions"],
        f("duration_s"),
    );
    println!(
        "  calls/s   {:>10.0}   ({} calls)",
        f("calls_per_s"),
        r["calls"]
    );
    println!(
        "  latency   p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms",
        f("p50_ms"),
        f("p90_ms"),
        f("p99_ms"),
        f("p999_ms"),
        f("max_ms")
    );
    if let Some(us) = r["server_cpu_us_per_call"].as_f64() {
        println!("  server    {us:.0} µs CPU per call");
    }
    if let Some(us) = r["client_cpu_us_per_call"].as_f64() {
        println!("  loadgen   {us:.0} µs CPU per call");
    }
    println!(
        "  errors    transport {}   tool {}",
        r["transport_errors"], r["tool_errors"]
    );
    if let Some(e) = r["first_error"].as_str() {
        println!("  first error: {e}");
    }
}
