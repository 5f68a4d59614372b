//! The scorer waits for news: an idle server runs only its periodic full refresh, an event is
//! scored as soon as ingestion reports it, and a burst is debounced into few rounds.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use parkcast_kafka::testing::wait_until;
use parkcast_serving::decode::SensorEvent;
use parkcast_serving::live::{GridRule, LiveRules, LiveState, LotChange};
use parkcast_serving::scoring::{Clock, LiveSource, Scoring, ScoringConfig};
use parkcast_serving::topology::TopologyIndex;

use common::Source;

const NOW: i64 = 1_764_000_000_000;

/// Live state that counts the events it applies and wakes a waiting scorer, as ingestion does;
/// records when the scorer took changes (one round each).
struct NewsSource {
    inner: Source,
    applied: Mutex<u64>,
    news: Condvar,
    rounds: Mutex<Vec<Instant>>,
}

impl NewsSource {
    fn new() -> NewsSource {
        let topology = TopologyIndex::new([(
            "north".to_owned(),
            (0..4).map(|slot| format!("north-{slot}")).collect(),
        )])
        .expect("valid");
        let live = LiveState::new(&topology, LiveRules::default());
        NewsSource {
            inner: Source::new(topology, live, NOW),
            applied: Mutex::new(0),
            news: Condvar::new(),
            rounds: Mutex::new(Vec::new()),
        }
    }

    fn apply(&self, slot: u32, occupied: bool, seq: u64) {
        self.inner
            .live()
            .apply_sensor(&SensorEvent {
                lot: 0,
                slot,
                occupied,
                heartbeat: false,
                seq,
                event_time_ms: NOW - 60_000 + i64::try_from(seq).expect("small"),
                clamped: false,
            })
            .expect("applies");
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.news.notify_all();
    }

    fn rounds(&self) -> Vec<Instant> {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl LiveSource for NewsSource {
    fn topology(&self) -> &TopologyIndex {
        self.inner.topology()
    }

    fn set_grid(&self, rule: Option<GridRule>) {
        self.inner.set_grid(rule);
    }

    fn take_changes(
        &self,
        now_ms: Option<i64>,
        all: bool,
        out: &mut Vec<LotChange>,
    ) -> Option<i64> {
        self.rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Instant::now());
        self.inner.take_changes(now_ms, all, out)
    }

    fn stale_reason(&self) -> Option<String> {
        None
    }

    fn caught_up(&self) -> bool {
        true
    }

    fn wait_for_news(&self, seen: u64, timeout: Duration) -> u64 {
        let applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        let (applied, _) = self
            .news
            .wait_timeout_while(applied, timeout, |applied| *applied == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *applied
    }
}

fn start(refresh_all_ms: u64) -> (Arc<NewsSource>, Arc<Scoring>, Arc<AtomicBool>) {
    let source = Arc::new(NewsSource::new());
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&source) as Arc<dyn LiveSource>,
        Clock::Fixed(NOW),
        ScoringConfig {
            debounce_ms: 20,
            refresh_all_ms,
        },
    ));
    let stop = Arc::new(AtomicBool::new(false));
    scoring.spawn(Arc::clone(&stop)).expect("the scorer starts");
    (source, scoring, stop)
}

#[test]
fn an_idle_scorer_runs_only_the_periodic_refresh() {
    let (source, _scoring, stop) = start(500);
    assert!(
        wait_until(Duration::from_secs(30), || source.rounds().len() >= 4),
        "the refresh runs"
    );
    stop.store(true, Ordering::Relaxed);
    let rounds = source.rounds();
    // Polling every debounce period, these would be 20 ms apart.
    for pair in rounds.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(450),
            "{gap:?} between idle rounds"
        );
    }
}

#[test]
fn news_is_scored_at_once_and_a_burst_is_debounced() {
    // The full refresh is a minute away: only news can start a round.
    let (source, scoring, stop) = start(60_000);
    assert!(wait_until(Duration::from_secs(30), || !source
        .rounds()
        .is_empty()));
    source.apply(0, true, 1);
    assert!(
        wait_until(Duration::from_secs(30), || {
            scoring.answer(0).snapshot.as_ref().map(|s| s.occupied) == Some(1)
        }),
        "the event is scored without waiting for the refresh"
    );
    // A burst of 200 events over at least 100 ms: at most one round per 20 ms, plus the edges.
    let before = source.rounds().len();
    let started = Instant::now();
    for seq in 2..202 {
        source.apply(u32::try_from(seq % 4).expect("small"), seq % 3 == 0, seq);
        if seq % 20 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let burst = started.elapsed();
    assert!(
        wait_until(Duration::from_secs(30), || {
            scoring
                .answer(0)
                .snapshot
                .as_ref()
                .and_then(|s| s.newest_event_ms)
                == Some(NOW - 60_000 + 201)
        }),
        "the burst's last event is scored"
    );
    let rounds = source.rounds().len() - before;
    let most = usize::try_from(burst.as_millis() / 20).expect("small") + 3;
    assert!(
        (1..=most).contains(&rounds),
        "{rounds} rounds for a burst of {burst:?}"
    );
    stop.store(true, Ordering::Relaxed);
}
