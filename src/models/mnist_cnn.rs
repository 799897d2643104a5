//! The seed's small MNIST CNN, with PyTorch-compatible weight names.
//!
//! `conv1` Conv2d(1,32,3) → relu → maxpool 2 → `conv2` Conv2d(32,64,3) → relu → maxpool 2
//! → flatten (1600) → `fc1` Linear(1600,128) → relu → `fc2` Linear(128,10).
//! Trained weights ship in [`WEIGHTS`]; see `weights/README.md`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{conv2d, linear, Conv2d, Linear};
use crate::{Error, Result};

/// MNIST pixel mean (after scaling to `[0, 1]`).
pub const MEAN: f32 = 0.1307;
/// MNIST pixel standard deviation (after scaling to `[0, 1]`).
pub const STD: f32 = 0.3081;
/// Input side length in pixels.
pub const SIDE: usize = 28;
/// Number of output classes.
pub const CLASSES: usize = 10;
/// Trained weights, relative to the crate root.
pub const WEIGHTS: &str = "weights/mnist_cnn.safetensors";

/// Absolute path of the bundled trained weights ([`WEIGHTS`]).
pub fn default_weights_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(WEIGHTS)
}

/// The bundled sample digits folder (one held-out MNIST digit per class).
pub fn sample_digits_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/digits")
}

