//! The fuzzer of plainsight's parsers of outside input (`make fuzz`).
//!
//! Stable Rust only (no `cargo fuzz`, which needs nightly): an in-process
//! mutational fuzzer over the harnesses of `plainsight::fuzzing`.
//!
//! - Inputs: the seed corpus (`fuzz/corpus/<harness>/`, made by
//!   `--write-seeds` with the real encoders and layouts), every input that
//!   ever crashed (`fuzz/regressions/<harness>/`), and their mutations
//!   (`mutate.rs`: havoc plus script- and ELF-aware steps). Input `i` of a
//!   run is a function of `--seed`, the harness and `i`: runs repeat.
//! - Coverage guidance when the parsers are built with SanitizerCoverage
//!   (`make fuzz` builds with `fuzz/sancov-rustc`; `cov.rs`): inputs that
//!   reach new edges join the corpus. Without it, blind mutation.
//! - Isolation: each harness runs in a worker process (this program with
//!   `--worker`) that writes the input under test into a shared file before
//!   running it; a worker that dies (stack overflow, abort, a signal) or
//!   hangs is replaced and the input it was on is the finding. Panics are
//!   caught in the worker (`catch_unwind`), minimized and reported by their
//!   location; an input that takes more than `--timeout-ms` (1 s) is a hang
//!   finding, one that makes the worker hold more than `--max-mem-mib`
//!   more memory a memory finding.
//! - The harness runs on a thread with a 2 MiB stack, as the agent's worker
//!   and output threads have.
//!
//! Findings go to `fuzz/crashes/<harness>/<hash>`; the exit status is
//! non-zero if there are any. `--replay FILE...` runs files through one
//! harness with the default panic output (set RUST_BACKTRACE=1 for the
//! stack).

mod cov;
mod mutate;
mod seeds;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;

use plainsight::fuzzing::{self, HARNESSES};

use cov::Coverage;
use mutate::Rng;

// ---------------------------------------------------------------------------
// Memory accounting: live bytes and their peak, so that an input that
// makes the parser hold too much is a finding; one allocation over the
// hard limit ends the worker (the parent reports it).

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
const HARD_LIMIT: usize = 8 << 30;

