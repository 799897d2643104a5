//! `candlelight serve` through the real binary: static files and refusals, pictures
//! on demand, comparing two runs, the live index with `--watch`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::gallery::{render_gallery, write_index, GalleryOptions};
use candlelight::render::{self, Colormap, RenderOptions, Scale};
use candlelight::Run;

mod common;
#[path = "common/serve.rs"]
mod serve_proc;
use common::daemon::{put, run_bytes, DEADLINE};

/// A running `candlelight serve`; killed when dropped.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let (child, addr) = serve_proc::spawn(env!("CARGO_BIN_EXE_candlelight"), root, extra);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Server { child, addr, agent }
    }

    /// Status, content type and body of `GET path`.
    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut r = self
            .agent
            .get(format!("http://{}{path}", self.addr))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let loc = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        let ct = if let Some(l) = loc {
            format!("{ct}|location={l}")
        } else {
            ct
        };
        (r.status().as_u16(), ct, body)
    }

    fn text(&self, path: &str) -> (u16, String) {
        let (code, _, body) = self.get(path);
        (code, String::from_utf8(body).unwrap())
    }

    /// The status of a request sent as these exact bytes (no client normalizing it).
    fn raw(&self, target: &str) -> u16 {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        // Not a timed assertion: a guard against a hang on a FIFO.
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let status = reply.split_whitespace().nth(1).unwrap_or("");
        status
            .parse()
            .unwrap_or_else(|_| panic!("{target}: reply {reply:?}"))
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run of 4 samples: a conv-like layer, a token layer, a vector.
fn make_run(seed: f64) -> Run {
    let t = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f64 * 0.37 + seed).sin() * 3.0) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    Run::from_named_tensors(
        "servetest",
        [
            ("conv".to_string(), t(&[4, 3, 8, 8])),
            ("tokens".to_string(), t(&[4, 5, 16])),
            ("logits".to_string(), t(&[4, 10])),
        ],
    )
}

/// `dir/runs/<stem>.safetensors` for each stem, rendered into `dir/galleries`.
fn root_with(dir: &Path, stems: &[&str]) -> PathBuf {
    let runs = dir.join("runs");
    let out = dir.join("galleries");
    std::fs::create_dir_all(&runs).unwrap();
    for (i, stem) in stems.iter().enumerate() {
        let path = put(&runs, stem, &run_bytes(&make_run(i as f64)));
        render_gallery(&path, &out, &GalleryOptions::default()).unwrap();
    }
    write_index(&out).unwrap();
    out
}

#[test]
fn serves_the_root_and_refuses_everything_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with(dir.path(), &["alpha", "beta"]);
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::fs::write(root.join(".hidden"), "hidden").unwrap();
    std::fs::create_dir(root.join("plain")).unwrap();
    std::fs::write(root.join("plain/note.txt"), "note").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("outdir")).unwrap();
        let fifo = root.join("fifo.html");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let on_disk = std::fs::read_to_string(root.join("index.html")).unwrap();
    let s = Server::start(&root, &[]);

    // The index, with its script injected; the file on disk is unchanged.
    let (code, ct, body) = s.get("/");
    let page = String::from_utf8(body).unwrap();
    assert_eq!((code, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        page.contains("data-run=\"alpha\"")
            && page.contains("cl-pick")
            && page.contains("cl-compare")
    );
    assert!(page.contains("/_/stamp"));
    assert_eq!(
        std::fs::read_to_string(root.join("index.html")).unwrap(),
        on_disk
    );
    assert!(!on_disk.contains("cl-serve"));
    assert_eq!(s.text("/index.html").1, page);
    // A run page gets the sample script; files have their content types.
    let (code, page) = s.text("/alpha/");
    assert_eq!(code, 200);
    assert!(
        page.contains("data-gallery=\"alpha\"") && page.contains("/_/layers/"),
        "{page}"
    );
    let (code, ct, _) = s.get("/alpha");
    assert_eq!((code, ct.as_str()), (308, "|location=/alpha/"));
    let pic = "/alpha/layers/000-conv.png";
    let (code, ct, png) = s.get(pic);
    assert_eq!((code, ct.as_str()), (200, "image/png"));
    assert_eq!(png, std::fs::read(root.join(&pic[1..])).unwrap());
    assert_eq!(s.get("/alpha/manifest.json").1, "application/json");
    assert_eq!(s.text("/plain/note.txt"), (200, "note".into()));

    // Refused: no listing, no dot file, nothing outside, no FIFO (and no hang on it).
    assert_eq!(s.get("/plain/").0, 404);
    assert_eq!(s.get("/.hidden").0, 404);
    assert_eq!(s.get("/nothing.html").0, 404);
    for target in [
        "/../secret.txt",
        "/alpha/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/alpha/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/alpha%2f..%2f..%2fsecret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ] {
        let code = s.raw(target);
        assert!(code == 403 || code == 404, "{target}: {code}");
    }
    #[cfg(unix)]
    {
        assert_eq!(s.raw("/out.txt"), 403);
        assert_eq!(s.raw("/outdir/secret.txt"), 403);
        assert_eq!(s.raw("/fifo.html"), 404);
    }
    let post = s
        .agent
        .post(format!("http://{}/", s.addr))
        .send("x")
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    // Still serving after all that.
    assert_eq!(s.get("/").0, 200);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn pictures_on_demand_equal_the_library_render() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with(dir.path(), &["alpha"]);
    let s = Server::start(&root, &[]);
    let (code, json) = s.text("/_/layers/alpha");
    assert_eq!(code, 200, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["gallery"], "alpha");
    assert_eq!(v["layers"][1]["name"], "tokens");
    assert_eq!(v["layers"][1]["shape"], serde_json::json!([4, 5, 16]));

    let run = Run::open(dir.path().join("runs/alpha.safetensors")).unwrap();
    for (index, query, sample, scale, colormap) in [
        (0, "?sample=2", 2, Scale::Auto, Colormap::Auto),
        (0, "", 0, Scale::Auto, Colormap::Auto),
        (
            1,
            "?sample=3&scale=shared&colormap=magma",
            3,
            Scale::Shared,
            Colormap::Magma,
        ),
        (
            2,
            "?sample=1&scale=p5-95",
            1,
            Scale::Percentile(5.0, 95.0),
            Colormap::Auto,
        ),
    ] {
        let url = format!("/_/render/alpha/{index}.png{query}");
        let (code, ct, png) = s.get(&url);
        assert_eq!(
            (code, ct.as_str()),
            (200, "image/png"),
            "{url}: {}",
            String::from_utf8_lossy(&png)
        );
        let got = image::load_from_memory(&png).unwrap().to_rgb8();
        let opts = RenderOptions {
            sample,
            scale,
            colormap,
            labels: true,
            ..RenderOptions::default()
        };
        let l = &run.layers()[index];
        let want = render::render(&run.data_at(index).unwrap(), &l.shape, &opts)
            .unwrap()
            .image;
        assert_eq!(got.dimensions(), want.dimensions(), "{url}");
        assert!(got.as_raw() == want.as_raw(), "{url}: pixels differ");
        // Asked again: the same bytes (from the cache).
        assert_eq!(s.get(&url).2, png);
    }
    // Sample 0 is the gallery's own picture.
    let (_, _, png) = s.get("/_/render/alpha/0.png?sample=0");
    let gallery = image::open(root.join("alpha/layers/000-conv.png"))
        .unwrap()
        .to_rgb8();
    assert!(image::load_from_memory(&png).unwrap().to_rgb8().as_raw() == gallery.as_raw());

    for (url, want) in [
        ("/_/render/alpha/0.png?sample=4", 400),
        ("/_/render/alpha/0.png?sample=-1", 400),
        ("/_/render/alpha/0.png?scale=bogus", 400),
        ("/_/render/alpha/0.png?colormap=rainbow", 400),
        ("/_/render/alpha/0.png?size=9", 400),
        ("/_/render/alpha/zero.png", 400),
        ("/_/render/alpha/9.png", 404),
        ("/_/render/nobody/0.png", 404),
        ("/_/render/.hidden/0.png", 404),
        ("/_/layers/nobody", 404),
    ] {
        let (code, body) = s.text(url);
        assert_eq!(code, want, "{url}: {body}");
        assert_eq!(
            body.trim_end().lines().count(),
            1,
            "{url}: one line: {body:?}"
        );
    }
    // The run file changed since its gallery was rendered: 409, not a wrong picture.
    let path = dir.path().join("runs/alpha.safetensors");
    put(
        &dir.path().join("runs"),
        "alpha",
        &run_bytes(&make_run(7.0)),
    );
    assert!(path.is_file());
    let (code, body) = s.text("/_/render/alpha/0.png?sample=1");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("changed"), "{body}");
}

