//! `scan_cells` (painted) against the separate reads it replaced.
use super::super::{layout, render, Scale};
use super::*;
use crate::values::LayerData;

/// Pseudo-random values in [-1, 1) shifted by `shift`, with zeros, and NaN /
/// ±Inf sprinkled when `bad`.
fn values(n: usize, seed: u64, shift: f32, bad: bool) -> Vec<f32> {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            match z % 997 {
                0 if bad => f32::NAN,
                1 if bad => f32::INFINITY,
                2 if bad => f32::NEG_INFINITY,
                3..=40 => 0.0,
                _ => (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + shift + (i % 7) as f32,
            }
        })
        .collect()
}

/// The separate computations the card made before the scan.
fn separate(
    data: &LayerData<'_>,
    shape: &[usize],
    o: &RenderOptions,
    bins: usize,
) -> (Stats, Histogram, Option<Activity>, Result<Picture>) {
    let stats = Stats::of(data);
    let act = if stats.min.is_finite() {
        Activity::of(data, shape, stats.min)
    } else {
        None
    };
    (
        stats,
        Histogram::of(data, &stats, bins),
        act,
        render(data, shape, o),
    )
}

/// Tolerance of a picture cell: 1 ulp of f32 (a cell straddling two chunks
/// adds two partial f64 sums); NaN and blank cells exactly.
fn same_cell(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
        || (a.is_nan() && b.is_nan())
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= a.abs().max(b.abs()) * f32::EPSILON)
}

fn check(v: Vec<f32>, shape: &[usize], o: &RenderOptions, hint: Hint) -> u32 {
    let data = LayerData::from_f32(v);
    let bins = 64;
    let (stats, hist, act, pic) = separate(&data, shape, o, bins);
    let h = match hint {
        Hint::None => None,
        Hint::Right => Some(stats),
        Hint::Wrong => Some(Stats {
            min: stats.min - 0.5,
            max: stats.max * 0.5,
            ..stats
        }),
        Hint::Negative => Some(Stats { min: -1.0, ..stats }),
    };
    let scan = scan_cells(&data, shape, o, bins, h.as_ref(), true)
        .unwrap()
        .paint();
    let what = format!("{shape:?} {hint:?}");
    assert_eq!(format!("{:?}", scan.stats), format!("{stats:?}"), "{what}");
    assert_eq!(
        format!("{:?}", scan.histogram),
        format!("{hist:?}"),
        "{what}"
    );
    assert_eq!(scan.activity, act, "{what}");
    match (scan.picture, pic) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.layout, b.layout, "{what}");
            assert_eq!(a.values.len(), b.values.len(), "{what}");
            for (ta, tb) in a.values.iter().zip(&b.values) {
                assert_eq!(ta.len(), tb.len(), "{what}");
                for (i, (&x, &y)) in ta.iter().zip(tb).enumerate() {
                    assert!(same_cell(x, y), "{what}: cell {i}: {x} vs {y}");
                }
            }
            if a.values == b.values {
                assert_eq!(a.image, b.image, "{what}");
            }
            assert_eq!(a.colormap, b.colormap, "{what}");
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}"),
        (a, b) => panic!("{what}: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
    }
    scan.reads
}

#[derive(Debug, Clone, Copy)]
enum Hint {
    None,
    Right,
    Wrong,
    Negative,
}

