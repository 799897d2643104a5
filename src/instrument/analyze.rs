//! What a file imports (`use` trees as leaves) and which of its structs are
//! modules that get a scope.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{Expr, FnArg, Ident, Item, Pat, Signature, Type, UseTree};

use super::walk::{self, FnCtx};

/// One imported name of a `use` tree: its full path (a glob ends in `*`) and
/// its `as` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leaf {
    pub path: Vec<String>,
    pub rename: Option<String>,
}

impl Leaf {
    /// The name it is known by in the file.
    pub fn local(&self) -> &str {
        self.rename
            .as_deref()
            .unwrap_or_else(|| self.path.last().map(String::as_str).unwrap_or(""))
    }
}

/// The leaves of a `use` tree, in order.
pub(super) fn leaves(tree: &UseTree) -> Vec<Leaf> {
    let mut out = Vec::new();
    collect(tree, &mut Vec::new(), &mut out);
    out
}

fn collect(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<Leaf>) {
    let leaf = |prefix: &Vec<String>, last: String, rename: Option<String>| {
        let mut path = prefix.clone();
        path.push(last);
        Leaf { path, rename }
    };
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            collect(&p.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(n) => out.push(leaf(prefix, n.ident.to_string(), None)),
        UseTree::Rename(r) => out.push(leaf(
            prefix,
            r.ident.to_string(),
            Some(r.rename.to_string()),
        )),
        UseTree::Glob(_) => out.push(leaf(prefix, "*".into(), None)),
        UseTree::Group(g) => {
            for t in &g.items {
                collect(t, prefix, out);
            }
        }
    }
}

/// A `use` tree importing `leaves` (which all start with the same segment), common
/// prefixes merged, first-seen order kept: the inverse of [`leaves`].
pub(super) fn build(leaves: &[Leaf]) -> UseTree {
    let ident = |s: &str| Ident::new(s, Span::call_site());
    if let [one] = leaves {
        if one.path.len() == 1 {
            let name = &one.path[0];
            return match (&one.rename, name.as_str()) {
                (_, "*") => UseTree::Glob(syn::UseGlob {
                    star_token: Default::default(),
                }),
                (Some(r), _) => UseTree::Rename(syn::UseRename {
                    ident: ident(name),
                    as_token: Default::default(),
                    rename: ident(r),
                }),
                (None, _) => UseTree::Name(syn::UseName { ident: ident(name) }),
            };
        }
    }
    // Group by first segment, keeping first-seen order.
    let mut heads: Vec<(String, Vec<Leaf>, bool)> = Vec::new();
    for l in leaves {
        let head = l.path[0].clone();
        let rest = Leaf {
            path: l.path[1..].to_vec(),
            rename: l.rename.clone(),
        };
        let is_leaf = l.path.len() == 1;
        match heads
            .iter_mut()
            .find(|(h, _, leaf)| *h == head && !*leaf && !is_leaf)
        {
            Some((_, v, _)) => v.push(rest),
            None => heads.push((head, vec![rest], is_leaf)),
        }
    }
    if let [(head, rest, false)] = heads.as_slice() {
        return UseTree::Path(syn::UsePath {
            ident: ident(head),
            colon2_token: Default::default(),
            tree: Box::new(build(rest)),
        });
    }
    let mut items = Punctuated::new();
    for (head, rest, is_leaf) in heads {
        let full: Vec<Leaf> = rest
            .into_iter()
            .map(|r| Leaf {
                path: if is_leaf {
                    vec![head.clone()]
                } else {
                    std::iter::once(head.clone()).chain(r.path).collect()
                },
                rename: r.rename,
            })
            .collect();
        items.push(build(&full));
    }
    UseTree::Group(syn::UseGroup {
        brace_token: Default::default(),
        items,
    })
}

/// The names a file imports, by the name they are known by.
#[derive(Debug, Default)]
pub(super) struct Imports {
    by_name: BTreeMap<String, Vec<String>>,
}

/// Whether a parameter type is a `VarBuilder`, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vb {
    /// candle_nn's, by value or (`by_ref`) behind a reference.
    CandleNn { by_ref: bool },
    /// Another one (candle-transformers' quantized `VarBuilder`).
    Other,
}

impl Imports {
    /// Every `use` of `file` (inline modules included, scopes ignored).
    pub fn of(file: &syn::File) -> Imports {
        let mut by_name = BTreeMap::new();
        walk::for_each_use(&file.items, 0, &mut |u, _| {
            for l in leaves(&u.tree) {
                if l.local() != "*" && l.local() != "self" {
                    by_name.insert(l.local().to_string(), l.path.clone());
                }
            }
        });
        Imports { by_name }
    }

    /// The full path a name was imported from.
    pub fn origin(&self, local: &str) -> Option<&[String]> {
        self.by_name.get(local).map(Vec::as_slice)
    }

    /// `path` as written, with its first segment replaced by what it was imported as.
    pub fn resolve(&self, path: &syn::Path) -> Vec<String> {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        match segs.first().and_then(|f| self.origin(f)) {
            Some(full) => full
                .iter()
                .cloned()
                .chain(segs[1..].iter().cloned())
                .collect(),
            None => segs,
        }
    }

