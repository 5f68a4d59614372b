//! `bench h2load`: a running server's `GetAvailability` latency under h2load (nghttp2's
//! HTTP/2 load generator), which multiplexes the way gateways and proxies do.
//!
//! `parkcast bench grpc` sends each request as it falls due, one per write. h2load at a fixed rate
//! (`--rps`) wakes every 10 ms and submits every request due since its last wake-up at once, up to
//! `--streams` in flight per connection: several requests reach the server in one TCP segment, and
//! the answers to all of them must leave at once. A server that sends the first and holds the rest
//! until the client's next packet (Nagle's algorithm on its sockets; see `Server::start`) shows a
//! 10 ms floor here that `bench grpc` never sees. `--with-grpc` runs `bench grpc`'s open-loop
//! sweep at the same rates in the same run and reports both in one table; `--with-rest ADDR` asks
//! the same question as a JSON GET of the server's REST face over HTTP/1.1, also in the same run.
//!
//! h2load sends one request body for every request (`-d`): one lot, the same horizons. It sees the
//! HTTP status only, not `grpc-status` (a gRPC error is an HTTP 200 with trailers), so the same
//! request is first asked once over gRPC and must be answered OK; the server's
//! `parkcast_grpc_requests_total{code}` counts the rest. Its latency runs from submitting a request
//! (its wake-up) to the end of the answer, per request from its `--log-file`; `bench grpc`'s runs
//! from each request's due time.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use comfy_table::Cell;
use parkcast_proto::v1::GetAvailabilityRequest;
use prost::Message;

use crate::client::preflight;
use crate::measure::{Percentiles, logical_cores};
use crate::sweep::{SweepRow, TARGET_P99, TARGET_RATE, WARM_UP, request_sweep};
use crate::table::{millis, new_table, right, thousands};
use crate::{Error, Report};

/// The gRPC method asked.
const METHOD_PATH: &str = "/parkcast.v1.Availability/GetAvailability";

/// The table's name of h2load's gRPC rows.
const GRPC_LABEL: &str = "h2load gRPC (HTTP/2, bursts every 10 ms)";

/// The table's name of h2load's REST rows.
const REST_LABEL: &str = "h2load JSON GET (HTTP/1.1)";

/// What `bench h2load` asks of the server, and how hard.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct H2loadOptions {
    /// Server address (`http://host:port`).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The lot asked about (h2load sends the same request every time).
    #[arg(long)]
    pub lot: String,
    /// Horizons asked for, minutes ahead (comma-separated). When the server refuses horizons (no
    /// model active), the live picture is asked for instead, and the report says so.
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub horizons: Vec<u32>,
    /// Ask for the live picture only (no horizons).
    #[arg(long)]
    pub now_only: bool,
    /// Total request rates, requests/s (comma-separated), each shared evenly by the connections.
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    pub rates: Vec<u32>,
    /// HTTP/2 connections (h2load `-c`).
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Streams in flight per connection at most (h2load `-m`).
    #[arg(long, default_value_t = 10)]
    pub streams: u32,
    /// Measured seconds per rate (after a 0.5 s warm-up); 0.1 at least.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The h2load binary (Debian and Ubuntu: `apt-get install nghttp2-client`).
    #[arg(long, default_value = "h2load", env = "PARKCAST_H2LOAD")]
    pub h2load: PathBuf,
    /// Also run `bench grpc`'s open-loop sweep at the same rates, same lot and request, same
    /// connection count, and report both in one table.
    #[arg(long)]
    pub with_grpc: bool,
    /// Also ask the same question as JSON: h2load over HTTP/1.1 GETs the server's REST route
    /// (`/v1/lots/LOT/availability?horizon_minutes=...`) on this HTTP address (`host:port`, the
    /// server's `serve.metrics_addr`) at the same rates, in the same run; HTTP/1.1 has no
    /// multiplexing, so it uses `connections x streams` connections with one request in flight
    /// each (a gateway's connection pool).
    #[arg(long, value_name = "HOST:PORT")]
    pub with_rest: Option<String>,
}

