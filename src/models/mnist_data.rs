//! MNIST CSV loading, a stratified split, and a small deterministic training loop for
//! [`MnistCnn`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::mnist_cnn::{normalize, MnistCnn, SIDE};
use crate::{Error, Result};

/// The bundled 5000-digit MNIST subset, relative to the crate root.
pub const DEFAULT_DATA: &str = "data/mnist_5k.csv.gz";

const PIXELS: usize = SIDE * SIDE;

/// Grayscale 28×28 digits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dataset {
    /// 784 bytes per sample, row-major, 0 = background.
    pub pixels: Vec<u8>,
    /// One label (0..=9) per sample.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixels of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            pixels: indices
                .iter()
                .flat_map(|&i| self.image(i))
                .copied()
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Normalized inputs `[n, 1, 28, 28]` and `u32` labels `[n]` for the samples at `indices`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let x: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.image(i))
            .copied()
            .map(normalize)
            .collect();
        let y: Vec<u32> = indices.iter().map(|&i| u32::from(self.labels[i])).collect();
        let n = indices.len();
        Ok((
            Tensor::from_vec(x, (n, 1, SIDE, SIDE), device)?,
            Tensor::from_vec(y, n, device)?,
        ))
    }
}

/// Reads a gzip CSV without header: per line 784 pixels (0..=255) then the label (0..=9).
pub fn load_csv_gz(path: &Path) -> Result<Dataset> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut data = Dataset::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |msg: String| Error::BadInput {
            path: path.to_path_buf(),
            msg: format!("line {}: {msg}", i + 1),
        };
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != PIXELS + 1 {
            return Err(bad(format!(
                "expected {} columns (784 pixels + label), got {}",
                PIXELS + 1,
                fields.len()
            )));
        }
        for (col, field) in fields.iter().enumerate() {
            let v: u8 = field
                .trim()
                .parse()
                .map_err(|_| bad(format!("column {}: {field:?} is not in 0..=255", col + 1)))?;
            if col < PIXELS {
                data.pixels.push(v);
            } else if v > 9 {
                return Err(bad(format!("label {v} is not in 0..=9")));
            } else {
                data.labels.push(v);
            }
        }
    }
    if data.is_empty() {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            msg: "no samples".into(),
        });
    }
    Ok(data)
}

/// Sample indices `(train, held_out)`, each in ascending order, with `n_holdout_per_class`
/// samples of every label held out (all of them if a class has fewer). Deterministic in `seed`.
pub fn stratified_split_indices(
    labels: &[u8],
    n_holdout_per_class: usize,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for mut idx in by_class.into_values() {
        idx.shuffle(&mut rng);
        let k = n_holdout_per_class.min(idx.len());
        held.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

/// `(train, held_out)` datasets; see [`stratified_split_indices`].
pub fn stratified_split(
    data: &Dataset,
    n_holdout_per_class: usize,
    seed: u64,
) -> (Dataset, Dataset) {
    let (train, held) = stratified_split_indices(&data.labels, n_holdout_per_class, seed);
    (data.subset(&train), data.subset(&held))
}

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set. Default 12.
    pub epochs: usize,
    /// Samples per step. Default 64.
    pub batch_size: usize,
    /// AdamW learning rate. Default 1e-3.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay. Default 1e-2 (candle's and PyTorch's default).
    pub weight_decay: f64,
    /// Decay the learning rate to 0 along a cosine over all steps. Default true.
    pub cosine_decay: bool,
    /// Augmentation: shift each training image by up to this many pixels in x and y
    /// (zero fill). Default 2; 0 disables it.
    pub max_shift: usize,
    /// Seeds the shuffles and shifts (and [`init_model`] in the training example). Default 42.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 12,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            cosine_decay: true,
            max_shift: 2,
            seed: 42,
        }
    }
}

/// Reported after every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// 0-based epoch.
    pub epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Mean cross-entropy of this batch.
    pub loss: f32,
    /// Mean cross-entropy over the epoch so far (the epoch's loss after its last batch).
    pub epoch_loss: f32,
}

