// Instrumented by candlelight 0.1.0 from bert.rs; see candlelight instrument --help
// The original's license applies (candle-transformers: MIT OR Apache-2.0).
// Generated: change the original and instrument it again rather than editing this.

//! BERT (Bidirectional Encoder Representations from Transformers)
//!
//! Bert is a general large language model that can be used for various language tasks:
//! - Compute sentence embeddings for a prompt.
//! - Compute similarities between a set of sentences.
//! - [Arxiv](https://arxiv.org/abs/1810.04805) "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding"
//! - Upstream [GitHub repo](https://github.com/google-research/bert).
//! - See bert in [candle-examples](https://github.com/huggingface/candle/tree/main/candle-examples/) for runnable code
//!
use candlelight::with_tracing::{layer_norm, linear, LayerNorm, Linear};
use candle_core::{DType, Device, Result, Tensor};
use candlelight::nn::{embedding, Embedding};
use candle_nn::{Module, VarBuilder};
use serde::Deserialize;
pub const DTYPE: DType = DType::F32;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    Gelu,
    GeluApproximate,
    Relu,
}
#[derive(Clone)]
struct HiddenActLayer {
    act: HiddenAct,
}
impl HiddenActLayer {
    fn new(act: HiddenAct) -> Self {
        Self { act }
    }
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self.act {
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluApproximate => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbeddingType {
    #[default]
    Absolute,
}
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    #[serde(default)]
    pub use_cache: bool,
    pub classifier_dropout: Option<f64>,
    pub model_type: Option<String>,
}
impl Default for Config {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: true,
            classifier_dropout: None,
            model_type: Some("bert".to_string()),
        }
    }
}
impl Config {
    fn _all_mini_lm_l6_v2() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: PositionEmbeddingType::Absolute,
            use_cache: true,
            classifier_dropout: None,
            model_type: Some("bert".to_string()),
        }
    }
}
#[derive(Clone)]
struct Dropout {
    #[allow(dead_code)]
    pr: f64,
}
impl Dropout {
    fn new(pr: f64) -> Self {
        Self { pr }
    }
}
impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}
struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Option<Embedding>,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    cl_scope: candlelight::Scope,
}
impl BertEmbeddings {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_embeddings");
        let word_embeddings = embedding(
            config.vocab_size,
            config.hidden_size,
            vb.pp("word_embeddings"),
        )?;
        let position_embeddings = embedding(
            config.max_position_embeddings,
            config.hidden_size,
            vb.pp("position_embeddings"),
        )?;
        let token_type_embeddings = embedding(
            config.type_vocab_size,
            config.hidden_size,
            vb.pp("token_type_embeddings"),
        )?;
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        Ok(Self {
            word_embeddings,
            position_embeddings: Some(position_embeddings),
            token_type_embeddings,
            layer_norm,
            dropout: Dropout::new(config.hidden_dropout_prob),
            cl_scope,
        })
    }
    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let (_bsize, seq_len) = input_ids.dims2()?;
            let input_embeddings = self.word_embeddings.forward(input_ids)?;
            let token_type_embeddings = self
                .token_type_embeddings
                .forward(token_type_ids)?;
            let mut embeddings = (&input_embeddings + token_type_embeddings)?;
            if let Some(position_embeddings) = &self.position_embeddings {
                let position_ids = (0..seq_len as u32).collect::<Vec<_>>();
                let position_ids = Tensor::new(&position_ids[..], input_ids.device())?;
                embeddings = embeddings
                    .broadcast_add(&position_embeddings.forward(&position_ids)?)?;
            }
            let embeddings = self.layer_norm.forward(&embeddings)?;
            let embeddings = self.dropout.forward(&embeddings)?;
            Ok(embeddings)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dropout: Dropout,
    num_attention_heads: usize,
    attention_head_size: usize,
    cl_scope: candlelight::Scope,
}
impl BertSelfAttention {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_self_attention");
        let attention_head_size = config.hidden_size / config.num_attention_heads;
        let all_head_size = config.num_attention_heads * attention_head_size;
        let dropout = Dropout::new(config.hidden_dropout_prob);
        let hidden_size = config.hidden_size;
        let query = linear(hidden_size, all_head_size, vb.pp("query"))?;
        let value = linear(hidden_size, all_head_size, vb.pp("value"))?;
        let key = linear(hidden_size, all_head_size, vb.pp("key"))?;
        Ok(Self {
            query,
            key,
            value,
            dropout,
            num_attention_heads: config.num_attention_heads,
            attention_head_size,
            cl_scope,
        })
    }
    fn transpose_for_scores(&self, xs: &Tensor) -> Result<Tensor> {
        let mut new_x_shape = xs.dims().to_vec();
        new_x_shape.pop();
        new_x_shape.push(self.num_attention_heads);
        new_x_shape.push(self.attention_head_size);
        let xs = xs.reshape(new_x_shape.as_slice())?.transpose(1, 2)?;
        xs.contiguous()
    }
    fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let query_layer = self.query.forward(hidden_states)?;
            let key_layer = self.key.forward(hidden_states)?;
            let value_layer = self.value.forward(hidden_states)?;
            let query_layer = self.transpose_for_scores(&query_layer)?;
            let key_layer = self.transpose_for_scores(&key_layer)?;
            let value_layer = self.transpose_for_scores(&value_layer)?;
            let attention_scores = query_layer.matmul(&key_layer.t()?)?;
            let attention_scores = (attention_scores
                / (self.attention_head_size as f64).sqrt())?;
            let attention_scores = attention_scores.broadcast_add(attention_mask)?;
            let attention_probs = {
                candle_nn::ops::softmax(&attention_scores, candle_core::D::Minus1)?
            };
            let attention_probs = self.cl_scope.attention_probs(attention_probs)?;
            let attention_probs = self.dropout.forward(&attention_probs)?;
            let context_layer = attention_probs.matmul(&value_layer)?;
            let context_layer = context_layer.transpose(1, 2)?.contiguous()?;
            let context_layer = context_layer.flatten_from(candle_core::D::Minus2)?;
            Ok(context_layer)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
