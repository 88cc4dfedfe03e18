//! Inspects ELF files as the agent would and prints what was found and how
//! long it took: `cargo run --release --example inspect -- FILE...`.

use std::time::Instant;

fn main() {
    for path in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(path);
        let t0 = Instant::now();
        let r = plainsight::inspect::inspect_file(&path, 1 << 31, true);
        let took = t0.elapsed();
        match r {
            Ok(insp) => println!(
                "{}: {:?}, {} targets, {:.2} ms",
                path.display(),
                insp.library,
                insp.targets.len(),
                took.as_secs_f64() * 1e3
            ),
            Err(e) => println!(
                "{}: {e}, {:.2} ms",
                path.display(),
                took.as_secs_f64() * 1e3
            ),
        }
    }
}
