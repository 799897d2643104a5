//! A small blocking harness over headless Chromium (WebDriver through chromedriver,
//! the `fantoccini` crate) for tests of candlelight's pages.
//!
//! Include it in a test crate with
//! `#[path = "common/browser.rs"] mod browser;` and start one with
//! [`Browser::start_or_skip`]:
//!
//! ```ignore
//! let Some(b) = browser::Browser::start_or_skip() else { return }; // printed why
//! b.goto_file(&out.join("index.html"));
//! let n = b.eval("return document.images.length");
//! b.click(".card img.layer-pic");
//! b.move_to(".card img.layer-pic", 10.0, 12.0); // from the element's top-left corner
//! b.screenshot(&dir.join("page.png"));
//! ```
//!
//! Chromium: `CANDLELIGHT_CHROMIUM` or `chromium` / `chromium-browser` on the PATH;
//! chromedriver: `CANDLELIGHT_CHROMEDRIVER` or `chromedriver` on the PATH. When one
//! is missing the test prints the reason and skips, unless
//! `CANDLELIGHT_REQUIRE_BROWSER=1`, then it fails. The session runs headless
//! (`--headless=new --no-sandbox`, so it works as root in CI) in a 700 px wide
//! viewport ([`Browser::WIDTH`]) with its own temporary profile; dropping the
//! `Browser` ends the session and the chromedriver it started.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

/// A headless Chromium session, driven synchronously.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// The first of `candidates` that runs with `--version`.
fn find_tool(var: &str, candidates: &[&str]) -> Result<PathBuf, String> {
    let list: Vec<String> = match std::env::var(var) {
        Ok(v) => vec![v],
        Err(_) => candidates.iter().map(|s| s.to_string()).collect(),
    };
    for c in &list {
        let ok = Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(on_path(c));
        }
    }
    Err(format!("none of {} runs (set {var})", list.join(", ")))
}

/// `name` as an absolute path when it is found on the PATH (chromedriver needs one).
fn on_path(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

impl Browser {
    /// Viewport width of every session, in CSS pixels.
    pub const WIDTH: u32 = 700;
    /// Initial viewport height.
    pub const HEIGHT: u32 = 900;

    /// A session, or `None` after printing why there is none (no Chromium or no
    /// chromedriver). Panics instead when `CANDLELIGHT_REQUIRE_BROWSER=1`, or when
    /// both are there but the session cannot start.
    pub fn start_or_skip() -> Option<Browser> {
        let tools = find_tool("CANDLELIGHT_CHROMIUM", &["chromium", "chromium-browser"])
            .and_then(|c| Ok((c, find_tool("CANDLELIGHT_CHROMEDRIVER", &["chromedriver"])?)));
        match tools {
            Ok((chromium, driver)) => Some(Browser::start(&chromium, &driver)),
            Err(why) => {
                if std::env::var("CANDLELIGHT_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                    panic!("no browser: {why}, and CANDLELIGHT_REQUIRE_BROWSER=1");
                }
                eprintln!("skipped: no browser: {why}");
                None
            }
        }
    }

    /// Starts `driver` on a free local port and a headless session of `chromium`.
    pub fn start(chromium: &Path, driver: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut b = Browser {
            rt,
            client: None,
            driver,
            _profile: profile,
        };
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={},{}", Self::WIDTH, Self::HEIGHT),
                    format!("--user-data-dir={}", b._profile.path().display()),
                ]
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = b.rt.block_on(async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url)
                .await
        });
        b.client = Some(client.unwrap_or_else(|e| panic!("no browser session: {e}")));
        b.fit_viewport();
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session")
    }

    /// Makes the viewport exactly [`Self::WIDTH`] wide (window borders differ).
    fn fit_viewport(&self) {
        let _ = self
            .rt
            .block_on(self.c().set_window_size(Self::WIDTH, Self::HEIGHT));
        let inner = self.eval("return window.innerWidth").as_u64().unwrap_or(0) as u32;
        if inner != Self::WIDTH && inner > 0 {
            let w = Self::WIDTH + (Self::WIDTH - inner.min(Self::WIDTH));
            let _ = self.rt.block_on(self.c().set_window_size(w, Self::HEIGHT));
        }
    }

    /// Opens `url` and waits for its `load` event.
    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Opens a file as a `file://` URL.
    pub fn goto_file(&self, path: &Path) {
        let abs = std::fs::canonicalize(path).expect("page path");
        self.goto(&format!("file://{}", abs.display()));
    }

    /// Runs `js` as the body of a function (use `return`) and gives its result.
    pub fn eval(&self, js: &str) -> Value {
        self.rt
            .block_on(self.c().execute(js, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{js}"))
    }

    /// Polls `js` (a function body returning a boolean) until true; panics after `secs`.
    pub fn wait_until(&self, js: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.eval(js) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "still false after {secs} s: {js}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the first element matching the CSS selector (scrolled into view).
    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            e.click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        });
    }

    /// Moves the pointer to (`x`, `y`) CSS pixels from the top-left corner of the
    /// first element matching `css`, after scrolling it into view.
    pub fn move_to(&self, css: &str, x: f64, y: f64) {
        let sel = serde_json::to_string(css).expect("selector");
        let r = self.eval(&format!(
            "const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}});
             const r = e.getBoundingClientRect(); return [r.left, r.top];"
        ));
        let (left, top) = (r[0].as_f64().expect("left"), r[1].as_f64().expect("top"));
        let moves = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
            duration: None,
            x: (left + x).round(),
            y: (top + y).round(),
        });
        self.rt
            .block_on(self.c().perform_actions(moves))
            .unwrap_or_else(|e| panic!("move to {css}: {e}"));
    }

    /// Clicks (left button) at (`x`, `y`) CSS pixels from the top-left corner of the
    /// first element matching `css`, after scrolling it into view.
    pub fn click_at(&self, css: &str, x: f64, y: f64) {
        self.move_to(css, x, y);
        let press = MouseActions::new("mouse".into())
            .then(PointerAction::Down {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            });
        self.rt
            .block_on(self.c().perform_actions(press))
            .unwrap_or_else(|e| panic!("click in {css}: {e}"));
    }

    /// Presses a key (a WebDriver key code such as `"\u{E00C}"` for Escape).
    pub fn key(&self, key: &str) {
        self.rt.block_on(async {
            let body = self.c().find(Locator::Css("body")).await.expect("body");
            body.send_keys(key).await.expect("send keys");
        });
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self.c().find(Locator::Css(css)).await.expect("element");
            e.send_keys(text).await.expect("send keys");
        });
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .rt
            .block_on(self.c().screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Resizes the viewport height (the width stays [`Self::WIDTH`]) — for a taller
    /// screenshot.
    pub fn set_height(&self, h: u32) {
        let inner = self.eval("return window.innerWidth").as_u64().unwrap_or(0) as u32;
        let outer = self.eval("return window.outerWidth").as_u64().unwrap_or(0) as u32;
        let _ = self.rt.block_on(
            self.c()
                .set_window_size(outer.max(inner).max(Self::WIDTH), h),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
