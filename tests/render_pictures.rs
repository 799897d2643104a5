//! Pictures of hand-made layers, checked pixel by pixel after a PNG round trip.

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};
use candlelight::render::{
    encode_png, layout, render, render_layer, render_tensor, Colormap, LayoutKind, RenderOptions,
    Scale, FLAG, SEPARATOR,
};
use candlelight::LayerData;
use image::RgbImage;

fn decode(png: &[u8]) -> RgbImage {
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("valid PNG")
        .to_rgb8()
}

/// Renders through PNG and back.
fn picture(values: Vec<f32>, shape: &[usize], opts: &RenderOptions) -> RgbImage {
    let img = render_layer(&LayerData::from_f32(values), shape, opts).unwrap();
    let back = decode(&encode_png(&img).unwrap());
    assert_eq!(back.as_raw(), img.as_raw(), "PNG round trip is lossless");
    back
}

fn px(img: &RgbImage, x: usize, y: usize) -> [u8; 3] {
    img.get_pixel(x as u32, y as u32).0
}

#[test]
fn a_channel_grid_has_the_stated_geometry_and_colours() {
    // Three 4×5 channels: a ramp 0..19, a constant 7, and a ramp with two NaN cells.
    let (c, h, w) = (3, 4, 5);
    let mut v: Vec<f32> = Vec::new();
    v.extend((0..20).map(|i| i as f32));
    v.extend(std::iter::repeat_n(7.0, 20));
    v.extend((0..20).map(|i| (i * 2) as f32));
    v[40 + 6] = f32::NAN;
    v[40 + 13] = f32::INFINITY;
    let opts = RenderOptions {
        min_cell: 10,
        separator: 2,
        ..RenderOptions::default()
    };
    let l = layout(&[1, c, h, w], &opts).unwrap();
    // cols = ceil(sqrt(3 * 4 / 5)) = 2, rows = 2; zoom = ceil(10 / 5) = 2.
    assert_eq!((l.kind, l.rows, l.cols), (LayoutKind::Grid, 2, 2));
    assert_eq!((l.y.zoom, l.x.zoom, l.cell_h, l.cell_w), (2, 2, 8, 10));
    assert_eq!((l.width, l.height), (2 * 10 + 2, 2 * 8 + 2));
    let img = picture(v.clone(), &[1, c, h, w], &opts);
    assert_eq!(img.dimensions(), (22, 18));

    let cm = Colormap::Viridis; // all finite values are >= 0
    for y in 0..18 {
        for x in 0..22 {
            let (gy, gx) = (y / (8 + 2), x / (10 + 2));
            let (cy, cx) = (y % (8 + 2), x % (10 + 2));
            let got = px(&img, x, y);
            if cy >= 8 || cx >= 10 || gy * 2 + gx >= c {
                assert_eq!(got, SEPARATOR, "separator or unused cell at ({x}, {y})");
                continue;
            }
            let ch = gy * 2 + gx;
            let value = v[ch * 20 + (cy / 2) * w + cx / 2];
            let expect = match ch {
                // Each channel is scaled to its own range.
                0 => cm.color(value / 19.0),
                // A constant channel gets its place on the scale of all shown values.
                1 => cm.color(7.0 / 38.0),
                _ if !value.is_finite() => FLAG,
                _ => cm.color(value / 38.0),
            };
            assert_eq!(got, expect, "channel {ch} at ({x}, {y}), value {value}");
        }
    }
}

#[test]
fn signed_layers_are_centred_on_zero() {
    // One 1×5 row per channel would fold; use a 2×3 map: -2, -1, 0, 1, 2, 0.5.
    let v = vec![-2.0, -1.0, 0.0, 1.0, 2.0, 0.5];
    let opts = RenderOptions {
        min_side: 3,
        ..RenderOptions::default()
    };
    let img = picture(v.clone(), &[1, 1, 2, 3], &opts);
    assert_eq!(img.dimensions(), (3, 2));
    let cm = Colormap::RdBu;
    for (i, &value) in v.iter().enumerate() {
        assert_eq!(px(&img, i % 3, i / 3), cm.color(0.5 + 0.5 * value / 2.0));
    }
    // Zero is the map's middle; -2 and 2 its ends.
    assert_eq!(px(&img, 2, 0), cm.color(0.5));
    assert_eq!(px(&img, 0, 0), cm.color(0.0));
    assert_eq!(px(&img, 1, 1), cm.color(1.0));
}

