//! One shard's hash table: open addressing with linear probing, each slot
//! the VIN's hash and a pointer to a record holding the VIN, the etag and
//! the JSON in one allocation.
//!
//! Why not `HashMap<Vin, Entry>`: there a lookup reads a control byte, then
//! the entry, then the document's buffer (and its separate reference
//! count). With a million vehicles none of those is in the CPU caches, so
//! each is a trip to DRAM, one after the other, and the latency grows with
//! the fleet. Here a lookup makes two: the slot, whose place follows from
//! the hash alone, and the record, whose lines are all requested at once.

use std::sync::Arc;

use crate::document::ETAG_LEN;

pub(super) const VIN_LEN: usize = 17;
const HEAD: usize = VIN_LEN + ETAG_LEN;

/// The fewest slots a table shrinks to.
const MIN_SLOTS: usize = 64;

/// `[vin][etag][json]` in one reference-counted allocation, so a reader
/// can keep the document after the shard's lock is released.
#[derive(Clone)]
pub(super) struct Record(Arc<[u8]>);

impl Record {
    pub(super) fn new(vin: &[u8; VIN_LEN], etag: &[u8; ETAG_LEN], json: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(HEAD + json.len());
        bytes.extend_from_slice(vin);
        bytes.extend_from_slice(etag);
        bytes.extend_from_slice(json);
        Self(Arc::from(bytes.into_boxed_slice()))
    }

    pub(super) fn vin(&self) -> &[u8] {
        &self.0[..VIN_LEN]
    }

    pub(super) fn etag(&self) -> &[u8] {
        &self.0[VIN_LEN..HEAD]
    }

    pub(super) fn json(&self) -> &[u8] {
        &self.0[HEAD..]
    }

    /// Every byte of the record, for the prefetch.
    fn all(&self) -> &[u8] {
        &self.0
    }
}

/// The JSON of a record as the owner of a `Bytes`.
pub(super) struct Json(pub(super) Record);

impl AsRef<[u8]> for Json {
    fn as_ref(&self) -> &[u8] {
        self.0.json()
    }
}

#[derive(Default)]
struct Slot {
    hash: u64,
    record: Option<Record>,
}

