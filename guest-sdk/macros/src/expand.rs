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
//!         <with #[before]/#[after] hooks: an unknown handler is answered PIT-404 at once>
//!         let mut outcome = 'call: {
//!             <each #[before] hook; an error: break 'call Err(error)>
//!             match handler {
//!                 "join" => {
//!                     let payload = match <JoinRequest as FromPayload>::from_payload(payload) {
//!                         Ok(payload) => payload,
//!                         Err(error) => break 'call Err(error),
//!                     };
//!                     RequestReturn::into_reply(Self::join(self, &Session::from_id(session), payload))
//!                 }
//!                 ..
//!                 _ => Err(HandlerError::unknown_handler("room", handler)),
//!             }
//!         };
//!         <each #[after] hook, with &outcome or &mut outcome>
//!         outcome
//!     }
//!     fn session_closed(&mut self, session) { <the #[session_closed] hook, if any> }
//!     <on_timer, validate_handshake (and VALIDATES_HANDSHAKE = true), shutdown, export_state,
//!      import_state: each calls its hook, if there is one, and converts its result>
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
    let init = init(component.init.as_ref(), self_ty);
    let handle = handle(component);
    let session_closed = component.session_closed.as_ref().map(|hook| {
        let call = call(&hook.call, &no_decoding());
        quote! {
            #[allow(unused_variables)]
            fn session_closed(&mut self, __pitaya_session: ::pitaya_guest::SessionId) {
                #call
            }
        }
    });
    let timer = component.timer.as_ref().map(|hook| {
        let call = call(&hook.call, &no_decoding());
        let logged = logged_result(hook, "#[timer]");
        quote! {
            #[allow(unused_variables)]
            fn on_timer(&mut self, __pitaya_timer: ::pitaya_guest::TimerId) {
                let __pitaya_return = #call;
                #logged
            }
        }
    });
    let validate_handshake = component.validate_handshake.as_ref().map(|hook| {
        let call = call(
            &hook.call,
            &quote!(return ::core::result::Result::Err(__pitaya_error)),
        );
        let result = hook_result(hook);
        quote! {
            const VALIDATES_HANDSHAKE: bool = true;

            #[allow(unused_variables)]
            fn validate_handshake(
                &mut self,
                __pitaya_session: ::pitaya_guest::SessionId,
                __pitaya_handshake: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                let __pitaya_return = #call;
                #result
            }
        }
    });
    let shutdown = component.shutdown.as_ref().map(|hook| {
        let call = call(&hook.call, &no_decoding());
        let logged = logged_result(hook, "#[shutdown]");
        quote! {
            fn shutdown(&mut self) {
                let __pitaya_return = #call;
                #logged
            }
        }
    });
    let export_state = component.export_state.as_ref().map(|hook| {
        let call = call(&hook.call, &no_decoding());
        let span = hook.return_span;
        let state = quote_spanned! {span=>
            ::pitaya_guest::IntoState::into_state(__pitaya_return)
        };
        quote! {
            fn export_state(&mut self) -> ::core::option::Option<::std::vec::Vec<u8>> {
                let __pitaya_return = #call;
                #state
            }
        }
    });
    let import_state = component.import_state.as_ref().map(|hook| {
        let call = call(
            &hook.call,
            &quote!(return ::core::result::Result::Err(__pitaya_error)),
        );
        let result = hook_result(hook);
        quote! {
            fn import_state(
                &mut self,
                __pitaya_state: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                let __pitaya_return = #call;
                #result
            }
        }
    });

    quote! {
        #item

        // Parts of the calls below carry the user's spans (so that type errors point at the
        // user's tokens), which makes clippy judge them as the user's code: an `#[init]` that
        // takes `Vec<u8>` gets a `From<Vec<u8>>` conversion, a decode failure a `return`.
        #[allow(clippy::useless_conversion, clippy::question_mark)]
        impl ::pitaya_guest::Component for #self_ty {
            const NAME: &'static str = #name;
            const HANDLERS: &'static [::pitaya_guest::HandlerInfo] = &[#(#infos),*];

            #init
            #handle
            #session_closed
            #timer
            #validate_handshake
            #shutdown
            #export_state
            #import_state
        }

        ::pitaya_guest::export!(#self_ty);
    }
}

