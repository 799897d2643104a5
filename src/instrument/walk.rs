//! Walking a file: its functions (with the type of their `impl`), its structs, its
//! `use` items; types and paths as short strings for the report.

use quote::ToTokens;
use syn::{Attribute, Block, ImplItem, Item, ItemStruct, ItemUse, Signature, Type};

/// Where a function is.
#[derive(Debug, Clone)]
pub(super) struct FnCtx {
    /// The type of the enclosing `impl` (its last path segment), if any.
    pub self_ty: Option<String>,
}

impl FnCtx {
    /// `Type::name`, or `name` for a free function.
    pub fn display(&self, sig: &Signature) -> String {
        match &self.self_ty {
            Some(t) => format!("{t}::{}", sig.ident),
            None => sig.ident.to_string(),
        }
    }
}

/// A function: where it is, its attributes, signature and body.
pub(super) type FnVisitor<'a> =
    dyn FnMut(&FnCtx, &mut Vec<Attribute>, &mut Signature, &mut Block) + 'a;

/// Calls `f` on every function of `items`: free functions, methods, trait default
/// methods, and those in inline modules (functions nested in bodies are not visited).
pub(super) fn for_each_fn(items: &mut [Item], f: &mut FnVisitor<'_>) {
    for item in items {
        match item {
            Item::Fn(func) => {
                let ctx = FnCtx { self_ty: None };
                f(&ctx, &mut func.attrs, &mut func.sig, &mut func.block);
            }
            Item::Impl(imp) => {
                let ctx = FnCtx {
                    self_ty: type_name(&imp.self_ty),
                };
                for it in &mut imp.items {
                    if let ImplItem::Fn(m) = it {
                        f(&ctx, &mut m.attrs, &mut m.sig, &mut m.block);
                    }
                }
            }
            Item::Trait(tr) => {
                let ctx = FnCtx { self_ty: None };
                for it in &mut tr.items {
                    if let syn::TraitItem::Fn(m) = it {
                        if let Some(block) = &mut m.default {
                            f(&ctx, &mut m.attrs, &mut m.sig, block);
                        }
                    }
                }
            }
            Item::Mod(m) => {
                if let Some((_, items)) = &mut m.content {
                    for_each_fn(items, f);
                }
            }
            _ => {}
        }
    }
}

/// Calls `f` on every struct of `items` (inline modules included).
pub(super) fn for_each_struct(items: &mut [Item], f: &mut dyn FnMut(&mut ItemStruct)) {
    for_each_item(items, &mut |item| {
        if let Item::Struct(s) = item {
            f(s)
        }
    })
}

/// Calls `f` on every item of `items` and of its inline modules.
pub(super) fn for_each_item(items: &mut [Item], f: &mut dyn FnMut(&mut Item)) {
    for item in items {
        f(item);
        if let Item::Mod(m) = item {
            if let Some((_, items)) = &mut m.content {
                for_each_item(items, f);
            }
        }
    }
}

/// Calls `f` on every `use` item of `items` (inline modules included) with its
/// module depth.
pub(super) fn for_each_use<'a>(
    items: &'a [Item],
    depth: usize,
    f: &mut dyn FnMut(&'a ItemUse, usize),
) {
    for item in items {
        match item {
            Item::Use(u) => f(u, depth),
            Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    for_each_use(items, depth + 1, f);
                }
            }
            _ => {}
        }
    }
}

/// Keeps the items (inline modules included) for which `keep` is true.
pub(super) fn retain_items(items: &mut Vec<Item>, keep: &mut dyn FnMut(&Item) -> bool) {
    items.retain(|i| keep(i));
    for item in items {
        if let Item::Mod(m) = item {
            if let Some((_, items)) = &mut m.content {
                retain_items(items, keep);
            }
        }
    }
}

/// The last path segment of a type (`Foo` for `Foo<T>`, `crate::x::Foo`).
pub(super) fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// A type or path as the report shows it: `Result<(Tensor, Tensor)>`.
pub(super) fn show(t: &impl ToTokens) -> String {
    let raw = t.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    let chars: Vec<char> = raw.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|j| chars[j]).unwrap_or(' ');
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            let tight = |c: char| matches!(c, '<' | '>' | ':' | '(' | ')' | '&' | '[' | ']' | '\'');
            if tight(prev) || matches!(next, '<' | '>' | ',' | ':' | ')' | ']') {
                continue;
            }
        }
        out.push(c);
    }
    out
}
