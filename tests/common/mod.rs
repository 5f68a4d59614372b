//! What the CLI tests share: running the built binary the way a user would, and the small CSV
//! source several of them import.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration as StdDuration;

use parkcast_kafka::KafkaConfig;

use chrono::{Duration, NaiveDate};

/// Runs `parkcast ARGS --quiet`, with the environment that would change its behaviour removed (a
/// warehouse or log filter set in the shell running the tests).
pub fn parkcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(args)
        .arg("--quiet")
        .env_remove("PARKCAST_WAREHOUSE")
        .env_remove("RUST_LOG")
        .output()
        .expect("the parkcast binary should run")
}

/// A `parkcast serve` process, killed on drop, and the gRPC address it printed.
pub struct Served {
    child: Child,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
}

impl Served {
    /// Stops the server as an orchestrator does (SIGTERM: it checkpoints and leaves its group)
    /// and waits for it to exit; true if it exited cleanly within `within`.
    pub fn terminate(mut self, within: StdDuration) -> bool {
        terminate(&mut self.child, within).is_some_and(|status| status.success())
    }
}

/// Sends SIGTERM (an orchestrator's stop; Ctrl-C takes the same path) and waits up to `within`
/// for the exit.
fn terminate(child: &mut Child, within: StdDuration) -> Option<std::process::ExitStatus> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(StdDuration::from_millis(50));
    }
    None
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The topic prefix of a config from `parkcast_kafka::testing::fresh_config`.
pub fn topic_prefix(kafka: &KafkaConfig) -> String {
    kafka
        .topics
        .sensor
        .strip_suffix(".parkcast.sensor.v1")
        .expect("prefixed topic names")
        .to_owned()
}

/// Starts `parkcast serve -w WAREHOUSE` on `kafka`'s topics (its group named like them), with its
/// state and registry under `dir`, free loopback ports and `extra` flags; waits up to a minute for
/// the address it prints.
pub fn serve(warehouse: &Path, dir: &Path, kafka: &KafkaConfig, extra: &[&str]) -> Served {
    serve_in_group(warehouse, dir, kafka, &topic_prefix(kafka), extra)
}

/// [`serve`] in consumer group `group` (another group reads the same topics on its own).
pub fn serve_in_group(
    warehouse: &Path,
    dir: &Path,
    kafka: &KafkaConfig,
    group: &str,
    extra: &[&str],
) -> Served {
    let prefix = topic_prefix(kafka);
    let mut child = Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(["--quiet", "serve", "-w"])
        .arg(warehouse)
        .args(["--bootstrap", &kafka.bootstrap_servers, "--topic-prefix"])
        .arg(&prefix)
        .args(["--group", group, "--state-dir"])
        .arg(dir.join("state"))
        .arg("--registry")
        .arg(dir.join("models"))
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        // PARKCAST_TEST_SERVE_LOG=info (or a filter) shows the servers' logs when debugging a test.
        .env(
            "PARKCAST_LOG",
            std::env::var("PARKCAST_TEST_SERVE_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("parkcast serve starts");
    let stdout = child.stdout.take().expect("piped stdout");
    // The banner names the bound address; the reader thread ends when the server exits.
    let (sender, banner) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("serving gRPC on ") {
                let _ = sender.send(rest.split_whitespace().next().map(str::to_owned));
            }
        }
    });
    // Built before waiting, so a server that never prints its address is killed all the same.
    let mut served = Served {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    served.addr = banner
        .recv_timeout(StdDuration::from_secs(60))
        .ok()
        .flatten()
        .and_then(|text| text.parse().ok())
        .expect("the server prints the address it serves on");
    served
}

/// The stdout of a run that must have succeeded (else the test fails with both streams).
pub fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The first line of `output` that starts with `prefix` (else the test fails with the whole output).
pub fn line_starting<'a>(output: &'a str, prefix: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{output}"))
}

/// Six weeks of 15-minute counts of two lots (`north`, 40 places; `south`, 120) with a daily rhythm,
/// busier on weekdays, from Monday 5 February 2024, as `counts.csv` in `dir`; returns its path.
pub fn two_lot_counts(dir: &Path) -> String {
    let mut text = "lot_id,timestamp,occupied,capacity\n".to_owned();
    let first = NaiveDate::from_ymd_opt(2024, 2, 5).expect("valid date");
    for day in 0..42 {
        let date = first + Duration::days(day);
        let weekday = day % 7 < 5;
        for quarter in 0..96 {
            let hour = f64::from(quarter) / 4.0;
            let busy = (-(hour - 13.0).powi(2) / 18.0).exp() * if weekday { 0.9 } else { 0.5 };
            for (lot, capacity) in [("north", 40.0), ("south", 120.0)] {
                let occupied =
                    (busy * capacity + f64::from((quarter * 7 + day as i32) % 3)).round();
                writeln!(
                    text,
                    "{lot},{date} {:02}:{:02},{occupied},{capacity}",
                    quarter / 4,
                    (quarter % 4) * 15
                )
                .expect("writing to a string");
            }
        }
    }
    let path = dir.join("counts.csv");
    std::fs::write(&path, text).expect("temporary files should be writable");
    path.display().to_string()
}