struct BertSelfOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
    cl_scope: candlelight::Scope,
}
impl BertSelfOutput {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_self_output");
        let dense = linear(config.hidden_size, config.hidden_size, vb.pp("dense"))?;
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        let dropout = Dropout::new(config.hidden_dropout_prob);
        Ok(Self {
            dense,
            layer_norm,
            dropout,
            cl_scope,
        })
    }
    fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let hidden_states = self.dense.forward(hidden_states)?;
            let hidden_states = self.dropout.forward(&hidden_states)?;
            self.layer_norm.forward(&(hidden_states + input_tensor)?)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
struct BertAttention {
    self_attention: BertSelfAttention,
    self_output: BertSelfOutput,
    cl_scope: candlelight::Scope,
}
impl BertAttention {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_attention");
        let self_attention = BertSelfAttention::load(vb.pp("self"), config)?;
        let self_output = BertSelfOutput::load(vb.pp("output"), config)?;
        Ok(Self {
            self_attention,
            self_output,
            cl_scope,
        })
    }
    fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let self_outputs = self
                .self_attention
                .forward(hidden_states, attention_mask)?;
            let attention_output = self
                .self_output
                .forward(&self_outputs, hidden_states)?;
            Ok(attention_output)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
struct BertIntermediate {
    dense: Linear,
    intermediate_act: HiddenActLayer,
    cl_scope: candlelight::Scope,
}
impl BertIntermediate {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_intermediate");
        let dense = linear(
            config.hidden_size,
            config.intermediate_size,
            vb.pp("dense"),
        )?;
        Ok(Self {
            dense,
            intermediate_act: HiddenActLayer::new(config.hidden_act),
            cl_scope,
        })
    }
}
impl Module for BertIntermediate {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let hidden_states = self.dense.forward(hidden_states)?;
            let ys = self.intermediate_act.forward(&hidden_states)?;
            Ok(ys)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
    cl_scope: candlelight::Scope,
}
impl BertOutput {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_output");
        let dense = linear(
            config.intermediate_size,
            config.hidden_size,
            vb.pp("dense"),
        )?;
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        let dropout = Dropout::new(config.hidden_dropout_prob);
        Ok(Self {
            dense,
            layer_norm,
            dropout,
            cl_scope,
        })
    }
    fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let hidden_states = self.dense.forward(hidden_states)?;
            let hidden_states = self.dropout.forward(&hidden_states)?;
            self.layer_norm.forward(&(hidden_states + input_tensor)?)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
    cl_scope: candlelight::Scope,
}
impl BertLayer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_layer");
        let attention = BertAttention::load(vb.pp("attention"), config)?;
        let intermediate = BertIntermediate::load(vb.pp("intermediate"), config)?;
        let output = BertOutput::load(vb.pp("output"), config)?;
        Ok(Self {
            attention,
            intermediate,
            output,
            cl_scope,
        })
    }
    fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let attention_output = self
                .attention
                .forward(hidden_states, attention_mask)?;
            let intermediate_output = self.intermediate.forward(&attention_output)?;
            let layer_output = self
                .output
                .forward(&intermediate_output, &attention_output)?;
            Ok(layer_output)
        })();
        self.cl_scope.finish(cl_out)
    }
}
#[derive(Clone)]
pub struct BertEncoder {
    pub layers: Vec<BertLayer>,
    cl_scope: candlelight::Scope,
}
impl BertEncoder {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|index| BertLayer::load(vb.pp(format!("layer.{index}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder { layers, cl_scope })
    }
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let mut hidden_states = hidden_states.clone();
            for layer in self.layers.iter() {
                hidden_states = layer.forward(&hidden_states, attention_mask)?;
            }
            Ok(hidden_states)
        })();
        self.cl_scope.finish(cl_out)
    }
}
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    pub device: Device,
    cl_scope: candlelight::Scope,
}
impl BertModel {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_model");
        let (embeddings, encoder) = match (
            BertEmbeddings::load(vb.pp("embeddings"), config),
            BertEncoder::load(vb.pp("encoder"), config),
        ) {
            (Ok(embeddings), Ok(encoder)) => (embeddings, encoder),
            (Err(err), _) | (_, Err(err)) => {
                if let Some(model_type) = &config.model_type {
                    if let (Ok(embeddings), Ok(encoder)) = (
                        BertEmbeddings::load(
                            vb.pp(format!("{model_type}.embeddings")),
                            config,
                        ),
                        BertEncoder::load(vb.pp(format!("{model_type}.encoder")), config),
                    ) {
                        (embeddings, encoder)
                    } else {
                        return Err(err);
                    }
                } else {
                    return Err(err);
                }
            }
        };
        Ok(Self {
            embeddings,
            encoder,
            device: vb.device().clone(),
            cl_scope,
        })
    }
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let embedding_output = self.embeddings.forward(input_ids, token_type_ids)?;
            let attention_mask = match attention_mask {
                Some(attention_mask) => attention_mask.clone(),
                None => input_ids.ones_like()?,
            };
            let dtype = embedding_output.dtype();
            let attention_mask = get_extended_attention_mask(&attention_mask, dtype)?;
            let sequence_output = self
                .encoder
                .forward(&embedding_output, &attention_mask)?;
            Ok(sequence_output)
        })();
        self.cl_scope.finish(cl_out)
    }
}
fn get_extended_attention_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let attention_mask = match attention_mask.rank() {
        3 => attention_mask.unsqueeze(1)?,
        2 => attention_mask.unsqueeze(1)?.unsqueeze(1)?,
        _ => candle_core::bail!("Wrong shape for input_ids or attention_mask"),
    };
    let attention_mask = attention_mask.to_dtype(dtype)?;
    (attention_mask.ones_like()? - &attention_mask)?
        .broadcast_mul(
            &Tensor::try_from(f32::MIN)?
                .to_device(attention_mask.device())?
                .to_dtype(dtype)?,
        )
}
struct BertPredictionHeadTransform {
    dense: Linear,
    activation: HiddenActLayer,
    layer_norm: LayerNorm,
    cl_scope: candlelight::Scope,
}
impl BertPredictionHeadTransform {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb)
            .kind("bert_prediction_head_transform");
        let dense = linear(config.hidden_size, config.hidden_size, vb.pp("dense"))?;
        let activation = HiddenActLayer::new(config.hidden_act);
        let layer_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            vb.pp("LayerNorm"),
        )?;
        Ok(Self {
            dense,
            activation,
            layer_norm,
            cl_scope,
        })
    }
}
impl Module for BertPredictionHeadTransform {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let hidden_states = self
                .activation
                .forward(&self.dense.forward(hidden_states)?)?;
            self.layer_norm.forward(&hidden_states)
        })();
        self.cl_scope.finish(cl_out)
    }
}
pub struct BertLMPredictionHead {
    transform: BertPredictionHeadTransform,
    decoder: Linear,
    cl_scope: candlelight::Scope,
}
impl BertLMPredictionHead {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_lm_prediction_head");
        let transform = BertPredictionHeadTransform::load(vb.pp("transform"), config)?;
        let decoder = linear(config.hidden_size, config.vocab_size, vb.pp("decoder"))?;
        Ok(Self {
            transform,
            decoder,
            cl_scope,
        })
    }
}
impl Module for BertLMPredictionHead {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            self.decoder.forward(&self.transform.forward(hidden_states)?)
        })();
        self.cl_scope.finish(cl_out)
    }
}
pub struct BertOnlyMLMHead {
    predictions: BertLMPredictionHead,
    cl_scope: candlelight::Scope,
}
impl BertOnlyMLMHead {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_only_mlm_head");
        let predictions = BertLMPredictionHead::load(vb.pp("predictions"), config)?;
        Ok(Self { predictions, cl_scope })
    }
}
impl Module for BertOnlyMLMHead {
    fn forward(&self, sequence_output: &Tensor) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            self.predictions.forward(sequence_output)
        })();
        self.cl_scope.finish(cl_out)
    }
}
pub struct BertForMaskedLM {
    bert: BertModel,
    cls: BertOnlyMLMHead,
    cl_scope: candlelight::Scope,
}
impl BertForMaskedLM {
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let cl_scope = candlelight::Scope::new(&vb).kind("bert_for_masked_lm");
        let bert = BertModel::load(vb.pp("bert"), config)?;
        let cls = BertOnlyMLMHead::load(vb.pp("cls"), config)?;
        Ok(Self { bert, cls, cl_scope })
    }
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> Result<Tensor> {
            let sequence_output = self
                .bert
                .forward(input_ids, token_type_ids, attention_mask)?;
            self.cls.forward(&sequence_output)
        })();
        self.cl_scope.finish(cl_out)
    }
}