#[test]
fn shared_and_percentile_scales() {
    // Channel 0: 0..3, channel 1: 10..13 (2×2 each).
    let v: Vec<f32> = vec![0., 1., 2., 3., 10., 11., 12., 13.];
    let opts = RenderOptions {
        scale: Scale::Shared,
        min_cell: 2,
        separator: 1,
        ..RenderOptions::default()
    };
    let img = picture(v.clone(), &[1, 2, 2, 2], &opts);
    assert_eq!(img.dimensions(), (5, 2));
    let cm = Colormap::Viridis;
    assert_eq!(px(&img, 0, 0), cm.color(0.0));
    assert_eq!(px(&img, 4, 1), cm.color(1.0));
    assert_eq!(px(&img, 3, 0), cm.color(10.0 / 13.0));

    // 100 values 0..99 and one outlier: clipped to the 0th..99th percentile.
    let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect();
    v.push(1e9);
    v.extend(std::iter::repeat_n(0.0, 20)); // pad to 11×11
    let opts = RenderOptions {
        scale: Scale::Percentile(0.0, 99.0),
        min_side: 11,
        ..RenderOptions::default()
    };
    let img = picture(v.clone(), &[1, 1, 11, 11], &opts);
    let ranked = {
        let mut s = v.clone();
        s.sort_by(f32::total_cmp);
        s[((0.99 * (s.len() - 1) as f64).round()) as usize]
    };
    assert_eq!(
        px(&img, 100 % 11, 100 / 11),
        cm.color(1.0),
        "outlier clipped"
    );
    assert_eq!(px(&img, 50 % 11, 50 / 11), cm.color(50.0 / ranked));
}

#[test]
fn a_photo_like_map_keeps_its_structure() {
    // A smooth non-negative 2-D pattern: brightness in viridis must follow the values.
    let (h, w) = (90, 120);
    let v: Vec<f32> = (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as f32, (i % w) as f32);
            (x / 17.0).sin() * (y / 11.0).cos() + x / w as f32 + 1.0
        })
        .collect();
    let img = picture(v.clone(), &[1, 1, h, w], &RenderOptions::default());
    let zoom = img.width() as usize / w;
    assert!(zoom >= 2 && img.height() as usize == h * zoom);
    let luma = |c: [u8; 3]| 0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64;
    let pairs: Vec<(f64, f64)> = (0..h * w)
        .map(|i| {
            let p = px(&img, (i % w) * zoom, (i / w) * zoom);
            (v[i] as f64, luma(p))
        })
        .collect();
    let n = pairs.len() as f64;
    let (ma, mb) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
    let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
    let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
    let r = cov / (va * vb).sqrt();
    assert!(r > 0.98, "value/brightness correlation {r}");
}

#[test]
fn huge_layers_are_downsampled_within_the_budget() {
    // 16 channels of 600×600 as bf16 bytes (11.5 MB); channel k holds k, one NaN in channel 5.
    let (c, s) = (16usize, 600usize);
    let mut bytes = Vec::with_capacity(c * s * s * 2);
    for k in 0..c {
        for i in 0..s * s {
            let v = if k == 5 && i == 1234 {
                f32::NAN
            } else {
                k as f32
            };
            bytes.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
        }
    }
    let data = LayerData::from_bytes(Cow::Owned(bytes), safetensors::Dtype::BF16).unwrap();
    let opts = RenderOptions::default();
    let pic = render(&data, &[1, c, s, s], &opts).unwrap();
    let l = &pic.layout;
    assert!(l.width * l.height <= opts.max_pixels, "{l:?}");
    assert!(l.x.down >= 2 && l.y.down >= 2, "{l:?}");
    assert_eq!((l.rows, l.cols, l.tiles), (4, 4, 16));
    // Constant channels take their place on the shared scale 0..15.
    let cell = |k: usize| {
        let (x, y) = ((k % 4) * (l.cell_w + 1), (k / 4) * (l.cell_h + 1));
        (x, y)
    };
    let (x, y) = cell(3);
    assert_eq!(
        px(&pic.image, x + 3, y + 3),
        Colormap::Viridis.color(3.0 / 15.0)
    );
    // The block holding the NaN is flagged.
    let (x, y) = cell(5);
    let (r, col) = (1234 / s / l.y.down, 1234 % s / l.x.down);
    assert_eq!(px(&pic.image, x + col, y + r), FLAG);
    assert_eq!(
        px(&pic.image, x + col + 2, y + r + 2),
        Colormap::Viridis.color(5.0 / 15.0)
    );
}

