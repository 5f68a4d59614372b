//! Checkpoints of live state, one file per partition, each with the offsets it is consistent with.
//!
//! Why snapshot + replay and not replay alone: a slot's state depends on its newest reading, which
//! can be days old for a car parked over a weekend, and the flows on the last hour; rebuilding from
//! the topics means reading their whole retention. A checkpoint bounds a restart to the events since
//! it (`parkcast bench ingest` measures both).
//!
//! A file holds the state of the lots whose events arrive on one partition number, and the next
//! offsets of that partition in the sensor and session topics (both keyed by lot id with the same
//! partition count, so a lot lives on the same partition number in both). The consumer resumes a
//! partition from the offsets in its file, not from the group's committed offsets: the file is
//! written first and the commit follows, so a crash in between leaves the file ahead of the commit,
//! and the file is the truth. The commit exists for lag monitoring.
//!
//! Files are written to a temporary name, synced and renamed, so a crash leaves the old file or the
//! new one, never half of one. The body carries its SHA-256, and a file that does not verify is
//! refused (the partition is then rebuilt by replaying it from the beginning). With a changelog
//! topic configured the same bytes also go there ([`crate::changelog`]), so a partition that moves
//! to a machine without the file is restored from the topic; the file and the record must both be
//! written before the offsets are committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::changelog::ChangelogWriter;
use crate::live::LotRecord;

/// Format version of checkpoint files: 2 added the fingerprints of the last messages applied
/// (version 1 files still load, without them).
pub const CHECKPOINT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"PKCKPT01";

/// One partition's state and the offsets it is consistent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// [`CHECKPOINT_VERSION`] when written.
    pub version: u32,
    /// The partition number.
    pub partition: i32,
    /// Next offset to read in the sensor topic.
    pub sensor_next: i64,
    /// Next offset to read in the session topic.
    pub session_next: i64,
    /// Wall-clock time of the checkpoint, Unix ms.
    pub written_ms: i64,
    /// Each lot of the partition: its id, a hash of its slot ids (to notice topology changes), its
    /// state.
    pub lots: Vec<(String, u64, LotRecord)>,
    /// [`message_fingerprint`] of the last message applied from the sensor topic (the one at
    /// `sensor_next - 1`; `None` before any). A restart reads that message again and compares, so
    /// a log that was truncated, or deleted and refilled past the checkpoint, is noticed instead of
    /// being read from the wrong place.
    #[serde(default)]
    pub sensor_last: Option<u64>,
    /// The same for the session topic.
    #[serde(default)]
    pub session_last: Option<u64>,
}

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint, is cut short, or its checksum does not match.
    #[error("checkpoint {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Written by a newer version.
    #[error("checkpoint {path} has version {found}; this build reads up to {CHECKPOINT_VERSION}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The file was written but the changelog record was not (the previous checkpoint stays in
    /// force: offsets are not committed).
    #[error("checkpoint of partition {partition} not on the changelog: {source}")]
    Changelog {
        /// The partition.
        partition: i32,
        /// Why.
        source: Box<crate::changelog::ChangelogError>,
    },
}

/// A checkpoint's bytes: a header, the body and its SHA-256 (what a file and a changelog record
/// hold).
pub fn encode(checkpoint: &PartitionCheckpoint) -> Vec<u8> {
    let body = rmp_serde::to_vec(checkpoint).expect("a checkpoint should serialize");
    let digest = Sha256::digest(&body);
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + body.len() + digest.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&digest);
    bytes
}

/// A checkpoint of `partition` from its bytes, checked (header, length, checksum, version,
/// partition); `path` names where they came from in errors.
pub fn decode(
    bytes: &[u8],
    partition: i32,
    path: &Path,
) -> Result<PartitionCheckpoint, CheckpointError> {
    let corrupt = |detail: &str| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| corrupt("no checkpoint header"))?;
    let (length, rest) = rest
        .split_at_checked(8)
        .ok_or_else(|| corrupt("cut short"))?;
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let length = usize::try_from(length).map_err(|_| corrupt("impossible length"))?;
    if rest.len() != length.saturating_add(32) {
        return Err(corrupt("cut short or trailing bytes"));
    }
    let (body, digest) = rest.split_at(length);
    if Sha256::digest(body).as_slice() != digest {
        return Err(corrupt("checksum mismatch"));
    }
    let checkpoint: PartitionCheckpoint = rmp_serde::from_slice(body)
        .map_err(|error| corrupt(&format!("undecodable body: {error}")))?;
    if checkpoint.version > CHECKPOINT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: checkpoint.version,
        });
    }
    if checkpoint.partition != partition {
        return Err(corrupt("written for another partition"));
    }
    Ok(checkpoint)
}

