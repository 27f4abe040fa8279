//! The `#[forkgraph::task]` attribute: registers a function under a name so that graphs, worker
//! processes and error messages can refer to it.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::{
    parse_macro_input, FnArg, GenericArgument, ItemFn, LitStr, PathArguments, ReturnType, Type,
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
/// The function stays an ordinary function. Its parameters must implement `FromArg` and its
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
            "task functions cannot be generic: each registered name needs one concrete signature",
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(a, "task functions cannot be async"));
    }
    let ident = &sig.ident;
    let name = name.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let mut tys = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "task functions cannot take self",
                ))
            }
            FnArg::Typed(t) => tys.push((*t.ty).clone()),
        }
    }
    let n = tys.len();
    let vars: Vec<_> = (0..n).map(|i| format_ident!("__a{}", i)).collect();
    let idx: Vec<_> = (0..n).collect();
    let ty_strs: Vec<String> = tys
        .iter()
        .map(|t| quote!(#t).to_string().replace(' ', ""))
        .collect();
    let static_name = format_ident!("__FORKGRAPH_TASK_{}", ident.to_string().to_uppercase());
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
        #func

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
                #(
                    let #vars: #tys = ::forkgraph::__private::arg(args, #idx, #ty_strs)?;
                )*
                // The most informative conversion that applies to the return type: see
                // `forkgraph_worker::failure`.
                #[allow(unused_imports)]
                use ::forkgraph::__private::{#conversions};
                (&&&&&&::forkgraph::__private::Output::new(#ident(#(#vars),*))).__forkgraph_output()
            }
        };
    })
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
