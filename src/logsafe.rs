//! Logging what peers say without letting them write the log: [`escaped`]
//! shows a peer-supplied string (or anything whose `Display` carries one) on
//! one line and at bounded length, and [`RateLimit`] lets one warning of a
//! kind through per window and counts the rest, so a flood of bad
//! connections costs a few lines.
//!
//! Neither allocates: `escaped` writes through to the formatter, and a
//! suppressed warning is a lock and a clock read. The [`log_limited!`]
//! macro formats nothing for a warning it suppresses.
//!
//! [`log_limited!`]: crate::log_limited

use std::fmt::{self, Display, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of a peer-supplied string shown in a log line; the rest is
/// replaced by a marker saying how many bytes were cut.
pub const MAX_LOGGED_CHARS: usize = 200;

/// Window of the per-kind warning limits: one line per kind per window.
pub const WARN_WINDOW: Duration = Duration::from_secs(10);

/// `value`'s text with control and invisible characters escaped (`\n`,
/// `\r`, `\u{202e}`, ...; a backslash doubled) and cut to
/// [`MAX_LOGGED_CHARS`] characters: safe to put in a log line whatever a
/// peer sent. Works on `&str`, `String` and any `Display` (an error whose
/// message quotes peer input).
pub fn escaped<T: Display>(value: T) -> Escaped<T> {
    Escaped {
        value,
        max_chars: MAX_LOGGED_CHARS,
    }
}

/// A value shown escaped and cut; see [`escaped`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T> {
    value: T,
    max_chars: usize,
}

impl<T> Escaped<T> {
    /// Shows at most `n` characters instead of [`MAX_LOGGED_CHARS`].
    pub fn max_chars(mut self, n: usize) -> Escaped<T> {
        self.max_chars = n;
        self
    }
}

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut w = EscapingWriter {
            out: f,
            left: self.max_chars,
            cut_bytes: 0,
        };
        write!(w, "{}", self.value)?;
        let cut = w.cut_bytes;
        if cut > 0 {
            write!(f, "…[{cut} bytes cut]")?;
        }
        Ok(())
    }
}

struct EscapingWriter<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    left: usize,
    cut_bytes: usize,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.left == 0 {
            self.cut_bytes += s.len();
            return Ok(());
        }
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            if self.left == 0 {
                self.out.write_str(&s[plain..i])?;
                self.cut_bytes += s.len() - i;
                return Ok(());
            }
            self.left -= 1;
            if !is_safe(c) {
                self.out.write_str(&s[plain..i])?;
                match c {
                    '\\' => self.out.write_str("\\\\")?,
                    _ => write!(self.out, "{}", c.escape_debug())?,
                }
                plain = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[plain..])
    }
}

/// Whether `c` may appear as itself in a log line. Quotes are fine; a
/// backslash is doubled so an escape in the output always came from us.
fn is_safe(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, ' '..='~') && c != '\\';
    }
    // `escape_debug` leaves printable characters alone and escapes the
    // rest (controls, format characters such as bidi overrides, unassigned).
    let mut e = c.escape_debug();
    e.next() == Some(c) && e.next().is_none()
}

/// Lets the first warning of a kind through, then counts the others for
/// [`WARN_WINDOW`] (or the window given); the next one let through after
/// the window carries the count ("… 312 more in the last 10 s").
///
/// Meant as a `static` per kind of warning, shared by every connection:
/// `static BAD_KEY: RateLimit = RateLimit::new(WARN_WINDOW);`. Count that
/// nobody reports again is lost: the count shows only on the next line.
#[derive(Debug)]
pub struct RateLimit {
    window: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    last_shown: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of one line per `window`.
    pub const fn new(window: Duration) -> RateLimit {
        RateLimit {
            window,
            state: Mutex::new(LimitState {
                last_shown: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether an occurrence now is to be logged: `Some` with what to
    /// append to the line, `None` when it is only counted.
    pub fn admit(&self) -> Option<Suppressed> {
        self.admit_at(Instant::now())
    }

    /// [`RateLimit::admit`] at the time `now` (for tests).
    pub fn admit_at(&self, now: Instant) -> Option<Suppressed> {
        // A poisoned lock only means a panic elsewhere; the counts are plain numbers.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = match s.last_shown {
            Some(last) if now.saturating_duration_since(last) < self.window => {
                s.suppressed = s.suppressed.saturating_add(1);
                return None;
            }
            Some(last) => now.saturating_duration_since(last),
            None => Duration::ZERO,
        };
        let count = std::mem::take(&mut s.suppressed);
        s.last_shown = Some(now);
        Some(Suppressed { count, since })
    }
}

/// What a rate limit held back since the line before: shown as
/// ` (… N more in the last S s)`, or nothing when there were none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Occurrences not logged.
    pub count: u64,
    /// Time since the last line of this kind was logged.
    pub since: Duration,
}

impl Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        write!(
            f,
            " (… {} more in the last {} s)",
            self.count,
            self.since.as_secs().max(1)
        )
    }
}

