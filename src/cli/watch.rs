//! `candlelight watch RUNS_DIR [--out DIR]`: the daemon that renders new runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use candlelight::watch::{Backend, Policy, Watch, WatchOptions};

/// Options of `candlelight watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folder the run files arrive in (watched non-recursively).
    #[arg(value_name = "RUNS_DIR")]
    pub runs: PathBuf,
    /// Folder of the galleries (created if missing).
    #[arg(long, default_value = "galleries")]
    pub out: PathBuf,
    /// Render what is pending and exit: 0 if all rendered, 1 if any failed.
    #[arg(long)]
    pub once: bool,
    /// Poll the folder instead of using file events (NFS, SMB, Docker bind mounts
    /// on macOS/Windows).
    #[arg(long)]
    pub poll: bool,
    /// Polling period with --poll, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub poll_interval_ms: u64,
    /// Render threads [default: the number of cores].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Remove the gallery of a run file that is deleted.
    #[arg(long)]
    pub prune: bool,
    /// Rescan the whole folder this often, as a safety net for lost events (0: never).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub rescan_secs: u64,
    /// Gallery run pages also show samples 0..K with a selector (1 to 16).
    #[arg(long, default_value_t = 4, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub samples: u8,
    /// Quiet time before acting on a file event, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub debounce_ms: u64,
    /// With a URL on either side (several daemons sharing a prefix): how long a
    /// daemon's claim on a run lasts; the runs of a daemon that died are taken over
    /// after this long.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub lease_secs: f64,
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (the log reader went away) drops log lines; reporting that
        // on stderr would panic and take the daemon down.
        .log_internal_errors(false)
        .try_init();
}

/// SIGINT / SIGTERM call `stop` (to stop gracefully); a second one exits at once.
pub(crate) fn on_signals(stop: impl FnOnce() + Send + 'static) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let again = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registered first: runs before the flag below is set by this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&again))
            .context("cannot install signal handlers")?;
    }
    #[cfg(unix)]
    {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install signal handlers")?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    again.store(true, Ordering::SeqCst);
                    stop();
                }
            })
            .context("cannot start the signal thread")?;
    }
    #[cfg(not(unix))]
    {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .context("cannot install signal handlers")?;
        }
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            again.store(true, Ordering::SeqCst);
            stop();
        });
    }
    Ok(())
}

/// Runs the daemon; the exit code is 0, or 1 when `--once` met a failure.
pub fn watch(args: WatchArgs) -> Result<i32> {
    init_logging();
    let is_url = |p: &std::path::Path| p.to_str().is_some_and(candlelight::location::is_url);
    if is_url(&args.runs) || is_url(&args.out) {
        return shared(&args);
    }
    let daemon = Watch::new(options(&args)?);
    let stopper = daemon.stopper();
    on_signals(move || stopper.stop())?;
    let summary = daemon.run()?;
    Ok(if args.once && !summary.all_ok() { 1 } else { 0 })
}

/// The shared daemon: runs and/or galleries in an object store, polled; several
/// daemons may share them (leases). Exit code as for the local daemon.
fn shared(args: &WatchArgs) -> Result<i32> {
    use candlelight::remote::Remote;
    use candlelight::watch::shared::{watch_shared, SharedOptions};
    anyhow::ensure!(
        args.lease_secs.is_finite() && args.lease_secs > 0.0,
        "--lease-secs must be a positive number of seconds"
    );
    anyhow::ensure!(
        args.poll_interval_ms > 0,
        "--poll-interval-ms must be at least 1"
    );
    let runs = Remote::at(&args.runs)?;
    let out = Remote::at(&args.out)?;
    let base = options(args)?;
    let opts = SharedOptions {
        poll: Duration::from_millis(args.poll_interval_ms),
        lease: Duration::from_secs_f64(args.lease_secs),
        jobs: base.jobs,
        once: args.once,
        gallery: base.gallery,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    on_signals(move || flag.store(true, Ordering::SeqCst))?;
    let report = watch_shared(&runs, &out, &opts, &stop)?;
    tracing::info!(
        "stopped: {} rendered ({} error pages), {} rendered first elsewhere, {} store errors, {} store requests",
        report.rendered,
        report.failed,
        report.lost_races,
        report.store_errors,
        report.requests
    );
    let failed = report.failed > 0 || report.store_errors > 0;
    Ok(if args.once && failed { 1 } else { 0 })
}

impl WatchArgs {
    /// `candlelight watch RUNS --out OUT` with every other option at its default
    /// (parsed, so the defaults are the command's own).
    pub(crate) fn defaults(runs: PathBuf, out: PathBuf) -> Result<WatchArgs> {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            args: WatchArgs,
        }
        let mut out_arg = std::ffi::OsString::from("--out=");
        out_arg.push(out);
        let line = ["watch".into(), out_arg, "--".into(), runs.into_os_string()];
        Ok(<Line as clap::Parser>::try_parse_from(line)?.args)
    }
}

/// The daemon's options from the command line.
pub(crate) fn options(args: &WatchArgs) -> Result<WatchOptions> {
    let mut opts = WatchOptions::new(&args.runs, &args.out);
    if let Some(j) = args.jobs {
        anyhow::ensure!(j > 0, "--jobs must be at least 1");
        opts.jobs = j;
    }
    opts.once = args.once;
    opts.gallery.samples = args.samples as usize;
    if args.poll {
        anyhow::ensure!(
            args.poll_interval_ms > 0,
            "--poll-interval-ms must be at least 1"
        );
        opts.backend = Backend::Poll {
            interval: Duration::from_millis(args.poll_interval_ms),
        };
    }
    opts.rescan = (args.rescan_secs > 0).then(|| Duration::from_secs(args.rescan_secs));
    opts.debounce = Duration::from_millis(args.debounce_ms);
    opts.policy = Policy {
        prune: args.prune,
        ..Policy::default()
    };
    Ok(opts)
}
