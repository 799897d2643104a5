//! An S3-compatible server on 127.0.0.1 for the object-storage tests: moto's
//! server mode (`moto_server`, from PyPI `moto[server]`). Found as
//! `$CANDLELIGHT_MOTO_SERVER`, next to `$CANDLELIGHT_PYTHON`, or on the PATH; when
//! there is none the tests skip with the reason, unless `CANDLELIGHT_REQUIRE_S3=1`
//! (CI), where that is a failure.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    pub child: Child,
    pub port: u16,
    program: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `moto_server` program, or why there is none.
pub fn moto_program() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("CANDLELIGHT_MOTO_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(py) = std::env::var("CANDLELIGHT_PYTHON") {
        if let Some(dir) = PathBuf::from(py).parent() {
            candidates.push(dir.join("moto_server"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("moto_server")));
    }
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(p) => Ok(p),
        None => {
            let why = "no moto_server (pip install 'moto[server]', or set CANDLELIGHT_MOTO_SERVER)";
            if std::env::var("CANDLELIGHT_REQUIRE_S3").is_ok_and(|v| v == "1") {
                panic!("{why}, and CANDLELIGHT_REQUIRE_S3=1");
            }
            Err(why.to_string())
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts a server on a free port (with `env` for the server process).
    pub fn start(env: &[(&str, &str)]) -> Result<Moto, String> {
        let program = moto_program()?;
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = free_port();
        let child = spawn(&program, port, &extra_env)?;
        let m = Moto {
            child,
            port,
            program,
            extra_env,
        };
        m.wait_ready()?;
        Ok(m)
    }

    /// Kills the server (its data is lost: moto keeps everything in memory).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.program, self.port, &self.extra_env).unwrap();
        self.wait_ready().unwrap();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            // Any answer will do (a server that checks credentials says 403).
            match ureq::get(&self.endpoint()).call() {
                Ok(_) | Err(ureq::Error::StatusCode(_)) => return Ok(()),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("moto_server on port {} did not start", self.port))
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        ureq::put(&format!("{}/{name}", self.endpoint()))
            .send_empty()
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
    }

    /// The environment a client needs (object_store reads `AWS_*`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("CANDLELIGHT_RETRY_TIMEOUT", "5".into()),
        ]
    }

    /// `candlelight <args>` talking to this server (its credentials and endpoint),
    /// logging at `info`.
    pub fn candlelight<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_candlelight"));
        c.args(args).envs(self.env()).env("RUST_LOG", "info");
        c
    }

    /// `candlelight watch s3://<bucket>/runs --out s3://<bucket>/galleries -j 2
    /// <more>`, stdout dropped, stderr (the log) into `log`, started.
    pub fn watch_daemon(
        &self,
        bucket: &str,
        more: &[&str],
        log: &std::path::Path,
    ) -> std::process::Child {
        let (runs, out) = (
            format!("s3://{bucket}/runs"),
            format!("s3://{bucket}/galleries"),
        );
        let mut args = vec!["watch", &runs, "--out", &out, "-j", "2"];
        args.extend(more);
        let scratch = log.parent().expect("the log lies in the test's folder");
        self.candlelight(&args)
            // The daemon's scratch folder goes with the test's, even when the
            // test kills it (a killed daemon cannot remove its own).
            .env("TMPDIR", scratch)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("create the daemon's log"))
            .spawn()
            .expect("start candlelight watch")
    }

    /// Keys under `prefix` in `bucket` (a plain ListObjectsV2, not through candlelight).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint());
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            // moto answers 500 now and then when a listing meets concurrent
            // writes: retried, as clients do.
            let mut tries = 0;
            let body = loop {
                match ureq::get(&url).call() {
                    Ok(r) => break r.into_body().read_to_string().unwrap(),
                    Err(ureq::Error::StatusCode(500..=599)) if tries < 10 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("list {bucket}/{prefix}: {e}"),
                }
            };
            for part in body.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap().to_string());
            }
            token = body
                .split("<NextContinuationToken>")
                .nth(1)
                .map(|s| s.split('<').next().unwrap().to_string());
            if token.is_none() {
                return keys;
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn spawn(program: &PathBuf, port: u16, env: &[(String, String)]) -> Result<Child, String> {
    Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// The one server of this test binary, with this process's `AWS_*` pointing at
/// it (the library builds its S3 client from the environment once per bucket, so
/// every in-process test shares one server; each uses its own bucket).
pub fn shared() -> Option<&'static Moto> {
    static SERVER: OnceLock<Result<Moto, String>> = OnceLock::new();
    let m = SERVER.get_or_init(|| {
        let m = Moto::start(&[])?;
        for (k, v) in m.env() {
            std::env::set_var(k, v);
        }
        Ok(m)
    });
    match m {
        Ok(m) => Some(m),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}
