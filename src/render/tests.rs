//! Layouts, scales and pictures.

use super::layout::MAX_ASPECT;
use super::*;

fn opts() -> RenderOptions {
    RenderOptions::default()
}

#[test]
fn grids_are_near_square_and_cells_readable() {
    let l = layout(&[1, 32, 26, 26], &opts()).unwrap();
    assert_eq!((l.kind, l.rows, l.cols), (LayoutKind::Grid, 6, 6));
    assert!(l.cell_w >= 64 && l.cell_w < 64 + 26, "{l:?}");
    assert_eq!(l.width, 6 * l.cell_w + 5);
    let l = layout(&[2, 3, 4, 5, 6], &opts()).unwrap();
    assert_eq!((l.kind, l.tiles), (LayoutKind::Grid, 12));
}

#[test]
fn single_values_fit_budgets_below_the_minimum_side() {
    // A 1×1 map enlarged to `min_side` was "already at one cell per pixel"
    // (down == 1) and never shrank: layout looped forever (found by tests/fuzz.rs).
    for shape in [
        &[][..],
        &[1],
        &[1, 1],
        &[1, 1, 1],
        &[1, 1, 1, 1],
        &[2, 1, 1, 1],
    ] {
        for max_pixels in [1, 300, 20_000] {
            let o = RenderOptions {
                max_pixels,
                ..opts()
            };
            let l = layout(shape, &o).unwrap();
            assert!(
                l.width * l.height <= max_pixels,
                "{shape:?} {max_pixels}: {l:?}"
            );
            assert!(l.width >= 1 && l.height >= 1);
        }
    }
}

#[test]
fn shapes_choose_their_layout() {
    let k = |s: &[usize]| layout(s, &opts()).unwrap().kind;
    assert_eq!(k(&[]), LayoutKind::Folded);
    assert_eq!(k(&[7]), LayoutKind::Folded);
    assert_eq!(k(&[1, 128]), LayoutKind::Folded);
    assert_eq!(k(&[1, 8, 64]), LayoutKind::Heatmap);
    assert_eq!(k(&[1, 1, 64]), LayoutKind::Folded);
    assert_eq!(k(&[1, 20000, 1, 1]), LayoutKind::Folded);
    assert_eq!(k(&[1, 1, 1, 20000]), LayoutKind::Folded);
    assert_eq!(k(&[1, 4, 1, 300]), LayoutKind::Heatmap);
    assert_eq!(k(&[1, 0, 3, 3]), LayoutKind::Empty);
    assert!(layout(
        &[2, 3],
        &RenderOptions {
            sample: 2,
            ..opts()
        }
    )
    .is_err());
}

#[test]
fn the_pixel_budget_holds() {
    for shape in [
        vec![1, 512, 256, 256],
        vec![1, 100_000_000],
        vec![1, 2, 20000],
        vec![1, 3_000_000, 2, 2],
        vec![1, 1, 5000, 3],
    ] {
        for budget in [1000, 40_000, 4_000_000] {
            let o = RenderOptions {
                max_pixels: budget,
                ..opts()
            };
            let l = layout(&shape, &o).unwrap();
            assert!(l.width * l.height <= budget, "{shape:?} {budget}: {l:?}");
            assert!(l.tiles >= 1);
        }
    }
}

#[test]
fn heatmaps_are_not_slivers() {
    let l = layout(&[1, 8, 4096], &opts()).unwrap();
    assert!(
        l.width as f64 <= MAX_ASPECT * l.height as f64 + l.y.zoom as f64,
        "{l:?}"
    );
}

#[test]
fn downsampling_averages_and_flags() {
    // A 1×1×4×4 map reduced 2× each way.
    let mut v: Vec<f32> = (0..16).map(|i| i as f32).collect();
    v[15] = f32::NAN;
    let d = LayerData::from_f32(v);
    let mut l = layout(&[1, 1, 4, 4], &opts()).unwrap();
    l.y = Axis { zoom: 1, down: 2 };
    l.x = Axis { zoom: 1, down: 2 };
    let r = reduce_tile(&d, &l, 0);
    assert_eq!(r[0], (0. + 1. + 4. + 5.) / 4.);
    assert_eq!(r[1], (2. + 3. + 6. + 7.) / 4.);
    assert!(r[3].is_nan());
}

#[test]
fn scales_parse() {
    assert_eq!(
        "p1-99".parse::<Scale>().unwrap(),
        Scale::Percentile(1.0, 99.0)
    );
    assert_eq!("shared".parse::<Scale>().unwrap(), Scale::Shared);
    assert!("p99-1".parse::<Scale>().is_err());
}