#[test]
fn one_read_gives_what_the_separate_reads_gave() {
    let small = RenderOptions {
        max_pixels: 5_000,
        ..RenderOptions::default()
    };
    let big = BATCH * SCAN_CHUNK + 1234;
    let px = |max_pixels| RenderOptions {
        max_pixels,
        ..RenderOptions::default()
    };
    let downs: Vec<(usize, usize)> = [1 << 18, 117_000, 1 << 16]
        .into_iter()
        .map(|m| layout(&[1, 1 << 20], &px(m)).unwrap())
        .map(|l| (l.y.down, l.x.down))
        .collect();
    assert_eq!(downs, [(2, 2), (3, 3), (4, 4)]);
    let cases: Vec<(Vec<usize>, RenderOptions)> = vec![
        (vec![big], RenderOptions::default()),
        (vec![1, big], small.clone()),
        (vec![3, 7, 301, 290], small.clone()),
        (vec![2, 64, 40, 40], RenderOptions::default()),
        (vec![4, 333, 1001], small.clone()),
        (
            vec![2, 50, 3001],
            RenderOptions {
                scale: Scale::Percentile(1.0, 99.0),
                sample: 1,
                ..small.clone()
            },
        ),
        (vec![5, 10], RenderOptions::default()),
        // Folded 1024 × 1024 reduced by 2, 3, 4 and 5 (each a path of `add_row`).
        (vec![1, 1 << 20], px(1 << 18)),
        (vec![1, 1 << 20], px(117_000)),
        (vec![1, 1 << 20], px(1 << 16)),
        (vec![1, 1000, 1000], px(40_000)),
        // Folded with a short last row: its band's cells are summed over the
        // whole rows and the short one (reduced by 2, 5 and 4).
        (vec![1, 10_007], px(5_000)),
        (vec![1, 33_333], px(2_000)),
        (vec![1, 250_001], px(20_000)),
        (vec![0, 4], RenderOptions::default()),
        (vec![1], RenderOptions::default()),
    ];
    for (shape, o) in &cases {
        let n: usize = shape.iter().product();
        // Big layers (several batches) with the hint only: the fallbacks do
        // not depend on the size, and debug builds are slow.
        let (seeds, hints) = if n >= 1 << 20 {
            (&[(2, 1.5, false), (3, 0.0, true)][..], &[Hint::Right][..])
        } else {
            (
                &[(1, 0.0, false), (2, 1.5, false), (3, 0.0, true)][..],
                &[Hint::None, Hint::Right, Hint::Wrong, Hint::Negative][..],
            )
        };
        for &(seed, shift, bad) in seeds {
            let v = values(n, seed, shift, bad);
            for &hint in hints {
                let reads = check(v.clone(), shape, o, hint);
                if matches!(hint, Hint::Right) && n > 0 {
                    assert_eq!(reads, 1, "{shape:?} {seed}: one read with the hint");
                }
            }
        }
    }
}

#[test]
fn constant_empty_and_non_finite_layers() {
    let o = RenderOptions::default();
    for v in [
        vec![0.0; 1000],
        vec![2.5; 70_000],
        vec![f32::NAN; 10],
        vec![f32::INFINITY, 1.0, f32::NAN, 0.0],
        vec![],
    ] {
        let n = v.len();
        let shape = [1, n];
        for hint in [Hint::None, Hint::Right, Hint::Wrong] {
            let reads = check(v.clone(), &shape, &o, hint);
            // Constant or no finite value: the histogram needs no read; a
            // non-negative layer's units take a second read without the hint.
            assert!(reads <= 1 || !matches!(hint, Hint::Right), "{n} {hint:?}");
        }
    }
}

#[test]
fn units_only_when_asked() {
    let data = LayerData::from_f32(vec![0.0, 1.0, 0.0, 2.0]);
    let o = RenderOptions::default();
    let s = scan_cells(&data, &[2, 2], &o, 8, None, false).unwrap();
    // Without a hint: the histogram's second read, no units.
    assert_eq!((s.activity, s.reads), (None, 2));
    let s = scan_cells(&data, &[2, 2], &o, 8, None, true).unwrap();
    assert_eq!((s.activity.unwrap().never_active, s.reads), (vec![0], 3));
    let hint = s.stats;
    let s = scan_cells(&data, &[2, 2], &o, 8, Some(&hint), true).unwrap();
    assert_eq!((s.activity.unwrap().never_active, s.reads), (vec![0], 1));
}

#[test]
fn the_hint_survives_a_json_round_trip_of_f16_data() {
    // Stored statistics are parsed from JSON; f16 values widened to f64.
    let v: Vec<half::f16> = values(100_000, 4, 0.3, false)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let data = LayerData::from_bytes(bytes.into(), Dtype::F16).unwrap();
    let stats = Stats::of(&data);
    let hint = Stats {
        min: f64::from_bits(stats.min.to_bits() + 1),
        ..stats
    };
    let shape = [1, 100_000];
    let scan = scan_cells(
        &data,
        &shape,
        &RenderOptions::default(),
        64,
        Some(&hint),
        true,
    )
    .unwrap();
    assert_eq!(scan.reads, 1);
    assert_eq!(scan.histogram, Histogram::of(&data, &stats, 64));
}
