//! A headless Chromium driven over the DevTools protocol, for the
//! dashboard's browser test. It speaks the protocol over
//! `--remote-debugging-pipe`: JSON messages, each ended by a NUL byte, that
//! the browser reads on its fd 3 and writes on its fd 4. That needs nothing
//! but `serde_json` and `libc`, which the crate already has, where a
//! DevTools or WebDriver crate would add 30 to 50 crates to every build.
//!
//! The browser gets a fresh profile, resolves no host name but 127.0.0.1
//! (so it reaches nothing beyond this machine's loopback) and runs in its own process
//! group, which is killed on drop. Every call is bounded by [`CALL`].

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest wait for one protocol call's answer.
pub const CALL: Duration = Duration::from_secs(20);

/// Largest protocol message read (a full-page screenshot is a few MB).
const MAX_MESSAGE: usize = 64 << 20;

/// Names the browser goes by on `PATH`, tried in order.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The browser to use: `ARGON_BROWSER` if set, else the first of [`NAMES`]
/// on `PATH`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ARGON_BROWSER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    NAMES.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A running headless browser with one page attached.
pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Result<Value, String>>,
    next_id: u64,
    session: String,
    log: PathBuf,
}

/// A pipe whose two ends close on exec: `(read, write)`.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts `exe` headless with its profile in `profile` (a folder the
    /// caller removes) and a `width` × `height` window, and attaches to a
    /// blank page.
    pub fn launch(exe: &Path, profile: &Path, width: u32, height: u32) -> Result<Browser, String> {
        use std::os::fd::AsRawFd;
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        std::fs::create_dir_all(profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        let log = profile.join("browser.log");
        let stderr = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            // Tests often run as root, where Chromium's sandbox refuses to start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-domain-reliability",
            "--no-pings",
            // Nothing resolves but the loopback address the tests use.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
        let (cr, ow) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close, prctl)
        // on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                // Copies above 10 first, so neither dup2 below can clobber
                // the other's source; dup2 leaves its target open on exec.
                let a = libc::fcntl(cr, libc::F_DUPFD, 10);
                let b = libc::fcntl(ow, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        drop((cmd_read, out_write));
        let from_browser = reader(File::from(out_read));
        let mut b = Browser {
            child,
            to_browser: File::from(cmd_write),
            from_browser,
            next_id: 0,
            session: String::new(),
            log,
        };
        let target = b.browser_call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].clone();
        let attached = b.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        b.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session in {attached}"))?
            .to_string();
        Ok(b)
    }

    /// What the browser printed on stderr, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn send(&mut self, method: &str, params: Value, page: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("JSON encodes");
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("{method}: the browser is gone ({e})"))?;
        let deadline = Instant::now() + CALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.from_browser.recv_timeout(left) {
                Ok(a) => a?,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer within {CALL:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: the browser closed its pipe"))
                }
            };
            // Answers to earlier calls that timed out are skipped.
            if answer["id"] != json!(id) {
                continue;
            }
            if let Some(e) = answer.get("error") {
                return Err(format!("{method}: {e}"));
            }
            return Ok(answer["result"].clone());
        }
    }

    /// A call to the browser itself.
    pub fn browser_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(method, params, false)
    }

    /// A call to the attached page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(method, params, true)
    }

    /// Sends `headers` with every request the page makes from now on.
    pub fn set_headers(&mut self, headers: Value) -> Result<(), String> {
        self.call("Network.enable", json!({}))?;
        self.call("Network.setExtraHTTPHeaders", json!({ "headers": headers }))?;
        Ok(())
    }

    /// Starts loading `url` in the page.
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let r = self.call("Page.navigate", json!({ "url": url }))?;
        match r.get("errorText") {
            Some(e) => Err(format!("loading {url}: {e}")),
            None => Ok(()),
        }
    }

    /// The value of the JavaScript expression `expr` in the page.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it is `true`, at most `limit`; fails the test
    /// after that with `what`, the last value of `show` and the browser's log.
    pub fn wait_for(&mut self, what: &str, expr: &str, show: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            // An error (e.g. the page is still loading) counts as not yet.
            if self.eval(expr) == Ok(json!(true)) {
                return;
            }
            if Instant::now() >= deadline {
                let shown = self.eval(show);
                panic!(
                    "timed out after {limit:?} waiting for {what} ({expr}); \
                     {show} = {shown:?}\n--- browser log\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page, `width` pixels wide.
    pub fn screenshot(&mut self, width: u32) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let height = self
            .eval("document.documentElement.scrollHeight")?
            .as_u64()
            .unwrap_or(900);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| e.to_string())
    }
}

/// Reads NUL-ended messages on a thread; passes on the answers (those with
/// an `id`) and drops the events, so only what was asked for is held.
fn reader(pipe: File) -> Receiver<Result<Value, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = match (&mut r)
                .take(MAX_MESSAGE as u64 + 1)
                .read_until(0, &mut buf)
            {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if n > MAX_MESSAGE {
                let _ = tx.send(Err(format!("a message over {MAX_MESSAGE} bytes")));
                return;
            }
            if buf.last() == Some(&0) {
                buf.pop();
            }
            let msg = match serde_json::from_slice::<Value>(&buf) {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.send(Err(format!("not JSON from the browser: {e}")));
                    return;
                }
            };
            if msg.get("id").is_some() && tx.send(Ok(msg)).is_err() {
                return;
            }
        }
    });
    rx
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.browser_call_quick("Browser.close");
        let pgid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The renderers and helpers share the group the browser leads.
        // SAFETY: a plain syscall on the group this object started.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Asks the browser to close, without waiting for the answer.
    fn browser_call_quick(&mut self, method: &str) -> std::io::Result<()> {
        self.next_id += 1;
        let msg = json!({"id": self.next_id, "method": method, "params": {}});
        let mut bytes = serde_json::to_vec(&msg).expect("JSON encodes");
        bytes.push(0);
        self.to_browser.write_all(&bytes)
    }
}
