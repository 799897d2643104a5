//! `candlelight render RUN... --out s3://bucket/galleries`: galleries rendered
//! here and published into shared galleries on object storage, as the shared
//! `watch` daemons do (docs/LEASES.md): files uploaded with the page and manifest
//! last, the run version marked done, the index rewritten (unless a running
//! daemon holds it: it rewrites it within a round).

use std::collections::HashMap;

use anyhow::Result;
use candlelight::gallery::{gallery_name, render_gallery, GalleryOptions};
use candlelight::remote::Remote;
use candlelight::watch::shared::{publish_gallery, write_shared_index};

use super::render::{one_line, RenderArgs};

pub fn render_to_store(args: &RenderArgs, opts: &GalleryOptions) -> Result<i32> {
    let out = Remote::at(&args.out)?;
    let work = tempfile::Builder::new()
        .prefix(".candlelight-render-")
        .tempdir()?;
    let mut failed = 0;
    let mut names = HashMap::new();
    for path in &args.runs {
        let gallery = gallery_name(path);
        if let Some(first) = names.insert(gallery.clone(), path) {
            failed += 1;
            eprintln!(
                "error: {}: its gallery name is that of {}; render it into another --out",
                path.display(),
                first.display()
            );
            continue;
        }
        let local = work.path().join("out");
        let published = render_gallery(path, &local, opts).and_then(|m| {
            let (run, version) = match path.to_str().filter(|p| candlelight::location::is_url(p)) {
                // The object's version, as the daemons list it.
                Some(url) => (
                    url.to_string(),
                    Remote::parse(url)?.version()?.unwrap_or_default(),
                ),
                None => {
                    let f = m.source_facts();
                    (
                        candlelight::staging::absolute(path).display().to_string(),
                        format!("{}-{}-{}", f.size, f.mtime_ns, f.ino),
                    )
                }
            };
            let files = publish_gallery(&local.join(&gallery), &out, &gallery, &version, &run)?;
            Ok((m, files))
        });
        let _ = std::fs::remove_dir_all(work.path().join("out"));
        match published {
            Ok((m, files)) => println!(
                "rendered {}/index.html ({} layers, {} ms, {files} files uploaded)",
                out.join(&gallery).url(),
                m.layers,
                m.render_ms
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", one_line(path, &e));
            }
        }
    }
    if write_shared_index(&out)? {
        println!("{}/index.html", out.url());
    } else {
        println!(
            "{}/index.html (a running daemon holds the index and rewrites it)",
            out.url()
        );
    }
    Ok(if failed > 0 { 2 } else { 0 })
}
