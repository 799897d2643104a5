//! `candlelight instrument`: rewrites a model source file copied out of
//! candle-transformers (`bert.rs`, `llama.rs`, `mistral.rs`, ...) so that every
//! layer and every module with a `forward` records its output under its
//! `VarBuilder` path, and so that it compiles in a crate that depends on
//! candlelight, candle-core, candle-nn and candle-transformers.
//!
//! The rules, in the order they are applied:
//!
//! 1. Tracing goes: `tracing::Span` fields, their initialisers, `let span =
//!    tracing::span!(..)` and `let _enter = self.span.enter();` statements, `use
//!    tracing::..` and `#[tracing::instrument]`. The output needs no `tracing` crate.
//! 2. Scopes: a struct with a `forward` (or `forward_t`) method that is built (`Self
//!    {..}` / `Name {..}`) in a function taking a candle_nn `VarBuilder` gets a field
//!    `cl_scope: candlelight::Scope`, taken from the `VarBuilder` by the first
//!    statement of that function (`let cl_scope =
//!    candlelight::Scope::new(&vb).kind("snake_case_name");`). Where it is built
//!    without one, it gets `candlelight::Scope::none()`, which records nothing.
//! 3. Each `forward`/`forward_t` of such a struct that returns `Result<Tensor>` runs
//!    its original body in a closure and records the result under the module's path
//!    (`self.cl_scope.finish(..)`; the model's root module records as `output`).
//! 4. In the methods of such a struct, `let x = ..softmax..(..)?;` is followed by `let
//!    x = self.cl_scope.attention_probs(x)?;`, recorded as `<path>.attention_probs`.
//! 5. Paths: `super::with_tracing` (however spelled) becomes
//!    `candlelight::with_tracing` (same API, records every layer by path); `candle::`
//!    becomes `candle_core::`; other `crate::`/`super::` paths point into
//!    `candle_transformers`; candle_nn layers that [`crate::nn`] covers (`embedding`,
//!    `Embedding`, `linear`, `layer_norm`, ...) become `candlelight::nn` ones unless
//!    the file calls an associated function of the type (`Embedding::new(..)`).
//!
//! Everything else is kept; the file is printed again with `prettyplease`, so plain
//! `//` comments are lost (doc comments stay). The output is deterministic.

mod analyze;
mod paths;
mod scope;
#[cfg(test)]
mod scope_tests;
mod spans;
#[cfg(test)]
mod tests;
mod walk;

use std::path::PathBuf;

use crate::{Error, Result};

/// What [`instrument`] needs besides the source.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The input's file name (`bert.rs`): named in the header and in errors.
    pub file_name: String,
    /// The module path the file had in its crate, which `super::` is relative to.
    /// Default: `candle_transformers::models::<file stem>`.
    pub module_path: Option<String>,
}

/// An instrumented source file and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrumented {
    /// The new source file, header comment first.
    pub code: String,
    /// One line per decision: structs that got a scope, forwards wrapped, what was
    /// skipped and why, imports moved. In source order.
    pub report: Vec<String>,
}

/// The name of the field and local that hold a module's scope.
pub const SCOPE: &str = "cl_scope";

/// Rewrites `source` (one Rust file of candle-transformers 0.9.2) as described in
/// the [module docs](self).
///
/// ```
/// use candlelight::instrument::{instrument, Options};
///
/// let src = r#"
/// use candle::{Module, Result, Tensor};
/// use candle_nn::{linear, Linear, VarBuilder};
/// struct Mlp { fc: Linear, span: tracing::Span }
/// impl Mlp {
///     fn new(vb: VarBuilder) -> Result<Self> {
///         let span = tracing::span!(tracing::Level::TRACE, "mlp");
///         Ok(Self { fc: linear(4, 4, vb.pp("fc"))?, span })
///     }
///     fn forward(&self, xs: &Tensor) -> Result<Tensor> {
///         let _enter = self.span.enter();
///         self.fc.forward(xs)?.relu()
///     }
/// }
/// "#;
/// let opts = Options { file_name: "mlp.rs".into(), ..Default::default() };
/// let out = instrument(src, &opts)?;
/// assert!(out.code.starts_with("// Instrumented by candlelight"));
/// assert!(out.code.contains("use candlelight::nn::{linear, Linear};"));
/// assert!(out.code.contains(r#"candlelight::Scope::new(&vb).kind("mlp")"#));
/// assert!(out.code.contains("self.cl_scope.finish(cl_out)"));
/// assert!(!out.code.contains("tracing"));
/// assert!(out.report.iter().any(|l| l.starts_with("scoped   Mlp (kind mlp")));
/// # Ok::<(), candlelight::Error>(())
/// ```
pub fn instrument(source: &str, opts: &Options) -> Result<Instrumented> {
    let bad = |msg: String| Error::BadInput {
        path: PathBuf::from(&opts.file_name),
        msg,
    };
    if source.contains("candlelight::Scope") || source.contains(SCOPE) {
        return Err(bad(format!(
            "already instrumented (it mentions {SCOPE} or candlelight::Scope)"
        )));
    }
    let mut file: syn::File = syn::parse_file(source).map_err(|e| {
        let at = e.span().start();
        bad(format!(
            "not Rust that syn can parse: {e} (line {}, column {})",
            at.line,
            at.column + 1
        ))
    })?;
    let mut report = Vec::new();
    let imports = analyze::Imports::of(&file);
    spans::remove_tracing(&mut file, &imports, &mut report);
    scope::add_scopes(&mut file, &imports, &mut report);
    let module_path = opts
        .module_path
        .clone()
        .unwrap_or_else(|| default_module_path(&opts.file_name));
    paths::rewrite(&mut file, &imports, &module_path, &mut report);
    let mut code = header(&opts.file_name);
    code.push_str(&prettyplease::unparse(&file));
    Ok(Instrumented { code, report })
}

/// `candle_transformers::models::<stem of file_name>`.
fn default_module_path(file_name: &str) -> String {
    let stem = std::path::Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    format!("candle_transformers::models::{stem}")
}

/// The comment the output starts with.
fn header(file_name: &str) -> String {
    format!(
        "// Instrumented by candlelight {} from {file_name}; see candlelight instrument --help\n\
         // The original's license applies (candle-transformers: MIT OR Apache-2.0).\n\
         // Generated: change the original and instrument it again rather than editing this.\n\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `CausalSelfAttention` -> `causal_self_attention`, `MLP` -> `mlp`,
/// `BertLMPredictionHead` -> `bert_lm_prediction_head`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let after_lower = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit());
            let acronym_end =
                prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase());
            if after_lower || acronym_end {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