impl H2loadOptions {
    /// Checks the options without running anything.
    pub fn validate(&self) -> Result<(), Error> {
        if self.rates.is_empty() || self.rates.contains(&0) {
            return Err(Error::NoRates);
        }
        if self.connections == 0 || self.streams == 0 {
            return Err(Error::NoConnectionsOrStreams);
        }
        if !(self.seconds.is_finite() && self.seconds >= 0.1) {
            return Err(Error::H2loadSeconds(self.seconds));
        }
        Ok(())
    }
}

/// What one h2load run asks, and how.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    /// The row's name in the table.
    label: &'static str,
    /// The URL asked.
    url: String,
    /// The request body file (gRPC), or none (a GET).
    body: Option<PathBuf>,
    /// Extra headers.
    headers: Vec<&'static str>,
    /// HTTP/1.1 rather than HTTP/2.
    h1: bool,
    /// Connections (h2load `-c`).
    connections: u32,
    /// Requests in flight per connection at most (h2load `-m`).
    streams: u32,
}

/// One h2load run.
#[derive(Debug, Clone, PartialEq)]
struct H2loadRow {
    /// What was asked.
    pub label: &'static str,
    /// Total rate asked, requests/s.
    pub rate: u32,
    /// Connections.
    pub connections: u32,
    /// Streams in flight per connection at most.
    pub streams: u32,
    /// Answers per second over the measured time.
    pub achieved: f64,
    /// Submit-to-answer latency of every measured request.
    pub latency: Percentiles,
    /// Requests h2load counts as failed (errors, timeouts and non-2xx statuses).
    pub errors: u64,
    /// Requests h2load started in the measured time.
    pub started: u64,
}

/// The figures h2load prints on its `requests:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct RequestCounts {
    started: u64,
    done: u64,
    failed: u64,
}

/// Reads h2load's summary line `requests: 25000 total, 25004 started, 25000 done, 25000
/// succeeded, 0 failed, 0 errored, 0 timeout`.
fn request_counts(stdout: &str) -> Option<RequestCounts> {
    let line = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("requests:"))?;
    let mut counts = RequestCounts::default();
    let mut seen = 0;
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        let slot = match label {
            "started" => &mut counts.started,
            "done" => &mut counts.done,
            "failed" => &mut counts.failed,
            _ => continue,
        };
        *slot = number;
        seen += 1;
    }
    (seen == 3).then_some(counts)
}

/// Latencies (nanoseconds) and HTTP statuses from h2load's `--log-file`: per request, tab-separated,
/// start time (us since the epoch), HTTP status, microseconds to the end of the answer. Lines that
/// do not parse are counted, not fatal.
fn log_latencies(log: &str) -> (Vec<u64>, u64, usize) {
    let (mut latencies, mut non_2xx, mut unreadable) = (Vec::new(), 0u64, 0usize);
    for line in log.lines().filter(|line| !line.trim().is_empty()) {
        let mut columns = line.split('\t');
        let (_, status, micros) = (columns.next(), columns.next(), columns.next());
        match (
            status.and_then(|text| text.trim().parse::<u16>().ok()),
            micros.and_then(|text| text.trim().parse::<u64>().ok()),
        ) {
            (Some(status), Some(micros)) => {
                if !(200..300).contains(&status) {
                    non_2xx += 1;
                }
                latencies.push(micros.saturating_mul(1_000));
            }
            _ => unreadable += 1,
        }
    }
    (latencies, non_2xx, unreadable)
}

/// The URL h2load asks: the method's path on `addr` (`http://` added when missing; h2load speaks
/// HTTP/2 over cleartext with prior knowledge to an `http` URL).
fn method_url(addr: &str) -> String {
    let base = addr.trim_end_matches('/');
    if base.contains("://") {
        format!("{base}{METHOD_PATH}")
    } else {
        format!("http://{base}{METHOD_PATH}")
    }
}

