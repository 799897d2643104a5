//! Labels drawn into pictures so they stay self-describing PNGs: cell numbers on
//! grid pictures (channel, attention head) with a tiny built-in digit font, and
//! token labels in margins beside token axes (rows of `[N, T, D]`; query rows and
//! key columns of `[N, heads, T, T]`) with the public-domain 8×8 font of `font8x8`.

use image::RgbImage;

use super::layout::{Layout, LayoutKind};
use super::RenderOptions;

/// Pixels per token row (or column) wanted so its label is legible; the picture
/// gets them when the pixel budget allows, else every k-th token is labelled.
pub(super) const TOKEN_PX: usize = 10;
/// Characters of a token label shown (longer ones end in `~`).
pub const TOKEN_CHARS: usize = 12;
const GLYPH: usize = 8;
const INK: [u8; 3] = [40, 40, 40];
const PAPER: [u8; 3] = [255, 255, 255];

/// The token lists that label the rows and the columns of a layer of `shape`,
/// given the tokens of the sample shown: rows of `[N, T, D]` when T is the number
/// of tokens; rows and columns of `[N, H, T, S]` (attention patterns) when T, S
/// are. Nothing for other shapes or another count.
pub(crate) fn token_axes<'a>(
    shape: &[usize],
    tokens: Option<&'a [String]>,
) -> (Option<&'a [String]>, Option<&'a [String]>) {
    let Some(t) = tokens.filter(|t| t.len() > 1) else {
        return (None, None);
    };
    let is = |d: usize| (d == t.len()).then_some(t);
    match shape {
        [_, rows, d] if *d > 1 => (is(*rows), None),
        [_, _, rows, cols] if *rows > 1 && *cols > 1 => (is(*rows), is(*cols)),
        _ => (None, None),
    }
}

/// The tokens of the shown sample (`opts.tokens[sample]`, or the only list).
pub(crate) fn sample_tokens(opts: &RenderOptions) -> Option<&[String]> {
    let all = opts.tokens.as_ref()?;
    let i = if all.len() == 1 { 0 } else { opts.sample };
    all.get(i).map(Vec::as_slice)
}

/// Least pixels per row and column of a layer's cells (y, x) so token labels fit.
pub(super) fn token_min_px(shape: &[usize], opts: &RenderOptions) -> (usize, usize) {
    let (r, c) = token_axes(shape, sample_tokens(opts));
    let px = |a: Option<&[String]>| if a.is_some() { TOKEN_PX } else { 1 };
    (px(r), px(c))
}

/// `caption` (a [`Layout::describe`]) told what the axes are: attention patterns
/// (kind `attention_probs`, or `[N, H, T, T]` labelled with tokens) show heads of
/// query rows × key columns; labelled token layers show one token per row.
pub fn caption_with_axes(
    caption: &str,
    shape: &[usize],
    kind: Option<&str>,
    opts: &RenderOptions,
) -> String {
    let (rows, cols) = token_axes(shape, sample_tokens(opts));
    let attention = kind == Some("attention_probs") || (rows.is_some() && cols.is_some());
    if attention && shape.len() == 4 {
        let c = caption
            .replace("channels", "heads")
            .replace("one ", "one head, ");
        let tokens = if rows.is_some() {
            " (token labels)"
        } else {
            ""
        };
        return format!("{c}; rows: query tokens, columns: key tokens{tokens}");
    }
    match rows {
        Some(_) => format!("{caption}; one row per token (token labels)"),
        None => caption.to_string(),
    }
}

/// A token as drawn: printable ASCII (others become `?`), at most [`TOKEN_CHARS`].
fn label_text(token: &str) -> Vec<u8> {
    let mut b: Vec<u8> = token
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c as u8
            } else {
                b'?'
            }
        })
        .collect();
    if b.len() > TOKEN_CHARS {
        b.truncate(TOKEN_CHARS - 1);
        b.push(b'~');
    }
    b
}

