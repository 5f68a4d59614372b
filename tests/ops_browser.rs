//! The live operations page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by the test command) against `parkcast
//! demo` serving a city through a broker of the test's own.
//!
//! What a person sees is asserted: every lot listed with the numbers the REST face answers; a
//! lot's chart drawn when it is chosen (its last day as the sensors reported it, and the forecast
//! band ahead); a lot whose every slot a sensor reports taken
//! (readings produced to the broker) showing 0 free within seconds; and, once the broker is
//! killed, a banner saying the data is stale and every lot greyed, not the last numbers presented
//! as live. A screenshot of the page is written to `target/ops-page.png`.
//!
//! The WebDriver client is the few W3C WebDriver calls the test makes, as JSON over HTTP (no
//! client crate): a session, navigate, execute a script, screenshot.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parkcast_kafka::testing::OwnBroker;
use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
use prost::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

use crate::common;

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange ([`common::http`]), which must happen.
fn http(address: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    common::http(address, method, path, body)
        .unwrap_or_else(|error| panic!("{method} http://{address}{path}: {error}"))
}

/// A WebDriver session in headless Chromium.
struct Browser {
    driver: KillOnDrop,
    address: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session; `None` when chromedriver is not
    /// installed (the test command installs it and sets `PARKCAST_REQUIRE_BROWSER`).
    fn start() -> Option<Browser> {
        let driver =
            std::env::var("PARKCAST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = match Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => KillOnDrop(child),
            Err(error) => {
                assert!(
                    std::env::var_os("PARKCAST_REQUIRE_BROWSER").is_none(),
                    "PARKCAST_REQUIRE_BROWSER is set but {driver} does not run: {error}"
                );
                eprintln!(
                    "skipped: {driver} does not run ({error}); `bash scripts/test.sh` installs it"
                );
                return None;
            }
        };
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&address).is_ok() {
                let (_, body) = http(&address, "GET", "/status", None);
                if serde_json::from_str::<Value>(&body)
                    .is_ok_and(|status| status["value"]["ready"] == true)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let binary =
            std::env::var("PARKCAST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900"]
            }
        }}});
        let (status, body) = http(&address, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "a session: {body}");
        let session = serde_json::from_str::<Value>(&body).expect("JSON")["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Some(Browser {
            driver: child,
            address,
            session,
        })
    }

    /// A WebDriver command's `value`.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, text) = http(&self.address, method, &path, body);
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str::<Value>(&text).expect("JSON")["value"].take()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url})));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` every 200 ms until `check` holds on its value; the value and the time it
    /// took, or a panic naming `what` with the last value.
    fn until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        check: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let value = self.script(script);
            if check(&value) {
                return (value, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout,
                "{what} within {timeout:?}; the page shows {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        std::fs::write(path, bytes).expect("the screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ =
            TcpStream::connect(&self.address).map(|_| http(&self.address, "DELETE", &path, None));
        let _ = &self.driver;
    }
}

/// Each listed lot as the page shows it: (lot id, free-now text, stale).
const ROWS: &str = "return Array.from(document.querySelectorAll('#lots tr[data-lot]')).map(row => \
    [row.dataset.lot, row.querySelector('[data-testid=free-now]').textContent, row.classList.contains('stale')]);";

#[test]
fn the_operations_page_shows_live_lots_a_flip_a_chart_and_a_dead_broker() {
    parkcast_kafka::require_broker!();
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut broker = OwnBroker::start();
    let prefix = "opspage";
    let bootstrap = broker.bootstrap_servers();
    let mut demo = common::Demo::start(
        dir.path(),
        &[
            "--lots",
            "3",
            "--for",
            "300",
            "--speed",
            "1",
            "--topic-prefix",
            prefix,
            "--bootstrap",
            &bootstrap,
        ],
    );
    let page = demo.word_after("operations page: ");
    demo.drain();
    let http_address: SocketAddr = page
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("host:port");
    let http_address = http_address.to_string();
    let rest = |lot: &str| -> Value {
        let (status, body) = http(
            &http_address,
            "GET",
            &format!("/v1/lots/{lot}/availability"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };

    browser.open(&page);
    // Every lot listed (a lot whose sensors have said nothing yet at this hour of the replayed
    // day is stale, and says why).
    let (rows, _) = browser.until(
        "three lots listed",
        Duration::from_secs(120),
        ROWS,
        |rows| rows.as_array().is_some_and(|rows| rows.len() == 3),
    );
    browser.until(
        "each stale lot's reason shown",
        Duration::from_secs(10),
        "return Array.from(document.querySelectorAll('#lots tr.stale')).every(row => \
         row.textContent.includes('stale: '));",
        |all| all == true,
    );
    let lot_ids: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row[0].as_str().expect("an id").to_owned())
        .collect();
    browser.until(
        "the active model named",
        Duration::from_secs(30),
        "return document.querySelector('[data-testid=model]').textContent;",
        |text| {
            text.as_str()
                .is_some_and(|text| text.contains("simulated v1"))
        },
    );
    // The smallest lot's sensors all report: 5 slots taken, the rest free. The page shows it live
    // with capacity - 5 free; then every slot reports taken, and the page goes to 0 free.
    let (lot, capacity, as_of) = lot_ids
        .iter()
        .map(|lot| {
            let answer = rest(lot);
            let capacity = answer["capacity"].as_u64().expect("a capacity");
            let as_of: i64 = answer["asOfMs"]
                .as_str()
                .and_then(|ms| ms.parse().ok())
                .expect("asOfMs");
            (lot.clone(), capacity, as_of)
        })
        .min_by_key(|(_, capacity, _)| *capacity)
        .expect("a lot");
    let kafka = parkcast_kafka::KafkaConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        topics: parkcast_kafka::TopicNames::with_prefix(prefix),
        ..parkcast_kafka::KafkaConfig::default()
    };
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().create().expect("a producer");
    let report = |at_ms: i64, seq: u64, taken: &dyn Fn(u64) -> bool| {
        for slot in 0..capacity {
            let reading = SensorReading {
                schema_version: parkcast_proto::SCHEMA_VERSION,
                lot_id: lot.clone(),
                slot_id: format!("{lot}:s{slot:04}"),
                report: if taken(slot) {
                    SlotReport::Occupied
                } else {
                    SlotReport::Free
                } as i32,
                kind: ReadingKind::Change as i32,
                sensor_seq: seq + slot,
                event_time_ms: at_ms,
            };
            producer
                .send(
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(lot.as_bytes())
                        .payload(&reading.encode_to_vec()),
                )
                .map_err(|(error, _)| error)
                .expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("delivered");
    };
    report(as_of + 1_000, 1_000_000, &|slot| slot < 5);
    let script = format!(
        "const row = document.querySelector('#lots tr[data-lot=\"{lot}\"]'); \
         return row ? [row.querySelector('[data-testid=free-now]').textContent, \
                       row.classList.contains('stale')] : null;"
    );
    let before = (capacity - 5).to_string();
    browser.until(
        "the reported lot live",
        Duration::from_secs(20),
        &script,
        |shown| shown[0].as_str() == Some(before.as_str()) && shown[1] == false,
    );
    // The numbers are the server's: each lot's free count equals the REST answer (both move with
    // the replay, so they are compared until they agree).
    for lot in &lot_ids {
        let script = format!(
            "const row = document.querySelector('#lots tr[data-lot=\"{lot}\"]'); \
             return row ? row.querySelector('[data-testid=free-now]').textContent : null;"
        );
        let started = Instant::now();
        loop {
            let shown = browser.script(&script);
            let answered = rest(lot)["freeNow"].to_string();
            if shown.as_str() == Some(answered.as_str()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{lot}: the page shows {shown}, the server answers {answered}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The reported lot chosen: its forecast chart is drawn, every model horizon a point after "now".
    browser.script(&format!(
        "document.querySelector('#lots tr[data-lot=\"{lot}\"]').click(); return null;"
    ));
    let (points, _) = browser.until(
        "the chosen lot's chart",
        Duration::from_secs(20),
        "const line = document.querySelector('[data-testid=chart-line]'); \
         return line ? line.getAttribute('points').trim().split(' ').length : 0;",
        |points| points.as_u64().is_some_and(|points| points >= 4),
    );
    // Left of "now", the last day as the sensors reported it.
    let (actual, _) = browser.until(
        "the chosen lot's last day",
        Duration::from_secs(20),
        "const line = document.querySelector('[data-testid=chart-actual]'); \
         return line ? line.getAttribute('points').trim().split(' ').length : 0;",
        |points| points.as_u64().is_some_and(|points| points >= 24),
    );
    eprintln!("chart drawn with {points} forecast points and {actual} actual ones");

    report(as_of + 2_000, 2_000_000, &|_| true);
    drop(producer);
    let produced = Instant::now();
    browser.until(
        "the flipped lot at 0 free",
        Duration::from_secs(15),
        &script,
        |shown| shown[0] == "0",
    );
    eprintln!(
        "{lot}: {capacity} slots reported taken, {before} free -> 0 free on the page {:?} after delivery",
        produced.elapsed()
    );
    // The chosen lot's panel follows the live figures, not only the list.
    let zero_of = format!(" 0 of {capacity} free now");
    browser.until(
        "the chosen lot's panel at 0 free",
        Duration::from_secs(15),
        "const heading = document.querySelector('[data-testid=panel-heading]'); \
         return heading ? heading.textContent : null;",
        |heading| heading.as_str().is_some_and(|text| text.contains(&zero_of)),
    );
    browser.screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../ops-page.png"));

    // The broker dies: the page says the data is stale, and greys every lot.
    broker.kill();
    let (banner, took) = browser.until(
        "the stale banner",
        Duration::from_secs(60),
        "const banner = document.querySelector('[data-testid=banner]'); \
         return banner.classList.contains('shown') ? banner.textContent : '';",
        |text| text.as_str().is_some_and(|text| text.contains("stale")),
    );
    eprintln!("banner {took:?} after the broker was killed: {banner}");
    browser.until("every lot greyed", Duration::from_secs(30), ROWS, |rows| {
        rows.as_array()
            .is_some_and(|rows| rows.len() == 3 && rows.iter().all(|row| row[2] == true))
    });
}