/// The REST GET of the same question: the lot's availability at `horizons` on the HTTP address.
fn rest_url(address: &str, lot: &str, horizons: &[u32]) -> String {
    let base = address.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let lot: String = form_urlencoded::byte_serialize(lot.as_bytes()).collect();
    let horizons: Vec<String> = horizons.iter().map(u32::to_string).collect();
    if horizons.is_empty() {
        format!("{base}/v1/lots/{lot}/availability")
    } else {
        format!(
            "{base}/v1/lots/{lot}/availability?horizon_minutes={}",
            horizons.join(",")
        )
    }
}

/// A gRPC request body: the 5-byte message prefix (not compressed, big-endian length), then the
/// message.
fn grpc_body(request: &GetAvailabilityRequest) -> Result<Vec<u8>> {
    let message = request.encode_to_vec();
    let length = u32::try_from(message.len()).context("the request is too large")?;
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(&message);
    Ok(body)
}

/// Runs h2load once at `rate` requests/s in total.
fn run_h2load(options: &H2loadOptions, target: &Target, rate: u32) -> Result<H2loadRow> {
    let log = tempfile::NamedTempFile::new().context("failed to create h2load's log file")?;
    let per_connection = f64::from(rate) / f64::from(target.connections);
    let mut command = Command::new(&options.h2load);
    command
        .arg("--clients")
        .arg(target.connections.to_string())
        .arg("--max-concurrent-streams")
        .arg(target.streams.to_string())
        .arg("--rps")
        .arg(format!("{per_connection:.3}"))
        .arg("--duration")
        .arg(format!("{}ms", (options.seconds * 1_000.0).round()))
        .arg("--warm-up-time")
        .arg(format!("{}ms", WARM_UP.as_millis()));
    for header in &target.headers {
        command.args(["--header", header]);
    }
    if let Some(body) = &target.body {
        command.arg("--data").arg(body);
    }
    if target.h1 {
        command.arg("--h1");
    }
    let output = command
        .arg("--log-file")
        .arg(log.path())
        .arg(&target.url)
        .output()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "{} not found: install h2load (Debian and Ubuntu: `apt-get install \
                     nghttp2-client`) or give its path with --h2load",
                    options.h2load.display()
                )
            } else {
                anyhow::Error::new(error)
                    .context(format!("failed to run {}", options.h2load.display()))
            }
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let counts = request_counts(&stdout)
        .with_context(|| format!("no `requests:` line in h2load's output:\n{stdout}"))?;
    let text = std::fs::read_to_string(log.path()).context("failed to read h2load's log file")?;
    let (latencies, non_2xx, unreadable) = log_latencies(&text);
    if unreadable > 0 {
        bail!("{unreadable} lines of h2load's log file did not parse");
    }
    if latencies.is_empty() {
        bail!("h2load got no answers from {}:\n{stdout}", target.url);
    }
    Ok(H2loadRow {
        label: target.label,
        rate,
        connections: target.connections,
        streams: target.streams,
        achieved: latencies.len() as f64 / options.seconds,
        latency: Percentiles::of(latencies),
        errors: counts.failed.max(non_2xx),
        started: counts.started,
    })
}

/// The combined table: per rate, h2load's row, then `bench grpc`'s.
fn table(h2load: &[H2loadRow], grpc: &[SweepRow], connections: u32) -> comfy_table::Table {
    let mut table = new_table(&[
        "client",
        "rate asked /s",
        "achieved /s",
        "connections x streams",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
    ]);
    let mut rates: Vec<u32> = h2load.iter().map(|row| row.rate).collect();
    rates.extend(grpc.iter().map(|row| row.rate));
    rates.sort_unstable();
    rates.dedup();
    for rate in rates {
        for row in h2load.iter().filter(|row| row.rate == rate) {
            table.add_row(vec![
                Cell::new(row.label),
                right(thousands(u64::from(row.rate))),
                right(thousands(row.achieved as u64)),
                right(format!("{} x {}", row.connections, row.streams)),
                right(millis(row.latency.p50)),
                right(millis(row.latency.p99)),
                right(millis(row.latency.p999)),
                right(millis(row.latency.max)),
                right(format!(
                    "{} of {}",
                    thousands(row.errors),
                    thousands(row.started)
                )),
            ]);
        }
        for row in grpc.iter().filter(|row| row.rate == rate) {
            table.add_row(vec![
                Cell::new("parkcast bench grpc (1 per write)"),
                right(thousands(u64::from(row.rate))),
                right(thousands(row.achieved as u64)),
                right(format!("{connections} x as due")),
                right(millis(row.latency.p50)),
                right(millis(row.latency.p99)),
                right(millis(row.latency.p999)),
                right(millis(row.latency.max)),
                right(format!(
                    "{} of {}",
                    thousands(row.errors),
                    thousands(row.requests)
                )),
            ]);
        }
    }
    table
}

