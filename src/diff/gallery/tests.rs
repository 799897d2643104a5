//! Pair reduction and pictures of the diff gallery.

use super::*;
use crate::render::FLAG;

#[test]
fn a_single_divergent_element_survives_downsampling() {
    // One sample of 64 channels of 300x300: far over the budget, so blocks are
    // reduced; the one element off shows in A - B at full strength.
    let n = 64 * 300 * 300;
    let a = LayerData::from_f32(vec![1.0; n]);
    let mut bv = vec![1.0; n];
    bv[5 * 90_000 + 123 * 300 + 77] = 1.5;
    let b = LayerData::from_f32(bv);
    let opts = RenderOptions {
        max_pixels: MAX_PIXELS,
        ..RenderOptions::default()
    };
    let layout = render::layout(&[1, 64, 300, 300], &opts).unwrap();
    assert!(layout.x.down > 1 && layout.width * layout.height <= MAX_PIXELS);
    let tiles: Vec<PairTile> = (0..layout.tiles)
        .map(|t| reduce_pair(&a, &b, &layout, t * layout.tile_len))
        .collect();
    let hits: Vec<(usize, f32)> = tiles
        .iter()
        .enumerate()
        .flat_map(|(t, p)| p.d.iter().filter(|v| **v != 0.0).map(move |v| (t, *v)))
        .collect();
    assert_eq!(hits, vec![(5, -0.5)]);
}

#[test]
fn nan_cells_are_flagged_and_equal_nans_are_no_difference() {
    let mut c = Cell::default();
    c.add(f32::NAN, f32::NAN);
    c.add(2.0, 1.0);
    assert!(c.mean_a().is_nan() && !c.bad_d && c.d == 1.0);
    let mut c = Cell::default();
    c.add(f32::INFINITY, 1.0);
    assert!(c.bad_d && c.mean_b() == 1.0);
}

#[test]
fn diverging_colours_have_the_documented_sides() {
    let m = Mapping::new(Colormap::RdBu, Some((-2.0, 1.0)), None);
    let lut = Colormap::RdBu.lut();
    let (r, b, w) = (m.color(2.0, lut), m.color(-2.0, lut), m.color(0.0, lut));
    assert!(r[0] > r[2], "positive is red: {r:?}");
    assert!(b[2] > b[0], "negative is blue: {b:?}");
    assert!(w.iter().all(|&c| c > 230), "zero is near white: {w:?}");
    assert_eq!(m.color(f32::NAN, lut), FLAG);
}

#[test]
fn class_layers_are_bars_of_both_runs_and_token_layers_are_labelled() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let logits = |v: &[f32]| Tensor::from_slice(v, (1, 4), &dev).unwrap();
    let hidden = Tensor::arange(0f32, 3. * 16., &dev)
        .unwrap()
        .reshape((1, 3, 16))
        .unwrap();
    let record = |v: &[f32]| {
        let (_, run) = crate::Recorder::new("m")
            .tokens([vec!["[CLS]", "hi", "[SEP]"]])
            .record(|| {
                crate::tap("hidden", &hidden)?;
                crate::tap("logits", &logits(v))
            })
            .unwrap();
        Run::open(run.save(dir.path().join("runs")).unwrap()).unwrap()
    };
    let (a, b) = (record(&[0.1, 3.0, 0.2, 0.0]), record(&[0.1, 0.2, 3.0, 0.0]));
    let d = crate::diff::diff(&a, &b, &Default::default()).unwrap();
    let page = write_diff_gallery(&d, &a, &b, &dir.path().join("d")).unwrap();
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("top class A 1, B 2"), "{html}");
    assert_eq!(html.matches("class=\"bars\"").count(), 1);
    // The token layer's pictures carry a left margin of token labels: wider than
    // the same layer drawn without tokens.
    let png = dir.path().join("d/layers/000-hidden.a.png");
    let labelled = image::open(png).unwrap().to_rgb8();
    let opts = RenderOptions {
        max_pixels: MAX_PIXELS,
        min_cell: 40,
        min_side: 200,
        ..RenderOptions::default()
    };
    let plain = render::layout(&[1, 3, 16], &opts).unwrap();
    assert!(
        labelled.width() as usize > plain.width + 30,
        "{}",
        labelled.width()
    );
}
