//! The spool: a local append-only file of events that could not be written to MongoDB yet,
//! one JSON document per line, with a separate position file recording how far replay has
//! got. Replay resumes from that position after a restart; a crash between writing to
//! MongoDB and saving the position replays a few events again, which their ids make
//! harmless. Size is bounded: past `max_bytes`, new events are refused (the caller counts
//! them as dropped).
//!
//! Blocking file IO: the telemetry writer runs it on a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::event::EventDoc;

pub struct Spool {
    path: PathBuf,
    pos_path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes already replayed.
    pos: u64,
    max_bytes: u64,
}

/// A chunk read for replay; `commit` it once written.
pub struct Chunk {
    pub events: Vec<EventDoc>,
    /// Lines that could not be parsed (a torn last write), skipped.
    pub corrupt: u64,
    end: u64,
}

impl Spool {
    /// Open (or create) the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let path = dir.join("events.spool");
        let pos_path = dir.join("events.spool.pos");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let pos = fs::read_to_string(&pos_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
            .min(len);
        let mut spool = Spool {
            path,
            pos_path,
            file,
            len,
            pos,
            max_bytes,
        };
        if spool.pos == spool.len && spool.len > 0 {
            spool.reset()?;
        }
        Ok(spool)
    }

    /// Events waiting for replay, in bytes.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Append events; returns how many did not fit under the bound (not written).
    pub fn append(&mut self, events: &[EventDoc]) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        let mut written = 0;
        for ev in events {
            let start = buf.len();
            serde_json::to_writer(&mut buf, ev).map_err(io::Error::other)?;
            buf.push(b'\n');
            if self.len + buf.len() as u64 > self.max_bytes {
                buf.truncate(start);
                break;
            }
            written += 1;
        }
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.flush()?;
            self.len += buf.len() as u64;
        }
        Ok(events.len() - written)
    }

    /// Read up to `max` events from the replay position.
    pub fn read(&self, max: usize) -> io::Result<Chunk> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.pos))?;
        let mut r = BufReader::new(f.take(self.len - self.pos));
        let mut events = Vec::new();
        let mut corrupt = 0;
        let mut end = self.pos;
        let mut line = Vec::new();
        while events.len() < max {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            end += n as u64;
            match serde_json::from_slice::<EventDoc>(&line) {
                Ok(ev) => events.push(ev),
                Err(_) => corrupt += 1,
            }
        }
        Ok(Chunk {
            events,
            corrupt,
            end,
        })
    }

    /// Record that `chunk` was written; empties the file once everything is replayed.
    pub fn commit(&mut self, chunk: &Chunk) -> io::Result<()> {
        self.pos = chunk.end;
        if self.pos >= self.len {
            return self.reset();
        }
        let tmp = self.pos_path.with_extension("pos.tmp");
        fs::write(&tmp, self.pos.to_string())?;
        fs::rename(&tmp, &self.pos_path)
    }

    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.pos = 0;
        match fs::remove_file(&self.pos_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u32) -> EventDoc {
        EventDoc {
            id: format!("e{i}"),
            tenant: "acme".into(),
            plan: "pro".into(),
            user: "app".into(),
            app: String::new(),
            session: 1,
            proxy: "p".into(),
            pg_instance: "primary".into(),
            fingerprint: "select ?".into(),
            fp_hash: "00".into(),
            sample: "select 1".into(),
            kind: "select".into(),
            ts_ms: 1,
            latency_us: 10,
            wait_us: 0,
            rows: 1,
            bytes_in: 10,
            bytes_out: 20,
            sqlstate: None,
            cost: 0.0,
        }
    }

    #[test]
    fn append_replay_resume_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(s.is_empty());
        let evs: Vec<_> = (0..10).map(ev).collect();
        assert_eq!(s.append(&evs).unwrap(), 0);
        let c = s.read(4).unwrap();
        assert_eq!(c.events, evs[..4]);
        s.commit(&c).unwrap();
        drop(s);
        // Reopened: replay resumes after the committed chunk.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let c = s.read(100).unwrap();
        assert_eq!(c.events, evs[4..]);
        s.commit(&c).unwrap();
        assert!(s.is_empty());
        assert_eq!(
            fs::metadata(dir.path().join("events.spool")).unwrap().len(),
            0
        );
        // Bounded: a small spool takes what fits and refuses the rest.
        let mut s = Spool::open(&dir.path().join("small"), 600).unwrap();
        let refused = s.append(&evs).unwrap();
        assert!(refused > 0 && refused < 10, "{refused}");
        assert!(s.pending_bytes() <= 600);
    }

    #[test]
    fn torn_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[ev(1)]).unwrap();
        s.file.write_all(b"{\"_id\":\"torn").unwrap();
        s.len += 12;
        s.file.write_all(b"\n").unwrap();
        s.len += 1;
        s.append(&[ev(2)]).unwrap();
        let c = s.read(10).unwrap();
        assert_eq!(c.events.len(), 2);
        assert_eq!(c.corrupt, 1);
    }
}