/// One line against the target, for h2load over gRPC.
fn verdict(rows: &[H2loadRow]) -> String {
    match rows
        .iter()
        .find(|row| row.rate == TARGET_RATE && row.label == GRPC_LABEL)
    {
        Some(row) => format!(
            "h2load: p99 {} ms at {}/s over {} x {} streams (target < {} ms: {})",
            millis(row.latency.p99),
            thousands(u64::from(TARGET_RATE)),
            row.connections,
            row.streams,
            TARGET_P99.as_millis(),
            if row.latency.p99 < TARGET_P99 && row.errors == 0 {
                "met"
            } else {
                "NOT met"
            }
        ),
        None => format!(
            "h2load: {}/s not in --rates",
            thousands(u64::from(TARGET_RATE))
        ),
    }
}

/// Runs `bench h2load`: h2load at each rate (and `bench grpc`'s sweep beside it when asked), one
/// table of both, and one line against the target.
pub fn h2load(options: &H2loadOptions) -> Result<Report, Error> {
    options.validate()?;
    let mut rates = options.rates.clone();
    rates.sort_unstable();
    rates.dedup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let mut report = Report::new();
    let horizons = if options.now_only {
        Vec::new()
    } else {
        let checked =
            runtime.block_on(preflight(&options.addr, &options.lot, &options.horizons))?;
        if let Some(note) = checked.note {
            report.push(note);
        }
        checked.horizons
    };
    let request = GetAvailabilityRequest {
        lot_id: options.lot.clone(),
        horizon_minutes: horizons.clone(),
        arrival_time_ms: 0,
        price_per_hour: None,
    };
    let mut body = tempfile::NamedTempFile::new().context("failed to create the request file")?;
    body.write_all(&grpc_body(&request)?)
        .and_then(|()| body.flush())
        .context("failed to write the request file")?;
    report.push(format_args!(
        "server {}; lot {}, horizons {horizons:?}; {} logical cores shared by the clients and \
         the server; {} s per rate after a {} s warm-up",
        options.addr,
        options.lot,
        logical_cores(),
        options.seconds,
        WARM_UP.as_secs_f64()
    ));
    report.push(
        "latency: h2load from submitting each request (it wakes every 10 ms and submits what fell \
         due, several requests per segment) to the end of its answer; bench grpc from each \
         request's due time (open loop, each request sent alone)",
    );
    let grpc = Target {
        label: GRPC_LABEL,
        url: method_url(&options.addr),
        body: Some(body.path().to_owned()),
        headers: vec!["content-type: application/grpc", "te: trailers"],
        h1: false,
        connections: options.connections,
        streams: options.streams,
    };
    let rest = options.with_rest.as_deref().map(|address| Target {
        label: REST_LABEL,
        url: rest_url(address, &options.lot, &horizons),
        body: None,
        headers: vec!["accept: application/json"],
        h1: true,
        connections: options.connections * options.streams,
        streams: 1,
    });
    if let Some(rest) = &rest {
        report.push(format_args!(
            "REST: {} over {} HTTP/1.1 connections, one request in flight each",
            rest.url, rest.connections
        ));
    }
    let (mut h2load_rows, mut grpc_rows) = (Vec::new(), Vec::new());
    let lots = [options.lot.clone()];
    for &rate in &rates {
        for target in std::iter::once(&grpc).chain(&rest) {
            let row = run_h2load(options, target, rate)?;
            tracing::info!(
                client = target.label,
                rate,
                p99_ms = %millis(row.latency.p99),
                errors = row.errors,
                "h2load rate measured"
            );
            h2load_rows.push(row);
        }
        if options.with_grpc {
            let connections = usize::try_from(options.connections).unwrap_or(1);
            grpc_rows.extend(runtime.block_on(request_sweep(
                &options.addr,
                &lots,
                &horizons,
                &[rate],
                options.seconds,
                connections,
            ))?);
        }
    }
    report.push(table(&h2load_rows, &grpc_rows, options.connections));
    if let Some(error) = grpc_rows.iter().find_map(|row| row.first_error.as_ref()) {
        report.push(format_args!("bench grpc, first error: {error}"));
    }
    report.push(verdict(&h2load_rows));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_anything_runs() {
        let options = H2loadOptions {
            addr: "http://127.0.0.1:50051".to_owned(),
            lot: "sim:lot0001".to_owned(),
            horizons: vec![30, 60],
            now_only: false,
            rates: vec![5_000],
            connections: 4,
            streams: 10,
            seconds: 5.0,
            h2load: PathBuf::from("h2load"),
            with_grpc: false,
            with_rest: None,
        };
        assert!(options.validate().is_ok());
        let no_rate = H2loadOptions {
            rates: Vec::new(),
            ..options.clone()
        };
        assert!(matches!(no_rate.validate(), Err(Error::NoRates)));
        let no_stream = H2loadOptions {
            streams: 0,
            ..options.clone()
        };
        assert!(matches!(
            no_stream.validate(),
            Err(Error::NoConnectionsOrStreams)
        ));
        let too_short = H2loadOptions {
            seconds: 0.05,
            ..options
        };
        assert!(matches!(too_short.validate(), Err(Error::H2loadSeconds(_))));
    }

    #[test]
    fn the_requests_line_gives_started_done_and_failed() {
        let stdout = "finished in 6.00s, 5000.00 req/s, 1.11MB/s\n\
             requests: 25000 total, 25004 started, 24990 done, 24980 succeeded, 10 failed, 4 \
             errored, 2 timeout\n\
             status codes: 24994 2xx, 0 3xx, 0 4xx, 6 5xx\n";
        assert_eq!(
            request_counts(stdout),
            Some(RequestCounts {
                started: 25_004,
                done: 24_990,
                failed: 10
            })
        );
        assert_eq!(request_counts("finished in 1.00s\n"), None);
        assert_eq!(request_counts("requests: 1 total, x started\n"), None);
    }

    #[test]
    fn the_log_file_gives_latencies_and_non_2xx_statuses() {
        let log = "1764880000000000\t200\t1250\n1764880000000100\t503\t80\n\n\
                   1764880000000200\t200\t10400\nnot a line\n";
        let (latencies, non_2xx, unreadable) = log_latencies(log);
        assert_eq!(latencies, vec![1_250_000, 80_000, 10_400_000]);
        assert_eq!(non_2xx, 1);
        assert_eq!(unreadable, 1);
    }

    #[test]
    fn the_url_and_body_are_what_a_grpc_server_expects() {
        assert_eq!(
            method_url("http://127.0.0.1:50051/"),
            "http://127.0.0.1:50051/parkcast.v1.Availability/GetAvailability"
        );
        assert_eq!(
            method_url("127.0.0.1:4000"),
            "http://127.0.0.1:4000/parkcast.v1.Availability/GetAvailability"
        );
        let request = GetAvailabilityRequest {
            lot_id: "sim:lot0000".to_owned(),
            horizon_minutes: vec![30, 60],
            arrival_time_ms: 0,
            price_per_hour: None,
        };
        let body = grpc_body(&request).expect("a small request");
        assert_eq!(body[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize,
            body.len() - 5
        );
        assert_eq!(
            GetAvailabilityRequest::decode(&body[5..]).expect("the message"),
            request
        );
    }
}