/// A folder of checkpoint files: a replica's own, or one the replicas of a group share (replicas
/// on separate machines hand state over through [`crate::changelog`] instead).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(CheckpointStore { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a partition.
    pub fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition:05}.ckpt"))
    }

    /// Writes a partition's checkpoint atomically; returns its size in bytes.
    pub fn save(&self, checkpoint: &PartitionCheckpoint) -> Result<u64, CheckpointError> {
        self.write(checkpoint.partition, &encode(checkpoint))
    }

    /// Writes a partition's encoded checkpoint atomically; returns its size in bytes.
    fn write(&self, partition: i32, bytes: &[u8]) -> Result<u64, CheckpointError> {
        let path = self.path(partition);
        parkcast_durable::replace_file(&path, bytes).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(bytes.len() as u64)
    }

    /// Reads a partition's checkpoint, `None` if there is none.
    pub fn load(&self, partition: i32) -> Result<Option<PartitionCheckpoint>, CheckpointError> {
        let path = self.path(partition);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        decode(&bytes, partition, &path).map(Some)
    }

    /// Moves a refused file aside (kept for inspection), so the next checkpoint can take its place.
    pub fn quarantine(&self, partition: i32) -> Result<PathBuf, CheckpointError> {
        let path = self.path(partition);
        let aside = path.with_extension(format!("corrupt-{}", parkcast_kafka::now_ms()));
        fs::rename(&path, &aside).map_err(|source| CheckpointError::Io { path, source })?;
        Ok(aside)
    }
}

/// A stable fingerprint of a message's key and value (FNV-1a over 8-byte words with a final mix:
/// defined here, so it does not change between builds; a change needs a new
/// [`CHECKPOINT_VERSION`]). Cheap enough to compute for every message applied.
pub fn message_fingerprint(key: Option<&[u8]>, value: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        let mut words = bytes.chunks_exact(8);
        for word in words.by_ref() {
            hash ^= u64::from_le_bytes(word.try_into().expect("8 bytes"));
            hash = hash.wrapping_mul(PRIME).rotate_left(29);
        }
        for byte in words.remainder() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        // The length separates key from value ("ab" + "c" vs "a" + "bc").
        hash ^= bytes.len() as u64;
        hash = hash.wrapping_mul(PRIME);
    };
    match key {
        Some(key) => mix(key),
        None => mix(&[0xff; 3]),
    }
    mix(value);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// A stable hash of a lot's slot ids (FNV-1a, so it does not change between builds).
