//! The `#[forkgraph::task]` attribute: registers a function under a name so that graphs, worker
//! processes and error messages can refer to it.

use proc_macro::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    parse_macro_input, FnArg, GenericArgument, ItemFn, Lifetime, LitStr, Pat, PathArguments,
    ReturnType, Type, TypeReference,
};

/// Registers a function as a task function.
///
/// ```ignore
/// #[forkgraph::task]
/// fn clean(data: &[f64]) -> Vec<f64> { ... }
///
/// #[forkgraph::task(name = "stats.mean")]
/// fn mean(data: &[f64]) -> f64 { ... }
/// ```
///
/// The function is still called as before (`clean(&data)`), through a handle of the same name
/// that also builds checked tasks (`clean.task(key)`), goes into `graph!` and `pool.map`; see
/// `forkgraph::TaskHandle`. As a function value, write `*clean`. Its parameters must implement
/// `FromArg` and its
/// return type `IntoOutput` (any `IntoValue`, or a `Result` whose error is `Display`). An error
/// that implements `std::error::Error`, or dereferences to one (`anyhow::Error`,
/// `Box<dyn Error>`), is reported with its type name and whole `source()` chain, and kept as a
/// value where the task ran (`ReturnedError`). An error type that borrows from the arguments
/// must spell its lifetime (`Result<T, &str>`, `Result<T, MyError<'_>>`): it is then reported
/// by its messages and type name, without keeping the value.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let mut name: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("expected `name = \"...\"`"))
        }
    });
    if let Err(e) = parser.parse(attr) {
        return e.to_compile_error().into();
    }
    match expand(&func, name) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(func: &ItemFn, name: Option<LitStr>) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "task functions cannot be generic: each registered name needs one concrete \
             signature; write one task function per type (or take a `Value`)",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "task functions cannot be async: a task runs to completion on a worker; make it a \
             plain `fn` (block on a runtime inside it if it must await)",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            v,
            "task functions cannot be variadic",
        ));
    }
    let ident = &sig.ident;
    let name = name.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let mut tys = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "task functions cannot take self",
                ))
            }
            FnArg::Typed(t) => {
                if let Some(it) = find_impl_trait(&t.ty) {
                    return Err(syn::Error::new_spanned(
                        it,
                        "task function parameters cannot be `impl Trait`: give the concrete type \
                         (a user type travels as `Serde<T>`)",
                    ));
                }
                tys.push((*t.ty).clone());
                arg_names.push(match &*t.pat {
                    Pat::Ident(p) if p.ident != "self" => {
                        format_ident!("{}", p.ident.to_string().trim_start_matches("r#"))
                    }
                    _ => format_ident!("arg{}", i),
                });
            }
        }
    }
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => {
            if let Some(it) = find_impl_trait(t) {
                return Err(syn::Error::new_spanned(
                    it,
                    "task functions cannot return `impl Trait`: name the type, so that its \
                     typed handle can say what the task returns",
                ));
            }
            (**t).clone()
        }
    };
    let n = tys.len();
    let vars: Vec<_> = (0..n).map(|i| format_ident!("__a{}", i)).collect();
    let idx: Vec<_> = (0..n).collect();
    let ty_strs: Vec<String> = tys
        .iter()
        .map(|t| quote!(#t).to_string().replace(' ', ""))
        .collect();
    let static_name = format_ident!("__FORKGRAPH_TASK_{}", ident.to_string().to_uppercase());
    let hidden = format_ident!("__forkgraph_fn_{}", ident);
    let handle = format_ident!("{}_handle", ident);
    let vis = &func.vis;

    // Where the attributes go: docs and deprecation on the constant users see, `cfg` on every
    // item, the rest (inline, allow, must_use...) on the function itself.
    let mut const_attrs = Vec::new();
    let mut cfg_attrs = Vec::new();
    let mut fn_attrs = Vec::new();
    for a in &func.attrs {
        if a.path().is_ident("doc") || a.path().is_ident("deprecated") {
            const_attrs.push(a.clone());
        } else if a.path().is_ident("cfg") {
            cfg_attrs.push(a.clone());
        } else {
            fn_attrs.push(a.clone());
        }
    }
    let mut hidden_fn = func.clone();
    hidden_fn.sig.ident = hidden.clone();
    hidden_fn.attrs = fn_attrs;

    // The function-pointer type the handle dereferences to (elided lifetimes stay elided: the
    // pointer is higher-ranked over them, as the function is).
    let unsafety = &sig.unsafety;
    let abi = &sig.abi;
    let fn_ptr = quote!(#unsafety #abi fn(#(#tys),*) -> #ret);
    // The signature as types: lifetimes made `'static`.
    let static_tys: Vec<Type> = tys.iter().map(staticize).collect();
    let static_ret = staticize(&ret);
    let generics: Vec<_> = (0..n).map(|i| format_ident!("__A{}", i)).collect();
    let bounds: Vec<_> = tys
        .iter()
        .zip(&static_tys)
        .zip(&generics)
        .map(|((t, st), g)| quote_spanned!(t.span()=> #g: ::forkgraph::ArgFor<#st>))
        .collect();
    let task_fn = format_ident!("task", span = ident.span());
    // A return type that is no task result is reported at the return type, in words (the
    // conversion below would only say that a method of its autoref ladder is missing).
    let ret_check = match &sig.output {
        ReturnType::Default => quote!(),
        ReturnType::Type(_, t) => quote_spanned!(t.span()=>
            fn __forkgraph_returns<T: ::forkgraph::IntoOutput>() {}
            __forkgraph_returns::<#t>();
        ),
    };
    let lets: Vec<_> = tys
        .iter()
        .zip(&vars)
        .zip(idx.iter().zip(&ty_strs))
        .map(|((t, v), (i, s))| {
            quote_spanned!(t.span()=> let #v: #t = ::forkgraph::__private::arg(args, #i, #s)?;)
        })
        .collect();
    let handle_doc =
        format!("The typed handle of the task function [`{ident}`]: see `forkgraph::TaskHandle`.");
    let task_doc = format!(
        "A task calling `{ident}` with these arguments (each checked against its parameter's \
         type; see `forkgraph::ArgFor`), for `Graph::add` or as another task's argument."
    );

    // Keeping an error value needs `E: 'static`, which method lookup cannot test (it ignores
    // lifetimes, and borrow checking would then fail): an error type that mentions a lifetime
    // only gets the conversions that do not keep the value.
    let conversions = if error_may_borrow(&sig.output) {
        quote!(ViaErrorRef as _, ViaIntoOutput as _, ViaLocalDynError as _)
    } else {
        quote!(
            ViaDisplay as _,
            ViaDynError as _,
            ViaError as _,
            ViaErrorRef as _,
            ViaIntoOutput as _,
            ViaLocalDynError as _,
        )
    };
    Ok(quote! {
        #(#cfg_attrs)*
        #[doc(hidden)]
        #hidden_fn

        #(#cfg_attrs)*
        #[doc = #handle_doc]
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Clone, Copy)]
        #vis struct #handle;

        #(#cfg_attrs)*
        #(#const_attrs)*
        #[allow(non_upper_case_globals, dead_code)]
        #vis const #ident: #handle = #handle;

        #(#cfg_attrs)*
        impl ::core::ops::Deref for #handle {
            type Target = #fn_ptr;
            fn deref(&self) -> &Self::Target {
                const F: #fn_ptr = #hidden;
                &F
            }
        }

        #(#cfg_attrs)*
        impl ::core::fmt::Debug for #handle {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::write!(f, "task function {}", #name)
            }
        }

        #(#cfg_attrs)*
        impl ::forkgraph::TaskHandle for #handle {
            type Params = (#(#static_tys,)*);
            type Return = #static_ret;
            fn name(&self) -> &'static str {
                #name
            }
        }

        #(#cfg_attrs)*
        #[allow(dead_code)]
        impl #handle {
            #[doc = #task_doc]
            #[allow(clippy::too_many_arguments)]
            #vis fn #task_fn<#(#bounds),*>(&self, #(#arg_names: #generics),*) -> ::forkgraph::TypedTask<#static_ret> {
                ::forkgraph::TypedTask::__new(
                    #name,
                    ::std::vec![#(<#generics as ::forkgraph::ArgFor<#static_tys>>::into_task_arg(#arg_names)),*],
                )
            }
        }

        #(#cfg_attrs)*
        #[doc(hidden)]
        const _: () = {
            #[::forkgraph::__private::linkme::distributed_slice(::forkgraph::__private::FUNCTIONS)]
            #[linkme(crate = ::forkgraph::__private::linkme)]
            static #static_name: ::forkgraph::__private::Function = ::forkgraph::__private::Function {
                name: #name,
                module: ::core::module_path!(),
                params: &[#(#ty_strs),*],
                call: __forkgraph_call,
            };

            fn __forkgraph_call(
                args: &[::forkgraph::__private::ArgValue<'_>],
            ) -> ::core::result::Result<::forkgraph::__private::Value, ::forkgraph::__private::CallError> {
                if args.len() != #n {
                    return ::core::result::Result::Err(::forkgraph::__private::CallError::Arity {
                        expected: #n,
                        got: args.len(),
                    });
                }
                #ret_check
                #(#lets)*
                // The most informative conversion that applies to the return type: see
                // `forkgraph_worker::failure`.
                #[allow(unused_imports)]
                use ::forkgraph::__private::{#conversions};
                (&&&&&&::forkgraph::__private::Output::new(#hidden(#(#vars),*))).__forkgraph_output()
            }
        };
    })
}

/// The type with every lifetime made `'static` (references without one get it too), for the
/// handle's `Params` and `Return` types.
fn staticize(ty: &Type) -> Type {
    struct Static;
    impl VisitMut for Static {
        fn visit_lifetime_mut(&mut self, l: &mut Lifetime) {
            *l = Lifetime::new("'static", l.span());
        }
        fn visit_type_reference_mut(&mut self, r: &mut TypeReference) {
            if r.lifetime.is_none() {
                r.lifetime = Some(Lifetime::new("'static", r.and_token.span));
            }
            visit_mut::visit_type_reference_mut(self, r);
        }
        fn visit_type_bare_fn_mut(&mut self, _: &mut syn::TypeBareFn) {
            // A function pointer binds its own lifetimes.
        }
    }
    let mut ty = ty.clone();
    Static.visit_type_mut(&mut ty);
    ty
}

/// The first `impl Trait` inside a type.
fn find_impl_trait(ty: &Type) -> Option<&syn::TypeImplTrait> {
    struct Find<'a>(Option<&'a syn::TypeImplTrait>);
    impl<'a> syn::visit::Visit<'a> for Find<'a> {
        fn visit_type_impl_trait(&mut self, i: &'a syn::TypeImplTrait) {
            if self.0.is_none() {
                self.0 = Some(i);
            }
        }
    }
    let mut f = Find(None);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// Whether the error type of a return type may borrow: for `Result<T, E>`, whether `E` mentions
/// a reference or a lifetime; for a one-argument `Result<T>` alias (`io::Result`,
/// `anyhow::Result`), no; for any other type, whether it mentions one anywhere.
fn error_may_borrow(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if let (true, PathArguments::AngleBracketed(a)) =
                (last.ident == "Result", &last.arguments)
            {
                let types: Vec<&Type> = a
                    .args
                    .iter()
                    .filter_map(|g| match g {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                match types.as_slice() {
                    [_] => return false,
                    [_, e] => return mentions_lifetime(quote!(#e)),
                    _ => {}
                }
            }
        }
    }
    mentions_lifetime(quote!(#ty))
}

fn mentions_lifetime(tokens: proc_macro2::TokenStream) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(t) = tokens.next() {
        let borrows = match t {
            proc_macro2::TokenTree::Punct(p) if p.as_char() == '&' => true,
            // A lifetime other than `'static` (which borrows nothing).
            proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => !matches!(
                tokens.peek(),
                Some(proc_macro2::TokenTree::Ident(i)) if i == "static"
            ),
            proc_macro2::TokenTree::Group(g) => mentions_lifetime(g.stream()),
            _ => false,
        };
        if borrows {
            return true;
        }
    }
    false
}
