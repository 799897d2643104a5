//! `candlelight serve [GALLERIES] [--port P] [--bind ADDR] [--watch RUNS_DIR]`.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candlelight::serve::{router, serve as serve_on, ServeOptions};
use candlelight::watch::Watch;

use super::watch::{init_logging, on_signals, options, WatchArgs};

/// Options of `candlelight serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Folder of the galleries to serve (`render --out`, `watch --out`).
    #[arg(default_value = "galleries")]
    pub galleries: PathBuf,
    /// Port to listen on (0: any free port; the first line printed says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on (the default is reachable from this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Also watch this folder of run files, as `candlelight watch RUNS_DIR --out
    /// GALLERIES` does, in this process: new runs appear in the served index.
    #[arg(long, value_name = "RUNS_DIR")]
    pub watch: Option<PathBuf>,
}

/// Serves until SIGINT / SIGTERM; exit code 0, or 2 when the watcher could not start.
pub fn serve(args: ServeArgs) -> Result<i32> {
    init_logging();
    if args.watch.is_some() {
        std::fs::create_dir_all(&args.galleries)
            .with_context(|| format!("{}: cannot create", args.galleries.display()))?;
    }
    let app = router(&ServeOptions::new(&args.galleries))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's threads")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((args.bind, args.port)))
        .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let watcher = match args.watch {
        Some(runs) => {
            let opts = options(&WatchArgs::defaults(runs, args.galleries.clone())?)?;
            let daemon = Watch::new(opts);
            let stopper = daemon.stopper();
            let tx = stop_tx.clone();
            let thread = std::thread::Builder::new()
                .name("watch".into())
                .spawn(move || {
                    let r = daemon.run();
                    if let Err(e) = &r {
                        let _ = writeln!(std::io::stderr(), "error: {}", candlelight::one_line(e));
                        let _ = tx.send(false);
                    }
                    r.is_ok()
                })
                .context("cannot start the watcher")?;
            Some((stopper, thread))
        }
        None => None,
    };
    let stopper = watcher.as_ref().map(|(s, _)| s.clone());
    let tx = stop_tx.clone();
    on_signals(move || {
        if let Some(s) = stopper {
            s.stop();
        }
        let _ = tx.send(true);
    })?;
    // The first line, for scripts and tests: where to go.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "serving http://{addr}/");
    let _ = out.flush();
    let shutdown = async move {
        stop_rx.recv().await;
    };
    rt.block_on(serve_on(listener, app, shutdown))?;
    let mut ok = true;
    if let Some((stopper, thread)) = watcher {
        stopper.stop();
        ok = thread.join().unwrap_or(false);
    }
    drop(stop_tx);
    Ok(if ok { 0 } else { 2 })
}
