//! Compiles the BPF programs in `bpf/` and generates their libbpf-rs skeletons.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["discover", "openssl", "statictls", "probe", "hellotest"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // libbpf's own headers (bpf_helpers.h, ...), from the libbpf-sys build.
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its include dir");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([
                "-I",
                "bpf",
                "-I",
                libbpf_include.as_str(),
                "-Wall",
                "-Wno-unused-function",
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    // Any header of the BPF programs.
    println!("cargo:rerun-if-changed=bpf");
}