/// A warehouse in `dir` holding [`two_lot_counts`] imported as source `csv-town` (Paris time, French
/// holidays); returns the warehouse path and the import's stdout.
pub fn import_town(dir: &Path) -> (String, String) {
    let warehouse = dir.join("warehouse").display().to_string();
    let counts = two_lot_counts(dir);
    let stdout = succeeded(&parkcast(&[
        "import",
        "-w",
        &warehouse,
        "csv",
        &counts,
        "--name",
        "town",
        "--timezone",
        "Europe/Paris",
        "--region",
        "FR",
    ]));
    (warehouse, stdout)
}

/// The training flags of the live-quality loop's tests: trees on a 5-minute grid, 15 min and 1 h
/// ahead, small enough to train a simulated city of 8 lots in seconds.
pub const LOOP_TRAIN: [&str; 12] = [
    "--source",
    "simulated",
    "--step",
    "5",
    "--horizons",
    "15m,1h",
    "--max-training-rows",
    "40000",
    "--models",
    "gbm",
    "--gbm-iterations",
    "80",
];

/// Copies a warehouse without the fact partitions dated `from` (`YYYY-MM-DD`) or later: the data
/// a model trained on that day would have had.
pub fn copy_until(from_root: &Path, to_root: &Path, from: &str) {
    for entry in std::fs::read_dir(from_root).expect("a folder") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a name").to_owned();
        let target = to_root.join(&name);
        if path.is_dir() {
            let dated = name
                .to_str()
                .and_then(|name| name.strip_prefix("date="))
                .is_some_and(|date| date >= from);
            if !dated {
                std::fs::create_dir_all(&target).expect("a folder");
                copy_until(&path, &target, from);
            }
        } else {
            std::fs::copy(&path, &target).expect("a copy");
        }
    }
}

/// `parkcast demo --no-real-data` on free loopback ports, its warehouse and registry under `dir`,
/// with `extra` flags (lots, speed, broker, ...); killed on drop, its output read line by line.
pub struct Demo {
    child: Child,
    lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
    /// Every line read so far.
    pub printed: Vec<String>,
}

impl Demo {
    /// Starts the demo.
    pub fn start(dir: &Path, extra: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parkcast"))
            .args(["--quiet", "demo", "--no-real-data"])
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .arg("--out")
            .arg(dir.join("warehouse"))
            .arg("--models")
            .arg(dir.join("models"))
            .env("PARKCAST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Demo {
            child,
            lines: Some(BufReader::new(stdout).lines()),
            printed: Vec::new(),
        }
    }

    /// Reads the output until a line starts with `prefix`; the rest of that line. Panics with the
    /// output if the demo ends first.
    pub fn line_after(&mut self, prefix: &str) -> String {
        let lines = self.lines.as_mut().expect("the output is not drained yet");
        loop {
            let Some(line) = lines.next() else {
                panic!(
                    "the demo ended before printing {prefix:?}:\n{}",
                    self.printed.join("\n")
                );
            };
            let line = line.expect("utf-8 output");
            self.printed.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// The first word after `prefix` on the first line that starts with it (an address of the
    /// banner).
    pub fn word_after(&mut self, prefix: &str) -> String {
        self.line_after(prefix)
            .split_whitespace()
            .next()
            .expect("a word after the prefix")
            .to_owned()
    }

    /// Reads the output to its end on this thread, handing each line to `each` as it comes (so a
    /// caller can act on a line before the demo exits), then waits for the exit. For a demo that
    /// ends by itself (`--for`).
    pub fn read_to_end(&mut self, mut each: impl FnMut(&str)) -> std::process::ExitStatus {
        let lines = self
            .lines
            .take()
            .expect("the output is read to its end once");
        for line in lines {
            let line = line.expect("utf-8 output");
            each(&line);
            self.printed.push(line);
        }
        self.child.wait().expect("the demo ends")
    }

    /// Reads the rest of the output on its own thread, so the demo never blocks on a full pipe.
    pub fn drain(&mut self) -> std::thread::JoinHandle<Vec<String>> {
        let lines = self.lines.take().expect("the output is drained once");
        std::thread::spawn(move || lines.map_while(Result::ok).collect())
    }

    /// Stops the demo as Ctrl-C would (SIGTERM) and waits up to `within` for its exit.
    pub fn terminate(&mut self, within: StdDuration) -> Option<std::process::ExitStatus> {
        terminate(&mut self.child, within)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange over TCP: status and body, read by its length or its chunks (a server
/// may keep the connection open whatever the request says, as chromedriver does). A 60 s read
/// timeout; a JSON `body` is sent with its length.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let malformed = |what: &str| std::io::Error::other(format!("malformed response: {what}"));
    let stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(StdDuration::from_secs(60)))?;
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed("no status line"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        }
    }
    let mut bytes = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| malformed("a chunk size that is not hex"))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        bytes.resize(length, 0);
        reader.read_exact(&mut bytes)?;
    } else {
        reader.read_to_end(&mut bytes)?;
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