fn glyph(c: u8) -> [u8; 8] {
    use font8x8::UnicodeFonts;
    font8x8::BASIC_FONTS
        .get(c as char)
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// Margin for labels of `tokens` on an axis that has them: the longest label of
/// any sample (`widest` characters) plus padding, so every sample's picture of a
/// layer has the same layout (pages locate cells once for all samples).
fn margin(tokens: Option<&[String]>, widest: usize) -> usize {
    tokens.map_or(0, |t| {
        let own = t.iter().map(|s| label_text(s).len()).max().unwrap_or(0);
        own.max(widest) * GLYPH + 6
    })
}

/// Characters of the longest token label of every sample in `opts`.
pub(crate) fn widest_label(opts: &RenderOptions) -> usize {
    opts.tokens
        .iter()
        .flatten()
        .flatten()
        .map(|s| label_text(s).len())
        .max()
        .unwrap_or(0)
}

/// Every `step`-th token is labelled so labels never overlap: `px` pixels per token.
fn label_step(a: &super::Axis) -> usize {
    (GLYPH * a.down).div_ceil(a.zoom).max(1)
}

/// `img` (painted for `l`) inside margins holding the row labels (left, right-aligned,
/// repeated beside each grid row) and column labels (top, read bottom to top,
/// repeated above each grid column), each margin wide enough for `widest`
/// characters. Updates `l`'s origin and size.
pub(crate) fn token_margins(
    img: &RgbImage,
    l: &mut Layout,
    rows: Option<&[String]>,
    cols: Option<&[String]>,
    widest: usize,
) -> RgbImage {
    let (left, top) = (margin(rows, widest), margin(cols, widest));
    if left == 0 && top == 0 || l.kind == LayoutKind::Empty {
        return img.clone();
    }
    let (w, h) = (img.width() as usize + left, img.height() as usize + top);
    let mut out = RgbImage::from_pixel(w as u32, h as u32, image::Rgb(PAPER));
    image::imageops::replace(&mut out, img, left as i64, top as i64);
    l.origin_x += left;
    l.origin_y += top;
    l.width = w;
    l.height = h;
    if let Some(rows) = rows {
        let step = label_step(&l.y);
        for gr in 0..l.rows {
            let y0 = top + gr * (l.cell_h + l.separator);
            for (i, t) in rows.iter().enumerate().step_by(step) {
                let text = label_text(t);
                let y = y0 + (i / l.y.down) * l.y.zoom + l.y.zoom.saturating_sub(GLYPH) / 2;
                let x = left - 3 - text.len() * GLYPH;
                draw_text(&mut out, x, y, &text, false);
            }
        }
    }
    if let Some(cols) = cols {
        let step = label_step(&l.x);
        for gc in 0..l.cols {
            let x0 = left + gc * (l.cell_w + l.separator);
            for (j, t) in cols.iter().enumerate().step_by(step) {
                let text = label_text(t);
                let x = x0 + (j / l.x.down) * l.x.zoom + l.x.zoom.saturating_sub(GLYPH) / 2;
                draw_text(&mut out, x, top - 3, &text, true);
            }
        }
    }
    out
}

/// Draws `text` with its top-left corner at (x, y); `up`: rotated a quarter turn
/// to read bottom to top, starting at (x, y) and going up.
fn draw_text(img: &mut RgbImage, x: usize, y: usize, text: &[u8], up: bool) {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    for (k, &c) in text.iter().enumerate() {
        for (gy, bits) in glyph(c).iter().enumerate() {
            for gx in 0..GLYPH {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                let (px, py) = if up {
                    // Glyph column gx runs upward from the baseline at y.
                    (x + gy, y.checked_sub(k * GLYPH + gx + 1))
                } else {
                    (x + k * GLYPH + gx, Some(y + gy))
                };
                if let Some(py) = py.filter(|&py| py < ih && px < iw) {
                    img.put_pixel(px as u32, py as u32, image::Rgb(INK));
                }
            }
        }
    }
}

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
pub(crate) fn number_cells(img: &mut RgbImage, l: &Layout) {
    if l.kind != LayoutKind::Grid || l.cell_w < MIN_CELL || l.cell_h < MIN_CELL {
        return;
    }
    let scale = (l.cell_w.min(l.cell_h) / 48).clamp(1, 3);
    for t in 0..l.tiles {
        let (gr, gc) = (t / l.cols, t % l.cols);
        let x0 = l.origin_x + gc * (l.cell_w + l.separator);
        let y0 = l.origin_y + gr * (l.cell_h + l.separator);
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

#[cfg(test)]
mod token_tests {
    use super::*;
    use crate::render::{render, RenderOptions};
    use crate::LayerData;

    fn toks(words: &[&str]) -> Option<Vec<Vec<String>>> {
        Some(vec![words.iter().map(|w| w.to_string()).collect()])
    }

    fn ink_in(img: &RgbImage, x: std::ops::Range<usize>, y: std::ops::Range<usize>) -> usize {
        let mut n = 0;
        for yy in y {
            for xx in x.clone() {
                n += (img.get_pixel(xx as u32, yy as u32).0 == INK) as usize;
            }
        }
        n
    }

    #[test]
    fn token_axes_follow_the_shape_and_the_count() {
        let t: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = Some(t.as_slice());
        assert!(matches!(token_axes(&[2, 3, 8], t), (Some(_), None)));
        assert!(matches!(token_axes(&[2, 4, 3, 3], t), (Some(_), Some(_))));
        // Cross-attention: only the axis with the token count.
        assert!(matches!(token_axes(&[2, 4, 5, 3], t), (None, Some(_))));
        assert!(matches!(token_axes(&[2, 4, 8], t), (None, None)));
        assert!(matches!(token_axes(&[3, 8], t), (None, None)));
        assert!(matches!(token_axes(&[2, 3, 1], t), (None, None)));
        assert!(matches!(token_axes(&[2, 3, 8], None), (None, None)));
    }

    #[test]
    fn labels_are_printable_ascii_and_short() {
        assert_eq!(label_text("[CLS]"), b"[CLS]");
        assert_eq!(label_text("日本"), b"??");
        assert_eq!(label_text("\u{1b}[31m"), b"?[31m");
        let long = label_text("abcdefghijklmnopq");
        assert_eq!(long.len(), TOKEN_CHARS);
        assert_eq!(*long.last().unwrap(), b'~');
    }

    #[test]
    fn glyphs_are_drawn_left_to_right_and_rotated_for_columns() {
        // font8x8 'L': bottom row 0x7F = seven pixels from the left.
        let mut img = RgbImage::from_pixel(8, 8, image::Rgb(PAPER));
        draw_text(&mut img, 0, 0, b"L", false);
        assert_eq!(img.get_pixel(0, 6).0, INK);
        assert_eq!(img.get_pixel(7, 6).0, PAPER);
        // Rotated a quarter turn: that row becomes column 6, running up from the base.
        let mut img = RgbImage::from_pixel(8, 8, image::Rgb(PAPER));
        draw_text(&mut img, 0, 8, b"L", true);
        assert_eq!(img.get_pixel(6, 7).0, INK);
        assert_eq!(img.get_pixel(6, 0).0, PAPER);
    }

    #[test]
    fn token_rows_get_a_labelled_margin_and_legible_rows() {
        let data = LayerData::from_f32((0..4 * 32).map(|v| v as f32).collect());
        let o = RenderOptions {
            tokens: toks(&["[CLS]", "the", "cat", "[SEP]"]),
            ..RenderOptions::default()
        };
        let pic = render(&data, &[1, 4, 32], &o).unwrap();
        let l = &pic.layout;
        assert_eq!(l.origin_x, 5 * GLYPH + 6);
        assert_eq!(l.origin_y, 0);
        assert!(l.y.zoom >= TOKEN_PX, "{l:?}");
        assert_eq!(pic.image.dimensions(), (l.width as u32, l.height as u32));
        // Each token's row band holds ink in the margin, the grid none of it.
        for i in 0..4 {
            let y = i * l.y.zoom..(i + 1) * l.y.zoom;
            assert!(ink_in(&pic.image, 0..l.origin_x, y) > 0, "row {i}");
        }
        assert_eq!(
            ink_in(&pic.image, l.origin_x..l.width, 0..l.height),
            0,
            "labels stay in the margin"
        );
        // Another token count (or none): no margin, the plain picture.
        let plain = render(&data, &[1, 4, 32], &RenderOptions::default()).unwrap();
        let other = RenderOptions {
            tokens: toks(&["a", "b", "c"]),
            ..RenderOptions::default()
        };
        let mism = render(&data, &[1, 4, 32], &other).unwrap();
        assert_eq!(mism.image, plain.image);
        assert_eq!(mism.layout.origin_x, 0);
    }

    #[test]
    fn attention_heads_get_query_rows_and_key_columns() {
        let data = LayerData::from_f32(vec![0.25; 3 * 4 * 4]);
        let o = RenderOptions {
            tokens: toks(&["a", "bb", "c", "d"]),
            labels: true,
            ..RenderOptions::default()
        };
        let pic = render(&data, &[1, 3, 4, 4], &o).unwrap();
        let l = &pic.layout;
        assert_eq!((l.origin_x, l.origin_y), (2 * GLYPH + 6, 2 * GLYPH + 6));
        assert!(l.x.zoom >= TOKEN_PX && l.y.zoom >= TOKEN_PX);
        // Column labels above every grid column, row labels beside every grid row.
        for gc in 0..l.cols {
            let x0 = l.origin_x + gc * (l.cell_w + l.separator);
            assert!(ink_in(&pic.image, x0..x0 + l.cell_w, 0..l.origin_y) > 0);
        }
        for gr in 0..l.rows {
            let y0 = l.origin_y + gr * (l.cell_h + l.separator);
            assert!(ink_in(&pic.image, 0..l.origin_x, y0..y0 + l.cell_h) > 0);
        }
        // Head numbers moved with the grid: black box at the first cell's corner.
        assert_eq!(
            pic.image.get_pixel(l.origin_x as u32, l.origin_y as u32).0,
            [0, 0, 0]
        );
        let cap = caption_with_axes(&l.describe(), &[1, 3, 4, 4], None, &o);
        assert!(cap.starts_with("3 heads of 4×4"), "{cap}");
        assert!(
            cap.contains("rows: query tokens, columns: key tokens"),
            "{cap}"
        );
    }

    #[test]
    fn long_token_axes_label_every_kth_token() {
        // 300 tokens cannot get 10 pixels each within a small budget: labels thin out
        // and never overlap (each at least a glyph apart).
        let words: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
        let o = RenderOptions {
            tokens: Some(vec![words]),
            max_pixels: 300 * 64,
            ..RenderOptions::default()
        };
        let data = LayerData::from_f32(vec![1.0; 300 * 64]);
        let pic = render(&data, &[1, 300, 64], &o).unwrap();
        let l = &pic.layout;
        let step = label_step(&l.y);
        assert!(step > 1, "{l:?}");
        assert!(step * l.y.zoom / l.y.down >= GLYPH);
    }
}
