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