fn over_limit(size: usize) -> ! {
    let mut msg = *b"fuzz: allocation over the hard limit: 0000000000000 bytes\n";
    let mut n = size;
    for i in (38..51).rev() {
        msg[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // SAFETY: writing a stack buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

fn account(grow: usize) {
    let now = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
    if now > HARD_LIMIT {
        over_limit(now);
    }
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > HARD_LIMIT {
            over_limit(l.size());
        }
        let p = System.alloc(l);
        if !p.is_null() {
            account(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > HARD_LIMIT {
            over_limit(l.size());
        }
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            account(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > HARD_LIMIT {
            over_limit(new);
        }
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                account(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------
// Command line.

#[derive(Parser, Debug, Clone)]
#[command(about = "Fuzz plainsight's parsers of outside input")]
struct Args {
    /// Harness to run (repeatable; default: all).
    #[arg(long)]
    harness: Vec<String>,
    /// Inputs per harness.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// An input running longer is a hang.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// An input making the worker hold this much more memory is a finding.
    #[arg(long, default_value_t = 512)]
    max_mem_mib: u64,
    /// Corpus, regressions and crashes live under this folder.
    #[arg(long, default_value = "fuzz")]
    dir: PathBuf,
    /// Scratch space (shared memory file, the corpus grown by coverage).
    #[arg(long, default_value = "target/fuzz-work")]
    work: PathBuf,
    /// Write the seed corpus to DIR/corpus/<harness>/ and exit.
    #[arg(long)]
    write_seeds: bool,
    /// Run these files through the (single) harness and exit.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// List the harnesses.
    #[arg(long)]
    list: bool,
    #[arg(long, hide = true)]
    worker: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    start: u64,
    /// Hashes of inputs that killed a worker (left out of its corpus).
    #[arg(long, hide = true, value_delimiter = ',')]
    skip: Vec<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let names: Vec<String> = if args.harness.is_empty() {
        HARNESSES.iter().map(|h| h.0.to_string()).collect()
    } else {
        args.harness.clone()
    };
    for n in &names {
        if fuzzing::harness(n).is_none() {
            eprintln!("unknown harness {n:?}; harnesses: {}", harness_names());
            return ExitCode::from(2);
        }
    }
    if args.list {
        println!("{}", harness_names());
        ExitCode::SUCCESS
    } else if args.write_seeds {
        write_seeds(&args, &names)
    } else if !args.replay.is_empty() {
        replay(&args, &names)
    } else if args.worker {
        worker(&args, &names[0])
    } else {
        parent(&args, &names)
    }
}

fn harness_names() -> String {
    HARNESSES.iter().map(|h| h.0).collect::<Vec<_>>().join(", ")
}

/// FNV-1a, for file names and signatures.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn max_len(harness: &str) -> usize {
    match harness {
        "elf" | "ring" => 64 << 10,
        "go" => 16 << 10,
        "place" | "config" => 8 << 10,
        _ => 32 << 10,
    }
}

fn write_seeds(args: &Args, names: &[String]) -> ExitCode {
    for n in names {
        let dir = args.dir.join("corpus").join(n);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        let s = seeds::seeds(n);
        for (name, data) in &s {
            std::fs::write(dir.join(name), data).expect("seed file");
        }
        println!("{n}: {} seeds in {}", s.len(), dir.display());
    }
    ExitCode::SUCCESS
}

fn replay(args: &Args, names: &[String]) -> ExitCode {
    let [name] = names else {
        eprintln!("--replay takes one --harness");
        return ExitCode::from(2);
    };
    let h = fuzzing::harness(name).expect("checked");
    let mut bad = 0;
    for f in &args.replay {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let t = Instant::now();
        let r = on_small_stack(move || panic::catch_unwind(|| h(&data)).is_ok());
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if r {
            println!("{}: ok ({ms:.1} ms)", f.display());
        } else {
            println!("{}: PANIC ({ms:.1} ms)", f.display());
            bad += 1;
        }
    }
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `f` on a thread with the stack of the agent's threads.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(2 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .unwrap_or_else(|_| std::process::abort())
}

// ---------------------------------------------------------------------------
// Shared file between the parent and a worker: what the worker is doing.

const W_ITER: usize = 0;
const W_START_NS: usize = 1;
const W_LEN: usize = 2;
const W_RUNS: usize = 3;
const W_CORPUS: usize = 4;
const W_FEATURES: usize = 5;
const W_EDGES: usize = 6;
const SHM_INPUT: usize = 64;
const SHM_SIZE: usize = SHM_INPUT + (1 << 20);

struct Shm {
    ptr: *mut u8,
}

impl Shm {
    fn create(path: &Path) -> Shm {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("shared file");
        f.set_len(SHM_SIZE as u64).expect("shared file size");
        Shm::map(&f)
    }
    fn open(path: &Path) -> Shm {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("shared file");
        Shm::map(&f)
    }
    fn map(f: &std::fs::File) -> Shm {
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of a scratch file only this program
        // uses, never unmapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SHM_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert!(ptr != libc::MAP_FAILED, "mapping the shared file failed");
        Shm { ptr: ptr.cast() }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is SHM_SIZE bytes; one process writes the
        // input, the other reads it only after that one stopped.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(SHM_INPUT), SHM_SIZE - SHM_INPUT) }
    }
    fn bytes_ref(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.ptr.add(SHM_INPUT), SHM_SIZE - SHM_INPUT) }
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: page-aligned mapping, 8-byte slots inside its first 64 bytes.
        unsafe { &*(self.ptr.add(i * 8) as *const AtomicU64) }
    }
    fn get(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::SeqCst)
    }
    fn set(&self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::SeqCst)
    }
    fn put_input(&mut self, iter: u64, data: &[u8]) {
        let n = data.len().min(SHM_SIZE - SHM_INPUT);
        self.bytes()[..n].copy_from_slice(&data[..n]);
        self.set(W_LEN, n as u64);
        self.set(W_ITER, iter);
        self.set(W_START_NS, now_ns());
    }
    fn input(&self) -> Vec<u8> {
        let n = (self.get(W_LEN) as usize).min(SHM_SIZE - SHM_INPUT);
        self.bytes_ref()[..n].to_vec()
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------
// Findings.

#[derive(Debug, Clone)]
struct Finding {
    kind: String,
    signature: String,
    detail: String,
    input: Vec<u8>,
    count: u64,
}

/// What the panic hook saw last: (location, message), and how many panics
/// there were (the parsers catch some themselves).
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);
static PANICS: AtomicU64 = AtomicU64::new(0);

fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        let loc = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            String::new()
        };
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some((loc, msg));
    }));
}

