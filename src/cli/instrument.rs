//! `candlelight instrument MODEL.rs [-o OUT.rs]`: a model file copied out of
//! candle-transformers, rewritten to record every layer (`candlelight::instrument`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use candlelight::instrument::{instrument, Options};

/// What `--help` says after the options.
const RULES: &str = "\
What changes (see the README, \"Instrument a model copied out of candle-transformers\"):
  - tracing spans go (fields, initialisers, `let _enter = self.span.enter();`);
  - a struct with a `forward` that is built in a function taking a candle_nn VarBuilder
    gets a field `cl_scope: candlelight::Scope`, taken from that VarBuilder by the
    function's first statement; built elsewhere, it gets Scope::none() (records nothing);
  - its `forward`/`forward_t` returning Result<Tensor> records what it returns under the
    module's VarBuilder path (the root module as `output`);
  - in its methods, `let x = ..softmax..?;` is followed by recording x as
    `<path>.attention_probs`;
  - `super::with_tracing` -> `candlelight::with_tracing`, `candle::` -> `candle_core::`,
    other `crate::`/`super::` -> candle_transformers, and candle_nn layers that
    candlelight::nn covers -> candlelight::nn (unless the file calls e.g. Embedding::new).
The file is printed again with prettyplease: `//` comments are dropped, doc comments kept.
A report of what was scoped, wrapped and skipped goes to standard error.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = RULES)]
pub struct InstrumentArgs {
    /// A model source file copied out of candle-transformers 0.9 (bert.rs, llama.rs, ...).
    pub model: PathBuf,
    /// Where to write the instrumented file (never the input); `-` or none: standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// The module path the file had, which its `super::` paths are relative to
    /// [default: candle_transformers::models::<file stem>].
    #[arg(long)]
    pub module_path: Option<String>,
}

pub fn run(args: InstrumentArgs) -> Result<i32> {
    let path = &args.model;
    let out = args.out.as_deref().filter(|o| *o != Path::new("-"));
    if let Some(out) = out {
        if same_file(path, out) {
            return Err(anyhow!(
                "{}: is the input file; instrument writes a new file, refusing to overwrite it",
                out.display()
            ));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let source = String::from_utf8(bytes)
        .map_err(|_| anyhow!("{}: not Rust source (not UTF-8 text)", path.display()))?;
    let opts = Options {
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        module_path: args.module_path.clone(),
    };
    let done = instrument(&source, &opts).map_err(|e| match e {
        candlelight::Error::BadInput { msg, .. } => anyhow!("{}: {msg}", path.display()),
        e => e.into(),
    })?;
    match out {
        Some(o) => candlelight::staging::write_atomic(o, done.code.as_bytes())?,
        None => std::io::stdout().write_all(done.code.as_bytes())?,
    }
    let to = out.map_or("standard output".into(), |o| o.display().to_string());
    let count = |p: &str| done.report.iter().filter(|l| l.starts_with(p)).count();
    // Not `eprintln!`: a closed stderr must not turn a finished job into a panic.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "instrumented {} -> {to}: {} module(s) scoped, {} forward(s) wrapped, {} skipped",
        path.display(),
        count("scoped"),
        count("wrapped"),
        count("skipped")
    );
    for line in &done.report {
        let _ = writeln!(err, "  {line}");
    }
    Ok(0)
}

/// Whether `a` and `b` name the same file (`b` may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
