//! Go executables: find `crypto/tls.(*Conn).Write` / `Read` (with symbols or
//! stripped, through `.gopclntab`), the Go version (build info), and every
//! RET instruction of those functions: Go stacks move, so returns are probed
//! at their RET instructions instead of with uretprobes.

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use super::elf::vaddr_to_offset;

/// Where to probe a Go program's TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoTls {
    pub version: String,
    pub write: u64,
    pub write_rets: Vec<u64>,
    pub read: u64,
    pub read_rets: Vec<u64>,
    pub handshake: Option<u64>,
    /// crypto/tls.(*Conn).serverHandshake: a server's connections.
    pub server_handshake: Option<u64>,
    pub close: Option<u64>,
}

/// Oldest Go with the register calling convention (ABIInternal on amd64).
pub const MIN_GO: (u32, u32) = (1, 17);

/// "go1.19.8" -> (1, 19)
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let v = v.strip_prefix("go")?;
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// File offsets of the RET instructions of the code `code` mapped at `va`
/// (file offset `off`).
pub fn ret_offsets(code: &[u8], va: u64, off: u64) -> Vec<u64> {
    let mut d = Decoder::with_ip(64, code, va, DecoderOptions::NONE);
    let mut out = Vec::new();
    for ins in &mut d {
        if ins.mnemonic() == Mnemonic::Ret {
            out.push(ins.ip() - va + off);
            if out.len() > super::budget::MAX_RETS {
                break;
            }
        }
    }
    out
}

/// The build-info magic every Go binary since 1.13 carries (`.go.buildinfo`).
pub const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// `Ok(None)`: not a Go program, or one without crypto/tls.
/// `Err(why)`: a Go TLS program that cannot be instrumented.
pub fn inspect_go(
    data: &[u8],
    segments: &[(u64, u64, u64)],
    shown: &Path,
) -> Result<Option<GoTls>, String> {
    // A cheap look first: the full parse costs ~0.25 s on a non-Go file.
    if memchr::memmem::find(data, BUILDINFO_MAGIC).is_none() {
        return Ok(None);
    }
    let Some(bin) = gobin::GoBinary::parse(data) else {
        return Ok(None);
    };
    let Some(text) = bin.text_va() else {
        return Ok(None);
    };
    let mut entries: Vec<(u64, &str)> = bin
        .functions()
        .filter_map(|f| Some((text.checked_add(u64::from(f.entry_offset))?, f.name)))
        .collect();
    entries.sort_by_key(|e| e.0);
    let find = |name: &str| -> Option<(u64, u64)> {
        let i = entries.iter().position(|e| e.1 == name)?;
        let start = entries[i].0;
        let end = entries
            .get(i + 1)
            .map(|e| e.0)
            .unwrap_or(start.saturating_add(4096));
        Some((start, end))
    };
    let (Some(w), Some(r)) = (
        find("crypto/tls.(*Conn).Write"),
        find("crypto/tls.(*Conn).Read"),
    ) else {
        return Ok(None);
    };
    let version = bin.go_version().unwrap_or("unknown").to_string();
    match parse_version(&version) {
        Some(v) if v >= MIN_GO => {}
        Some(_) => {
            return Err(format!(
                "{} is built with {version}, which passes arguments on the stack (Go before 1.17); \
                 only the register ABI is supported",
                shown.display()
            ))
        }
        None => {
            return Err(format!(
                "{}: unknown Go version {version:?}",
                shown.display()
            ))
        }
    }
    let to_off = |va: u64| vaddr_to_offset(segments, va);
    let code = |(start, end): (u64, u64)| -> Option<(u64, Vec<u64>)> {
        let off = to_off(start)?;
        let len = end.checked_sub(start)?.min(1 << 20) as usize;
        let bytes = data.get(off as usize..(off as usize).checked_add(len)?)?;
        Some((off, ret_offsets(bytes, start, off)))
    };
    let (Some((write, write_rets)), Some((read, read_rets))) = (code(w), code(r)) else {
        return Err(format!(
            "{}: crypto/tls code lies outside the file's segments",
            shown.display()
        ));
    };
    if write_rets.len() > super::budget::MAX_RETS || read_rets.len() > super::budget::MAX_RETS {
        return Err(format!(
            "{}: more than {} RET instructions in crypto/tls.(*Conn).Write/Read",
            shown.display(),
            super::budget::MAX_RETS
        ));
    }
    if write_rets.is_empty() || read_rets.is_empty() {
        return Err(format!(
            "{}: no RET instruction found in crypto/tls.(*Conn).Write/Read",
            shown.display()
        ));
    }
    Ok(Some(GoTls {
        version,
        write,
        write_rets,
        read,
        read_rets,
        handshake: find("crypto/tls.(*Conn).clientHandshake").and_then(|f| to_off(f.0)),
        server_handshake: find("crypto/tls.(*Conn).serverHandshake").and_then(|f| to_off(f.0)),
        close: find("crypto/tls.(*Conn).Close").and_then(|f| to_off(f.0)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_version("go1.23rc1"), Some((1, 23)));
        assert!(parse_version("go1.16.15").unwrap() < MIN_GO);
        assert_eq!(parse_version("devel"), None);
    }

    #[test]
    fn rets_are_found_by_decoding() {
        // push rbp; mov rbp,rsp; je +1; ret; pop rbp; ret; int3
        let code = [0x55, 0x48, 0x89, 0xe5, 0x74, 0x01, 0xc3, 0x5d, 0xc3, 0xcc];
        assert_eq!(ret_offsets(&code, 0x401000, 0x1000), vec![0x1006, 0x1008]);
        // a 0xc3 byte inside an immediate is not a RET: mov eax, 0xc3
        let code = [0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3];
        assert_eq!(ret_offsets(&code, 0x10, 0x10), vec![0x15]);
    }
}