/// A fresh f32 model whose weights and biases are drawn from a `seed`ed RNG with PyTorch's
/// default init (uniform in ±1/√fan_in), so training is reproducible.
pub fn init_model(seed: u64, device: &Device) -> Result<(VarMap, MnistCnn)> {
    let varmap = VarMap::new();
    let model = MnistCnn::new(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let vars = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &vars[name];
        let weight_name = match name.strip_suffix(".bias") {
            Some(layer) => format!("{layer}.weight"),
            None => name.clone(),
        };
        let fan_in: usize = vars[&weight_name].dims()[1..].iter().product();
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), device)?)?;
    }
    drop(vars);
    Ok((varmap, model))
}

/// `img` (28×28) moved by `(dx, dy)` pixels, zero-filled.
fn shifted(img: &[u8], dx: i32, dy: i32) -> [u8; PIXELS] {
    let mut out = [0u8; PIXELS];
    for y in 0..SIDE {
        let Some(sy) = y.checked_add_signed(-dy as isize).filter(|&sy| sy < SIDE) else {
            continue;
        };
        for x in 0..SIDE {
            if let Some(sx) = x.checked_add_signed(-dx as isize).filter(|&sx| sx < SIDE) {
                out[y * SIDE + x] = img[sy * SIDE + sx];
            }
        }
    }
    out
}

/// Trains `model` (whose variables are `model_vars`) with AdamW and cross-entropy. Shuffles,
/// and shifts images (see [`TrainConfig`]), with an RNG seeded by `cfg.seed`, so runs are
/// reproducible. Returns the mean loss of every epoch.
pub fn train(
    model_vars: &VarMap,
    model: &MnistCnn,
    train: &Dataset,
    cfg: &TrainConfig,
    mut on_batch: impl FnMut(BatchProgress),
) -> Result<Vec<f32>> {
    if train.is_empty() || cfg.batch_size == 0 {
        return Err(Error::option("training needs samples and a batch size > 0"));
    }
    let params = ParamsAdamW {
        lr: cfg.learning_rate,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(model_vars.all_vars(), params)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batches = train.len().div_ceil(cfg.batch_size);
    let total_steps = (cfg.epochs * batches) as f64;
    let shift = cfg.max_shift.min(SIDE) as i32;
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut total, mut seen) = (0.0f64, 0usize);
        for (batch, idx) in order.chunks(cfg.batch_size).enumerate() {
            if cfg.cosine_decay {
                let t = (epoch * batches + batch) as f64 / total_steps;
                opt.set_learning_rate(
                    cfg.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
                );
            }
            let (x, y) = if shift > 0 {
                let mut pixels = Vec::with_capacity(idx.len() * PIXELS);
                for &i in idx {
                    let (dx, dy) = (
                        rng.random_range(-shift..=shift),
                        rng.random_range(-shift..=shift),
                    );
                    pixels.extend_from_slice(&shifted(train.image(i), dx, dy));
                }
                let labels = idx.iter().map(|&i| train.labels[i]).collect();
                let all: Vec<usize> = (0..idx.len()).collect();
                Dataset { pixels, labels }.batch(&all, model.device())?
            } else {
                train.batch(idx, model.device())?
            };
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            let loss = loss.to_scalar::<f32>()?;
            total += f64::from(loss) * idx.len() as f64;
            seen += idx.len();
            on_batch(BatchProgress {
                epoch,
                epochs: cfg.epochs,
                batch,
                batches,
                loss,
                epoch_loss: (total / seen as f64) as f32,
            });
        }
        epoch_losses.push((total / seen as f64) as f32);
    }
    Ok(epoch_losses)
}

/// Predicted label of every sample, evaluated `batch` samples at a time.
pub fn predict_labels(model: &MnistCnn, data: &Dataset, batch: usize) -> Result<Vec<u8>> {
    let all: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    for idx in all.chunks(batch.max(1)) {
        let (x, _) = data.batch(idx, model.device())?;
        let pred: Vec<u32> = model.forward(&x)?.argmax(1)?.to_vec1()?;
        out.extend(pred.into_iter().map(|p| p as u8));
    }
    Ok(out)
}

