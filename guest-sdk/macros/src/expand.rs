//! Writes the `pitaya_guest::Component` implementation for a checked component model.
//!
//! For `#[component(name = "room")] impl Room { #[request] fn join(..) .. }` the output is the
//! `impl` block (markers removed), then
//!
//! ```text
//! impl ::pitaya_guest::Component for Room {
//!     const NAME = "room";
//!     const HANDLERS = &[HandlerInfo { name: "join", kind: Request }, ..];
//!     fn init(config) { <the #[init] hook, or Default> }
//!     fn handle(&mut self, session, handler, payload) {
//!         match handler {
//!             "join" => {
//!                 let payload = <JoinRequest as FromPayload>::from_payload(payload)?;
//!                 RequestReturn::into_reply(Self::join(self, &Session::from_id(session), payload))
//!             }
//!             ..
//!             _ => Err(HandlerError::unknown_handler("room", handler)),
//!         }
//!     }
//!     fn session_closed(&mut self, session) { <the #[session_closed] hook, if any> }
//! }
//! ::pitaya_guest::export!(Room);
//! ```
//!
//! Trait calls are spanned on the user's tokens (a payload type, a return type), so a type that
//! does not fit gets its `on_unimplemented` message right there.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};

use crate::model::{self, Arg, Call, Component, Hook, Kind};

/// `#[component]`: the component's code, or the errors found (with the block left in place so
/// that nothing else fails because of its absence).
pub fn component(args: TokenStream, item: TokenStream) -> TokenStream {
    let (name, args_error) = match model::parse_args(args) {
        Ok(name) => (name, None),
        Err(error) => (None, Some(error)),
    };
    let mut item: syn::ItemImpl = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[component] goes on an `impl` block: `impl Room { ... }`",
            );
            return with_item(error, item);
        }
    };
    // With bad arguments the block is still read, to report its mistakes too. A failed block
    // is emitted all the same (`read` removed its markers), so that code using it raises no
    // errors of its own.
    let errors = match (model::read(name, &mut item), args_error) {
        (Ok(component), None) => return expand(&item, &component),
        (Ok(_), Some(args_error)) => args_error,
        (Err(error), None) => error,
        (Err(error), Some(mut args_error)) => {
            args_error.combine(error);
            args_error
        }
    };
    let errors = errors.to_compile_error();
    quote!(#errors #item)
}

/// A marker outside a `#[component]` block: say where it belongs, keep the item.
pub fn stray_marker(marker: &str, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        format!(
            "#[{marker}] marks a function inside an `impl` block with #[pitaya_guest::component]"
        ),
    );
    with_item(error, item)
}

fn with_item(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

fn expand(item: &syn::ItemImpl, component: &Component) -> TokenStream {
    let self_ty = &item.self_ty;
    let name = &component.name;
    let infos = component.handlers.iter().map(|handler| {
        let name = &handler.name;
        let kind = match handler.kind {
            Kind::Request => quote!(Request),
            Kind::Notify => quote!(Notify),
        };
        quote! {
            ::pitaya_guest::HandlerInfo {
                name: #name,
                kind: ::pitaya_guest::HandlerKind::#kind,
            }
        }
    });
    let arms = component.handlers.iter().map(|handler| {
        let name = &handler.name;
        let call = call(&handler.call);
        let span = handler.return_span;
        let reply = match handler.kind {
            Kind::Request => quote_spanned! {span=>
                ::pitaya_guest::RequestReturn::into_reply(__pitaya_return)
            },
            Kind::Notify => quote_spanned! {span=>
                ::pitaya_guest::NotifyReturn::into_outcome(__pitaya_return)
                    .map(|()| ::std::vec::Vec::new())
            },
        };
        quote! {
            #name => {
                let __pitaya_return = #call;
                #reply
            }
        }
    });
    let init = init(component.init.as_ref(), self_ty);
    let session_closed = component.session_closed.as_ref().map(|hook| {
        let call = call(&hook.call);
        quote! {
            fn session_closed(&mut self, __pitaya_session: ::pitaya_guest::SessionId) {
                #call
            }
        }
    });

    quote! {
        #item

        impl ::pitaya_guest::Component for #self_ty {
            const NAME: &'static str = #name;
            const HANDLERS: &'static [::pitaya_guest::HandlerInfo] = &[#(#infos),*];

            #init

            #[allow(unused_variables)]
            fn handle(
                &mut self,
                __pitaya_session: ::pitaya_guest::SessionId,
                __pitaya_handler: &str,
                __pitaya_payload: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::pitaya_guest::HandlerError> {
                match __pitaya_handler {
                    #(#arms)*
                    _ => ::core::result::Result::Err(::pitaya_guest::HandlerError::unknown_handler(
                        <Self as ::pitaya_guest::Component>::NAME,
                        __pitaya_handler,
                    )),
                }
            }

            #session_closed
        }

        ::pitaya_guest::export!(#self_ty);
    }
}

/// `Component::init`: the `#[init]` hook, converting its result, or `Default`.
fn init(hook: Option<&Hook>, self_ty: &syn::Type) -> TokenStream {
    let body = match hook {
        Some(hook) => {
            let ident = &hook.call.ident;
            let config = hook.call.args.first().map(|arg| match arg {
                Arg::Payload(ty) => quote_spanned! {syn::spanned::Spanned::span(ty)=>
                    <#ty as ::core::convert::From<::std::vec::Vec<u8>>>::from(__pitaya_config)
                },
                // `read_init` only produces payload arguments.
                _ => quote!(__pitaya_config),
            });
            let span = hook.return_span;
            if hook.returns_self {
                quote!(::core::result::Result::Ok(Self::#ident(#config)))
            } else {
                quote_spanned! {span=>
                    ::pitaya_guest::InitReturn::<Self>::into_component(Self::#ident(#config))
                }
            }
        }
        None => {
            let span = syn::spanned::Spanned::span(self_ty);
            quote_spanned! {span=>
                ::core::result::Result::Ok(
                    <Self as ::pitaya_guest::__private::DefaultComponent>::default_component(),
                )
            }
        }
    };
    quote! {
        #[allow(unused_variables)]
        fn init(
            __pitaya_config: ::std::vec::Vec<u8>,
        ) -> ::core::result::Result<Self, ::std::string::String> {
            #body
        }
    }
}

/// The call of a marked function, with its arguments built from the call's session and payload.
/// Payload decoding returns early (`?`) with `PIT-400`.
fn call(call: &Call) -> TokenStream {
    let ident = &call.ident;
    let receiver = call.has_receiver.then(|| quote!(self,));
    let mut decode = TokenStream::new();
    let args = call.args.iter().map(|arg| match arg {
        Arg::SessionRef => quote!(&::pitaya_guest::Session::from_id(__pitaya_session)),
        Arg::Session => quote!(::pitaya_guest::Session::from_id(__pitaya_session)),
        Arg::SessionId => quote!(__pitaya_session),
        Arg::SessionIdRef => quote!(&__pitaya_session),
        Arg::Payload(ty) => {
            let span = syn::spanned::Spanned::span(ty);
            decode = quote_spanned! {span=>
                let __pitaya_payload = <#ty as ::pitaya_guest::FromPayload>::from_payload(__pitaya_payload)?;
            };
            quote!(__pitaya_payload)
        }
    });
    let args: Vec<TokenStream> = args.collect();
    quote! {{
        #decode
        Self::#ident(#receiver #(#args),*)
    }}
}
