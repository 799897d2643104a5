//! Rule 5: paths that resolve outside candle-transformers (`candle::` ->
//! `candle_core::`, `super::with_tracing` -> `candlelight::with_tracing`, `crate::`
//! -> `candle_transformers::`, covered candle_nn layers -> `candlelight::nn`), in
//! `use` trees, in every path, and in macro bodies.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};
use syn::visit::Visit;
use syn::visit_mut::{self, VisitMut};
use syn::{Item, ItemUse};

use super::analyze::{build, leaves, Imports, Leaf};
use super::walk;

/// candle_nn layer types that `candlelight::nn` has, and the constructors returning each.
const COVERED: &[(&str, &[&str])] = &[
    ("Linear", &["linear", "linear_no_bias", "linear_b"]),
    ("Conv1d", &["conv1d", "conv1d_no_bias"]),
    ("Conv2d", &["conv2d", "conv2d_no_bias"]),
    ("ConvTranspose2d", &["conv_transpose2d"]),
    ("Embedding", &["embedding"]),
    ("LayerNorm", &["layer_norm"]),
    ("RmsNorm", &["rms_norm"]),
    ("GroupNorm", &["group_norm"]),
    ("BatchNorm", &["batch_norm"]),
];

/// Methods of a candle_nn layer that the recorded type's own methods shadow
/// (`Recorded::into_inner` returns the candle_nn layer, not what it wraps).
/// (`candle_nn::RmsNorm::into_inner` gives a `candle_nn::LayerNorm`, hence both.)
const SHADOWED: &[(&str, &str)] = &[("RmsNorm", "into_inner"), ("LayerNorm", "into_inner")];

/// How paths are rewritten.
struct Rules {
    /// The module the file was, as segments (`super` is its parent).
    module: Vec<String>,
    /// candle_nn names (types and constructors) that go to `candlelight::nn`.
    to_nn: BTreeSet<String>,
    /// Names imported from candle_nn that moved, by the name they are known by:
    /// `layer_norm::LayerNorm` (candle_nn's module of that name) keeps pointing there.
    moved: BTreeMap<String, String>,
}

impl Rules {
    /// How many leading segments of `segs` to replace, and by what; `depth` is the
    /// inline-module nesting (`super::` inside an inline module is left alone).
    fn prefix(&self, segs: &[String], depth: usize) -> Option<(usize, Vec<String>)> {
        let strs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nn_type = |t: &str| self.to_nn.contains(t) && t.starts_with(char::is_uppercase);
        let (n, abs) = match strs.as_slice() {
            // `candle_nn::layer_norm::LayerNorm` is `candle_nn::LayerNorm`.
            ["candle_nn", _, t] if nn_type(t) => return Some((3, own(&["candlelight", "nn", t]))),
            [m, t] if self.moved.contains_key(*m) && nn_type(t) => {
                return Some((2, own(&["candlelight", "nn", t])));
            }
            [m, _, ..] if self.moved.contains_key(*m) => {
                return Some((1, vec!["candle_nn".into(), self.moved[*m].clone()]));
            }
            ["candle", _, ..] => return Some((1, own(&["candle_core"]))),
            ["candle_nn", x] if self.to_nn.contains(*x) => {
                return Some((1, own(&["candlelight", "nn"])));
            }
            ["crate", _, ..] => (1, own(&["candle_transformers"])),
            ["super", ..] if depth == 0 => {
                let n = strs.iter().take_while(|s| **s == "super").count();
                if n >= strs.len() || n >= self.module.len() {
                    return None;
                }
                (n, self.module[..self.module.len() - n].to_vec())
            }
            _ => return None,
        };
        // candle-transformers' with_tracing -> candlelight's.
        const WT: [&str; 3] = ["candle_transformers", "models", "with_tracing"];
        let full: Vec<&str> = abs
            .iter()
            .map(String::as_str)
            .chain(strs[n..].iter().copied())
            .collect();
        if abs.len() <= WT.len() && full.starts_with(&WT) {
            return Some((
                n + WT.len() - abs.len(),
                own(&["candlelight", "with_tracing"]),
            ));
        }
        Some((n, abs))
    }

    fn leaf(&self, l: &Leaf, depth: usize) -> Leaf {
        match self.prefix(&l.path, depth) {
            Some((n, mut new)) => {
                new.extend(l.path[n..].iter().cloned());
                Leaf {
                    path: new,
                    rename: l.rename.clone(),
                }
            }
            None => l.clone(),
        }
    }
}