/// Fraction of samples classified correctly (0 for an empty dataset).
pub fn accuracy(model: &MnistCnn, data: &Dataset, batch: usize) -> Result<f32> {
    if data.is_empty() {
        return Ok(0.0);
    }
    let pred = predict_labels(model, data, batch)?;
    let correct = pred
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(correct as f32 / data.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn write_gz(path: &Path, text: &str) {
        let mut enc = GzEncoder::new(std::fs::File::create(path).unwrap(), Default::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    fn row(fill: u8, label: u8) -> String {
        let mut fields = vec![fill.to_string(); PIXELS];
        fields.push(label.to_string());
        fields.join(",")
    }

    /// `per_class` samples of each of 10 classes; class `c` lights up row band `c`.
    fn synthetic(per_class: usize) -> Dataset {
        let mut data = Dataset::default();
        for i in 0..per_class * 10 {
            let label = (i % 10) as u8;
            let mut img = [0u8; PIXELS];
            for (p, px) in img.iter_mut().enumerate() {
                let band = (p / SIDE) * 10 / SIDE;
                if band == label as usize {
                    *px = 200 + (i % 50) as u8;
                }
            }
            data.pixels.extend_from_slice(&img);
            data.labels.push(label);
        }
        data
    }

    #[test]
    fn parses_csv_gz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.csv.gz");
        write_gz(&path, &format!("{}\n{}\n", row(0, 3), row(255, 7)));
        let data = load_csv_gz(&path).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.labels, vec![3, 7]);
        assert_eq!(data.pixels.len(), 2 * PIXELS);
        assert!(data.image(1).iter().all(|&p| p == 255));
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv.gz");
        let cases = [
            ("1,2,3", "expected 785 columns"),
            (&row(0, 12)[..], "label 12"),
            (&row(0, 1).replacen('0', "256", 1)[..], "column 1"),
            (&row(0, 1).replacen('0', "x", 1)[..], "\"x\""),
        ];
        for (bad_row, needle) in cases {
            write_gz(&path, &format!("{}\n{bad_row}\n", row(0, 1)));
            let msg = load_csv_gz(&path).unwrap_err().to_string();
            assert!(msg.contains("bad.csv.gz: line 2:"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }

        let err = load_csv_gz(&dir.path().join("missing.csv.gz")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        std::fs::write(&path, "plain text").unwrap();
        assert!(load_csv_gz(&path).is_err());
    }

    #[test]
    fn stratified_split_counts() {
        let data = synthetic(12);
        let (train, held) = stratified_split(&data, 5, 7);
        assert_eq!((train.len(), held.len()), (70, 50));
        for c in 0..10u8 {
            assert_eq!(held.labels.iter().filter(|&&l| l == c).count(), 5);
            assert_eq!(train.labels.iter().filter(|&&l| l == c).count(), 7);
        }
        assert_eq!(stratified_split(&data, 5, 7), (train, held.clone()));
        assert_ne!(stratified_split(&data, 5, 8).1, held);
    }

    #[test]
    fn shift_moves_pixels() {
        let mut img = [0u8; PIXELS];
        img[5 * SIDE + 5] = 9;
        let out = shifted(&img, 2, -1);
        assert_eq!(out[4 * SIDE + 7], 9);
        assert_eq!(out.iter().filter(|&&p| p != 0).count(), 1);
        assert_eq!(shifted(&img, 0, 0), img);
        assert!(shifted(&img, -6, 0).iter().all(|&p| p == 0));
    }

    #[test]
    fn short_training_is_deterministic_and_learns() {
        let data = synthetic(8);
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 16,
            learning_rate: 3e-3,
            ..Default::default()
        };
        let run = || {
            let (vars, model) = init_model(cfg.seed, &Device::Cpu).unwrap();
            let mut steps = 0;
            let losses = train(&vars, &model, &data, &cfg, |_| steps += 1).unwrap();
            assert_eq!(steps, 3 * 5);
            (losses, accuracy(&model, &data, 32).unwrap())
        };
        let (losses, acc) = run();
        assert_eq!(losses.len(), 3);
        assert!(losses[2] < losses[0], "{losses:?}");
        assert!(acc > 0.5, "accuracy {acc}");
        assert_eq!(run(), (losses, acc));
    }
}
