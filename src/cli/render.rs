//! `candlelight render RUN... [--out DIR]`: run files -> galleries + the index page.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candlelight::gallery::{gallery_name, render_gallery, write_index, GalleryOptions};
use candlelight::render::{Colormap, RenderOptions, Scale};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Run files (`*.safetensors`) to render.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder of the galleries (one folder per run, plus index.html).
    #[arg(long, default_value = "galleries")]
    pub out: PathBuf,
    /// Which sample (index in dim 0) of each layer to picture.
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// The run page also shows samples 0..K with a selector (1 to 16).
    #[arg(long, default_value_t = 4, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub samples: u8,
    /// Colour scale: auto (p1-99 for [N, T, D] token layers, per-channel otherwise),
    /// per-channel, shared, or pLO-HI (percentiles, e.g. p1-99).
    #[arg(long, default_value = "auto", value_parser = parse_scale)]
    pub scale: Scale,
    /// Colormap: auto (viridis, or rdbu for signed layers), viridis, magma, inferno,
    /// plasma, cividis, greys, rdbu, puor.
    #[arg(long, default_value = "auto", value_parser = parse_colormap)]
    pub colormap: Colormap,
}

fn parse_scale(s: &str) -> Result<Scale, String> {
    s.parse().map_err(|e: candlelight::Error| e.to_string())
}

fn parse_colormap(s: &str) -> Result<Colormap, String> {
    s.parse().map_err(|e: candlelight::Error| e.to_string())
}

/// The error as one line that names `path`.
pub fn one_line(path: &Path, e: &candlelight::Error) -> String {
    let msg = candlelight::one_line(e);
    let shown = path.display().to_string();
    if msg.contains(&shown) {
        msg
    } else {
        format!("{shown}: {msg}")
    }
}

pub use candlelight::staging::absolute;

pub fn render(args: RenderArgs) -> Result<i32> {
    let opts = options(&args);
    if args.out.to_str().is_some_and(candlelight::location::is_url) {
        return super::render_store::render_to_store(&args, &opts);
    }
    render_local(&args, &opts)
}

fn options(args: &RenderArgs) -> GalleryOptions {
    GalleryOptions {
        render: RenderOptions {
            sample: args.sample,
            scale: args.scale,
            colormap: args.colormap,
            ..RenderOptions::default()
        },
        samples: args.samples as usize,
    }
}

fn render_local(args: &RenderArgs, opts: &GalleryOptions) -> Result<i32> {
    let pb = if args.runs.len() > 1 {
        let pb = ProgressBar::new(args.runs.len() as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .expect("valid progress template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut failed = 0;
    // Run files of the same name in different folders would share one gallery.
    let mut names = std::collections::HashMap::new();
    for path in &args.runs {
        pb.set_message(path.display().to_string());
        if let Some(first) = names.insert(gallery_name(path), path) {
            if absolute(first) != absolute(path) {
                failed += 1;
                pb.suspend(|| {
                    eprintln!(
                        "error: {}: its gallery name is that of {}; render it into another --out",
                        path.display(),
                        first.display()
                    )
                });
                pb.inc(1);
                continue;
            }
        }
        match render_gallery(path, &args.out, opts) {
            Ok(m) => pb.suspend(|| {
                println!(
                    "rendered {} ({} layers, {} ms)",
                    args.out.join(&m.run_id).join("index.html").display(),
                    m.layers,
                    m.render_ms
                )
            }),
            Err(e) => {
                failed += 1;
                pb.suspend(|| eprintln!("error: {}", one_line(path, &e)));
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    write_index(&args.out)?;
    println!("{}", absolute(&args.out.join("index.html")).display());
    Ok(if failed > 0 { 2 } else { 0 })
}