/// `Component::handle`: the `#[before]` hooks, the handler picked by name (its payload decoded,
/// its result encoded), then the `#[after]` hooks. A payload that does not decode, like a
/// refusal by a `#[before]` hook, leaves the labelled block with the error as the outcome, so
/// that the `#[after]` hooks see every call.
fn handle(component: &Component) -> TokenStream {
    let fail = quote!(break '__pitaya_call ::core::result::Result::Err(__pitaya_error));
    let arms = component.handlers.iter().map(|handler| {
        let name = &handler.name;
        let call = call(&handler.call, &fail);
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
    let arms: Vec<TokenStream> = arms.collect();
    let unknown = quote! {
        ::core::result::Result::Err(::pitaya_guest::HandlerError::unknown_handler(
            <Self as ::pitaya_guest::Component>::NAME,
            __pitaya_handler,
        ))
    };
    let dispatch = quote! {
        '__pitaya_call: {
            match __pitaya_handler {
                #(#arms)*
                _ => #unknown,
            }
        }
    };
    let body = if component.before.is_empty() && component.after.is_empty() {
        dispatch
    } else {
        let before = component.before.iter().map(|hook| {
            let call = call(&hook.call, &no_decoding());
            let span = hook.return_span;
            let verdict = quote_spanned! {span=>
                ::pitaya_guest::BeforeReturn::into_verdict(__pitaya_return)
            };
            quote! {
                let __pitaya_return = #call;
                if let ::core::result::Result::Err(__pitaya_error) = #verdict {
                    break '__pitaya_call ::core::result::Result::Err(__pitaya_error);
                }
            }
        });
        let after = component.after.iter().map(|hook| {
            let call = call(&hook.call, &no_decoding());
            quote!(#call;)
        });
        // The hooks run for the handlers that exist; an unknown name is answered at once.
        quote! {
            if !<Self as ::pitaya_guest::Component>::HANDLERS
                .iter()
                .any(|__pitaya_info| __pitaya_info.name == __pitaya_handler)
            {
                return #unknown;
            }
            let mut __pitaya_outcome: ::pitaya_guest::Outcome = '__pitaya_call: {
                #(#before)*
                match __pitaya_handler {
                    #(#arms)*
                    _ => #unknown,
                }
            };
            #(#after)*
            __pitaya_outcome
        }
    };
    quote! {
        #[allow(unused_variables, unused_labels, unused_mut, unreachable_code)]
        fn handle(
            &mut self,
            __pitaya_session: ::pitaya_guest::SessionId,
            __pitaya_handler: &str,
            __pitaya_payload: ::std::vec::Vec<u8>,
        ) -> ::core::result::Result<::std::vec::Vec<u8>, ::pitaya_guest::HandlerError> {
            #body
        }
    }
}

/// The `fail` of `call` for functions that decode no argument: it is never emitted.
fn no_decoding() -> TokenStream {
    TokenStream::new()
}

/// A hook's result as `Result<(), String>` (for hooks whose error goes back to the host).
fn hook_result(hook: &Hook) -> TokenStream {
    let span = hook.return_span;
    quote_spanned! {span=>
        ::pitaya_guest::HookReturn::into_hook_result(__pitaya_return)
    }
}

/// Logs a hook's error (for hooks whose error goes nowhere else).
fn logged_result(hook: &Hook, marker: &str) -> TokenStream {
    let result = hook_result(hook);
    let function = hook.call.ident.to_string();
    quote! {
        if let ::core::result::Result::Err(__pitaya_error) = #result {
            ::pitaya_guest::__private::log_hook_error(#marker, #function, &__pitaya_error);
        }
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

/// The call of a marked function, with its arguments built from what the generated function
/// has in scope: `__pitaya_session`, `__pitaya_payload`, `__pitaya_handshake`, `__pitaya_state`,
/// `__pitaya_timer`, `__pitaya_handler`, `__pitaya_outcome`. An argument that does not decode
/// runs `fail`, with the error in `__pitaya_error` (only functions with such arguments reach
/// it).
fn call(call: &Call, fail: &TokenStream) -> TokenStream {
    let ident = &call.ident;
    let receiver = call.has_receiver.then(|| quote!(self,));
    let mut decode = TokenStream::new();
    let decoded = |ty: &syn::Type, decoder: TokenStream| {
        let span = syn::spanned::Spanned::span(ty);
        quote_spanned! {span=>
            let __pitaya_value = match #decoder {
                ::core::result::Result::Ok(__pitaya_value) => __pitaya_value,
                ::core::result::Result::Err(__pitaya_error) => #fail,
            };
        }
    };
    let args = call.args.iter().map(|arg| match arg {
        Arg::SessionRef => quote!(&::pitaya_guest::Session::from_id(__pitaya_session)),
        Arg::Session => quote!(::pitaya_guest::Session::from_id(__pitaya_session)),
        Arg::SessionId => quote!(__pitaya_session),
        Arg::SessionIdRef => quote!(&__pitaya_session),
        Arg::TimerId => quote!(__pitaya_timer),
        Arg::HandlerName => quote!(__pitaya_handler),
        Arg::Outcome(ty) => {
            let span = syn::spanned::Spanned::span(ty);
            quote_spanned! {span=>
                <#ty as ::pitaya_guest::OutcomeArg<'_>>::from_outcome(&mut __pitaya_outcome)
            }
        }
        Arg::Payload(ty) => {
            decode = decoded(
                ty,
                quote_spanned! {syn::spanned::Spanned::span(ty)=>
                    <#ty as ::pitaya_guest::FromPayload>::from_payload(__pitaya_payload)
                },
            );
            quote!(__pitaya_value)
        }
        Arg::Handshake(ty) => {
            decode = decoded(
                ty,
                quote_spanned! {syn::spanned::Spanned::span(ty)=>
                    ::pitaya_guest::__private::decode_handshake::<#ty>(__pitaya_handshake)
                },
            );
            quote!(__pitaya_value)
        }
        Arg::State(ty) => {
            decode = decoded(
                ty,
                quote_spanned! {syn::spanned::Spanned::span(ty)=>
                    <#ty as ::pitaya_guest::FromState>::from_state(__pitaya_state)
                },
            );
            quote!(__pitaya_value)
        }
    });
    let args: Vec<TokenStream> = args.collect();
    quote! {{
        #decode
        Self::#ident(#receiver #(#args),*)
    }}
}