pub fn slot_ids_hash(slot_ids: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for slot_id in slot_ids {
        for byte in slot_id.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Writes a checkpoint's file, then its changelog record.
fn save(
    store: &CheckpointStore,
    changelog: Option<&ChangelogWriter>,
    checkpoint: &PartitionCheckpoint,
) -> Result<u64, CheckpointError> {
    let bytes = encode(checkpoint);
    let size = store.write(checkpoint.partition, &bytes)?;
    if let Some(changelog) = changelog {
        changelog
            .publish(checkpoint.partition, &bytes)
            .map_err(|source| CheckpointError::Changelog {
                partition: checkpoint.partition,
                source: Box::new(source),
            })?;
    }
    Ok(size)
}

/// One partition's checkpoint as the writer finished it.
#[derive(Debug)]
pub struct Written {
    /// The partition.
    pub partition: i32,
    /// The next offsets the file holds: what may be committed once it is durable.
    pub sensor_next: i64,
    /// The same in the session topic.
    pub session_next: i64,
    /// The file's size, or why it could not be written (the previous file stays in force).
    pub result: Result<u64, CheckpointError>,
}

/// A batch of checkpoints the writer finished, with the time from hand-over to the last file
/// being durable.
#[derive(Debug)]
pub struct WrittenBatch {
    /// One per checkpoint handed over, in order.
    pub partitions: Vec<Written>,
    /// Hand-over to durable.
    pub took: Duration,
}

/// Writes checkpoints on a thread of its own, one batch at a time, in the order handed over.
///
/// Why: serializing a partition's state and making the file durable (write, fsync, rename) took
/// 16 ms to 0.97 s on a shared disk for a 62,000-slot city, every 10 s; done by the consumer under
/// its state lock, no reading was applied or scored meanwhile, and those stalls were the p99 of
/// produce -> visible. The consumer now only copies the state under the lock
/// ([`PartitionCheckpoint`] is plain data) and hands it over; it commits the offsets once the
/// writer reports the files durable, so the file-before-commit rule holds. Synchronous checkpoints
/// (a revocation, a clean stop) wait for the batch in flight first, so files are never written out
/// of order.
#[derive(Debug)]
pub struct CheckpointWriter {
    jobs: Option<mpsc::SyncSender<(Vec<PartitionCheckpoint>, Instant)>>,
    done: mpsc::Receiver<WrittenBatch>,
    in_flight: bool,
    thread: Option<JoinHandle<()>>,
}

impl CheckpointWriter {
    /// Starts the writer's thread over `store`, also writing every checkpoint to `changelog` when
    /// given (a checkpoint is durable once both have it).
    pub fn spawn(
        store: CheckpointStore,
        changelog: Option<ChangelogWriter>,
    ) -> std::io::Result<CheckpointWriter> {
        let (jobs, inbox) = mpsc::sync_channel::<(Vec<PartitionCheckpoint>, Instant)>(1);
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("parkcast-ckpt".to_owned())
            .spawn(move || {
                for (checkpoints, handed_over) in inbox {
                    let partitions = checkpoints
                        .iter()
                        .map(|checkpoint| Written {
                            partition: checkpoint.partition,
                            sensor_next: checkpoint.sensor_next,
                            session_next: checkpoint.session_next,
                            result: save(&store, changelog.as_ref(), checkpoint),
                        })
                        .collect();
                    let batch = WrittenBatch {
                        partitions,
                        took: handed_over.elapsed(),
                    };
                    if outbox.send(batch).is_err() {
                        break;
                    }
                }
            })?;
        Ok(CheckpointWriter {
            jobs: Some(jobs),
            done,
            in_flight: false,
            thread: Some(thread),
        })
    }

    /// Whether a batch is being written.
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// Hands a batch over; `false` (and nothing sent) while another is in flight or the writer
    /// has stopped.
    pub fn submit(&mut self, checkpoints: Vec<PartitionCheckpoint>) -> bool {
        if self.in_flight {
            return false;
        }
        let Some(jobs) = &self.jobs else {
            return false;
        };
        if jobs.send((checkpoints, Instant::now())).is_err() {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// The batch in flight, if it is finished (never waits).
    pub fn finished(&mut self) -> Option<WrittenBatch> {
        if !self.in_flight {
            return None;
        }
        let batch = self.done.try_recv().ok()?;
        self.in_flight = false;
        Some(batch)
    }

    /// Waits for the batch in flight, if any.
    pub fn wait(&mut self) -> Option<WrittenBatch> {
        if !self.in_flight {
            return None;
        }
        self.in_flight = false;
        self.done.recv().ok()
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the batch in flight is written.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LiveRules, LiveState};
    use crate::topology::TopologyIndex;

    fn checkpoint() -> PartitionCheckpoint {
        let topology =
            TopologyIndex::new([("lot".to_owned(), vec!["a".to_owned(), "b".to_owned()])])
                .expect("valid");
        let live = LiveState::new(&topology, LiveRules::default());
        PartitionCheckpoint {
            version: CHECKPOINT_VERSION,
            partition: 3,
            sensor_next: 120,
            session_next: 7,
            written_ms: 1,
            lots: vec![(
                "lot".into(),
                slot_ids_hash(&topology.lots()[0].slot_ids),
                live.export_lot(0).expect("a lot"),
            )],
            sensor_last: Some(message_fingerprint(Some(b"lot"), b"reading")),
            session_last: None,
        }
    }

    #[test]
    fn the_writer_writes_batches_in_order_off_the_caller_and_reports_failures() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = CheckpointStore::open(dir.path()).expect("store");
        let mut writer = CheckpointWriter::spawn(store.clone(), None).expect("writer");
        assert!(writer.finished().is_none() && writer.wait().is_none());
        let first = checkpoint();
        let mut second = checkpoint();
        second.sensor_next = 200;
        assert!(writer.submit(vec![first]));
        // One batch at a time: the next is refused while the first is in flight.
        assert!(writer.busy() && !writer.submit(vec![second.clone()]));
        let batch = writer.wait().expect("the batch in flight");
        assert!(!writer.busy());
        let [written] = batch.partitions.as_slice() else {
            panic!("one partition written, got {:?}", batch.partitions);
        };
        assert_eq!(
            (written.partition, written.sensor_next, written.session_next),
            (3, 120, 7)
        );
        assert!(written.result.as_ref().is_ok_and(|bytes| *bytes > 0));
        assert!(writer.submit(vec![second.clone()]));
        let batch = loop {
            // Polled without waiting, as the consumer's loop does.
            if let Some(batch) = writer.finished() {
                break batch;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(batch.partitions[0].result.is_ok());
        assert_eq!(store.load(3).expect("readable"), Some(second.clone()));
        // A folder that is gone: the failure comes back, the previous file is untouched.
        let gone = dir.path().join("gone");
        let mut failing =
            CheckpointWriter::spawn(CheckpointStore { dir: gone }, None).expect("writer");
        assert!(failing.submit(vec![checkpoint()]));
        let batch = failing.wait().expect("the batch");
        assert!(matches!(
            batch.partitions[0].result,
            Err(CheckpointError::Io { .. })
        ));
        assert_eq!(store.load(3).expect("readable"), Some(second));
    }

    /// Version 1, before fingerprints, as the previous build wrote it.
    #[derive(Serialize)]
    struct CheckpointV1 {
        version: u32,
        partition: i32,
        sensor_next: i64,
        session_next: i64,
        written_ms: i64,
        lots: Vec<(String, u64, LotRecord)>,
    }

    #[test]
    fn a_version_1_checkpoint_loads_without_fingerprints() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = CheckpointStore::open(dir.path()).expect("store");
        let current = checkpoint();
        let old = CheckpointV1 {
            version: 1,
            partition: current.partition,
            sensor_next: current.sensor_next,
            session_next: current.session_next,
            written_ms: current.written_ms,
            lots: current.lots.clone(),
        };
        let body = rmp_serde::to_vec(&old).expect("serializes");
        let mut bytes = MAGIC.to_vec();
        bytes.extend((body.len() as u64).to_le_bytes());
        bytes.extend(&body);
        bytes.extend(Sha256::digest(&body));
        fs::write(store.path(3), bytes).expect("write");
        let loaded = store.load(3).expect("readable").expect("present");
        assert_eq!(
            loaded,
            PartitionCheckpoint {
                version: 1,
                sensor_last: None,
                session_last: None,
                ..current
            }
        );
    }

    #[test]
    fn fingerprints_tell_messages_apart() {
        let base = message_fingerprint(Some(b"lot-1"), b"a reading of 17 bytes");
        assert_eq!(
            base,
            message_fingerprint(Some(b"lot-1"), b"a reading of 17 bytes")
        );
        for (key, value) in [
            (Some(&b"lot-2"[..]), &b"a reading of 17 bytes"[..]),
            (Some(b"lot-1"), b"a reading of 17 byteS"),
            (Some(b"lot-1a"), b" reading of 17 bytes"),
            (None, b"a reading of 17 bytes"),
            (Some(b"lot-1"), b""),
        ] {
            assert_ne!(base, message_fingerprint(key, value), "{key:?} {value:?}");
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = CheckpointStore::open(dir.path()).expect("store");
        assert!(store.load(3).expect("readable").is_none());
        store.save(&checkpoint()).expect("saved");
        assert_eq!(store.load(3).expect("readable"), Some(checkpoint()));

        let path = store.path(3);
        let mut bytes = fs::read(&path).expect("file");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            store.load(3),
            Err(CheckpointError::Corrupt { .. })
        ));
        fs::write(&path, &bytes[..10]).expect("write");
        assert!(matches!(
            store.load(3),
            Err(CheckpointError::Corrupt { .. })
        ));
        let aside = store.quarantine(3).expect("moved aside");
        assert!(aside.exists() && store.load(3).expect("readable").is_none());
    }

    #[test]
    fn slot_order_changes_the_hash() {
        let ab = slot_ids_hash(&["a".into(), "b".into()]);
        assert_ne!(ab, slot_ids_hash(&["b".into(), "a".into()]));
        assert_ne!(ab, slot_ids_hash(&["ab".into()]));
    }
}