/// The bundled sample digits: `(png path, label)` in label order, from
/// `assets/digits/labels.csv`.
pub fn sample_digits() -> Result<Vec<(PathBuf, u8)>> {
    let dir = sample_digits_dir();
    let csv = dir.join("labels.csv");
    let text = std::fs::read_to_string(&csv).map_err(|e| Error::io(&csv, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut f = line.split(',');
        let (Some(file), Some(label)) = (f.next(), f.next()) else {
            return Err(Error::bad(
                &csv,
                format!("line {}: expected file,label", i + 1),
            ));
        };
        let label: u8 = label
            .trim()
            .parse()
            .map_err(|_| Error::bad(&csv, format!("line {}: bad label {label:?}", i + 1)))?;
        out.push((dir.join(file.trim()), label));
    }
    Ok(out)
}

/// The tag (key, value) of every run [`record_sample_digits`] writes: how
/// `candlelight demo` knows, from the run file itself, which runs an earlier demo
/// wrote (and may replace).
pub const DEMO_TAG: (&str, &str) = ("recorded_by", "candlelight demo");

/// One sample digit recorded by [`record_sample_digits`].
#[derive(Debug, Clone, PartialEq)]
pub struct DigitRun {
    /// The digit's PNG.
    pub png: PathBuf,
    /// Its label.
    pub label: u8,
    /// The model's prediction.
    pub predicted: u32,
    /// The predicted class's probability.
    pub probability: f32,
    /// The run file written.
    pub run: PathBuf,
}

/// Records `model` on every bundled sample digit, one run per digit saved into
/// `runs_dir` (input = the PNG's name, tag `label`, metadata `prediction`).
pub fn record_sample_digits(model: &MnistCnn, runs_dir: &Path) -> Result<Vec<DigitRun>> {
    let mut out = Vec::new();
    for (png, label) in sample_digits()? {
        let x = image_to_input(&png, model.device())?;
        let name = png.file_name().unwrap_or_default().to_string_lossy();
        let (probs, mut run) = crate::Recorder::new("mnist-cnn")
            .input(format!("assets/digits/{name}"))
            .tag("label", label.to_string())
            .tag(DEMO_TAG.0, DEMO_TAG.1)
            .record(|| model.predict(&x))?;
        let predicted = probs
            .argmax(candle_core::D::Minus1)?
            .squeeze(0)?
            .to_scalar::<u32>()?;
        let probability = probs
            .max(candle_core::D::Minus1)?
            .squeeze(0)?
            .to_scalar::<f32>()?;
        run.set_metadata("prediction", predicted.to_string());
        let run = run.save(runs_dir)?;
        out.push(DigitRun {
            png,
            label,
            predicted,
            probability,
            run,
        });
    }
    Ok(out)
}

/// The MNIST CNN. Layer names match the PyTorch module (`conv1.weight`, ..., `fc2.bias`).
#[derive(Debug, Clone)]
pub struct MnistCnn {
    /// Conv2d(1, 32, 3).
    pub conv1: Conv2d,
    /// Conv2d(32, 64, 3).
    pub conv2: Conv2d,
    /// Linear(1600, 128).
    pub fc1: Linear,
    /// Linear(128, 10).
    pub fc2: Linear,
    device: Device,
}

impl MnistCnn {
    /// Builds the model from `vb` (prefixes `conv1`, `conv2`, `fc1`, `fc2`).
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let cfg = Default::default();
        Ok(Self {
            conv1: conv2d(1, 32, 3, cfg, vb.pp("conv1"))?,
            conv2: conv2d(32, 64, 3, cfg, vb.pp("conv2"))?,
            fc1: linear(64 * 5 * 5, 128, vb.pp("fc1"))?,
            fc2: linear(128, CLASSES, vb.pp("fc2"))?,
            device: vb.device().clone(),
        })
    }

    /// Loads f32 weights from a safetensors file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        // Read, not mapped: a regular file only (never blocks on a FIFO), 1 MB here.
        let bytes = crate::staging::read_regular(path, 1 << 30)?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
            .map_err(|e| Error::bad(path, format!("cannot read safetensors: {e}")))?;
        Self::new(vb).map_err(|e| Error::bad(path, format!("not MNIST CNN weights: {e}")))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logits `[N, 10]` for normalized input `[N, 1, 28, 28]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?;
        let x = crate::tap_as("relu1", "relu", &x.relu()?)?;
        let x = crate::tap_as("pool1", "max_pool2d", &x.max_pool2d(2)?)?;
        let x = self.conv2.forward(&x)?;
        let x = crate::tap_as("relu2", "relu", &x.relu()?)?;
        let x = crate::tap_as("pool2", "max_pool2d", &x.max_pool2d(2)?)?;
        let x = crate::tap_as("flatten", "flatten", &x.flatten_from(1)?)?;
        let x = self.fc1.forward(&x)?;
        let x = crate::tap_as("relu3", "relu", &x.relu()?)?;
        self.fc2.forward(&x)
    }

    /// Class probabilities `[N, 10]` (softmax of [`forward`](Self::forward), tapped as `softmax`).
    pub fn predict(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let probs = candle_nn::ops::softmax(&self.forward(x)?, 1)?;
        crate::tap_as("softmax", "softmax", &probs)
    }
}

impl Module for MnistCnn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        MnistCnn::forward(self, x)
    }
}

/// Scales a raw pixel (0..=255) to `[0, 1]` and normalizes it with [`MEAN`] / [`STD`].
pub fn normalize(pixel: u8) -> f32 {
    (f32::from(pixel) / 255.0 - MEAN) / STD
}

/// Model input `[1, 1, 28, 28]` from 784 row-major grayscale pixels (white digit on black).
pub fn pixels_to_input(pixels: &[u8], device: &Device) -> Result<Tensor> {
    if pixels.len() != SIDE * SIDE {
        return Err(Error::option(format!(
            "expected {} pixels (28x28), got {}",
            SIDE * SIDE,
            pixels.len()
        )));
    }
    let data: Vec<f32> = pixels.iter().copied().map(normalize).collect();
    Ok(Tensor::from_vec(data, (1, 1, SIDE, SIDE), device)?)
}

/// Model input `[1, 1, 28, 28]` from an image file (PNG; any size or colour type).
///
/// The image is converted to grayscale (transparent pixels become black, like the MNIST
/// background) and resized to 28×28 with a triangle filter if needed. Like MNIST, the digit
/// should be light on a dark background; no inversion is done.
pub fn image_to_input(path: &Path, device: &Device) -> Result<Tensor> {
    let bad = |msg: String| Error::BadInput {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = crate::staging::read_regular(path, 256 << 20)?;
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image is empty".into()));
    }
    // Composite onto black: luma * alpha.
    let luma_alpha = img.to_luma_alpha8();
    let gray = image::GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let [l, a] = luma_alpha.get_pixel(x, y).0;
        image::Luma([((u16::from(l) * u16::from(a) + 127) / 255) as u8])
    });
    let side = SIDE as u32;
    let gray = if gray.dimensions() == (side, side) {
        gray
    } else {
        image::imageops::resize(&gray, side, side, image::imageops::FilterType::Triangle)
    };
    pixels_to_input(gray.as_raw(), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn random_model() -> MnistCnn {
        let vm = VarMap::new();
        MnistCnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
    }

    #[test]
    fn forward_shapes_and_names() {
        let vm = VarMap::new();
        let model = MnistCnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 1, 28, 28), &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[3, 10]);
        let p = model.predict(&x).unwrap();
        assert_eq!(p.dims(), &[3, 10]);
        let sums: Vec<f32> = p.sum(1).unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));

        let mut names: Vec<(String, Vec<usize>)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        names.sort();
        let expected = [
            ("conv1.bias", vec![32]),
            ("conv1.weight", vec![32, 1, 3, 3]),
            ("conv2.bias", vec![64]),
            ("conv2.weight", vec![64, 32, 3, 3]),
            ("fc1.bias", vec![128]),
            ("fc1.weight", vec![128, 1600]),
            ("fc2.bias", vec![10]),
            ("fc2.weight", vec![10, 128]),
        ];
        let expected: Vec<(String, Vec<usize>)> =
            expected.into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let vm = VarMap::new();
        let model = MnistCnn::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        vm.save(&path).unwrap();
        let loaded = MnistCnn::load(&path, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 1, 28, 28), &Device::Cpu).unwrap();
        let a: Vec<Vec<f32>> = model.forward(&x).unwrap().to_vec2().unwrap();
        let b: Vec<Vec<f32>> = loaded.forward(&x).unwrap().to_vec2().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.safetensors");
        let err = MnistCnn::load(&missing, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.safetensors"));

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not safetensors").unwrap();
        let err = MnistCnn::load(&garbage, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::BadRunFile { .. }), "{err:?}");
    }

    #[test]
    fn image_to_input_converts_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgb.png");
        // 56x40 RGB: black with a white square in the middle.
        let img = image::RgbImage::from_fn(56, 40, |x, y| {
            let on = (20..36).contains(&x) && (12..28).contains(&y);
            image::Rgb(if on { [255; 3] } else { [0; 3] })
        });
        img.save(&path).unwrap();
        let x = image_to_input(&path, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 1, 28, 28]);
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let (lo, hi) = (normalize(0), normalize(255));
        assert!((v[0] - lo).abs() < 1e-6, "corner should be background");
        assert!(
            (v[14 * 28 + 14] - hi).abs() < 1e-6,
            "centre should be white"
        );
        assert!(v.iter().all(|p| (lo - 1e-6..=hi + 1e-6).contains(p)));

        // Model runs on it.
        assert_eq!(random_model().predict(&x).unwrap().dims(), &[1, 10]);
    }

    #[test]
    fn image_to_input_alpha_is_black() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgba.png");
        let img = image::RgbaImage::from_fn(28, 28, |x, _| {
            image::Rgba([255, 255, 255, if x < 14 { 0 } else { 255 }])
        });
        img.save(&path).unwrap();
        let v: Vec<f32> = image_to_input(&path, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((v[0] - normalize(0)).abs() < 1e-6);
        assert!((v[27] - normalize(255)).abs() < 1e-6);
    }

    #[test]
    fn image_to_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.png");
        let err = image_to_input(&missing, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.png"));

        let garbage = dir.path().join("garbage.png");
        std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
        let err = image_to_input(&garbage, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::BadInput { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.png"));

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "hello").unwrap();
        assert!(matches!(
            image_to_input(&text, &Device::Cpu),
            Err(Error::BadInput { .. })
        ));
    }

    #[test]
    fn pixels_to_input_checks_length() {
        assert!(pixels_to_input(&[0; 10], &Device::Cpu).is_err());
        let x = pixels_to_input(&[255; 784], &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 1, 28, 28]);
    }
}
