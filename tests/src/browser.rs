//! A real headless browser for the tests: Debian `chromium`, driven through `chromedriver`
//! (W3C WebDriver over HTTP/JSON on a loopback port, spoken here directly: no extra packages).
//!
//! The browser trusts exactly the CAs it is given, in an NSS database of its own (`certutil`,
//! Debian `libnss3-tools`, under a private `HOME`): certificates are verified as for any user,
//! never ignored. Chromium runs as root in the tests, which its sandbox refuses: it gets
//! `--no-sandbox` here and only here (a test browser visiting the test's own loopback pages).

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _home: tempfile::TempDir,
    log: std::path::PathBuf,
}

/// An element on the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Start chromedriver and a headless Chromium trusting `cas` (PEM files).
    pub fn start(cas: &[&Path]) -> Self {
        let home = tempfile::Builder::new()
            .prefix("gw-browser-")
            .tempdir()
            .unwrap();
        let nssdb = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        let out = Command::new("certutil")
            .args(["-N", "-d", &db, "--empty-password"])
            .output()
            .expect("certutil (Debian libnss3-tools) is needed for the browser tests");
        assert!(out.status.success(), "certutil -N: {out:?}");
        for (i, ca) in cas.iter().enumerate() {
            let out = Command::new("certutil")
                .args([
                    "-A",
                    "-d",
                    &db,
                    "-t",
                    "C,,",
                    "-n",
                    &format!("test-ca-{i}"),
                    "-i",
                ])
                .arg(ca)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "certutil -A {}: {out:?}",
                ca.display()
            );
        }
        let port = crate::free_port("127.0.0.1");
        let log = home.path().join("chromedriver.log");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver) is needed for the browser tests");
        let mut b = Self {
            driver,
            port,
            session: String::new(),
            _home: home,
            log,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while b.raw("GET", "/status", None).is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = b._home.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // Root in the test: Chromium's sandbox refuses to run as root.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver HTTP exchange: (status, JSON body).
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(90)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        // Read the head, then exactly Content-Length bytes (chromedriver may keep the
        // connection open whatever the request says).
        let mut r = std::io::BufReader::new(s);
        let mut status = 0;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("truncated WebDriver answer"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            } else if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self
            .raw(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert!(
            status == 200,
            "WebDriver {method} {path}: {status} {v}\n{}",
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current page's HTML.
    pub fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered text of the page body.
    pub fn body_text(&self) -> String {
        match self.find("body") {
            Some(b) => self.text(&b),
            None => String::new(),
        }
    }

    pub fn find(&self, css: &str) -> Option<Element> {
        let (status, v) = self
            .raw(
                "POST",
                &self.s("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        (status == 200).then(|| Element(v["value"][ELEMENT].as_str().unwrap_or("").to_string()))
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| Element(e[ELEMENT].as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The element matching `css` within `parent`.
    pub fn find_in(&self, parent: &Element, css: &str) -> Option<Element> {
        let (status, v) = self
            .raw(
                "POST",
                &self.s(&format!("/element/{}/element", parent.0)),
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        (status == 200).then(|| Element(v["value"][ELEMENT].as_str().unwrap_or("").to_string()))
    }

    /// Wait up to `timeout` for an element matching `css`; panics with the page otherwise.
    pub fn wait(&self, css: &str, timeout: Duration) -> Element {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < end,
                "no `{css}` on {} after {timeout:?}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn click(&self, e: &Element) {
        self.call(
            "POST",
            &self.s(&format!("/element/{}/click", e.0)),
            Some(json!({})),
        );
    }

    pub fn type_text(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{}/value", e.0)),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &self.s(&format!("/element/{}/text", e.0)), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.s(&format!("/element/{}/attribute/{name}", e.0)),
            None,
        )
        .as_str()
        .map(String::from)
    }

    /// Every cookie the browser holds for the current page (HttpOnly ones too).
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", &self.s("/cookie"), None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Run a script in the page. The approval page's policy forbids page scripts; WebDriver's
    /// are the driver's own (used only to read what the page cannot hide from its user).
    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": js, "args": []})),
        )
    }
}

impl Browser {
    /// [`Browser::script`], or `None` when the driver refused it (e.g. the page navigated
    /// away while it ran).
    pub fn try_script(&self, js: &str) -> Option<Value> {
        let (status, v) = self
            .raw(
                "POST",
                &self.s("/execute/sync"),
                Some(json!({"script": js, "args": []})),
            )
            .ok()?;
        (status == 200).then(|| v["value"].clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
