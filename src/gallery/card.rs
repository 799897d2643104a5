//! One card per layer on a run's page: statistics, picture, histogram; plus the
//! run's thumbnail, `stats.json` and page.

use std::path::Path;

use minijinja::context;
use serde::Serialize;

use super::tile;
use super::{
    write, GalleryOptions, Manifest, HIST_BINS, HIST_SIZE, RENDERER_VERSION, THUMB_PIXELS,
};
use crate::pages::{fmt_bytes, fmt_num, layer_file_stem, page};
use crate::render::{self, Colormap, Histogram, LayoutKind, Picture, RenderOptions};
use crate::runfile::LayerInfo;
use crate::staging::absolute;
use crate::{Activity, Error, Result, Run, Stats};

#[derive(Debug, Default, Serialize)]
pub(super) struct Card {
    index: usize,
    name: String,
    kind: String,
    shape: Vec<usize>,
    shape_str: String,
    dtype: String,
    elements: usize,
    #[serde(skip)]
    stats_raw: Option<Stats>,
    #[serde(skip)]
    activity: Option<Activity>,
    stats: Option<CardStats>,
    picture: Option<String>,
    picture_size: Option<(u32, u32)>,
    histogram: Option<String>,
    caption: String,
    colormap: String,
    range: Option<(String, String)>,
    hist_axis: Option<(String, String, String)>,
    /// `3 of 64 channels never active across 10 recorded samples`.
    inactive: Option<String>,
    /// `[N, classes]`: one sample as labelled bars.
    pub(super) bars: Option<super::bars::Bars>,
    /// The sample the main picture shows.
    sample: usize,
    /// Every sample shown (the main one first): picture and bars.
    views: Vec<View>,
    /// The card's data for the page's script ([`tile::CardData`]), as JSON safe
    /// inside `<script type="application/json">`.
    data_json: Option<String>,
    #[serde(skip)]
    data: Option<tile::CardData>,
    nonfinite: bool,
    error: Option<String>,
    #[serde(skip)]
    thumb_score: u8,
    /// The histogram's counts for stats.json (`hist`).
    #[serde(skip)]
    hist: Option<HistJson>,
}

/// A layer's histogram in stats.json: `counts` in equal bins over `[lo, hi]`
/// (finite values only; when `lo == hi` every value is in the middle bin).
#[derive(Debug, Clone, Serialize)]
pub(super) struct HistJson {
    lo: f64,
    hi: f64,
    counts: Vec<u64>,
}

/// One sample of a card: its picture and, for `[N, classes]` layers, its bars.
#[derive(Debug, Serialize)]
struct View {
    sample: usize,
    picture: String,
    bars: Option<super::bars::Bars>,
}

#[derive(Debug, Serialize)]
pub(super) struct CardStats {
    min: String,
    max: String,
    mean: String,
    std: String,
    zero_pct: String,
    nan: u64,
    inf: u64,
}

#[derive(Debug, Serialize)]
struct StatsFile<'a> {
    run_id: &'a str,
    layers: Vec<StatsEntry<'a>>,
}

#[derive(Debug, Serialize)]
struct StatsEntry<'a> {
    index: usize,
    name: &'a str,
    kind: Option<&'a str>,
    shape: &'a [usize],
    dtype: &'a str,
    #[serde(flatten)]
    stats: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<&'a Activity>,
    picture: Option<&'a str>,
    histogram: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hist: Option<&'a HistJson>,
    error: Option<&'a str>,
}

