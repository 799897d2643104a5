//! The `candlelight` binary: a thin shell over the library (see `cli.rs`).

mod cli;

use std::io::Write;

use clap::Parser;

fn main() {
    // A file-size limit (ulimit -f) makes writes fail with EFBIG, reported like any
    // other I/O error, instead of killing the process with SIGXFSZ.
    #[cfg(unix)]
    // SAFETY: `signal` with SIG_IGN installs no handler; no thread has started yet.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = cli::Cli::parse();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the file and what is wrong (a cause already quoted is not repeated).
            let msg = candlelight::one_line(e.as_ref());
            // Not `eprintln!`: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            2
        }
    };
    std::process::exit(code);
}
