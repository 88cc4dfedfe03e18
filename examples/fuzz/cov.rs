//! Coverage feedback, when the parsers are built with SanitizerCoverage's
//! inline 8-bit counters (`fuzz/sancov-rustc`, which `make fuzz` uses):
//! every edge of the instrumented crates bumps a byte in one section, whose
//! bounds the instrumented code's module constructors hand to
//! [`__sanitizer_cov_8bit_counters_init`]. Without it the counters are
//! never registered and the fuzzer runs blind (mutations of the seeds only).
//!
//! A feature is an edge with a hit-count bucket (1, 2, 3, 4-7, 8-15,
//! 16-31, 32-127, 128+), as in AFL and libFuzzer; an input that shows a
//! feature never seen is kept in the corpus.

use std::sync::atomic::{AtomicUsize, Ordering};

static START: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicUsize = AtomicUsize::new(0);

/// Called by the module constructors SanitizerCoverage inserts (once per
/// instrumented codegen unit; on ELF each passes the bounds of the whole
/// linked section).
///
/// # Safety
/// `start..stop` is the counters section, live for the whole process.
#[no_mangle]
pub unsafe extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, stop: *mut u8) {
    let (s, e) = (start as usize, stop as usize);
    let cur_s = START.load(Ordering::SeqCst);
    if cur_s == 0 || s < cur_s {
        START.store(s, Ordering::SeqCst);
    }
    if e > STOP.load(Ordering::SeqCst) {
        STOP.store(e, Ordering::SeqCst);
    }
}

pub struct Coverage {
    counters: &'static mut [u8],
    /// Per edge, the hit-count buckets seen.
    seen: Vec<u8>,
    features: usize,
}

fn bucket(n: u8) -> u8 {
    match n {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

impl Coverage {
    /// The registered counters, if the binary is instrumented.
    pub fn get() -> Option<Coverage> {
        let (s, e) = (START.load(Ordering::SeqCst), STOP.load(Ordering::SeqCst));
        if s == 0 || e <= s {
            return None;
        }
        // SAFETY: the section registered above; only this thread runs
        // instrumented code while the fuzzer holds it.
        let counters = unsafe { std::slice::from_raw_parts_mut(s as *mut u8, e - s) };
        Some(Coverage {
            seen: vec![0; counters.len()],
            counters,
            features: 0,
        })
    }

    pub fn edges(&self) -> usize {
        self.counters.len()
    }

    pub fn features(&self) -> usize {
        self.features
    }

    /// Before an input.
    pub fn reset(&mut self) {
        self.counters.fill(0);
    }

    /// After an input: how many features it showed first.
    pub fn collect(&mut self) -> usize {
        let mut new = 0;
        let words = self.counters.len() / 8;
        for w in 0..words {
            let c = &self.counters[w * 8..w * 8 + 8];
            if u64::from_ne_bytes(c.try_into().expect("8 bytes")) == 0 {
                continue;
            }
            for i in w * 8..w * 8 + 8 {
                new += self.note(i);
            }
        }
        for i in words * 8..self.counters.len() {
            new += self.note(i);
        }
        self.features += new;
        new
    }

    fn note(&mut self, i: usize) -> usize {
        let b = bucket(self.counters[i]);
        if b != 0 && self.seen[i] & b == 0 {
            self.seen[i] |= b;
            1
        } else {
            0
        }
    }
}
