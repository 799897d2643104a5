//! Records all-MiniLM-L6-v2 (pretrained BERT) on a sentence given on the command
//! line, every module by its weight path, saves the run and renders its gallery:
//!
//! ```sh
//! scripts/fetch-minilm                      # once: downloads the model (84 MB)
//! cargo run --release --example minilm -- "The quick brown fox jumps over the lazy dog."
//! ```
//!
//! `--plant tanh-gelu|ln-eps[=EPS]|swap-heads[=L:H1:H2]` plants a porting bug;
//! `--patch-from RUN --patch GLOB` runs the layers matching GLOB on RUN's tensors
//! (activation patching; `--patch '*'` with a PyTorch run isolates each layer).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candlelight::models::minilm::{default_dir, MiniLm, Plant, ENV_DIR};
use candlelight::{render_gallery, GalleryOptions, Recorder, Run};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Record all-MiniLM-L6-v2 on a sentence and render its gallery")]
struct Args {
    /// The sentence.
    sentence: String,
    /// The model folder (default: $CANDLELIGHT_MINILM or the fetch-minilm cache).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the run file goes.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Where the gallery goes.
    #[arg(long, default_value = "galleries")]
    gallery: PathBuf,
    /// Save the run only, render no gallery.
    #[arg(long)]
    no_gallery: bool,
    /// Repeat the sentence to make a batch of this size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Plant a porting bug: tanh-gelu, ln-eps[=EPS], swap-heads[=LAYER:H1:H2].
    #[arg(long)]
    plant: Option<String>,
    /// Run whose tensors patched layers hand on (with --patch).
    #[arg(long)]
    patch_from: Option<PathBuf>,
    /// Glob of the layers to patch (repeatable; `*` for all).
    #[arg(long)]
    patch: Vec<String>,
    /// Run id (default: a fresh one).
    #[arg(long)]
    id: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = args.model.clone().or_else(default_dir).with_context(|| {
        format!(
            "no MiniLM model: run scripts/fetch-minilm and set {ENV_DIR} to the folder it prints"
        )
    })?;
    let plant = match &args.plant {
        Some(p) => Plant::parse(p)?,
        None => Plant::default(),
    };
    let model = MiniLm::load_with(&dir, &plant)?;
    let mut rec = Recorder::new("minilm");
    if let Some(p) = &args.plant {
        rec = rec.tag("plant", p.as_str());
    }
    if let Some(id) = &args.id {
        rec = rec.id(id.as_str());
    }
    if let Some(from) = &args.patch_from {
        rec = rec
            .patch_from(Run::open(from)?)
            .tag("patched_from", from.display().to_string());
        for g in &args.patch {
            rec = rec.patch(g.as_str());
        }
    }
    let sentences = vec![args.sentence.as_str(); args.batch.max(1)];
    let (hidden, run) = model.record(&sentences, rec)?;
    let tokens = run.info().extra.get("tokens").cloned().unwrap_or_default();
    println!("tokens: {tokens}");
    println!(
        "hidden states {:?}, {} layers recorded",
        hidden.dims(),
        run.len()
    );
    std::fs::create_dir_all(&args.runs).with_context(|| format!("{}", args.runs.display()))?;
    let path = run.save(&args.runs)?;
    println!("run: {}", path.display());
    if !args.no_gallery {
        std::fs::create_dir_all(&args.gallery)
            .with_context(|| format!("{}", args.gallery.display()))?;
        render_gallery(&path, &args.gallery, &GalleryOptions::default())?;
        println!(
            "gallery: {}",
            candlelight::gallery::gallery_dir(&args.gallery, &path)
                .join("index.html")
                .display()
        );
    }
    Ok(())
}