fn take_panic() -> Option<(String, String)> {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take()
}

// ---------------------------------------------------------------------------
// The worker: one harness, inputs `start..count`.

struct Outcome {
    /// Panic location and message, if the harness panicked.
    panic: Option<(String, String)>,
    /// Panics the parser caught itself: their locations.
    contained: Option<String>,
    elapsed: Duration,
    mem_peak: usize,
    new_features: usize,
}

struct Worker {
    h: fn(&[u8]),
    shm: Shm,
    cov: Option<Coverage>,
    timeout: Duration,
    max_mem: usize,
    work: PathBuf,
}

impl Worker {
    fn run(&mut self, iter: u64, input: &[u8]) -> Outcome {
        self.shm.put_input(iter, input);
        let panics = PANICS.load(Ordering::SeqCst);
        take_panic();
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        if let Some(c) = &mut self.cov {
            c.reset();
        }
        let h = self.h;
        let t = Instant::now();
        let r = panic::catch_unwind(AssertUnwindSafe(|| h(input)));
        let elapsed = t.elapsed();
        let new_features = self.cov.as_mut().map_or(0, |c| c.collect());
        self.shm.set(W_START_NS, 0);
        let mem_peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let seen = take_panic();
        let (panic, contained) = match r {
            Err(_) => (Some(seen.unwrap_or_default()), None),
            Ok(()) if PANICS.load(Ordering::SeqCst) > panics => (None, seen.map(|s| s.0)),
            Ok(()) => (None, None),
        };
        Outcome {
            panic,
            contained,
            elapsed,
            mem_peak,
            new_features,
        }
    }

    /// Deletes pieces of a panicking input while it panics at the same place.
    fn minimize(&mut self, input: &[u8], loc: &str) -> Vec<u8> {
        let mut best = input.to_vec();
        let mut budget = 4000;
        let mut chunk = (best.len() / 2).max(1);
        loop {
            let mut i = 0;
            let mut progress = false;
            while i < best.len() && budget > 0 {
                let mut cand = best[..i].to_vec();
                cand.extend_from_slice(&best[(i + chunk).min(best.len())..]);
                budget -= 1;
                let o = self.run(u64::MAX, &cand);
                if o.panic.as_ref().is_some_and(|p| p.0 == loc) {
                    best = cand;
                    progress = true;
                } else {
                    i += chunk;
                }
            }
            if budget == 0 || (chunk == 1 && !progress) {
                return best;
            }
            if !progress {
                chunk /= 2;
            }
        }
    }

    fn record(&self, f: &Finding) {
        let dir = self.work.join("findings");
        std::fs::create_dir_all(&dir).expect("findings folder");
        let file = dir.join(format!("{:016x}", hash(f.signature.as_bytes())));
        std::fs::write(&file, &f.input).expect("finding file");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("findings.log"))
            .expect("findings log");
        let detail = f.detail.replace(['\n', '\t'], " ");
        writeln!(
            log,
            "{}\t{}\t{}\t{}",
            f.kind,
            f.signature,
            file.display(),
            detail
        )
        .expect("log");
    }
}

