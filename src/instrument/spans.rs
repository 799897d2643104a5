//! Rule 1: tracing goes (span fields, their initialisers, span locals, `enter`
//! guards, tracing macros, `use tracing`, `#[tracing::instrument]`).

use std::collections::{BTreeMap, BTreeSet};

use syn::visit::Visit;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, Fields, Item, Stmt, Type};

use super::analyze::{literal_name, Imports};
use super::walk::{self, FnCtx};

/// Removes everything tracing from `file`; adds one report line when it did.
pub(super) fn remove_tracing(file: &mut syn::File, imports: &Imports, report: &mut Vec<String>) {
    // Span fields by struct (`Name`) and enum variant (`Enum::Variant`).
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    walk::for_each_item(&mut file.items, &mut |item| match item {
        Item::Struct(s) => {
            let removed = remove_span_fields(&mut s.fields, imports);
            if !removed.is_empty() {
                fields.insert(s.ident.to_string(), removed);
            }
        }
        Item::Enum(e) => {
            for v in &mut e.variants {
                let removed = remove_span_fields(&mut v.fields, imports);
                if !removed.is_empty() {
                    fields.insert(format!("{}::{}", e.ident, v.ident), removed);
                }
            }
        }
        _ => {}
    });
    let mut uses = 0;
    walk::retain_items(&mut file.items, &mut |item| {
        let Item::Use(u) = item else { return true };
        let tracing = super::analyze::leaves(&u.tree)
            .iter()
            .all(|l| l.path.first().is_some_and(|s| s == "tracing"));
        uses += usize::from(tracing);
        !tracing
    });
    let mut stmts = 0;
    walk::for_each_fn(&mut file.items, &mut |ctx, attrs, _, block| {
        attrs.retain(|a| {
            let t = imports.resolve(a.path());
            !(t.first().is_some_and(|s| s == "tracing") || t == ["instrument"])
        });
        let mut strip = Strip {
            ctx,
            imports,
            fields: &fields,
            locals: BTreeSet::new(),
            removed: 0,
        };
        strip.visit_block_mut(block);
        stmts += strip.removed;
    });
    let n_fields: usize = fields.values().map(BTreeSet::len).sum();
    if n_fields + stmts + uses > 0 {
        report.push(format!(
            "tracing removed: {n_fields} span field(s) of {} struct(s) or variant(s), {stmts} statement(s), {uses} use item(s)",
            fields.len()
        ));
    }
}

/// Removes the span fields of named `fields`; returns their names.
fn remove_span_fields(fields: &mut Fields, imports: &Imports) -> BTreeSet<String> {
    let Fields::Named(named) = fields else {
        return BTreeSet::new();
    };
    let mut removed = BTreeSet::new();
    let kept = std::mem::take(&mut named.named)
        .into_pairs()
        .filter(|p| {
            let f = p.value();
            let span = is_span_type(&f.ty, imports);
            if span {
                removed.extend(f.ident.as_ref().map(|i| i.to_string()));
            }
            !span
        })
        .map(|p| p.into_value());
    named.named = kept.collect();
    removed
}

/// `tracing::Span`, or `Span` imported from tracing.
fn is_span_type(ty: &Type, imports: &Imports) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let full = imports.resolve(&p.path);
            full.first().is_some_and(|s| s == "tracing") && full.last().is_some_and(|s| s == "Span")
        }
        _ => false,
    }
}

struct Strip<'a> {
    ctx: &'a FnCtx,
    imports: &'a Imports,
    /// Span fields removed, by struct.
    fields: &'a BTreeMap<String, BTreeSet<String>>,
    /// Locals bound by removed statements (`let span = tracing::span!(..)`).
    locals: BTreeSet<String>,
    removed: usize,
}

fn named_in(m: &syn::Member, names: &BTreeSet<String>) -> bool {
    matches!(m, syn::Member::Named(i) if names.contains(&i.to_string()))
}

