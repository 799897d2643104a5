//! `GET /_/render/<gallery>/<index>.png` and `GET /_/layers/<gallery>`.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::HashMap;

use super::{blocking, fail, fail_error, fail_now, AppState};
use crate::gallery::SourceFacts;
use crate::render::{self, Colormap, RenderOptions, Scale};

/// A cached picture: which run file (as it was), layer and options.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Key {
    source: std::path::PathBuf,
    facts: SourceFacts,
    index: usize,
    sample: usize,
    scale: Scale,
    colormap: Colormap,
}

/// The render options of a query (`sample`, `scale`, `colormap`; nothing else),
/// as the gallery draws its pictures (numbered cells); `Err` is a one-line message.
pub(super) fn parse_options(q: &HashMap<String, String>) -> Result<RenderOptions, String> {
    let mut o = RenderOptions {
        labels: true,
        ..RenderOptions::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "sample" => {
                o.sample = v
                    .parse()
                    .map_err(|_| format!("sample must be a whole number ≥ 0, got {v:?}"))?
            }
            "scale" => o.scale = v.parse().map_err(|e: crate::Error| crate::one_line(&e))?,
            "colormap" => o.colormap = v.parse().map_err(|e: crate::Error| crate::one_line(&e))?,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?} (use sample, scale, colormap)"
                ))
            }
        }
    }
    Ok(o)
}

/// Number of samples of a layer of `shape` (dim 0 for rank ≥ 2, else 1).
fn samples(shape: &[usize]) -> usize {
    if shape.len() >= 2 {
        shape[0]
    } else {
        1
    }
}

/// `GET /_/render/<gallery>/<index>.png?sample=K&scale=..&colormap=..`.
pub(super) async fn render_png(
    State(s): State<AppState>,
    UrlPath((gallery, file)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let index: usize = match file.strip_suffix(".png").and_then(|i| i.parse().ok()) {
        Some(i) => i,
        None => {
            return fail_now(
                StatusCode::BAD_REQUEST,
                format!("{file:?}: expected <layer index>.png"),
            )
        }
    };
    let opts = match parse_options(&q) {
        Ok(o) => o,
        Err(m) => return fail_now(StatusCode::BAD_REQUEST, m),
    };
    let got = blocking(move || {
        let g = s.gallery(&gallery)?;
        let run = s.run(&g).map_err(|e| fail_error(&e))?;
        let layer = run.layers().get(index).ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                format!(
                    "gallery {:?} has {} layers, no layer {index}",
                    g.name,
                    run.len()
                ),
            )
        })?;
        let n = samples(&layer.shape);
        if opts.sample >= n.max(1) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "layer {index} ({}) has {n} samples, no sample {}",
                    layer.name, opts.sample
                ),
            ));
        }
        let key = Key {
            source: g.manifest.source.clone(),
            facts: g.facts,
            index,
            sample: opts.sample,
            scale: opts.scale,
            colormap: opts.colormap,
        };
        if let Some(png) = s.pngs.lock().expect("png cache").get(&key) {
            return Ok(png);
        }
        let png = render_layer_png(&run, index, &opts).map_err(|e| fail_error(&e))?;
        let png = Bytes::from(png);
        s.pngs
            .lock()
            .expect("png cache")
            .put(key, png.clone(), png.len());
        Ok(png)
    })
    .await;
    match got {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            png,
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

/// The PNG of layer `index` of `run` drawn with `opts` (as [`render::render`]),
/// token axes labelled with the run's tokens as in the gallery.
pub(super) fn render_layer_png(
    run: &crate::Run,
    index: usize,
    opts: &RenderOptions,
) -> crate::Result<Vec<u8>> {
    let data = run.data_at(index)?;
    let shape = &run.layers()[index].shape;
    // Token labels as the gallery draws them (the run's tokens).
    let mut opts = opts.clone();
    if opts.tokens.is_none() {
        opts.tokens = run.info().tokens();
    }
    let pic = render::render(&data, shape, &opts)?;
    render::encode_png(&pic.image)
}

#[derive(Serialize)]
struct LayerEntry<'a> {
    index: usize,
    name: &'a str,
    shape: &'a [usize],
}

/// `GET /_/layers/<gallery>`: `{"gallery", "layers": [{"index", "name", "shape"}]}`.
pub(super) async fn layers(
    State(s): State<AppState>,
    UrlPath(gallery): UrlPath<String>,
) -> Response {
    let got = blocking(move || {
        let g = s.gallery(&gallery)?;
        let run = s.run(&g).map_err(|e| fail_error(&e))?;
        let layers: Vec<LayerEntry> = run
            .layers()
            .iter()
            .map(|l| LayerEntry {
                index: l.index,
                name: &l.name,
                shape: &l.shape,
            })
            .collect();
        let body = serde_json::json!({ "gallery": g.name, "layers": layers });
        Ok(body.to_string())
    })
    .await;
    match got {
        Ok(json) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            json,
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let o = parse_options(&q(&[
            ("sample", "3"),
            ("scale", "p1-99"),
            ("colormap", "magma"),
        ]))
        .unwrap();
        assert_eq!(
            (o.sample, o.scale, o.colormap),
            (3, Scale::Percentile(1.0, 99.0), Colormap::Magma)
        );
        assert!(o.labels);
        for bad in [
            ("sample", "-1"),
            ("scale", "p99-1"),
            ("colormap", "rainbow"),
            ("size", "1"),
        ] {
            let e = parse_options(&q(&[bad])).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{e}");
        }
        assert_eq!(samples(&[4, 3]), 4);
        assert_eq!(samples(&[7]), 1);
    }
}
