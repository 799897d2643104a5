//! Cell numbers on grid pictures (channel `c`, attention head `h`), drawn with a
//! tiny built-in digit font so pictures stay self-describing PNGs.

use image::RgbImage;

use super::layout::{Layout, LayoutKind};

/// 3×5 digits, one row per byte (bit 2 = left column).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Smallest cell side that gets a number.
pub(super) const MIN_CELL: usize = 16;

/// Writes each grid cell's number (0-based, in the order cells are filled) in its
/// top-left corner: white digits on a black box, scaled up in big cells.
pub(super) fn number_cells(img: &mut RgbImage, l: &Layout) {
    if l.kind != LayoutKind::Grid || l.cell_w < MIN_CELL || l.cell_h < MIN_CELL {
        return;
    }
    let scale = (l.cell_w.min(l.cell_h) / 48).clamp(1, 3);
    for t in 0..l.tiles {
        let (gr, gc) = (t / l.cols, t % l.cols);
        let x0 = gc * (l.cell_w + l.separator);
        let y0 = gr * (l.cell_h + l.separator);
        let text = t.to_string();
        let box_w = (text.len() * 4 + 1) * scale;
        let box_h = 7 * scale;
        if box_w > l.cell_w / 2 + scale * 4 {
            continue; // a number wider than half the cell would hide it
        }
        fill(img, x0, y0, box_w, box_h, [0, 0, 0]);
        for (k, ch) in text.bytes().enumerate() {
            let glyph = DIGITS[(ch - b'0') as usize];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let x = x0 + (1 + k * 4 + col) * scale;
                        let y = y0 + (1 + row) * scale;
                        fill(img, x, y, scale, scale, [255, 255, 255]);
                    }
                }
            }
        }
    }
}

fn fill(img: &mut RgbImage, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]) {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    for y in y0..(y0 + h).min(ih) {
        for x in x0..(x0 + w).min(iw) {
            img.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, RenderOptions};
    use crate::LayerData;

    #[test]
    fn grid_cells_carry_their_number_when_asked() {
        let data = LayerData::from_f32(vec![0.5; 12 * 32 * 32]);
        let plain = render(&data, &[1, 12, 32, 32], &RenderOptions::default()).unwrap();
        let o = RenderOptions {
            labels: true,
            ..RenderOptions::default()
        };
        let labelled = render(&data, &[1, 12, 32, 32], &o).unwrap();
        let l = &labelled.layout;
        assert_eq!(plain.image.dimensions(), labelled.image.dimensions());
        assert_ne!(plain.image, labelled.image);
        // Cell 11's box: black at its corner, a white pixel of "1" inside.
        let (gr, gc) = (11 / l.cols, 11 % l.cols);
        let (x0, y0) = (gc * (l.cell_w + l.separator), gr * (l.cell_h + l.separator));
        let s = (l.cell_w.min(l.cell_h) / 48).clamp(1, 3);
        assert_eq!(labelled.image.get_pixel(x0 as u32, y0 as u32).0, [0, 0, 0]);
        assert_eq!(
            labelled
                .image
                .get_pixel((x0 + 2 * s) as u32, (y0 + s) as u32)
                .0,
            [255, 255, 255]
        );
        // Tiny cells and heatmaps get no numbers.
        let small = RenderOptions {
            min_cell: 1,
            ..o.clone()
        };
        let d = LayerData::from_f32(vec![0.5; 64 * 4 * 4]);
        let tiny = render(&d, &[1, 64, 4, 4], &small).unwrap();
        assert!(tiny.layout.cell_w < MIN_CELL);
        let tiny_plain = render(
            &d,
            &[1, 64, 4, 4],
            &RenderOptions {
                labels: false,
                ..small
            },
        )
        .unwrap();
        assert_eq!(tiny.image, tiny_plain.image);
        let d = LayerData::from_f32(vec![0.5; 12 * 64]);
        let heat = render(&d, &[1, 12, 64], &o).unwrap();
        let heat_plain = render(&d, &[1, 12, 64], &RenderOptions::default()).unwrap();
        assert_eq!(heat.image, heat_plain.image);
    }
}