#[test]
fn the_sample_is_selectable() {
    // Two samples of one 2×2 map: sample 1 is sample 0 reversed.
    let v = vec![0., 1., 2., 3., 3., 2., 1., 0.];
    let o = |sample| RenderOptions {
        sample,
        min_side: 2,
        ..RenderOptions::default()
    };
    let a = picture(v.clone(), &[2, 1, 2, 2], &o(0));
    let b = picture(v.clone(), &[2, 1, 2, 2], &o(1));
    assert_eq!(px(&a, 0, 0), px(&b, 1, 1));
    assert_ne!(px(&a, 0, 0), px(&b, 0, 0));
    let err = render_layer(&LayerData::from_f32(v), &[2, 1, 2, 2], &o(2)).unwrap_err();
    assert!(err.to_string().contains("sample 2"), "{err}");
}

#[test]
fn odd_layers_render_without_panic() {
    let dev = Device::Cpu;
    let opts = RenderOptions::default();
    let cases: Vec<(&str, Tensor)> = vec![
        ("zero-size", Tensor::zeros((0,), DType::F32, &dev).unwrap()),
        (
            "zero channels",
            Tensor::zeros((1, 0, 3, 3), DType::F32, &dev).unwrap(),
        ),
        ("scalar", Tensor::new(3.5f32, &dev).unwrap()),
        (
            "5-D",
            Tensor::arange(0f32, 720., &dev)
                .unwrap()
                .reshape((2, 3, 4, 5, 6))
                .unwrap(),
        ),
        (
            "20000 1x1",
            Tensor::arange(0f32, 20000., &dev)
                .unwrap()
                .reshape((1, 20000, 1, 1))
                .unwrap(),
        ),
        (
            "1x20000",
            Tensor::arange(0f32, 20000., &dev)
                .unwrap()
                .reshape((1, 20000))
                .unwrap(),
        ),
        (
            "1x1x1x20000",
            Tensor::arange(0f32, 20000., &dev)
                .unwrap()
                .reshape((1, 1, 1, 20000))
                .unwrap(),
        ),
        (
            "2x20000 seq",
            Tensor::arange(0f32, 40000., &dev)
                .unwrap()
                .reshape((1, 2, 20000))
                .unwrap(),
        ),
        (
            "f16",
            Tensor::arange(-8f32, 8., &dev)
                .unwrap()
                .reshape((1, 4, 2, 2))
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
        (
            "bf16",
            Tensor::arange(-8f32, 8., &dev)
                .unwrap()
                .reshape((1, 4, 2, 2))
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "u8",
            Tensor::arange(0u8, 16, &dev)
                .unwrap()
                .reshape((1, 4, 2, 2))
                .unwrap(),
        ),
        (
            "i64",
            Tensor::arange(-8i64, 8, &dev)
                .unwrap()
                .reshape((2, 8))
                .unwrap(),
        ),
        (
            "all NaN",
            Tensor::full(f32::NAN, (1, 3, 4, 4), &dev).unwrap(),
        ),
        (
            "constant",
            Tensor::full(2.5f32, (1, 3, 4, 4), &dev).unwrap(),
        ),
        (
            "zeros",
            Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap(),
        ),
    ];
    for (name, t) in cases {
        let img = render_tensor(&t, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h) = img.dimensions();
        assert!(
            w > 0 && h > 0 && (w * h) as usize <= opts.max_pixels,
            "{name}: {w}×{h}"
        );
        let colors: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        match name {
            "all NaN" => assert_eq!(colors, [FLAG, SEPARATOR].into(), "{name}"),
            "constant" | "zeros" | "scalar" => {
                let cells: Vec<_> = colors.iter().filter(|c| **c != SEPARATOR).collect();
                assert_eq!(cells.len(), 1, "{name}: one colour");
            }
            "zero-size" | "zero channels" => assert_eq!(colors, [SEPARATOR].into(), "{name}"),
            _ => assert!(colors.len() > 2, "{name}: shows values"),
        }
    }
}