    /// Is `path` in the `tracing` crate?
    pub fn is_tracing(&self, path: &syn::Path) -> bool {
        self.resolve(path).first().is_some_and(|s| s == "tracing")
    }

    /// Whether `ty` is a `VarBuilder` (a name not imported from anywhere counts
    /// as candle_nn's).
    pub fn var_builder(&self, ty: &Type) -> Option<Vb> {
        let (ty, by_ref) = match ty {
            Type::Reference(r) => (&*r.elem, true),
            t => (t, false),
        };
        let Type::Path(p) = ty else { return None };
        if p.qself.is_some() {
            return None;
        }
        let full = self.resolve(&p.path);
        if full.last().is_none_or(|l| l != "VarBuilder") {
            return None;
        }
        if full.len() == 1 || full.iter().any(|s| s == "candle_nn") {
            Some(Vb::CandleNn { by_ref })
        } else {
            Some(Vb::Other)
        }
    }
}

/// The first `VarBuilder` parameter of a function: its name, what kind.
pub(super) fn vb_param(sig: &Signature, imports: &Imports) -> Option<(Ident, Vb)> {
    sig.inputs.iter().find_map(|arg| {
        let FnArg::Typed(pt) = arg else { return None };
        let vb = imports.var_builder(&pt.ty)?;
        match &*pt.pat {
            Pat::Ident(pi) if pi.subpat.is_none() && pi.by_ref.is_none() => {
                Some((pi.ident.clone(), vb))
            }
            _ => None,
        }
    })
}

/// The struct a literal or pattern path names: `Self` in an `impl`, else the last
/// segment (`Self::Variant` names none).
pub(super) fn literal_name(path: &syn::Path, ctx: &FnCtx) -> Option<String> {
    let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match segs.as_slice() {
        [one] if one == "Self" => ctx.self_ty.clone(),
        [first, ..] if first == "Self" => None,
        [.., last] => Some(last.clone()),
        [] => None,
    }
}

/// Names of structs built by literal in a body (not in nested items).
pub(super) fn literals_in(block: &syn::Block, ctx: &FnCtx) -> Vec<String> {
    struct Find<'a> {
        ctx: &'a FnCtx,
        out: Vec<String>,
    }
    impl<'ast> Visit<'ast> for Find<'_> {
        fn visit_expr(&mut self, e: &'ast Expr) {
            if let Expr::Struct(s) = e {
                if let Some(n) = literal_name(&s.path, self.ctx) {
                    self.out.push(n);
                }
            }
            syn::visit::visit_expr(self, e);
        }
        fn visit_item(&mut self, _: &'ast Item) {}
    }
    let mut f = Find {
        ctx,
        out: Vec::new(),
    };
    f.visit_block(block);
    f.out
}

/// A struct of the file with a `forward`, and how it is built.
#[derive(Debug, Default)]
pub(super) struct Module {
    /// Position in the file (report order).
    pub order: usize,
    /// Has named fields (a scope field can be added).
    pub named: bool,
    /// Derives serde's `Serialize`/`Deserialize`.
    pub serde: bool,
    /// Its `forward`/`forward_t` methods (as `Type::forward`).
    pub forwards: Vec<String>,
    /// Functions that build it and take a candle_nn `VarBuilder`.
    pub vb_ctors: Vec<String>,
    /// Functions that build it from another `VarBuilder` (quantized).
    pub other_vb_ctors: Vec<String>,
}

/// The structs of `file` and the types with a `forward`, by name.
pub(super) fn modules(file: &mut syn::File, imports: &Imports) -> BTreeMap<String, Module> {
    let mut mods: BTreeMap<String, Module> = BTreeMap::new();
    let mut n = 0;
    walk::for_each_struct(&mut file.items, &mut |s| {
        let serde = s.attrs.iter().any(|a| {
            a.path().is_ident("derive") && {
                let t = walk::show(&a.meta);
                t.contains("Serialize") || t.contains("Deserialize")
            }
        });
        n += 1;
        mods.insert(
            s.ident.to_string(),
            Module {
                order: n,
                named: matches!(s.fields, syn::Fields::Named(_)),
                serde,
                ..Default::default()
            },
        );
    });
    walk::for_each_fn(&mut file.items, &mut |ctx, _, sig, block| {
        if let Some(t) = &ctx.self_ty {
            let name = sig.ident.to_string();
            if (name == "forward" || name == "forward_t") && sig.receiver().is_some() {
                n += 1;
                let m = mods.entry(t.clone()).or_insert_with(|| Module {
                    order: n,
                    ..Default::default()
                });
                m.forwards.push(format!("{t}::{name}"));
            }
        }
        let vb = vb_param(sig, imports);
        let built: BTreeSet<String> = literals_in(block, ctx).into_iter().collect();
        for s in built {
            if let Some(m) = mods.get_mut(&s) {
                match vb {
                    Some((_, Vb::CandleNn { .. })) => m.vb_ctors.push(ctx.display(sig)),
                    Some((_, Vb::Other)) => m.other_vb_ctors.push(ctx.display(sig)),
                    None => {}
                }
            }
        }
    });
    mods
}