#[test]
fn auto_scale_clips_token_layers_to_percentiles() {
    assert_eq!(Scale::default(), Scale::Auto);
    assert_eq!(
        Scale::Auto.resolve(&[1, 12, 384]),
        Scale::Percentile(1.0, 99.0)
    );
    assert_eq!(Scale::Auto.resolve(&[1, 32, 26, 26]), Scale::PerChannel);
    assert_eq!(Scale::Shared.resolve(&[1, 12, 384]), Scale::Shared);
    assert_eq!("auto".parse::<Scale>().unwrap(), Scale::Auto);
    // One outlier in a [1, T, D] layer no longer washes out the rest: with the
    // default, the typical values span most of the colour range.
    let mut v: Vec<f32> = (0..12 * 64).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
    v[5] = 100.0;
    let data = LayerData::from_f32(v);
    let auto = render(&data, &[1, 12, 64], &RenderOptions::default()).unwrap();
    let shared = RenderOptions {
        scale: Scale::Shared,
        ..RenderOptions::default()
    };
    let washed = render(&data, &[1, 12, 64], &shared).unwrap();
    // The colour range is reported: the percentiles (the outlier clipped), while
    // `range` still gives every shown value; per-channel pictures have none.
    let (lo, hi) = auto.colour_range.unwrap();
    assert!(lo >= 0.0 && hi <= 0.12 + 1e-6, "{lo} {hi}");
    assert_eq!(auto.range.unwrap().1, 100.0);
    assert_eq!(washed.colour_range, washed.range);
    let grid = render(&data, &[1, 3, 16, 16], &RenderOptions::default()).unwrap();
    assert_eq!(grid.colour_range, None);
    let distinct = |p: &Picture| {
        let mut c: Vec<[u8; 3]> = p.image.pixels().map(|p| p.0).collect();
        c.sort();
        c.dedup();
        c.len()
    };
    assert!(
        distinct(&auto) > distinct(&washed) + 5,
        "{} vs {}",
        distinct(&auto),
        distinct(&washed)
    );
}

#[test]
fn cells_and_locate_agree_with_the_painted_grid() {
    // 5 channels of 3×4, enlarged: cells in a grid with 1-pixel separators.
    let data = LayerData::from_f32((0..60).map(|v| v as f32).collect());
    let pic = render(&data, &[1, 5, 3, 4], &RenderOptions::default()).unwrap();
    let l = &pic.layout;
    let cells = l.cells();
    assert_eq!(cells.len(), 5);
    for c in &cells {
        assert!(c.x + c.w <= l.width && c.y + c.h <= l.height, "{c:?}");
        assert_eq!((c.rows, c.cols, c.w, c.h), (3, 4, l.cell_w, l.cell_h));
    }
    // Channel 4's value at row 2, column 1 sits at its cell's offset + zoom.
    let c = cells[4];
    let (x, y) = (c.x + l.x.zoom + 1, c.y + 2 * l.y.zoom + 1);
    let spot = l.locate(x, y).unwrap();
    assert_eq!((spot.cell, spot.row, spot.col), (4, 2, 1));
    assert_eq!(
        pic.values[spot.cell][spot.row * 4 + spot.col],
        4.0 * 12.0 + 9.0
    );
    // Separators and the empty grid slot show nothing.
    assert!(l.locate(cells[1].x - 1, cells[1].y).is_none());
    assert!(l.locate(l.width - 1, l.height - 1).is_none());
}

#[test]
fn pictures_are_painted_cell_by_cell_with_separators() {
    // A reference painter, pixel by pixel, against `paint` (rows in parallel):
    // 7 maps of 5×3 in a grid with an empty slot, enlarged.
    let shape = [1, 7, 5, 3];
    let o = RenderOptions {
        min_cell: 20,
        ..opts()
    };
    let values: Vec<f32> = (0..105).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
    let data = LayerData::from_f32(values.clone());
    let pic = render(&data, &shape, &o).unwrap();
    let l = &pic.layout;
    assert!(
        l.y.zoom > 1 && l.x.zoom > 1 && l.rows * l.cols > l.tiles,
        "{l:?}"
    );
    let lut = pic.colormap.lut();
    let (own, all): (Vec<_>, Vec<_>) = pic
        .values
        .iter()
        .map(|t| finite_range(t))
        .map(|r| (r, r))
        .unzip();
    let all = all
        .into_iter()
        .flatten()
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    for y in 0..l.height {
        for x in 0..l.width {
            let (gr, yy) = (y / (l.cell_h + l.separator), y % (l.cell_h + l.separator));
            let (gc, xx) = (x / (l.cell_w + l.separator), x % (l.cell_w + l.separator));
            let t = gr * l.cols + gc;
            let want = if yy >= l.cell_h || xx >= l.cell_w || t >= l.tiles {
                SEPARATOR
            } else {
                let v = pic.values[t][(yy / l.y.zoom) * 3 + xx / l.x.zoom];
                Mapping::new(pic.colormap, own[t], all).color(v, lut)
            };
            assert_eq!(
                pic.image.get_pixel(x as u32, y as u32).0,
                want,
                "({x}, {y})"
            );
        }
    }
}

#[test]
fn finite_ranges_skip_nan_inf_and_blank() {
    let naive = |v: &[f32]| {
        let f: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
        (!f.is_empty()).then(|| {
            let lo = f.iter().copied().fold(f32::INFINITY, f32::min);
            (lo, f.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        })
    };
    for n in [0, 1, 15, 16, 17, 100] {
        for bad in [f32::NAN, f32::INFINITY, BLANK] {
            let mut v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
            for i in (0..n).step_by(3) {
                v[i] = bad;
            }
            assert_eq!(finite_range(&v), naive(&v), "{n} {bad}");
            assert_eq!(finite_range(&vec![bad; n]), None);
        }
    }
}