/// Renders one layer's card: the picture of each sample shown, the data tiles
/// within `budget` bytes each. A layer that cannot be drawn gets an error on its
/// card; a read that fails (the file shrank, an I/O error) fails the gallery.
pub(super) fn render_card(
    run: &Run,
    l: &LayerInfo,
    dir: &Path,
    opts: &GalleryOptions,
    budget: usize,
) -> Result<Card> {
    let mut card = Card {
        index: l.index,
        name: l.name.clone(),
        kind: l.kind.clone().unwrap_or_default(),
        shape: l.shape.clone(),
        shape_str: l.shape_str(),
        dtype: l.dtype.to_string(),
        elements: l.elem_count(),
        ..Card::default()
    };
    let data = match run.data_at(l.index) {
        Ok(d) => d,
        Err(e) => {
            card.error = Some(e.to_string());
            return Ok(card);
        }
    };
    let mut ropts = sample_options(&opts.render, &l.shape);
    if ropts.tokens.is_none() {
        ropts.tokens = run.info().tokens();
    }
    card.sample = ropts.sample;
    // Statistics, histogram, never-active units and the picture in one read.
    let hint = run.summary_at(l.index).and_then(|s| s.stats);
    let scan = render::scan_cells(&data, &l.shape, &ropts, HIST_BINS, hint.as_ref(), true)?.paint();
    let stats = scan.stats;
    card.set_stats(stats);
    if stats.min.is_finite() {
        card.inactive = scan.activity.as_ref().and_then(Activity::describe);
        card.activity = scan.activity;
    }
    card.bars = super::bars::bars(&data, &l.shape, ropts.sample);
    data.check()?;
    let pic = match scan.picture {
        Ok(pic) => pic,
        Err(e) => {
            card.error = Some(e.to_string());
            return Ok(card);
        }
    };
    card.set_picture(&pic, scan.histogram, &ropts, dir)?;
    card.caption = render::caption_with_axes(&card.caption, &l.shape, l.kind.as_deref(), &ropts);
    let rel = card.picture.clone().unwrap_or_default();
    card.add_sample(run, &pic, rel, card.bars.clone(), budget);
    for s in shown_samples(opts, &l.shape).into_iter().skip(1) {
        ropts.sample = s;
        let pic = render::render(&data, &l.shape, &ropts)?;
        let bars = super::bars::bars(&data, &l.shape, s);
        data.check()?;
        let rel = format!(
            "layers/{}.s{s}.png",
            layer_file_stem(card.index, &card.name)
        );
        write(&dir.join(&rel), &render::encode_png(&pic.image)?)?;
        card.add_sample(run, &pic, rel, bars, budget);
    }
    card.finish_data()?;
    Ok(card)
}

/// The samples a layer of `shape` is shown at: the configured one (or the layer's
/// last, when it has fewer) first, then the others of the first
/// [`GalleryOptions::samples`], in order.
pub(super) fn shown_samples(opts: &GalleryOptions, shape: &[usize]) -> Vec<usize> {
    if shape.len() < 2 || shape[0] == 0 {
        return vec![0];
    }
    let n = shape[0];
    let main = opts.render.sample.min(n - 1);
    let k = opts.samples.clamp(1, super::MAX_SAMPLES).min(n);
    std::iter::once(main)
        .chain((0..k).filter(|&s| s != main))
        .collect()
}

/// `opts` for a layer of `shape`: a layer with fewer samples than asked shows its last.
fn sample_options(opts: &RenderOptions, shape: &[usize]) -> RenderOptions {
    let mut o = opts.clone();
    o.scale = o.scale.resolve(shape);
    o.labels = true;
    if shape.len() >= 2 && shape[0] > 0 {
        o.sample = o.sample.min(shape[0] - 1);
    }
    o
}

/// The token strings of sample `s` when the run has them and they label `rows`.
fn tokens_of(run: &Run, s: usize, rows: usize) -> Option<Vec<String>> {
    let all = run.info().extra.get("tokens")?.as_array()?;
    let toks: Vec<String> = all
        .get(s)?
        .as_array()?
        .iter()
        .map(|t| t.as_str().unwrap_or("").chars().take(40).collect())
        .collect();
    (toks.len() == rows).then_some(toks)
}