/// Seeds, regressions, the corpus grown so far; deduplicated.
fn load_corpus(args: &Args, name: &str, work: &Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::seeds(name).into_iter().map(|s| s.1).collect();
    for d in [
        args.dir.join("corpus").join(name),
        args.dir.join("regressions").join(name),
        work.join("queue"),
    ] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    let mut seen: HashSet<u64> = args.skip.iter().copied().collect();
    out.retain(|d| seen.insert(hash(d)));
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

fn worker(args: &Args, name: &str) -> ExitCode {
    quiet_panics();
    let args = args.clone();
    let name = name.to_string();
    on_small_stack(move || worker_loop(&args, &name));
    ExitCode::SUCCESS
}

#[derive(Default)]
struct Stats {
    contained: BTreeMap<String, u64>,
    slowest: Duration,
    findings: BTreeMap<String, Finding>,
}

fn worker_loop(args: &Args, name: &str) {
    let work = args.work.join(name);
    let mut corpus = load_corpus(args, name, &work);
    let hot_of = |d: &[u8]| {
        if matches!(name, "elf" | "go") {
            mutate::elf_hot(d)
        } else {
            Vec::new()
        }
    };
    let mut hot: Vec<Vec<(usize, usize)>> = corpus.iter().map(|d| hot_of(d)).collect();
    let mut w = Worker {
        h: fuzzing::harness(name).expect("checked"),
        shm: Shm::open(&work.join("shm")),
        cov: Coverage::get(),
        timeout: Duration::from_millis(args.timeout_ms),
        max_mem: (args.max_mem_mib as usize) << 20,
        work: work.clone(),
    };
    let mut stats = Stats::default();
    // Findings of an earlier worker of this run are not reported twice.
    let known: HashSet<String> = std::fs::read_to_string(work.join("findings.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
        .collect();
    // The corpus once, to learn its coverage.
    for d in corpus.clone() {
        let _ = w.run(u64::MAX, &d);
    }
    publish(&w, &corpus, args.start);
    let queue = work.join("queue");
    let salt = hash(name.as_bytes());
    for i in args.start..args.count {
        let mut rng = Rng::new(args.seed ^ salt ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let k = pick(&mut rng, corpus.len());
        let other = &corpus[rng.below(corpus.len())];
        let input = mutate::mutate(&mut rng, name, &corpus[k], other, max_len(name), &hot[k]);
        let o = w.run(i, &input);
        judge(&mut w, &mut stats, &known, &input, &o);
        if o.panic.is_none() && o.new_features > 0 && corpus.len() < 50_000 {
            std::fs::create_dir_all(&queue).expect("queue folder");
            let f = queue.join(format!("{:08}-{:016x}", corpus.len(), hash(&input)));
            std::fs::write(f, &input).expect("queue file");
            hot.push(hot_of(&input));
            corpus.push(input);
        }
        if i % 1024 == 0 {
            publish(&w, &corpus, i);
        }
    }
    publish(&w, &corpus, args.count);
    write_summary(&work, &stats);
}

/// Newer corpus entries (which found something) a little more often.
fn pick(rng: &mut Rng, n: usize) -> usize {
    if n > 16 && rng.chance(3) {
        n - 1 - rng.below(n / 4)
    } else {
        rng.below(n)
    }
}

fn publish(w: &Worker, corpus: &[Vec<u8>], runs: u64) {
    w.shm.set(W_RUNS, runs);
    w.shm.set(W_CORPUS, corpus.len() as u64);
    w.shm.set(
        W_FEATURES,
        w.cov.as_ref().map_or(0, |c| c.features()) as u64,
    );
    w.shm
        .set(W_EDGES, w.cov.as_ref().map_or(0, |c| c.edges()) as u64);
}

/// Turns an outcome into findings.
fn judge(w: &mut Worker, stats: &mut Stats, known: &HashSet<String>, input: &[u8], o: &Outcome) {
    let mut found: Option<Finding> = None;
    if let Some((loc, msg)) = &o.panic {
        let sig = format!("panic at {loc}");
        found = Some(Finding {
            kind: "crash".into(),
            signature: sig,
            detail: msg.lines().next().unwrap_or("").chars().take(300).collect(),
            input: input.to_vec(),
            count: 1,
        });
    } else if o.elapsed > w.timeout {
        // Once more, so that a pause of the machine is not taken for a hang.
        let again = w.run(u64::MAX, input);
        if again.elapsed > w.timeout {
            found = Some(Finding {
                kind: "hang".into(),
                signature: "input slower than the time limit".into(),
                detail: format!("{:.2} s", again.elapsed.as_secs_f64()),
                input: input.to_vec(),
                count: 1,
            });
        }
    } else if o.mem_peak > w.max_mem {
        found = Some(Finding {
            kind: "memory".into(),
            signature: "input held more memory than the limit".into(),
            detail: format!("{} MiB", o.mem_peak >> 20),
            input: input.to_vec(),
            count: 1,
        });
    }
    if o.elapsed > stats.slowest {
        stats.slowest = o.elapsed;
        // Kept for a look (not a finding under the time limit).
        let _ = std::fs::write(w.work.join("slowest"), input);
    }
    if let Some(c) = &o.contained {
        let n = stats.contained.entry(c.clone()).or_insert(0);
        if *n == 0 {
            let dir = w.work.join("contained");
            std::fs::create_dir_all(&dir).expect("contained folder");
            std::fs::write(dir.join(format!("{:016x}", hash(input))), input).expect("file");
        }
        *n += 1;
    }
    let Some(mut f) = found else { return };
    if let Some(prev) = stats.findings.get_mut(&f.signature) {
        prev.count += 1;
        return;
    }
    if f.kind == "crash" && !known.contains(&f.signature) {
        let loc = o.panic.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        f.input = w.minimize(input, &loc);
    }
    if !known.contains(&f.signature) {
        w.record(&f);
    }
    stats.findings.insert(f.signature.clone(), f);
}

fn write_summary(work: &Path, s: &Stats) {
    let mut out = format!("slowest\t{:.3}\n", s.slowest.as_secs_f64() * 1e3);
    for (loc, n) in &s.contained {
        out.push_str(&format!("contained\t{loc}\t{n}\n"));
    }
    for f in s.findings.values() {
        out.push_str(&format!("count\t{}\t{}\n", f.signature, f.count));
    }
    std::fs::write(work.join("summary"), out).expect("summary");
}

// ---------------------------------------------------------------------------
// The parent: a worker per harness, replaced when it dies or hangs.

struct Report {
    name: String,
    runs: u64,
    secs: f64,
    edges: u64,
    features: u64,
    corpus: u64,
    slowest_ms: f64,
    findings: Vec<Finding>,
    contained: Vec<(String, u64)>,
    restarts: u32,
}

fn parent(args: &Args, names: &[String]) -> ExitCode {
    let t0 = Instant::now();
    let mut reports = Vec::new();
    for name in names {
        reports.push(fuzz_one(args, name));
    }
    println!();
    println!("harness   inputs      inputs/s  edges/features  corpus  slowest    findings");
    let mut bad = 0;
    for r in &reports {
        println!(
            "{:<9} {:<11} {:<9.0} {:<15} {:<7} {:<10} {}",
            r.name,
            r.runs,
            r.runs as f64 / r.secs.max(1e-9),
            format!("{}/{}", r.edges, r.features),
            r.corpus,
            format!("{:.1} ms", r.slowest_ms),
            r.findings.len()
        );
        if r.restarts > 0 {
            println!("          worker restarted {} times", r.restarts);
        }
        println!(
            "          slowest input: {}",
            args.work.join(&r.name).join("slowest").display()
        );
        for (loc, n) in &r.contained {
            println!("          contained panic (caught by the parser itself) x{n} at {loc}");
        }
        for f in &r.findings {
            bad += 1;
            let file = save_crash(args, &r.name, &f.input);
            println!(
                "          {} x{}: {} - {} -> {}",
                f.kind,
                f.count,
                f.signature,
                f.detail,
                file.display()
            );
        }
    }
    println!(
        "total wall time {:.1} s; {bad} distinct findings",
        t0.elapsed().as_secs_f64()
    );
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn save_crash(args: &Args, name: &str, input: &[u8]) -> PathBuf {
    let dir = args.dir.join("crashes").join(name);
    std::fs::create_dir_all(&dir).expect("crashes folder");
    let f = dir.join(format!("{:016x}", hash(input)));
    std::fs::write(&f, input).expect("crash file");
    f
}

fn fuzz_one(args: &Args, name: &str) -> Report {
    let work = args.work.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work folder");
    let shm = Shm::create(&work.join("shm"));
    let t0 = Instant::now();
    let mut start = 0u64;
    let mut deaths: Vec<Finding> = Vec::new();
    let mut restarts = 0u32;
    let exe = std::env::current_exe().expect("own path");
    loop {
        let stderr_path = work.join(format!("stderr-{restarts}"));
        let mut child = Command::new(&exe)
            .args(["--worker", "--harness", name])
            .args(["--count", &args.count.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--start", &start.to_string()])
            .args(["--timeout-ms", &args.timeout_ms.to_string()])
            .args(["--max-mem-mib", &args.max_mem_mib.to_string()])
            .args(skip_arg(&deaths))
            .arg("--dir")
            .arg(&args.dir)
            .arg("--work")
            .arg(&args.work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("worker");
        let hang_after = Duration::from_millis(args.timeout_ms * 10);
        let mut last_note = Instant::now();
        let (status, hung) = loop {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(st) = child.try_wait().expect("wait") {
                break (st, false);
            }
            let began = shm.get(W_START_NS);
            if began != 0 && now_ns().saturating_sub(began) > hang_after.as_nanos() as u64 {
                let _ = child.kill();
                break (child.wait().expect("wait"), true);
            }
            if last_note.elapsed() > Duration::from_secs(15) {
                last_note = Instant::now();
                progress(name, &shm, args.count, t0);
            }
        };
        if status.success() && !hung {
            break;
        }
        // The worker died on (or hung in) the input in the shared file.
        let input = shm.input();
        let iter = shm.get(W_ITER);
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let (kind, signature) = death_signature(hung, &status, &err);
        match deaths.iter_mut().find(|d| d.signature == signature) {
            Some(d) => d.count += 1,
            None => deaths.push(Finding {
                kind,
                signature,
                detail: err.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
                input,
                count: 1,
            }),
        }
        restarts += 1;
        // Past the input it died on (u64::MAX: during a replay of the
        // corpus or a minimization; start again where it was).
        start = if iter == u64::MAX {
            shm.get(W_RUNS) + 1
        } else {
            iter + 1
        };
        if restarts > 50 || start >= args.count {
            break;
        }
    }
    collect(name, &work, &shm, t0, deaths, restarts)
}

fn skip_arg(deaths: &[Finding]) -> Vec<String> {
    if deaths.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = deaths.iter().map(|d| hash(&d.input).to_string()).collect();
    vec!["--skip".into(), list.join(",")]
}

fn progress(name: &str, shm: &Shm, count: u64, t0: Instant) {
    let runs = shm.get(W_RUNS);
    eprintln!(
        "[{name}] {runs}/{count} inputs, {:.0}/s, {} features, corpus {}",
        runs as f64 / t0.elapsed().as_secs_f64(),
        shm.get(W_FEATURES),
        shm.get(W_CORPUS)
    );
}

fn death_signature(hung: bool, status: &std::process::ExitStatus, err: &str) -> (String, String) {
    use std::os::unix::process::ExitStatusExt;
    if hung {
        return (
            "hang".into(),
            "input still running after 10x the time limit".into(),
        );
    }
    let what = if err.contains("has overflowed its stack") {
        "stack overflow".to_string()
    } else if err.contains("memory allocation of") {
        "allocation failure".to_string()
    } else if err.contains("over the hard limit") {
        "allocation over the hard limit".to_string()
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {sig}")
    } else {
        format!("exit status {:?}", status.code())
    };
    ("crash".into(), format!("worker died: {what}"))
}

fn collect(
    name: &str,
    work: &Path,
    shm: &Shm,
    t0: Instant,
    deaths: Vec<Finding>,
    restarts: u32,
) -> Report {
    let secs = t0.elapsed().as_secs_f64();
    let mut findings = deaths;
    let summary = std::fs::read_to_string(work.join("summary")).unwrap_or_default();
    let counts: BTreeMap<&str, u64> = summary
        .lines()
        .filter_map(|l| {
            let mut p = l.split('\t');
            (p.next()? == "count").then_some(())?;
            Some((p.next()?, p.next()?.parse().ok()?))
        })
        .collect();
    let log = std::fs::read_to_string(work.join("findings.log")).unwrap_or_default();
    for l in log.lines() {
        let p: Vec<&str> = l.splitn(4, '\t').collect();
        let [kind, sig, file, detail] = p[..] else {
            continue;
        };
        findings.push(Finding {
            kind: kind.into(),
            signature: sig.into(),
            detail: detail.into(),
            input: std::fs::read(file).unwrap_or_default(),
            count: counts.get(sig).copied().unwrap_or(1),
        });
    }
    let field = |key: &str| {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let contained = summary
        .lines()
        .filter_map(|l| {
            let mut p = l.split('\t');
            (p.next()? == "contained").then_some(())?;
            Some((p.next()?.to_string(), p.next()?.parse().ok()?))
        })
        .collect();
    Report {
        name: name.into(),
        runs: shm.get(W_RUNS),
        secs,
        edges: shm.get(W_EDGES),
        features: shm.get(W_FEATURES),
        corpus: shm.get(W_CORPUS),
        slowest_ms: field("slowest"),
        findings,
        contained,
        restarts,
    }
}
