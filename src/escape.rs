//! Text from the captured processes, made safe for a terminal.
//!
//! Process names, server names, paths, methods, header names and values and
//! bodies all come from the processes on the host, any of which may be
//! hostile: written as is, an `ESC [ 2 J` in a header value clears the
//! screen of whoever reads the console, an `ESC ] 0 ;` retitles the
//! window, a bare `\r` or a right-to-left override makes one line look like
//! another. Everything shown on the console goes through [`terminal`] (or
//! [`terminal_bytes`], [`terminal_path`]; bodies through `text`):
//!
//! - C0 controls and DEL as `\n`, `\r`, `\t` or `\xNN` (`\x1b`, `\x07`,
//!   `\x7f`);
//! - C1 controls (U+0080..U+009F; U+009B is a CSI on some terminals), the
//!   bidirectional formatting characters (U+061C, U+200E, U+200F,
//!   U+202A..U+202E, U+2066..U+2069) and the line and paragraph separators
//!   (U+2028, U+2029) as `\u{9b}`, `\u{202e}`, ...;
//! - bytes that are not UTF-8 as `\xNN` ([`terminal_bytes`]);
//! - everything else, printable UTF-8 included, as is.
//!
//! The escapes are for reading, not for decoding: a backslash is shown as
//! is, so a name that is literally `\x1b` looks like an escaped ESC (a
//! reader wanting every byte exactly uses `--output json`).
//!
//! JSON lines ([`JsonSafe`]) carry those characters as `\u` escapes: the
//! same strings for a JSON parser, nothing for a terminal to act on.
//! The agent's own log lines can go through [`log_format`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// Whether `c` must not reach a terminal as is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Appends the escape of `c` (a character [`unsafe_char`] refuses).
fn push_escape(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every character that `keep` does not accept (at its index)
/// escaped; borrowed when there is none.
fn escape_with(s: &str, keep: impl Fn(&str, usize, char) -> bool) -> Cow<'_, str> {
    let first = s
        .char_indices()
        .find(|&(i, c)| unsafe_char(c) && !keep(s, i, c));
    let Some((start, _)) = first else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..start]);
    for (i, c) in s[start..].char_indices() {
        if unsafe_char(c) && !keep(s, start + i, c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A one-line field (a process or server name, a method, a path, a header
/// name or value, a log message) for the terminal: every control and
/// formatting character escaped, line breaks and tabs too.
pub fn terminal(s: &str) -> Cow<'_, str> {
    escape_with(s, |_, _, _| false)
}

/// Bytes that should be text (a header value, a path): [`terminal`], and
/// each byte that is not part of valid UTF-8 as `\xNN`.
pub fn terminal_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return terminal(s);
    }
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        out.push_str(&terminal(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path for the terminal (and for error messages): [`terminal_bytes`] of
/// its bytes.
pub fn terminal_path(p: &Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    terminal_bytes(p.as_os_str().as_bytes())
}

/// Text shown as lines (a body, raw plaintext): as [`terminal`], but line
/// breaks stay line breaks: `\n`, a `\r` right before one, and tabs are
/// kept; a `\r` anywhere else (it would move the cursor back over the
/// line) is escaped.
pub fn text(s: &str) -> Cow<'_, str> {
    escape_with(s, |s, i, c| match c {
        '\n' | '\t' => true,
        '\r' => s.as_bytes().get(i + 1) == Some(&b'\n'),
        _ => false,
    })
}

/// A `serde_json` formatter that writes, on top of the escapes JSON
/// requires, `\uXXXX` for DEL, the C1 controls, the bidirectional
/// formatting characters and the line and paragraph separators: the same
/// strings for any JSON parser, nothing a terminal acts on.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSafe;

impl serde_json::ser::Formatter for JsonSafe {
    fn write_string_fragment<W>(&mut self, w: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // Fast path: every character `unsafe_char` refuses that serde does
        // not escape itself starts with one of these bytes (DEL; C1 controls
        // C2 80-9F; U+061C D8 9C; the U+20xx marks E2 ..).
        let bytes = fragment.as_bytes();
        if memchr::memchr3(0x7f, 0xc2, 0xe2, bytes).is_none()
            && memchr::memchr(0xd8, bytes).is_none()
        {
            return w.write_all(bytes);
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if unsafe_char(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// A format for `env_logger` (`Builder::format(log_format)`): the default
/// one (`[time LEVEL] message`, colours where the terminal has them) with
/// the message passed through [`text`], since log lines quote process
/// names, paths and errors about files of the captured processes. A
/// message of several lines (a BPF verifier log) keeps them, indented by
/// four spaces: no line of a message can pass for a log line of its own.
pub fn log_format(buf: &mut env_logger::fmt::Formatter, r: &log::Record<'_>) -> io::Result<()> {
    use env_logger::fmt::style::{AnsiColor, Style};
    use io::Write as _;
    let level = buf.default_level_style(r.level());
    // The level style is plain exactly when colours are off.
    let subtle = if level == Style::new() {
        Style::new()
    } else {
        AnsiColor::BrightBlack.on_default()
    };
    let message = r.args().to_string();
    let message = text(&message).replace('\n', "\n    ");
    writeln!(
        buf,
        "{subtle}[{subtle:#}{} {level}{:<5}{level:#}{subtle}]{subtle:#} {message}",
        buf.timestamp(),
        r.level(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escapes of each kind of field, exactly.
    #[test]
    fn fields_are_escaped() {
        // a process name that would turn the terminal red
        assert_eq!(terminal("\x1b[31mcurl"), r"\x1b[31mcurl");
        // a server name with a line break (a forged second line)
        assert_eq!(
            terminal("api.acme.com\r\n2026-01-01 fake"),
            r"api.acme.com\r\n2026-01-01 fake"
        );
        // a header value with BEL, a C1 CSI (U+009B) and a raw 0x9b byte
        assert_eq!(
            terminal_bytes(b"a\x07b\xc2\x9b2J c\x9b2J"),
            r"a\x07b\u{9b}2J c\x9b2J"
        );
        // a path that is not UTF-8, with a tab and DEL
        assert_eq!(
            terminal_path(Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                    b"/tmp/\xff\xfelib\tssl\x7f.so"
                )
            )),
            r"/tmp/\xff\xfelib\tssl\x7f.so"
        );
        // bidirectional overrides and isolates, separators
        assert_eq!(
            terminal("user\u{202e}gpj.exe\u{2066}\u{2028}"),
            r"user\u{202e}gpj.exe\u{2066}\u{2028}"
        );
        // a NUL
        assert_eq!(terminal("a\0b"), r"a\x00b");
    }

    /// Printable text, in any script, is left alone (and not copied).
    #[test]
    fn printable_text_is_kept() {
        for s in [
            "GET",
            "/v1/items?id=7&q=a%20b",
            "Ünïcødé 日本語 ✓ 🦀",
            r"C:\dir",
            "",
        ] {
            assert!(matches!(terminal(s), Cow::Borrowed(x) if x == s), "{s}");
            assert!(matches!(text(s), Cow::Borrowed(x) if x == s), "{s}");
        }
        assert_eq!(terminal_bytes("é".as_bytes()), "é");
    }

    /// Bodies keep their lines and tabs; a bare `\r` and the rest are
    /// escaped.
    #[test]
    fn text_keeps_line_breaks() {
        assert_eq!(text("a\r\nb\n\tc"), "a\r\nb\n\tc");
        assert_eq!(text("innocent\rEVIL\n"), "innocent\\rEVIL\n");
        assert_eq!(text("end\r"), "end\\r");
        assert_eq!(text("x\x1b[2Jy\u{9b}"), r"x\x1b[2Jy\u{9b}");
    }

    fn json(v: &impl serde::Serialize) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, JsonSafe);
        v.serialize(&mut ser).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// JSON: serde_json escapes C0 controls itself; DEL, C1 and the bidi
    /// characters are escaped too, and the strings read back the same.
    #[test]
    fn json_is_terminal_safe() {
        let s = "a\x1b[31m\x07\x7f\u{9b}\u{202e}é\"\\\n";
        let j = json(&s);
        assert_eq!(j, r#""a\u001b[31m\u0007\u007f\u009b\u202eé\"\\\n""#);
        assert!(j.chars().all(|c| !unsafe_char(c)));
        let back: String = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        // plain strings come out as serde_json writes them
        let plain = ("GET", "/a?b=c", 7, "日本");
        assert_eq!(json(&plain), serde_json::to_string(&plain).unwrap());
    }

    /// A shared buffer for the logger's output.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Log lines: the default layout, the message escaped, its further
    /// lines indented.
    #[test]
    fn log_lines_are_escaped() {
        use log::Log;
        let buf = Buf::default();
        let logger = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Info)
            .write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(buf.clone())))
            .format(log_format)
            .build();
        let comm = "\x1b]0;owned\x07curl\n[2026-01-01T00:00:00Z INFO ] forged";
        logger.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("instrumented /tmp/a\rb by {comm}[7]"))
                .build(),
        );
        logger.flush();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let (time, rest) = out.strip_prefix('[').unwrap().split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{out}");
        assert_eq!(
            rest,
            "WARN ] instrumented /tmp/a\\rb by \\x1b]0;owned\\x07curl\n    [2026-01-01T00:00:00Z INFO ] forged[7]\n"
        );
    }
}
