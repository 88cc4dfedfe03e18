//! Test-only ELF fixtures: small C programs and libraries under
//! `tests/fixtures/elf/`, compiled with `cc` and fixed flags into
//! `target/elf-fixtures/`, standing in for the TLS libraries and programs
//! the unit tests inspect (no host package, no root needed).
//!
//! A fixture is compiled at most once per test run, and only if its output
//! is missing, older than its source, or was built with other flags. Safe
//! when tests run in parallel threads (one lock) and processes (each
//! compiles to its own temporary name, then renames).
//!
//! Also here: what `nm` and the section table say about a fixture, to
//! compare the parser's findings with (independently of the parser's
//! segment-based address mapping).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// Flags every fixture is compiled with: the placement tests assert the
/// exact code gcc makes of them (Debian 12's gcc 12). Set explicitly what
/// distributions change by default (PIE, CET, fortify, frame pointers).
const COMMON: &[&str] = &[
    "-O2",
    "-fstack-protector-strong",
    "-fcf-protection=none",
    "-fomit-frame-pointer",
    "-U_FORTIFY_SOURCE",
    "-Wall",
    "-Wextra",
    "-Werror",
];
const SHARED: &[&str] = &["-fPIC", "-shared"];
const EXE: &[&str] = &["-fPIE", "-pie"];

struct Spec {
    /// What tests ask for.
    name: &'static str,
    /// `tests/fixtures/elf/<source>.c`.
    source: &'static str,
    /// A shared library (`<name>.so`) rather than an executable.
    shared: bool,
    /// Added to [`COMMON`].
    flags: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    // OpenSSL's libssl: SSL_* exported from .dynsym.
    Spec {
        name: "openssl_like",
        source: "openssl_like",
        shared: true,
        flags: &[],
    },
    // The same code linked into an executable: SSL_* in .symtab only.
    Spec {
        name: "openssl_static",
        source: "openssl_like",
        shared: false,
        flags: &["-DWITH_MAIN"],
    },
    // ...or exported from the executable (node's bundled OpenSSL).
    Spec {
        name: "openssl_exported",
        source: "openssl_like",
        shared: false,
        flags: &["-DWITH_MAIN", "-rdynamic"],
    },
    Spec {
        name: "boringssl_like",
        source: "boringssl_like",
        shared: true,
        flags: &[],
    },
    Spec {
        name: "gnutls_like",
        source: "gnutls_like",
        shared: true,
        flags: &[],
    },
    Spec {
        name: "mbedtls_like",
        source: "mbedtls_like",
        shared: true,
        flags: &[],
    },
    // mbedTLS linked into an executable: mbedtls_ssl_* in .symtab only.
    Spec {
        name: "mbedtls_static",
        source: "mbedtls_like",
        shared: false,
        flags: &["-DWITH_MAIN"],
    },
    // wolfSSL with its OpenSSL compatibility layer's SSL_* exports.
    Spec {
        name: "wolfssl_like",
        source: "wolfssl_like",
        shared: true,
        flags: &[],
    },
    Spec {
        name: "notls",
        source: "notls",
        shared: true,
        flags: &[],
    },
    // libjvm.so's telling exports.
    Spec {
        name: "jvm_like",
        source: "jvm_like",
        shared: true,
        flags: &[],
    },
    Spec {
        name: "awslc_static",
        source: "awslc_static",
        shared: false,
        flags: &[],
    },
    // The same functions in shared objects: exported (AWS-LC's libcrypto.so,
    // a library for others) and hidden (a module carrying its own crypto).
    Spec {
        name: "awslc_exported",
        source: "awslc_static",
        shared: true,
        flags: &[],
    },
    Spec {
        name: "awslc_module",
        source: "awslc_static",
        shared: true,
        flags: &["-fvisibility=hidden"],
    },
    Spec {
        name: "ring_static",
        source: "ring_static",
        shared: false,
        flags: &[],
    },
    Spec {
        name: "stripped",
        source: "stripped",
        shared: false,
        flags: &["-s"],
    },
    Spec {
        name: "stripped_rustls",
        source: "stripped",
        shared: false,
        flags: &["-s", "-DMENTION_RUSTLS"],
    },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The fixture `name` (see `SPECS`), compiled if needed; panics with the
/// compiler's messages if it does not compile.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let spec = SPECS.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no ELF fixture {name:?}; known: {:?}",
            SPECS.iter().map(|s| s.name).collect::<Vec<_>>()
        )
    });
    // One build at a time; a test that panicked while holding the lock
    // leaves nothing half-done (outputs are renamed into place).
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let p = build(spec);
    built.insert(name.to_string(), p.clone());
    p
}