/// Kept between a quarter and half full (an eighth after deletions), so a
/// probe rarely leaves the slot's cache line.
#[derive(Default)]
pub(super) struct Table {
    slots: Box<[Slot]>,
    len: usize,
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of slots, for the memory budget's arithmetic.
    #[cfg(test)]
    fn slot_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `vin`, or the empty slot where probing stopped.
    fn find(&self, hash: u64, vin: &[u8; VIN_LEN]) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            let Some(record) = &slot.record else {
                return Err(i);
            };
            if slot.hash == hash {
                // Before the VIN comparison touches the record's first
                // line: a lookup reads the record whole.
                prefetch(record.all());
                if record.vin() == vin {
                    return Ok(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn get(&self, hash: u64, vin: &[u8; VIN_LEN]) -> Option<&Record> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(hash, vin).ok()?;
        self.slots[i].record.as_ref()
    }

    /// Inserts or replaces; the replaced record, if any.
    pub(super) fn insert(&mut self, hash: u64, record: Record) -> Option<Record> {
        let vin: &[u8; VIN_LEN] = record.vin().try_into().expect("a record starts with a vin");
        let mut place = if self.slots.is_empty() {
            None
        } else {
            match self.find(hash, vin) {
                Ok(i) => return self.slots[i].record.replace(record),
                Err(i) => Some(i),
            }
        };
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
            place = None;
        }
        let i = match place {
            Some(i) => i,
            None => self
                .find(hash, vin)
                .expect_err("an absent vin stays absent when the table grows"),
        };
        self.slots[i] = Slot {
            hash,
            record: Some(record),
        };
        self.len += 1;
        None
    }

    pub(super) fn remove(&mut self, hash: u64, vin: &[u8; VIN_LEN]) -> Option<Record> {
        if self.len == 0 {
            return None;
        }
        let mut hole = self.find(hash, vin).ok()?;
        let removed = self.slots[hole].record.take();
        self.len -= 1;
        // Backward shift: pull later records of the run into the hole
        // unless that would put one before its home slot, so every record
        // stays reachable from its home without tombstones.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            if self.slots[j].record.is_none() {
                break;
            }
            let home = self.slots[j].hash as usize & mask;
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            // Give memory back when a campaign ends and most vehicles
            // lose their documents.
            self.resize((self.len * 4).next_power_of_two().max(MIN_SLOTS));
        }
        removed
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.slots.iter().filter_map(|s| s.record.as_ref())
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(Slot::default).take(slots).collect(),
        );
        let mask = self.mask();
        for slot in old.into_vec() {
            if slot.record.is_none() {
                continue;
            }
            let mut i = slot.hash as usize & mask;
            while self.slots[i].record.is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

/// Asks the CPU for every cache line of a record the caller is about to
/// read, so that with a fleet too large for the caches the lines arrive
/// together rather than one miss after another.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // One address per 64-byte line, and the last byte: the record
        // need not start on a line boundary.
        let lines = bytes.chunks(64).map(<[u8]>::as_ptr);
        for at in lines.chain(bytes.last().map(std::ptr::from_ref)) {
            // SAFETY: a prefetch is only a hint: it never faults nor
            // changes memory, and SSE is part of the x86_64 baseline.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(at.cast())
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vin(i: u32) -> [u8; VIN_LEN] {
        format!("WVWZZZ1JZ{i:08}").as_bytes().try_into().unwrap()
    }

    /// Well-spread hashes, as the store's hasher gives.
    fn spread(i: u32) -> u64 {
        u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn record(i: u32, json: &str) -> Record {
        Record::new(&vin(i), b"0123456789abcdef", json.as_bytes())
    }

    #[test]
    fn a_record_keeps_vin_etag_and_json_apart() {
        let r = record(7, "{\"a\":1}");
        assert_eq!(r.vin(), &vin(7));
        assert_eq!(r.etag(), b"0123456789abcdef");
        assert_eq!(r.json(), b"{\"a\":1}");
        assert_eq!(Json(r).as_ref(), b"{\"a\":1}");
    }

    /// Every VIN hashes to the same few homes, so runs are long, wrap
    /// around the end of the table and are cut by removals in every order.
    #[test]
    fn colliding_hashes_survive_inserts_and_removals_in_any_order() {
        let mut t = Table::default();
        let hash = |i: u32| u64::from(i % 3) + 62; // homes 62..=64, near the wrap
        for i in 0..30 {
            assert!(t.insert(hash(i), record(i, "x")).is_none());
        }
        assert_eq!(t.len(), 30);
        let replaced = t.insert(hash(4), record(4, "new")).expect("a replacement");
        assert_eq!(replaced.json(), b"x");
        assert_eq!(t.len(), 30);
        for i in (0..30).filter(|i| i % 2 == 0) {
            assert!(t.remove(hash(i), &vin(i)).is_some(), "{i} removed");
            assert!(t.remove(hash(i), &vin(i)).is_none(), "{i} gone");
        }
        for i in 0..30 {
            let found = t.get(hash(i), &vin(i));
            assert_eq!(found.is_some(), i % 2 == 1, "vehicle {i}");
        }
        assert_eq!(t.len(), 15);
        assert_eq!(t.records().count(), 15);
    }

    #[test]
    fn replacing_in_a_half_full_table_does_not_grow_it() {
        let mut t = Table::default();
        for i in 0..32 {
            t.insert(spread(i), record(i, "x"));
        }
        let half_full = t.slot_bytes();
        assert_eq!(half_full, MIN_SLOTS * 24);
        assert!(t.insert(spread(5), record(5, "y")).is_some());
        assert_eq!(t.slot_bytes(), half_full);
        assert!(t.insert(spread(32), record(32, "z")).is_none());
        assert_eq!(t.slot_bytes(), 2 * half_full);
        assert_eq!(t.get(spread(5), &vin(5)).unwrap().json(), b"y");
        assert_eq!(t.len(), 33);
    }

    #[test]
    fn the_table_grows_and_shrinks_with_its_contents() {
        let mut t = Table::default();
        for i in 0..10_000 {
            t.insert(spread(i), record(i, "x"));
        }
        let full = t.slot_bytes();
        assert!(
            (2 * 10_000 * 24..=4 * 10_000 * 24).contains(&full),
            "{full}"
        );
        for i in 0..9_990 {
            assert!(t.remove(spread(i), &vin(i)).is_some());
        }
        assert!(t.slot_bytes() <= full / 64, "shrunk to {}", t.slot_bytes());
        for i in 9_990..10_000 {
            assert_eq!(t.get(spread(i), &vin(i)).unwrap().vin(), &vin(i));
        }
        assert!(t.get(spread(1), &vin(1)).is_none());
    }
}