#[doc(hidden)]
pub use log as __log;

/// `log_limited!(LIMIT, Level::Warn, "format", args...)`: logs the line
/// (with what `LIMIT`, a [`RateLimit`](crate::logsafe::RateLimit), held
/// back since the last one) only if the limit lets it through. Nothing is
/// formatted otherwise.
#[macro_export]
macro_rules! log_limited {
    ($limit:expr, $level:expr, $($arg:tt)+) => {
        if $crate::logsafe::__log::log_enabled!($level) {
            if let Some(more) = $limit.admit() {
                $crate::logsafe::__log::log!($level, "{}{}", format_args!($($arg)+), more);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show<T: Display>(v: Escaped<T>) -> String {
        v.to_string()
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            show(escaped("evil\nINJECTED\r\t\u{1b}[31m")),
            "evil\\nINJECTED\\r\\t\\u{1b}[31m"
        );
        assert_eq!(
            show(escaped("a \"quoted\" 'name' é ü 日本")),
            "a \"quoted\" 'name' é ü 日本"
        );
        assert_eq!(show(escaped("back\\slash")), "back\\\\slash");
        assert_eq!(show(escaped("bidi \u{202e}txt")), "bidi \\u{202e}txt");
        assert_eq!(show(escaped("nul\0")), "nul\\0");
        assert!(!show(escaped("\u{85}\u{2028}\u{7f}")).contains(['\u{85}', '\u{2028}', '\u{7f}']));
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let long = "x".repeat(1000);
        let shown = show(escaped(&long));
        assert_eq!(shown, format!("{}…[800 bytes cut]", "x".repeat(200)));
        // Counted in characters, cut in bytes.
        let shown = show(escaped("é".repeat(300)).max_chars(10));
        assert_eq!(shown, format!("{}…[580 bytes cut]", "é".repeat(10)));
        assert_eq!(show(escaped("exactly").max_chars(7)), "exactly");
        // An escape counts as one character.
        assert_eq!(show(escaped("\n\n\n").max_chars(2)), "\\n\\n…[1 bytes cut]");
    }

    #[test]
    fn any_display_is_escaped_across_its_pieces() {
        let e = std::io::Error::other("line one\nline two");
        assert_eq!(show(escaped(&e)), "line one\\nline two");
        let shown = show(escaped(format_args!("{}{}", "a\n", "b".repeat(5))).max_chars(4));
        assert_eq!(shown, "a\\nbb…[3 bytes cut]");
    }

    #[test]
    fn rate_limit_lets_one_through_per_window_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let first = limit.admit_at(at(0)).expect("the first is logged");
        assert_eq!(first.to_string(), "");
        for ms in [1, 500, 9_999] {
            assert_eq!(limit.admit_at(at(ms)), None, "at {ms} ms");
        }
        let next = limit.admit_at(at(10_000)).expect("after the window");
        assert_eq!(
            next,
            Suppressed {
                count: 3,
                since: Duration::from_secs(10)
            }
        );
        assert_eq!(next.to_string(), " (… 3 more in the last 10 s)");
        // The window restarts from the line just logged.
        assert_eq!(limit.admit_at(at(19_999)), None);
        let later = limit.admit_at(at(80_000)).expect("long after");
        assert_eq!(later.to_string(), " (… 1 more in the last 70 s)");
        assert_eq!(limit.admit_at(at(90_000)).map(|s| s.count), Some(0));
    }

    #[test]
    fn a_clock_going_backwards_is_within_the_window() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(60);
        assert!(limit.admit_at(t0).is_some());
        assert_eq!(limit.admit_at(t0 - Duration::from_secs(30)), None);
    }
}