/// Rewrites the paths of `file`; reports what moved to `candlelight::nn` and what
/// stayed in candle_nn.
pub(super) fn rewrite(
    file: &mut syn::File,
    imports: &Imports,
    module_path: &str,
    report: &mut Vec<String>,
) {
    let to_nn = covered_and_safe(file, imports, report);
    let mut moved = BTreeMap::new();
    walk::for_each_use(&file.items, 0, &mut |u, _| {
        for l in leaves(&u.tree) {
            if let [first, x] = l.path.as_slice() {
                if first == "candle_nn" && to_nn.contains(x) {
                    moved.insert(l.local().to_string(), x.clone());
                }
            }
        }
    });
    let rules = Rules {
        module: module_path.split("::").map(str::to_string).collect(),
        to_nn,
        moved,
    };
    rewrite_uses(&mut file.items, &rules, 0);
    let mut v = PathVisitor {
        rules: &rules,
        depth: 0,
    };
    v.visit_file_mut(file);
}

/// The covered candle_nn names to move: a type goes with its constructors when the
/// file calls one of them, and calls neither an associated function of the type
/// (`Embedding::new(..)` does not exist on the recorded type) nor another candle_nn
/// function returning it (`layer_norm_no_bias`). A type whose values all come from
/// elsewhere (`quantized_nn::layer_norm`, another module) stays.
fn covered_and_safe(
    file: &syn::File,
    imports: &Imports,
    report: &mut Vec<String>,
) -> BTreeSet<String> {
    let u = Uses::of(file, imports);
    let mut out = BTreeSet::new();
    let mut moved = Vec::new();
    for (ty, ctors) in COVERED {
        if !ctors.iter().any(|c| u.used.contains(*c)) {
            continue;
        }
        let prefix = super::snake_case(ty);
        let mut why: Vec<String> = u
            .assoc
            .iter()
            .filter(|(t, _)| t == ty)
            .map(|(t, f)| format!("{t}::{f}"))
            .collect();
        why.extend(
            u.used
                .iter()
                .filter(|f| f.starts_with(&prefix) && !ctors.contains(&f.as_str()))
                .cloned(),
        );
        why.extend(
            SHADOWED
                .iter()
                .filter(|(t, m)| t == ty && u.methods.contains(*m))
                .map(|(_, m)| format!(".{m}()")),
        );
        if why.is_empty() {
            let names = std::iter::once(*ty).chain(ctors.iter().copied());
            moved.extend(names.clone().filter(|n| u.used.contains(*n)));
            out.extend(names.map(str::to_string));
        } else {
            report.push(format!(
                "kept     candle_nn::{ty} and its constructors (not recorded): the file also uses {}, which candlelight::nn does not have",
                why.join(", ")
            ));
        }
    }
    if !moved.is_empty() {
        report.push(format!(
            "nn       candle_nn::{{{}}} -> candlelight::nn",
            moved.join(", ")
        ));
    }
    out
}

/// What a file uses of candle_nn, and which methods it calls.
struct Uses<'a> {
    imports: &'a Imports,
    /// `candle_nn::x` paths (as written or through a `use`): the `x`s.
    used: BTreeSet<String>,
    /// `candle_nn::T::f` paths: (T, f).
    assoc: BTreeSet<(String, String)>,
    /// Method names called.
    methods: BTreeSet<String>,
}
impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let full = self.imports.resolve(p);
        if p.leading_colon.is_none() && full.first().is_some_and(|s| s == "candle_nn") {
            if let [_, x] = full.as_slice() {
                self.used.insert(x.clone());
            }
            // `candle_nn::T::f`, `candle_nn::module::T::f`.
            for w in full[1..].windows(2) {
                if COVERED.iter().any(|(t, _)| *t == w[0]) {
                    self.assoc.insert((w[0].clone(), w[1].clone()));
                }
            }
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        self.methods.insert(m.method.to_string());
        syn::visit::visit_expr_method_call(self, m);
    }
    fn visit_item_use(&mut self, _: &'ast ItemUse) {}
}
impl<'a> Uses<'a> {
    fn of(file: &syn::File, imports: &'a Imports) -> Self {
        let mut u = Uses {
            imports,
            used: BTreeSet::new(),
            assoc: BTreeSet::new(),
            methods: BTreeSet::new(),
        };
        u.visit_file(file);
        u
    }
}