impl Card {
    /// Adds sample `pic.layout.sample` (its picture written at `rel`) to the views
    /// and to the page data.
    fn add_sample(
        &mut self,
        run: &Run,
        pic: &Picture,
        rel: String,
        bars: Option<super::bars::Bars>,
        budget: usize,
    ) {
        let s = pic.layout.sample;
        let mut cap = pic.layout.describe();
        if pic.layout.samples > 1 && pic.layout.kind != LayoutKind::Empty {
            cap = format!("sample {s} of {}: {cap}", pic.layout.samples);
        }
        if let Some((a, b)) = pic.range {
            cap += &format!(
                "; shown values {} … {}",
                fmt_num(a as f64),
                fmt_num(b as f64)
            );
        }
        let rows = self.shape.get(self.shape.len().wrapping_sub(2)).copied();
        let tokens = rows
            .filter(|_| self.shape.len() >= 3)
            .and_then(|r| tokens_of(run, s, r));
        if let Some(d) = self.data.as_mut() {
            d.samples.push(tile::SampleData {
                s,
                pic: rel.clone(),
                cap,
                tokens,
                tile: tile::tile(pic, budget),
            });
        }
        self.views.push(View {
            sample: s,
            picture: rel,
            bars,
        });
    }

    /// Serializes the page data, once every sample is in.
    fn finish_data(&mut self) -> Result<()> {
        if let Some(d) = &self.data {
            self.data_json = Some(tile::script_json(d)?);
        }
        Ok(())
    }

    fn set_stats(&mut self, stats: Stats) {
        self.nonfinite = stats.non_finite() > 0;
        self.stats = Some(CardStats {
            min: fmt_num(stats.min),
            max: fmt_num(stats.max),
            mean: fmt_num(stats.mean),
            std: fmt_num(stats.std),
            zero_pct: format!("{:.1}%", stats.zero_fraction * 100.0),
            nan: stats.nan,
            inf: stats.inf,
        });
        self.stats_raw = Some(stats);
    }

    /// Writes the picture and the histogram into `dir/layers/` and describes them.
    fn set_picture(
        &mut self,
        pic: &Picture,
        hist: Histogram,
        ropts: &RenderOptions,
        dir: &Path,
    ) -> Result<()> {
        let stem = layer_file_stem(self.index, &self.name);
        let rel = format!("layers/{stem}.png");
        write(&dir.join(&rel), &render::encode_png(&pic.image)?)?;
        let lay = &pic.layout;
        let mut caption = lay.describe();
        if lay.samples > 1 && lay.kind != LayoutKind::Empty {
            caption = format!("sample {} of {}: {caption}", lay.sample, lay.samples);
        }
        self.caption = caption;
        self.colormap = colormap_note(pic.colormap, pic.colour_range, ropts);
        self.range = pic
            .range
            .map(|(a, b)| (fmt_num(a as f64), fmt_num(b as f64)));
        self.picture = Some(rel.clone());
        self.picture_size = Some(pic.image.dimensions());
        let head = self.kind.contains("attention") || self.name.contains("attention_probs");
        self.data = Some(tile::card_data(lay, self.shape.len(), head));
        self.thumb_score = match lay.kind {
            LayoutKind::Grid if lay.tiles > 1 => 3,
            LayoutKind::Grid | LayoutKind::Heatmap => 2,
            LayoutKind::Folded => 1,
            LayoutKind::Empty => 0,
        };
        let himg = render::render_histogram(&hist, pic.colormap, HIST_SIZE.0, HIST_SIZE.1);
        let hrel = format!("layers/{stem}.hist.png");
        write(&dir.join(&hrel), &render::encode_png(&himg)?)?;
        self.histogram = Some(hrel);
        self.hist = (hist.lo.is_finite() && hist.hi.is_finite()).then(|| HistJson {
            lo: hist.lo,
            hi: hist.hi,
            counts: hist.counts.clone(),
        });
        self.hist_axis = (!hist.lo.is_nan()).then(|| {
            (
                fmt_num(hist.lo),
                fmt_num(hist.hi),
                format!("{}", hist.peak()),
            )
        });
        Ok(())
    }
}