impl Strip<'_> {
    /// The span fields removed from the struct or enum variant a literal or
    /// pattern names (`Self`, `Name`, `Self::Variant`, `Enum::Variant`).
    fn removed_of(&self, path: &syn::Path) -> Option<&BTreeSet<String>> {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let [.., a, b] = segs.as_slice() {
            let a = if a == "Self" {
                self.ctx.self_ty.clone()?
            } else {
                a.clone()
            };
            if let Some(f) = self.fields.get(&format!("{a}::{b}")) {
                return Some(f);
            }
        }
        literal_name(path, self.ctx).and_then(|n| self.fields.get(&n))
    }

    /// Span fields of the `impl`'s type (of any struct when not in an `impl`).
    fn span_field(&self, name: &str) -> bool {
        match self.ctx.self_ty.as_ref().and_then(|t| self.fields.get(t)) {
            Some(f) => f.contains(name),
            None => self.fields.values().any(|f| f.contains(name)),
        }
    }

    /// Whether a statement is tracing's, to be removed.
    fn goes(&mut self, stmt: &Stmt) -> bool {
        match stmt {
            Stmt::Local(l) => {
                let Some(init) = &l.init else { return false };
                let mut m = Mentions::new(self);
                m.visit_expr(&init.expr);
                let found = m.found;
                if found {
                    let mut names = Names(Vec::new());
                    names.visit_pat(&l.pat);
                    self.locals.extend(names.0);
                }
                found
            }
            Stmt::Macro(m) => self.imports.is_tracing(&m.mac.path),
            Stmt::Expr(e, Some(_)) => {
                let mut m = Mentions::new(self);
                m.visit_expr(e);
                m.found
            }
            _ => false,
        }
    }
}

impl VisitMut for Strip<'_> {
    fn visit_block_mut(&mut self, b: &mut syn::Block) {
        let stmts = std::mem::take(&mut b.stmts);
        for mut s in stmts {
            if self.goes(&s) {
                self.removed += 1;
                continue;
            }
            self.visit_stmt_mut(&mut s);
            b.stmts.push(s);
        }
    }

    fn visit_expr_struct_mut(&mut self, e: &mut syn::ExprStruct) {
        if let Some(gone) = self.removed_of(&e.path) {
            let kept = std::mem::take(&mut e.fields)
                .into_pairs()
                .filter(|p| !named_in(&p.value().member, gone))
                .map(|p| p.into_value());
            e.fields = kept.collect();
        }
        visit_mut::visit_expr_struct_mut(self, e);
    }

    fn visit_pat_struct_mut(&mut self, p: &mut syn::PatStruct) {
        if let Some(gone) = self.removed_of(&p.path) {
            let kept = std::mem::take(&mut p.fields)
                .into_pairs()
                .filter(|f| !named_in(&f.value().member, gone))
                .map(|f| f.into_value());
            p.fields = kept.collect();
        }
        visit_mut::visit_pat_struct_mut(self, p);
    }

    fn visit_item_mut(&mut self, _: &mut Item) {}
}

/// Does an expression use tracing: a tracing macro, a removed span field or
/// local, `.enter()`/`.entered()` on something named like a span?
struct Mentions<'s, 'a> {
    strip: &'s Strip<'a>,
    found: bool,
}

impl<'s, 'a> Mentions<'s, 'a> {
    fn new(strip: &'s Strip<'a>) -> Self {
        Mentions {
            strip,
            found: false,
        }
    }
}

impl<'ast> Visit<'ast> for Mentions<'_, '_> {
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if self.strip.imports.is_tracing(&m.path) {
            self.found = true;
        }
    }

    fn visit_expr(&mut self, e: &'ast Expr) {
        match e {
            Expr::Field(f) => {
                let on_self = matches!(&*f.base, Expr::Path(p) if p.path.is_ident("self"));
                if let syn::Member::Named(i) = &f.member {
                    if on_self && self.strip.span_field(&i.to_string()) {
                        self.found = true;
                    }
                }
            }
            Expr::Path(p) => {
                if let Some(i) = p.path.get_ident() {
                    if self.strip.locals.contains(&i.to_string()) {
                        self.found = true;
                    }
                }
            }
            Expr::MethodCall(mc)
                if (mc.method == "enter" || mc.method == "entered")
                    && walk::show(&mc.receiver).to_lowercase().contains("span") =>
            {
                self.found = true;
            }
            _ => {}
        }
        syn::visit::visit_expr(self, e);
    }

    /// Statements in blocks are judged one by one ([`Strip`] visits them), not as
    /// part of the value of the `let` they are in.
    fn visit_block(&mut self, _: &'ast syn::Block) {}

    fn visit_item(&mut self, _: &'ast Item) {}
}

/// Identifiers a pattern binds.
struct Names(Vec<String>);

impl<'ast> Visit<'ast> for Names {
    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.0.push(p.ident.to_string());
        syn::visit::visit_pat_ident(self, p);
    }
}