/// Rewrites `use` items; one whose leaves now start differently is split into one
/// `use` per first segment (`candle_nn::{Module, VarBuilder}` and
/// `candlelight::nn::{embedding, Embedding}`).
fn rewrite_uses(items: &mut Vec<Item>, rules: &Rules, depth: usize) {
    let old = std::mem::take(items);
    for mut item in old {
        match &mut item {
            Item::Use(u) if u.leading_colon.is_none() => {
                let before = leaves(&u.tree);
                let after: Vec<Leaf> = before.iter().map(|l| rules.leaf(l, depth)).collect();
                if after == before {
                    items.push(item);
                    continue;
                }
                let mut heads: Vec<&str> = Vec::new();
                for l in &after {
                    if !heads.contains(&l.path[0].as_str()) {
                        heads.push(&l.path[0]);
                    }
                }
                for h in heads {
                    let mine: Vec<Leaf> =
                        after.iter().filter(|l| l.path[0] == h).cloned().collect();
                    let mut new = u.clone();
                    new.tree = build(&mine);
                    items.push(Item::Use(new));
                }
            }
            Item::Mod(m) => {
                if let Some((_, inner)) = &mut m.content {
                    rewrite_uses(inner, rules, depth + 1);
                }
                items.push(item);
            }
            _ => items.push(item),
        }
    }
}

struct PathVisitor<'a> {
    rules: &'a Rules,
    depth: usize,
}

impl VisitMut for PathVisitor<'_> {
    fn visit_item_mod_mut(&mut self, m: &mut syn::ItemMod) {
        self.depth += 1;
        visit_mut::visit_item_mod_mut(self, m);
        self.depth -= 1;
    }

    fn visit_item_use_mut(&mut self, _: &mut ItemUse) {}

    fn visit_path_mut(&mut self, p: &mut syn::Path) {
        if p.leading_colon.is_none() {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            if let Some((n, new)) = self.rules.prefix(&segs, self.depth) {
                let rest: Vec<syn::PathSegment> = p.segments.iter().skip(n).cloned().collect();
                p.segments = new
                    .iter()
                    .map(|s| syn::PathSegment::from(Ident::new(s, Span::call_site())))
                    .chain(rest)
                    .collect();
            }
        }
        visit_mut::visit_path_mut(self, p);
    }

    fn visit_macro_mut(&mut self, m: &mut syn::Macro) {
        m.tokens = rewrite_tokens(std::mem::take(&mut m.tokens), self.rules, self.depth);
        visit_mut::visit_macro_mut(self, m);
    }
}

/// The same rewriting inside a macro's tokens: a path is idents joined by `::`
/// not preceded by `::`, `$` or `.`.
fn rewrite_tokens(ts: TokenStream, rules: &Rules, depth: usize) -> TokenStream {
    let toks: Vec<TokenTree> = ts.into_iter().collect();
    let mut out: Vec<TokenTree> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if let TokenTree::Group(g) = &toks[i] {
            let mut ng = Group::new(g.delimiter(), rewrite_tokens(g.stream(), rules, depth));
            ng.set_span(g.span());
            out.push(TokenTree::Group(ng));
            i += 1;
            continue;
        }
        let starts_path = matches!(&toks[i], TokenTree::Ident(_)) && !after_path_punct(&out);
        if starts_path {
            // Collect `a :: b :: c`: idents at i, i+3, i+6, ...
            let mut segs = Vec::new();
            let mut j = i;
            while let Some(TokenTree::Ident(id)) = toks.get(j) {
                segs.push(id.to_string());
                if is_colon2(&toks, j + 1) {
                    j += 3;
                } else {
                    break;
                }
            }
            if let Some((n, new)) = rules.prefix(&segs, depth) {
                for (k, s) in new.iter().enumerate() {
                    if k > 0 {
                        push_colon2(&mut out);
                    }
                    out.push(TokenTree::Ident(Ident::new(s, Span::call_site())));
                }
                // Skip the n replaced idents and the `::` between them.
                i += 3 * n - 2;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out.into_iter().collect()
}

fn is_colon2(toks: &[TokenTree], at: usize) -> bool {
    matches!((toks.get(at), toks.get(at + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

/// Whether the tokens so far end in `::`, `$` or `.` (the next ident is not a path start).
fn after_path_punct(out: &[TokenTree]) -> bool {
    match out {
        [.., TokenTree::Punct(a), TokenTree::Punct(b)]
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':' =>
        {
            true
        }
        [.., TokenTree::Punct(p)] => matches!(p.as_char(), '$' | '.'),
        _ => false,
    }
}

fn push_colon2(out: &mut Vec<TokenTree>) {
    out.push(TokenTree::Punct(Punct::new(':', Spacing::Joint)));
    out.push(TokenTree::Punct(Punct::new(':', Spacing::Alone)));
}
