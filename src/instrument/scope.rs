//! Rules 2-4: a scope per module (field, constructor statement, struct literals),
//! `forward` bodies recorded through it, attention probabilities after softmax.

use std::collections::BTreeMap;

use proc_macro2::Span;
use syn::visit::Visit;
use syn::visit_mut::{self, VisitMut};
use syn::{parse_quote, Block, Expr, Ident, Item, Pat, ReturnType, Stmt, Type};

use super::analyze::{self, literal_name, vb_param, Imports, Module, Vb};
use super::walk::{self, show, FnCtx};
use super::{snake_case, SCOPE};

/// Report lines keyed by (struct order, when noted), so they come out in file order.
type Notes = BTreeMap<(usize, usize), String>;

/// Adds scopes to the modules of `file` (see the module docs).
pub(super) fn add_scopes(file: &mut syn::File, imports: &Imports, report: &mut Vec<String>) {
    let mods = analyze::modules(file, imports);
    let scoped: BTreeMap<String, &Module> = mods
        .iter()
        .filter(|(_, m)| m.named && !m.forwards.is_empty() && !m.vb_ctors.is_empty())
        .map(|(n, m)| (n.clone(), m))
        .collect();
    let mut notes = Notes::new();
    let mut note = |order: usize, line: String| {
        let k = notes.len();
        notes.insert((order, k), line);
    };
    for (name, m) in &mods {
        if m.forwards.is_empty() || scoped.contains_key(name) {
            continue;
        }
        let why = if !m.named {
            format!("{name} is not a struct with named fields defined in this file")
        } else if !m.other_vb_ctors.is_empty() {
            format!(
                "{name} is built only from a VarBuilder that is not candle_nn's (in {})",
                m.other_vb_ctors.join(", ")
            )
        } else {
            format!("{name} is never built in a function that takes a candle_nn VarBuilder")
        };
        note(
            m.order,
            format!("skipped  {}: {why}", m.forwards.join(", ")),
        );
    }
    for (name, m) in &scoped {
        note(
            m.order,
            format!(
                "scoped   {name} (kind {}; scope taken in {})",
                snake_case(name),
                m.vb_ctors.join(", ")
            ),
        );
    }
    walk::for_each_struct(&mut file.items, &mut |s| {
        if let (Some(m), syn::Fields::Named(named)) =
            (scoped.get(&s.ident.to_string()), &mut s.fields)
        {
            let scope = Ident::new(SCOPE, Span::call_site());
            let f: syn::FieldsNamed = if m.serde {
                parse_quote!({ #[serde(skip)] #scope: candlelight::Scope })
            } else {
                parse_quote!({ #scope: candlelight::Scope })
            };
            named.named.extend(f.named);
        }
    });
    let order = |t: &str| mods.get(t).map_or(usize::MAX, |m| m.order);
    walk::for_each_fn(&mut file.items, &mut |ctx, _, sig, block| {
        let at = ctx.self_ty.as_deref().map_or(usize::MAX, order);
        for line in fill_literals(ctx, sig, block, &scoped, imports) {
            note(at, line);
        }
        let Some(t) = ctx.self_ty.as_ref().filter(|t| scoped.contains_key(*t)) else {
            for line in unrecorded_softmax(ctx, sig, block) {
                note(usize::MAX, line);
            }
            return;
        };
        if sig.receiver().is_none() {
            return;
        }
        for line in attention_probs(ctx, sig, block) {
            note(at, line);
        }
        let name = sig.ident.to_string();
        if name == "forward" || name == "forward_t" {
            note(order(t), wrap_forward(ctx, sig, block));
        }
    });
    report.extend(notes.into_values());
}

/// One struct literal kind in a body: how many, and whether one sits in a loop
/// or closure (then each takes a clone of the scope).
#[derive(Default)]
struct Lits {
    count: usize,
    repeated: bool,
}

/// Gives the literals of scoped structs in `block` their scope field, and the
/// function its `let cl_scope = ..;` first statement when it takes a VarBuilder.
fn fill_literals(
    ctx: &FnCtx,
    sig: &syn::Signature,
    block: &mut Block,
    scoped: &BTreeMap<String, &Module>,
    imports: &Imports,
) -> Vec<String> {
    let mut count = Count {
        ctx,
        scoped,
        nest: 0,
        lits: BTreeMap::new(),
        first: Vec::new(),
    };
    count.visit_block(block);
    let mut fill = Fill {
        ctx,
        scoped,
        values: BTreeMap::new(),
    };
    let mut lines = Vec::new();
    let vb = vb_param(sig, imports).and_then(|(id, vb)| match vb {
        Vb::CandleNn { by_ref } => Some((id, by_ref)),
        Vb::Other => None,
    });
    let mut lets: Vec<Stmt> = Vec::new();
    for name in &count.first {
        let lits = &count.lits[name];
        let value: Expr = match &vb {
            Some((vb, by_ref)) => {
                let var = if count.first.len() == 1 {
                    Ident::new(SCOPE, Span::call_site())
                } else {
                    Ident::new(&format!("{SCOPE}_{}", snake_case(name)), Span::call_site())
                };
                let kind = snake_case(name);
                let arg: Expr = if *by_ref {
                    parse_quote!(#vb)
                } else {
                    parse_quote!(&#vb)
                };
                lets.push(parse_quote!(let #var = candlelight::Scope::new(#arg).kind(#kind);));
                if lits.count == 1 && !lits.repeated {
                    parse_quote!(#var)
                } else {
                    parse_quote!(#var.clone())
                }
            }
            None => {
                lines.push(format!(
                    "none     {name} built in {}, which takes no candle_nn VarBuilder: that instance records nothing (Scope::none())",
                    ctx.display(sig)
                ));
                parse_quote!(candlelight::Scope::none())
            }
        };
        fill.values.insert(name.clone(), value);
    }
    fill.visit_block_mut(block);
    lets.append(&mut block.stmts);
    block.stmts = lets;
    lines
}

struct Count<'a> {
    ctx: &'a FnCtx,
    scoped: &'a BTreeMap<String, &'a Module>,
    nest: usize,
    lits: BTreeMap<String, Lits>,
    first: Vec<String>,
}

impl<'ast> Visit<'ast> for Count<'_> {
    fn visit_expr(&mut self, e: &'ast Expr) {
        let nested = matches!(
            e,
            Expr::Closure(_) | Expr::ForLoop(_) | Expr::While(_) | Expr::Loop(_)
        );
        if let Expr::Struct(s) = e {
            if let Some(n) = literal_name(&s.path, self.ctx).filter(|n| self.scoped.contains_key(n))
            {
                if !self.first.contains(&n) {
                    self.first.push(n.clone());
                }
                let l = self.lits.entry(n).or_default();
                l.count += 1;
                l.repeated |= self.nest > 0;
            }
        }
        self.nest += usize::from(nested);
        syn::visit::visit_expr(self, e);
        self.nest -= usize::from(nested);
    }
    fn visit_item(&mut self, _: &'ast Item) {}
}

struct Fill<'a> {
    ctx: &'a FnCtx,
    scoped: &'a BTreeMap<String, &'a Module>,
    values: BTreeMap<String, Expr>,
}

impl VisitMut for Fill<'_> {
    fn visit_expr_struct_mut(&mut self, s: &mut syn::ExprStruct) {
        visit_mut::visit_expr_struct_mut(self, s);
        if let Some(v) = literal_name(&s.path, self.ctx).and_then(|n| self.values.get(&n)) {
            let scope = Ident::new(SCOPE, Span::call_site());
            let field: syn::FieldValue = match v {
                Expr::Path(p) if p.path.is_ident(SCOPE) => parse_quote!(#scope),
                v => parse_quote!(#scope: #v),
            };
            s.fields.push(field);
        }
    }

    fn visit_pat_struct_mut(&mut self, p: &mut syn::PatStruct) {
        visit_mut::visit_pat_struct_mut(self, p);
        let ours = literal_name(&p.path, self.ctx).is_some_and(|n| self.scoped.contains_key(&n));
        if ours && p.rest.is_none() {
            p.rest = Some(syn::PatRest {
                attrs: Vec::new(),
                dot2_token: Default::default(),
            });
        }
    }

    fn visit_item_mut(&mut self, _: &mut Item) {}
}

/// `Result<Tensor>` in any spelling (`candle::Result<candle::Tensor>`).
fn is_result_tensor(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    last.ident == "Result"
        && args.args.len() == 1
        && matches!(args.args.first(), Some(syn::GenericArgument::Type(t))
            if walk::type_name(t).is_some_and(|n| n == "Tensor"))
}

/// Whether the function returns some `Result` (so `?` works in it).
fn returns_result(sig: &syn::Signature) -> bool {
    match &sig.output {
        ReturnType::Type(_, t) => walk::type_name(t).is_some_and(|n| n == "Result"),
        ReturnType::Default => false,
    }
}

/// Rule 3: the body runs in a closure; its result is recorded under the scope.
fn wrap_forward(ctx: &FnCtx, sig: &syn::Signature, block: &mut Block) -> String {
    let name = ctx.display(sig);
    let ret = match &sig.output {
        ReturnType::Type(_, t) if is_result_tensor(t) => t.clone(),
        ReturnType::Type(_, t) => {
            return format!("skipped  {name}: returns {}, not Result<Tensor>", show(t))
        }
        ReturnType::Default => return format!("skipped  {name}: returns nothing"),
    };
    let body = Block {
        brace_token: block.brace_token,
        stmts: std::mem::take(&mut block.stmts),
    };
    let scope = Ident::new(SCOPE, Span::call_site());
    *block = parse_quote!({
        #[allow(clippy::redundant_closure_call)]
        let cl_out = (|| -> #ret #body)();
        self.#scope.finish(cl_out)
    });
    format!("wrapped  {name}")
}

/// A softmax call (`softmax(..)`, `candle_nn::ops::softmax_last_dim(..)`,
/// `x.softmax(..)`) outside closures.
fn has_softmax(e: &Expr) -> bool {
    struct Find(bool);
    impl<'ast> Visit<'ast> for Find {
        fn visit_expr(&mut self, e: &'ast Expr) {
            let is = |s: &str| s == "softmax" || s == "softmax_last_dim";
            match e {
                Expr::Call(c) => {
                    if let Expr::Path(p) = &*c.func {
                        self.0 |= p
                            .path
                            .segments
                            .last()
                            .is_some_and(|s| is(&s.ident.to_string()));
                    }
                }
                Expr::MethodCall(m) => self.0 |= is(&m.method.to_string()),
                Expr::Closure(_) => return,
                _ => {}
            }
            syn::visit::visit_expr(self, e);
        }
        /// A block's value is its tail: a softmax bound by a `let` inside it is
        /// that `let`'s (`let y = if f { .. } else { let att = softmax(..)?; .. }`).
        fn visit_block(&mut self, b: &'ast Block) {
            if let Some(Stmt::Expr(e, None)) = b.stmts.last() {
                self.visit_expr(e);
            }
        }
        fn visit_item(&mut self, _: &'ast Item) {}
    }
    let mut f = Find(false);
    f.visit_expr(e);
    f.0
}

/// Rule 4: `let x = ..softmax..?;` is followed by `let x =
/// self.cl_scope.attention_probs(x)?;` in the methods of a scoped module.
fn attention_probs(ctx: &FnCtx, sig: &syn::Signature, block: &mut Block) -> Vec<String> {
    let mut ins = Insert {
        ok: returns_result(sig),
        done: Vec::new(),
        skipped: Vec::new(),
    };
    ins.visit_block_mut(block);
    let name = ctx.display(sig);
    let mut lines: Vec<String> = ins
        .done
        .iter()
        .map(|x| {
            format!("probs    {name}: `{x}` (after softmax) recorded as <path>.attention_probs")
        })
        .collect();
    lines.extend(
        ins.skipped
            .iter()
            .map(|why| format!("skipped  {name}: softmax not recorded: {why}")),
    );
    lines
}

struct Insert {
    /// The function returns a `Result`, so the inserted `?` works.
    ok: bool,
    done: Vec<String>,
    skipped: Vec<String>,
}

impl Insert {
    /// The statement to insert after `stmt`, if it binds a softmax.
    fn after(&mut self, stmt: &Stmt) -> Option<Stmt> {
        let Stmt::Local(l) = stmt else { return None };
        let init = l.init.as_ref()?;
        if !has_softmax(&init.expr) {
            return None;
        }
        let pat = match &l.pat {
            Pat::Type(t) => &*t.pat,
            p => p,
        };
        let (Pat::Ident(pi), None) = (pat, &init.diverge) else {
            self.skipped.push(format!(
                "`let {}` binds a pattern, not a name",
                show(&l.pat)
            ));
            return None;
        };
        let x = &pi.ident;
        let unwrapped = matches!(
            &*init.expr,
            Expr::Try(_) | Expr::Block(_) | Expr::If(_) | Expr::Match(_) | Expr::Unsafe(_)
        );
        if !self.ok || !unwrapped {
            let why = if self.ok {
                "is not unwrapped with `?`"
            } else {
                "is in a method that does not return a Result"
            };
            self.skipped.push(format!("`{x}` {why}"));
            return None;
        }
        self.done.push(x.to_string());
        let scope = Ident::new(SCOPE, Span::call_site());
        let m = pi.mutability;
        Some(parse_quote!(let #m #x = self.#scope.attention_probs(#x)?;))
    }
}

impl VisitMut for Insert {
    fn visit_block_mut(&mut self, b: &mut Block) {
        visit_mut::visit_block_mut(self, b);
        let stmts = std::mem::take(&mut b.stmts);
        for s in stmts {
            let extra = self.after(&s);
            b.stmts.push(s);
            b.stmts.extend(extra);
        }
    }
    fn visit_expr_closure_mut(&mut self, _: &mut syn::ExprClosure) {}
    fn visit_item_mut(&mut self, _: &mut Item) {}
}

/// Softmax calls in functions that are not methods of a scoped module: reported,
/// since nothing records them.
fn unrecorded_softmax(ctx: &FnCtx, sig: &syn::Signature, block: &Block) -> Vec<String> {
    struct Find(bool);
    impl<'ast> Visit<'ast> for Find {
        fn visit_local(&mut self, l: &'ast syn::Local) {
            self.0 |= l.init.as_ref().is_some_and(|i| has_softmax(&i.expr));
            syn::visit::visit_local(self, l);
        }
        fn visit_item(&mut self, _: &'ast Item) {}
    }
    let mut f = Find(false);
    f.visit_block(block);
    if f.0 {
        vec![format!(
            "unscoped {}: has a softmax, but is not a method of a module with a scope: attention probabilities not recorded",
            ctx.display(sig)
        )]
    } else {
        Vec::new()
    }
}