fn build(spec: &Spec) -> PathBuf {
    let src = root()
        .join("tests/fixtures/elf")
        .join(format!("{}.c", spec.source));
    let dir = root().join("target/elf-fixtures");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let out = dir.join(if spec.shared {
        format!("{}.so", spec.name)
    } else {
        spec.name.to_string()
    });
    let mut args: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
    args.extend(
        (if spec.shared { SHARED } else { EXE })
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(spec.flags.iter().map(|s| s.to_string()));
    // The command line, kept next to the output: other flags, rebuild.
    let cmd_file = dir.join(format!("{}.cmd", spec.name));
    let cmd_line = format!("cc {} -o <out> {}\n", args.join(" "), src.display());
    let src_time =
        mtime(&src).unwrap_or_else(|| panic!("fixture source {} missing", src.display()));
    let fresh = mtime(&out).is_some_and(|t| t >= src_time)
        && std::fs::read_to_string(&cmd_file).is_ok_and(|c| c == cmd_line);
    if fresh {
        return out;
    }
    // Compiled under a name of our own, then renamed: another test process
    // building the same fixture never sees (nor runs) a half-written file.
    let tmp = dir.join(format!(".{}.{}.tmp", spec.name, std::process::id()));
    let res = Command::new("cc")
        .args(&args)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running cc for the ELF fixture {}: {e}", spec.name));
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "compiling the ELF fixture {} failed ({}):\n{}{}",
            spec.name,
            cmd_line
                .trim_end()
                .replace("<out>", &tmp.display().to_string()),
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(&tmp, &out)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), out.display()));
    let tmp_cmd = dir.join(format!(".{}.{}.cmd.tmp", spec.name, std::process::id()));
    std::fs::write(&tmp_cmd, &cmd_line).expect("writing the fixture's .cmd");
    std::fs::rename(&tmp_cmd, &cmd_file).expect("renaming the fixture's .cmd");
    out
}

/// A defined symbol as `nm -S` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmSymbol {
    pub vaddr: u64,
    pub size: u64,
    /// `nm`'s type letter (`T` global text, `t` local text, ...).
    pub kind: char,
}

/// The defined symbols `nm -S` lists (with `dynamic`: `nm -D`, the
/// `.dynsym` table), by name (without symbol versions).
pub fn nm(path: &Path, dynamic: bool) -> HashMap<String, NmSymbol> {
    let mut cmd = Command::new("nm");
    cmd.args(["-S", "--defined-only"]);
    if dynamic {
        cmd.arg("-D");
    }
    let out = cmd
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .expect("running nm (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "nm: ...: no symbols" on a stripped file: an empty table.
    assert!(
        out.status.success() || text.is_empty(),
        "nm {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut syms = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // address size type name (symbols without a size have 3 fields).
        let (addr, size, kind, name) = match f[..] {
            [a, s, k, n] => (a, s, k, n),
            [a, k, n] => (a, "0", k, n),
            _ => continue,
        };
        let name = name.split('@').next().unwrap_or(name);
        syms.insert(
            name.to_string(),
            NmSymbol {
                vaddr: u64::from_str_radix(addr, 16).unwrap(),
                size: u64::from_str_radix(size, 16).unwrap(),
                kind: kind.chars().next().unwrap(),
            },
        );
    }
    syms
}

/// The file offset of `vaddr` through the section table (the section that
/// holds it, its `sh_offset`): a second way to the offsets the parser
/// computes through the program headers.
pub fn section_offset(path: &Path, vaddr: u64) -> u64 {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    elf.sections()
        .find_map(|s| {
            let (off, len) = s.file_range()?;
            (vaddr >= s.address() && vaddr - s.address() < len).then(|| vaddr - s.address() + off)
        })
        .unwrap_or_else(|| panic!("{vaddr:#x} is in no section of {}", path.display()))
}

/// File offset of the PLT stub `objdump -d` labels `<name@plt>`.
pub fn plt_stub(path: &Path, name: &str) -> u64 {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .expect("running objdump (binutils)");
    let label = format!(" <{name}@plt>:");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.ends_with(&label))
        .unwrap_or_else(|| panic!("no {name}@plt in {}", path.display()));
    let vaddr = u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap();
    section_offset(path, vaddr)
}
