//! Sanity check of the pictures: a photo as a `[1, 1, H, W]` layer, and the photo
//! through four fixed 3×3 filters (Sobel x, Sobel y, Laplacian, blur) as a
//! `[1, 4, H-2, W-2]` conv layer. Writes `photo.png` and `edges.png` into OUT:
//! `cargo run --release --example render_photo -- IMAGE.png OUT_DIR`.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candlelight::render::{encode_png, render, RenderOptions};
use candlelight::LayerData;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: render_photo IMAGE.png OUT_DIR");
    };
    let img = image::open(&input)
        .with_context(|| format!("{input}: cannot read the image"))?
        .to_luma32f();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let x = Tensor::from_vec(img.into_raw(), (1, 1, h, w), &Device::Cpu)?;
    #[rustfmt::skip]
    let k: Vec<f32> = vec![
        -1., 0., 1., -2., 0., 2., -1., 0., 1.,      // Sobel x
        -1., -2., -1., 0., 0., 0., 1., 2., 1.,      // Sobel y
        0., 1., 0., 1., -4., 1., 0., 1., 0.,        // Laplacian
        1. / 9., 1. / 9., 1. / 9., 1. / 9., 1. / 9., 1. / 9., 1. / 9., 1. / 9., 1. / 9., // blur
    ];
    let k = Tensor::from_vec(k, (4, 1, 3, 3), &Device::Cpu)?;
    let y = x.conv2d(&k, 0, 1, 1, 1)?;
    std::fs::create_dir_all(&out)?;
    for (name, t) in [("photo", &x), ("edges", &y)] {
        let data = LayerData::from_f32(t.flatten_all()?.to_vec1::<f32>()?);
        let pic = render(&data, t.dims(), &RenderOptions::default())?;
        let path = std::path::Path::new(&out).join(format!("{name}.png"));
        std::fs::write(&path, encode_png(&pic.image)?)?;
        println!(
            "{} {:?}: {} ({}, {}×{})",
            path.display(),
            t.dims(),
            pic.layout.describe(),
            pic.colormap,
            pic.image.width(),
            pic.image.height()
        );
    }
    Ok(())
}
