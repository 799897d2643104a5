//! Every capture way records the expected names in the expected order, and
//! recording changes no output value (bitwise).

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Activation, VarBuilder, VarMap};
use candlelight::nn::{self, seq};
use candlelight::{tap, Recorder, Run};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Small {
    conv1: nn::Conv2d,
    fc1: nn::Linear,
}

impl Small {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Small {
            conv1: nn::conv2d(1, 4, 3, Default::default(), vb.pp("features").pp(0))?,
            fc1: nn::linear(4 * 3 * 3, 5, vb.pp("fc1"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?;
        let x = tap("relu1", &x.relu()?)?;
        let x = tap("pool1", &x.max_pool2d(2)?)?;
        let x = x.flatten_from(1)?;
        self.fc1.forward(&x)
    }
}

fn setup() -> R<(VarMap, Small, Tensor)> {
    let varmap = VarMap::new();
    let m = Small::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    candlelight::models::reseed(&varmap, 1)?;
    let x = candlelight::models::seeded_uniform(&[2, 1, 8, 8], 2, &Device::Cpu)?;
    Ok((varmap, m, x))
}

fn names(run: &Run) -> Vec<String> {
    run.layers().iter().map(|l| l.name.clone()).collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn taps_and_dropin_layers_record_in_forward_order() -> R {
    let (_vm, m, x) = setup()?;
    let plain = m.forward(&x)?;
    let (y, run) = Recorder::new("small").record(|| m.forward(&x))?;
    assert_eq!(names(&run), ["features.0", "relu1", "pool1", "fc1"]);
    let kinds: Vec<_> = run
        .layers()
        .iter()
        .map(|l| l.kind.clone().unwrap())
        .collect();
    assert_eq!(kinds, ["conv2d", "tap", "tap", "linear"]);
    assert_eq!(run.layers()[0].shape, vec![2, 4, 6, 6]);
    assert_eq!(bits(&y), bits(&plain), "recording changed the output");
    // The recorded tensors are the very values of the pass.
    assert_eq!(bits(&run.tensor("fc1")?), bits(&plain));
    Ok(())
}

#[test]
fn seq_and_named_wrappers_record_every_child() -> R {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = seq()
        .add(
            "conv1",
            candle_nn::conv2d(1, 2, 3, Default::default(), vb.pp("conv1"))?,
        )
        .add("relu1", Activation::Relu)
        .add_fn("pool1", "max_pool2d", |x| x.max_pool2d(2))
        .add_fn("flatten", "flatten", |x| x.flatten_from(1))
        .add("fc", candle_nn::linear(2 * 3 * 3, 3, vb.pp("fc"))?)
        .add("gelu", Activation::Gelu);
    let head = nn::named("head", candle_nn::linear(3, 2, vb.pp("head"))?);
    let x = candlelight::models::seeded_uniform(&[1, 1, 8, 8], 3, &Device::Cpu)?;
    let plain = head.forward(&model.forward(&x)?)?;
    let (y, run) = Recorder::new("seq").record(|| head.forward(&model.forward(&x)?))?;
    assert_eq!(
        names(&run),
        ["conv1", "relu1", "pool1", "flatten", "fc", "gelu", "head"]
    );
    let kinds: Vec<_> = run
        .layers()
        .iter()
        .map(|l| l.kind.clone().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "relu",
            "max_pool2d",
            "flatten",
            "linear",
            "gelu",
            "linear"
        ]
    );
    assert_eq!(bits(&y), bits(&plain));
    Ok(())
}

#[test]
fn every_dropin_constructor_records_under_its_prefix() -> R {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let l0 = nn::linear_no_bias(4, 4, vb.pp("lin"))?;
    let c1 = nn::conv1d(4, 4, 1, Default::default(), vb.pp("c1"))?;
    let ct = nn::conv_transpose2d(1, 1, 2, Default::default(), vb.pp("ct"))?;
    let emb = nn::embedding(10, 4, vb.pp("emb"))?;
    let ln = nn::layer_norm(4, 1e-5, vb.pp("ln"))?;
    let rms = nn::rms_norm(4, 1e-5, vb.pp("rms"))?;
    let bn = nn::batch_norm(4, 1e-5, vb.pp("bn"))?;
    let gn = nn::group_norm(2, 4, 1e-5, vb.pp("gn"))?;
    let ids = Tensor::new(&[[1u32, 2, 3]], &dev)?;
    let (_, run) = Recorder::new("all").record(|| {
        let e = emb.forward(&ids)?; // [1, 3, 4]
        let e = ln.forward(&e)?;
        let e = rms.forward(&e)?;
        let e = l0.forward(&e)?;
        let c = c1.forward(&e.transpose(1, 2)?.contiguous()?)?; // [1, 4, 3]
        let img = c.reshape((1, 4, 3, 1))?;
        let b = bn.forward_t(&img, false)?;
        let g = gn.forward(&b)?;
        ct.forward(&g.narrow(1, 0, 1)?.contiguous()?)
    })?;
    assert_eq!(
        names(&run),
        ["emb", "ln", "rms", "lin", "c1", "bn", "gn", "ct"]
    );
    assert_eq!(
        run.layer("ct").unwrap().kind.as_deref(),
        Some("conv_transpose2d")
    );
    Ok(())
}

#[test]
fn op_level_capture_records_every_intermediate() -> R {
    let (_vm, m, x) = setup()?;
    let plain = m.forward(&x)?;
    let (y, run) = Recorder::new("ops").record_ops(&x, |x| m.forward(x))?;
    assert_eq!(bits(&y), bits(&plain));
    let n = names(&run);
    assert_eq!(n[0], "input");
    // Tapped and layer-recorded tensors keep their names, in forward order.
    let pos = |name: &str| {
        n.iter()
            .position(|v| v == name)
            .unwrap_or_else(|| panic!("{name} in {n:?}"))
    };
    assert!(
        pos("features.0") < pos("relu1")
            && pos("relu1") < pos("pool1")
            && pos("pool1") < pos("fc1")
    );
    assert!(
        n.iter()
            .any(|v| v.starts_with("op.") && v.ends_with(".2x36")),
        "{n:?}"
    );
    assert!(run.len() > 5);
    assert_eq!(run.layer("fc1").unwrap().shape, vec![2, 5]);
    Ok(())
}

#[test]
fn options_filter_trim_and_convert() -> R {
    let (_vm, m, x) = setup()?;
    let (_, run) = Recorder::new("opts")
        .exclude("pool*")
        .first_samples(1)
        .store_as(DType::F16)
        .tag("git", "abc")
        .record(|| m.forward(&x))?;
    assert_eq!(names(&run), ["features.0", "relu1", "fc1"]);
    assert_eq!(run.layers()[0].shape, vec![1, 4, 6, 6]);
    assert_eq!(run.layers()[0].dtype, safetensors::Dtype::F16);
    let dir = tempfile::tempdir()?;
    let p = run.save(dir.path())?;
    let back = Run::open(&p)?;
    assert_eq!(back.info().tags["git"], "abc");
    assert_eq!(back.info().kinds["relu1"], "tap");
    assert_eq!(back.layers()[2].shape, vec![1, 5]);
    Ok(())
}

#[test]
fn threads_record_their_own_runs() -> R {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Tensor::new(&[i as f32], &Device::Cpu).unwrap();
                let (_, run) = Recorder::new(format!("t{i}"))
                    .record(|| {
                        for k in 0..50 {
                            tap(&format!("t{i}.{k}"), &t)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                run
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let run = h.join().unwrap();
        assert_eq!(run.len(), 50);
        assert!(run
            .layers()
            .iter()
            .all(|l| l.name.starts_with(&format!("t{i}."))));
        assert_eq!(run.values(&format!("t{i}.0"))?, vec![i as f32]);
    }
    Ok(())
}

/// The error `record_ops` gives when the output has no op-graph link to the input.
fn assert_disconnected(r: candlelight::Result<(Tensor, Run)>) {
    let e = match r {
        Ok((_, run)) => panic!("expected an error, got a run of {:?}", names(&run)),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.contains("not connected"), "{e}");
    assert!(
        e.contains("candlelight::tap") && e.contains("candlelight::nn"),
        "{e}"
    );
}

#[test]
fn op_level_capture_errors_when_a_fused_op_cuts_input_from_output() -> R {
    let dev = Device::Cpu;
    let x = candlelight::models::seeded_uniform(&[2, 8], 4, &dev)?;
    // The fused kernel is the whole model: nothing links its output to x.
    assert_disconnected(Recorder::new("fused").record_ops(&x, candle_nn::ops::softmax_last_dim));
    // Cut in the middle: plain ops, a fused layer norm, plain ops (with weights that
    // are Vars, so the output's graph is not empty, yet x is not in it).
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let fc1 = candle_nn::linear(8, 8, vb.pp("fc1"))?;
    let fc2 = candle_nn::linear(8, 3, vb.pp("fc2"))?;
    let (w, b) = (
        Tensor::ones(8, DType::F32, &dev)?,
        Tensor::zeros(8, DType::F32, &dev)?,
    );
    assert_disconnected(Recorder::new("ln").record_ops(&x, |x| {
        let h = fc1.forward(x)?.relu()?;
        let h = candle_nn::ops::layer_norm(&h, &w, &b, 1e-5)?;
        fc2.forward(&h)?.tanh()
    }));
    assert_disconnected(Recorder::new("rms").record_ops(&x, |x| {
        let h = (x * 2.0)?;
        let h = candle_nn::ops::rms_norm(&h, &w, 1e-5)?;
        (h + 1.0)?.exp()
    }));
    // Taps inside do not make up for it: the op graph is still cut.
    assert_disconnected(Recorder::new("tapped").record_ops(&x, |x| {
        let h = tap("h", &(x * 2.0)?)?;
        candle_nn::ops::softmax_last_dim(&h)
    }));
    Ok(())
}

#[test]
fn op_level_capture_of_the_same_models_with_plain_ops_still_works() -> R {
    let dev = Device::Cpu;
    let x = candlelight::models::seeded_uniform(&[2, 8], 4, &dev)?;
    // candle_nn::ops::softmax (exp, sum, div) keeps the graph.
    let (y, run) = Recorder::new("plain").record_ops(&x, |x| candle_nn::ops::softmax(x, 1))?;
    assert_eq!(bits(&y), bits(&candle_nn::ops::softmax(&x, 1)?));
    let n = names(&run);
    assert_eq!(n[0], "input");
    assert!(n.len() >= 4, "{n:?}");
    assert_eq!(bits(&run.tensor(n.last().unwrap())?), bits(&y));
    // candle_nn::LayerNorm on a non-contiguous input takes the unfused path.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let fc1 = candle_nn::linear(8, 8, vb.pp("fc1"))?;
    let ln = candle_nn::LayerNorm::new(
        Tensor::ones(2, DType::F32, &dev)?,
        Tensor::zeros(2, DType::F32, &dev)?,
        1e-5,
    );
    let (_, run) = Recorder::new("ln").record_ops(&x, |x| {
        let h = fc1.forward(x)?.t()?; // [8, 2], not contiguous
        ln.forward(&h)?.exp()
    })?;
    let n = names(&run);
    assert_eq!(n[0], "input");
    assert!(n.len() > 6, "{n:?}");
    // An identity model records just its input.
    let (_, run) = Recorder::new("id").record_ops(&x, |x| Ok(x.clone()))?;
    assert_eq!(names(&run), ["input"]);
    Ok(())
}