/// Writes `dir/thumb.png` from the best card (a grid of maps, else a heatmap, else
/// the first picture); its relative path, if any.
pub(super) fn thumbnail(
    run: &Run,
    cards: &[Card],
    dir: &Path,
    opts: &GalleryOptions,
) -> Result<Option<String>> {
    let Some(best) = cards
        .iter()
        .filter(|c| c.picture.is_some())
        .max_by_key(|c| (c.thumb_score, std::cmp::Reverse(c.index)))
    else {
        return Ok(None);
    };
    let data = run.data_at(best.index)?;
    let mut o = sample_options(&opts.render, &best.shape);
    o.max_pixels = THUMB_PIXELS;
    o.min_cell = 8;
    o.min_side = 96;
    let Ok(img) = render::render_layer(&data, &best.shape, &o) else {
        data.check()?;
        return Ok(None);
    };
    write(&dir.join("thumb.png"), &render::encode_png(&img)?)?;
    Ok(Some("thumb.png".to_string()))
}

/// The bytes of `stats.json`.
pub(super) fn stats_json(run: &Run, cards: &[Card], name: &str) -> Result<Vec<u8>> {
    let layers = run
        .layers()
        .iter()
        .zip(cards)
        .map(|(l, c)| StatsEntry {
            index: l.index,
            name: &l.name,
            kind: l.kind.as_deref(),
            shape: &l.shape,
            dtype: &c.dtype,
            stats: c.stats_raw,
            activity: c.activity.as_ref(),
            picture: c.picture.as_deref(),
            histogram: c.histogram.as_deref(),
            hist: c.hist.as_ref(),
            error: c.error.as_deref(),
        })
        .collect();
    serde_json::to_vec_pretty(&StatsFile {
        run_id: name,
        layers,
    })
    .map_err(|e| Error::internal(format!("stats.json: {e}")))
}

/// The run's page.
pub(super) fn run_page(
    run: &Run,
    cards: &[Card],
    m: &Manifest,
    opts: &GalleryOptions,
) -> Result<String> {
    let info = run.info();
    let facts = RunFacts {
        id: info.id.clone(),
        model: info.model.clone(),
        created: info.created.clone(),
        input: info.input.clone(),
        source: absolute(&m.source).display().to_string(),
        size: fmt_bytes(m.source_size),
        layers: run.len(),
        data: fmt_bytes(run.data_bytes() as u64),
        tags: info
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metadata: run
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.chars().take(300).collect()))
            .collect(),
        rendered_at: m.rendered_at.clone(),
    };
    let nonfinite: Vec<&Card> = cards.iter().filter(|c| c.nonfinite).collect();
    let inactive: Vec<&Card> = cards.iter().filter(|c| c.inactive.is_some()).collect();
    let mut samples: Vec<usize> = cards
        .iter()
        .flat_map(|c| c.views.iter().map(|v| v.sample))
        .collect();
    samples.sort_unstable();
    samples.dedup();
    page(
        "run.html",
        context! {
            name => &m.run_id,
            run => facts,
            cards => cards,
            nonfinite => nonfinite,
            inactive => inactive,
            renderer_version => RENDERER_VERSION,
            sample => opts.render.sample,
            samples => samples,
        },
    )
}

fn colormap_note(cm: Colormap, colour_range: Option<(f32, f32)>, o: &RenderOptions) -> String {
    let scale = match o.scale {
        render::Scale::PerChannel | render::Scale::Auto => {
            "each channel scaled to its own range".to_string()
        }
        render::Scale::Shared => "one scale for all channels".to_string(),
        render::Scale::Percentile(a, b) => format!("one scale, clipped to percentiles {a}–{b}"),
    };
    let scale = match colour_range {
        Some((lo, hi)) if matches!(o.scale, render::Scale::Percentile(..)) => {
            format!("{scale} ({} … {})", fmt_num(lo as f64), fmt_num(hi as f64))
        }
        _ => scale,
    };
    let map = if cm.is_diverging() {
        format!("{cm}, centred on 0")
    } else {
        cm.to_string()
    };
    format!("{map}; {scale}")
}

#[derive(Serialize)]
struct RunFacts {
    id: String,
    model: String,
    created: String,
    input: String,
    source: String,
    size: String,
    layers: usize,
    data: String,
    tags: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
    rendered_at: String,
}
