//! The shipped MNIST model: weights load, the sample digits classify, recording
//! captures every layer in forward order, and training still learns.

use candle_core::{Device, D};
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::models::mnist_data;
use candlelight::Recorder;

#[test]
fn shipped_weights_classify_the_shipped_digits() {
    let model = MnistCnn::load(&default_weights_path(), &Device::Cpu).unwrap();
    let digits = sample_digits().unwrap();
    assert_eq!(digits.len(), 10);
    let mut correct = 0;
    for (png, label) in &digits {
        let x = image_to_input(png, &Device::Cpu).unwrap();
        let probs = model.predict(&x).unwrap();
        let sum = probs.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
        let pred = probs
            .argmax(D::Minus1)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        correct += (pred == *label as u32) as usize;
    }
    assert!(correct >= 9, "{correct}/10 correct");
}

#[test]
fn recording_captures_every_layer_in_order_with_shapes() {
    let model = MnistCnn::load(&default_weights_path(), &Device::Cpu).unwrap();
    let (png, _) = &sample_digits().unwrap()[3];
    let x = image_to_input(png, &Device::Cpu).unwrap();
    let plain = model.predict(&x).unwrap();
    let (probs, run) = Recorder::new("mnist").record(|| model.predict(&x)).unwrap();
    let got: Vec<(String, Vec<usize>)> = run
        .layers()
        .iter()
        .map(|l| (l.name.clone(), l.shape.clone()))
        .collect();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("conv1", vec![1, 32, 26, 26]),
        ("relu1", vec![1, 32, 26, 26]),
        ("pool1", vec![1, 32, 13, 13]),
        ("conv2", vec![1, 64, 11, 11]),
        ("relu2", vec![1, 64, 11, 11]),
        ("pool2", vec![1, 64, 5, 5]),
        ("flatten", vec![1, 1600]),
        ("fc1", vec![1, 128]),
        ("relu3", vec![1, 128]),
        ("fc2", vec![1, 10]),
        ("softmax", vec![1, 10]),
    ];
    let want: Vec<(String, Vec<usize>)> =
        want.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
    assert_eq!(got, want);
    let kinds: Vec<_> = run
        .layers()
        .iter()
        .map(|l| l.kind.clone().unwrap_or_default())
        .collect();
    assert_eq!(kinds[0], "conv2d");
    assert_eq!(kinds[1], "relu");
    assert_eq!(kinds[7], "linear");
    let a = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = probs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b, "recording changed the output");
}

#[test]
fn a_short_epoch_on_real_digits_lowers_the_loss() {
    // Shipped in the repository (data/, with its license note).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(mnist_data::DEFAULT_DATA);
    let data = mnist_data::load_csv_gz(&path).unwrap();
    let (train, _) = mnist_data::stratified_split(&data, 450, 42);
    let slice = train.subset(&(0..320).collect::<Vec<_>>());
    let cfg = mnist_data::TrainConfig {
        epochs: 2,
        batch_size: 32,
        max_shift: 0,
        ..Default::default()
    };
    let (vars, model) = mnist_data::init_model(cfg.seed, &Device::Cpu).unwrap();
    let losses = mnist_data::train(&vars, &model, &slice, &cfg, |_| {}).unwrap();
    assert_eq!(losses.len(), 2);
    assert!(losses[1] < losses[0], "loss did not decrease: {losses:?}");
}
