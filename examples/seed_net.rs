//! The seed's `Net` (conv 1→6 3×3, conv 6→16 3×3, fc 576→120→84→10 on a
//! 1×1×32×32 input), opted into recording by its `use` line, with a `tap` after
//! the first conv block (the seed's `VisualizeLayer`). Writes one run and prints
//! where: `cargo run --example seed_net -- [RUNS_DIR]` (default `runs`).

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
// The one line that opts a model into recording (was `use candle_nn::{...}`):
use candlelight::nn::{conv2d, linear, Conv2d, Linear};
use candlelight::{tap, Recorder};

struct Net {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Net {
            conv1: conv2d(1, 6, 3, Default::default(), vb.pp("conv1"))?,
            conv2: conv2d(6, 16, 3, Default::default(), vb.pp("conv2"))?,
            fc1: linear(16 * 6 * 6, 120, vb.pp("fc1"))?,
            fc2: linear(120, 84, vb.pp("fc2"))?,
            fc3: linear(84, 10, vb.pp("fc3"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.conv1.forward(x)?.relu()?.max_pool2d(2)?; // [N, 6, 15, 15]
        let x = tap("block1", &x)?; // the seed's VisualizeLayer
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?; // [N, 16, 6, 6]
        let x = x.flatten_from(1)?; // [N, 576]
        let x = self.fc1.forward(&x)?.relu()?;
        let x = self.fc2.forward(&x)?.relu()?;
        self.fc3.forward(&x)
    }
}

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs".into());
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    candlelight::models::reseed(&varmap, 42)?;
    let x = candlelight::models::seeded_uniform(&[1, 1, 32, 32], 7, &device)?;

    let (y, run) = Recorder::new("seed-net")
        .input("uniform noise 1x1x32x32, seed 7")
        .record(|| net.forward(&x))?;
    let path = run.save(&dir)?;
    println!("output {:?}", y.dims());
    for l in run.layers() {
        println!(
            "  {:>2} {:<8} {:<8} {}",
            l.index,
            l.name,
            l.kind.as_deref().unwrap_or("-"),
            l.shape_str()
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}