#[test]
fn compare_writes_the_diff_gallery_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with(dir.path(), &["alpha", "beta"]);
    let s = Server::start(&root, &[]);
    let (code, ct, body) = s.get("/_/compare?a=alpha&b=beta");
    assert_eq!(code, 303, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct.split("location=").nth(1), Some("/diffs/alpha~vs~beta/"));
    let json = root.join("diffs/alpha~vs~beta/diff.json");
    let first = std::fs::metadata(&json).unwrap().modified().unwrap();
    let (code, page) = s.text("/diffs/alpha~vs~beta/");
    assert_eq!(code, 200);
    assert!(page.contains("conv"), "{page}");
    // Again, and several at once: reused, not recomputed.
    let again: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|_| sc.spawn(|| s.get("/_/compare?a=alpha&b=beta").0))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(again, vec![303; 3]);
    assert_eq!(std::fs::metadata(&json).unwrap().modified().unwrap(), first);
    // The other way round is another diff gallery.
    assert_eq!(s.get("/_/compare?a=beta&b=alpha").0, 303);
    assert!(root.join("diffs/beta~vs~alpha/index.html").is_file());
    for (url, want) in [
        ("/_/compare?a=alpha", 400),
        ("/_/compare?a=alpha&b=beta&x=1", 400),
        ("/_/compare?a=alpha&b=nobody", 404),
        ("/_/compare?a=..&b=beta", 404),
    ] {
        assert_eq!(s.text(url).0, want, "{url}");
    }
}

#[test]
fn watch_adds_new_runs_to_the_live_index() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let root = dir.path().join("galleries");
    std::fs::create_dir_all(&runs).unwrap();
    let s = Server::start(&root, &["--watch", runs.to_str().unwrap()]);
    let wait = |what: &str, mut cond: Box<dyn FnMut() -> bool + '_>| {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The watcher writes the (empty) index first.
    wait(
        "the first index",
        Box::new(|| s.text("/_/stamp").1 != "none"),
    );
    let before = s.text("/_/stamp").1;
    assert!(!s.text("/").1.contains("data-run=\"gamma\""));
    put(&runs, "gamma", &run_bytes(&make_run(3.0)));
    wait(
        "the stamp to change",
        Box::new(|| s.text("/_/stamp").1 != before),
    );
    wait(
        "the index to list gamma",
        Box::new(|| s.text("/").1.contains("data-run=\"gamma\"")),
    );
    assert_eq!(s.get("/_/render/gamma/0.png?sample=3").0, 200);
    // SIGTERM stops the server and the watcher together, cleanly.
    assert_eq!(s.stop(), Some(0));
}
