//! Reads `#[component(...)] impl Type { ... }` into a checked model of the component's handlers.
//!
//! Every rule about what a handler may look like is checked here, and each broken rule becomes
//! a `syn::Error` on the tokens at fault; all of them are reported together.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Meta, ReturnType, Signature,
    Type,
};

/// The component, as `expand` needs it.
pub struct Component {
    /// The component part of routes.
    pub name: String,
    pub handlers: Vec<Handler>,
    pub init: Option<Hook>,
    pub session_closed: Option<Hook>,
    pub timer: Option<Hook>,
    pub validate_handshake: Option<Hook>,
    pub shutdown: Option<Hook>,
    pub export_state: Option<Hook>,
    pub import_state: Option<Hook>,
    /// Run before every handler call, in the order they are written.
    pub before: Vec<Hook>,
    /// Run after every handler call, in the order they are written.
    pub after: Vec<Hook>,
}

/// Whether a handler answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notify,
}

/// A `#[request]` or `#[notify]` function.
pub struct Handler {
    pub kind: Kind,
    /// The handler part of routes.
    pub name: String,
    pub call: Call,
    /// Where a wrong return type is reported: the return type, or the name when there is none.
    pub return_span: Span,
}

/// A hook: any marked function that is not a handler.
pub struct Hook {
    pub call: Call,
    /// `#[init]` only: the hook returns `Self` itself rather than a `Result`.
    pub returns_self: bool,
    pub return_span: Span,
}

/// How to call a marked function.
pub struct Call {
    pub ident: Ident,
    /// Whether the function takes `&self` or `&mut self`.
    pub has_receiver: bool,
    pub args: Vec<Arg>,
}

/// One argument of a marked function, by what it receives.
pub enum Arg {
    /// `&Session`.
    SessionRef,
    /// `Session`.
    Session,
    /// `SessionId`.
    SessionId,
    /// `&SessionId`.
    SessionIdRef,
    /// The payload (for `#[init]`, the configuration).
    Payload(Box<Type>),
    /// `#[validate_handshake]`: the handshake, decoded like a payload.
    Handshake(Box<Type>),
    /// `#[import_state]`: the state handed over.
    State(Box<Type>),
    /// `#[timer]`: `TimerId`.
    TimerId,
    /// `#[before]` and `#[after]`: the handler's name, `&str`.
    HandlerName,
    /// `#[after]`: the call's outcome, `&Outcome` or `&mut Outcome` (the type as written, so
    /// that a wrong one is reported on it).
    Outcome(Box<Type>),
}

/// The markers `#[component]` reads inside its block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    Request,
    Notify,
    Init,
    SessionClosed,
    Timer,
    ValidateHandshake,
    Shutdown,
    ExportState,
    ImportState,
    Before,
    After,
}

impl Marker {
    fn from_ident(ident: &Ident) -> Option<Marker> {
        match ident.to_string().as_str() {
            "request" => Some(Marker::Request),
            "notify" => Some(Marker::Notify),
            "init" => Some(Marker::Init),
            "session_closed" => Some(Marker::SessionClosed),
            "timer" => Some(Marker::Timer),
            "validate_handshake" => Some(Marker::ValidateHandshake),
            "shutdown" => Some(Marker::Shutdown),
            "export_state" => Some(Marker::ExportState),
            "import_state" => Some(Marker::ImportState),
            "before" => Some(Marker::Before),
            "after" => Some(Marker::After),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Marker::Request => "#[request]",
            Marker::Notify => "#[notify]",
            Marker::Init => "#[init]",
            Marker::SessionClosed => "#[session_closed]",
            Marker::Timer => "#[timer]",
            Marker::ValidateHandshake => "#[validate_handshake]",
            Marker::Shutdown => "#[shutdown]",
            Marker::ExportState => "#[export_state]",
            Marker::ImportState => "#[import_state]",
            Marker::Before => "#[before]",
            Marker::After => "#[after]",
        }
    }

    /// "a #[timer] hook" / "an #[after] hook", for messages.
    fn hook(self) -> String {
        let article = match self {
            Marker::Init | Marker::ExportState | Marker::ImportState | Marker::After => "an",
            _ => "a",
        };
        format!("{article} {} hook", self.as_str())
    }
}

/// Collects errors so that one expansion reports every mistake at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Parses `#[component(...)]`'s arguments: `name = "..."`, or nothing.
pub fn parse_args(args: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut name: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            if name.is_some() {
                return Err(meta.error("`name` is given twice"));
            }
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(syn::Error::new_spanned(
                &meta.path,
                format!(
                    "unknown argument `{}`; #[component] takes `name = \"...\"`",
                    path_text(&meta.path)
                ),
            ))
        }
    });
    syn::parse::Parser::parse2(parser, args)?;
    Ok(name)
}

/// Reads and checks the component, and removes the markers from the block (also when there are
/// errors: the caller still emits the block, so that the only errors are the ones found here).
pub fn read(name: Option<LitStr>, item: &mut ItemImpl) -> syn::Result<Component> {
    let mut errors = Errors::default();

    if let Some((_, path, _)) = &item.trait_ {
        errors.at(
            path,
            "#[component] goes on an inherent `impl` block (`impl Room { ... }`), not on a trait implementation",
        );
    }
    if !item.generics.params.is_empty() {
        errors.at(
            &item.generics,
            "a component cannot be generic: the host makes one instance of one concrete type",
        );
    }
    let name = component_name(name, &item.self_ty, &mut errors);

    let mut handlers: Vec<Handler> = Vec::new();
    let mut init: Option<Hook> = None;
    let mut session_closed: Option<Hook> = None;
    let mut timer: Option<Hook> = None;
    let mut validate_handshake: Option<Hook> = None;
    let mut shutdown: Option<Hook> = None;
    let mut export_state: Option<Hook> = None;
    let mut import_state: Option<Hook> = None;
    let mut before: Vec<Hook> = Vec::new();
    let mut after: Vec<Hook> = Vec::new();
    for impl_item in &mut item.items {
        let ImplItem::Fn(function) = impl_item else {
            // Markers only mean something on functions; say so rather than leave them to
            // the stray-marker error, which would talk about a missing #[component].
            for attr in item_attrs(impl_item) {
                if let Some(marker) = marker_of(attr) {
                    errors.at(attr, format!("{} goes on a function", marker.as_str()));
                }
            }
            if let Some(attrs) = item_attrs_mut(impl_item) {
                attrs.retain(|attr| marker_of(attr).is_none());
            }
            continue;
        };
        let Some((marker, attr)) = take_marker(function, &mut errors) else {
            continue;
        };
        match marker {
            Marker::Request | Marker::Notify => {
                let kind = if marker == Marker::Request {
                    Kind::Request
                } else {
                    Kind::Notify
                };
                if let Some(handler) = read_handler(kind, &attr, function, &mut errors) {
                    if let Some(other) = handlers.iter().find(|h| h.name == handler.name) {
                        errors.at(
                            &function.sig.ident,
                            format!(
                                "two handlers are named `{}`; rename one with #[{}(name = \"...\")]",
                                other.name,
                                marker_name(marker)
                            ),
                        );
                    }
                    handlers.push(handler);
                }
            }
            Marker::Init => {
                no_marker_arguments(&attr, &mut errors);
                let hook = read_init(function, &mut errors);
                set_once(&mut init, hook, marker, function, &mut errors);
            }
            Marker::Before | Marker::After => {
                no_marker_arguments(&attr, &mut errors);
                let hook = read_hook(marker, function, &mut errors);
                if marker == Marker::Before {
                    before.push(hook);
                } else {
                    after.push(hook);
                }
            }
            _ => {
                no_marker_arguments(&attr, &mut errors);
                let hook = read_hook(marker, function, &mut errors);
                let slot = match marker {
                    Marker::SessionClosed => &mut session_closed,
                    Marker::Timer => &mut timer,
                    Marker::ValidateHandshake => &mut validate_handshake,
                    Marker::Shutdown => &mut shutdown,
                    Marker::ExportState => &mut export_state,
                    _ => &mut import_state,
                };
                set_once(slot, Some(hook), marker, function, &mut errors);
            }
        }
    }

    errors.finish()?;
    Ok(Component {
        name,
        handlers,
        init,
        session_closed,
        timer,
        validate_handshake,
        shutdown,
        export_state,
        import_state,
        before,
        after,
    })
}

/// Keeps the first hook of a kind that a component has only one of; reports the others.
fn set_once(
    slot: &mut Option<Hook>,
    hook: Option<Hook>,
    marker: Marker,
    function: &ImplItemFn,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.at(
            &function.sig.ident,
            format!(
                "a component has one {} hook; this is the second",
                marker.as_str()
            ),
        );
    } else {
        *slot = hook;
    }
}

fn component_name(name: Option<LitStr>, self_ty: &Type, errors: &mut Errors) -> String {
    if let Some(name) = name {
        if let Err(problem) = check_route_part(&name.value()) {
            errors.at(&name, format!("invalid component name: {problem}"));
        }
        return name.value();
    }
    match type_ident(self_ty) {
        Some(ident) => ident.unraw().to_string().to_lowercase(),
        None => {
            errors.at(
                self_ty,
                "give the component a name: #[component(name = \"...\")]",
            );
            String::new()
        }
    }
}

/// Why a name cannot be one part of a `component.handler` route, if it cannot.
fn check_route_part(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.contains('.') {
        Err("it contains `.`, which separates the parts of a route")
    } else if name.chars().any(char::is_whitespace) {
        Err("it contains white space")
    } else if name.len() > 100 {
        Err("it is longer than 100 bytes, which the host refuses to load")
    } else {
        Ok(())
    }
}

fn marker_name(marker: Marker) -> &'static str {
    let text = marker.as_str();
    &text[2..text.len() - 1]
}

/// Which marker an attribute is: `#[request]`, or spelt with a path, `#[pitaya_guest::request]`.
fn marker_of(attr: &Attribute) -> Option<Marker> {
    let path = attr.path();
    let segments: Vec<&syn::PathSegment> = path.segments.iter().collect();
    match segments.as_slice() {
        [only] if path.leading_colon.is_none() => Marker::from_ident(&only.ident),
        [krate, last] if krate.ident == "pitaya_guest" => Marker::from_ident(&last.ident),
        _ => None,
    }
}

/// Removes the function's marker attribute and returns it; reports a second one.
fn take_marker(function: &mut ImplItemFn, errors: &mut Errors) -> Option<(Marker, Attribute)> {
    let mut found: Option<(Marker, Attribute)> = None;
    let mut kept = Vec::with_capacity(function.attrs.len());
    for attr in function.attrs.drain(..) {
        match marker_of(&attr) {
            None => kept.push(attr),
            Some(marker) => match &found {
                Some((first, _)) => errors.at(
                    &attr,
                    format!(
                        "this function is already marked {}; a function has one marker",
                        first.as_str()
                    ),
                ),
                None => found = Some((marker, attr)),
            },
        }
    }
    function.attrs = kept;
    found
}

fn no_marker_arguments(attr: &Attribute, errors: &mut Errors) {
    if !matches!(attr.meta, Meta::Path(_)) {
        errors.at(attr, "this marker takes no arguments");
    }
}

/// The route name of a handler: `name = "..."` from its marker, else the function's name.
fn handler_name(attr: &Attribute, function: &ImplItemFn, errors: &mut Errors) -> String {
    let mut name: Option<LitStr> = None;
    match &attr.meta {
        Meta::Path(_) => {}
        Meta::List(list) => {
            let parser = syn::meta::parser(|meta| {
                if meta.path.is_ident("name") {
                    if name.is_some() {
                        return Err(meta.error("`name` is given twice"));
                    }
                    name = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(syn::Error::new_spanned(
                        &meta.path,
                        format!(
                            "unknown argument `{}`; a handler marker takes `name = \"...\"`",
                            path_text(&meta.path)
                        ),
                    ))
                }
            });
            if let Err(error) = syn::parse::Parser::parse2(parser, list.tokens.clone()) {
                errors.push(error);
            }
        }
        Meta::NameValue(value) => errors.at(
            value,
            "write the handler's name as `name = \"...\"` in parentheses",
        ),
    }
    match name {
        Some(name) => {
            if let Err(problem) = check_route_part(&name.value()) {
                errors.at(&name, format!("invalid handler name: {problem}"));
            }
            name.value()
        }
        None => function.sig.ident.unraw().to_string(),
    }
}

fn read_handler(
    kind: Kind,
    attr: &Attribute,
    function: &ImplItemFn,
    errors: &mut Errors,
) -> Option<Handler> {
    let name = handler_name(attr, function, errors);
    let sig = &function.sig;
    check_plain_function(sig, errors);
    let has_receiver = read_receiver(sig, errors);
    let args = read_args(sig, errors);
    let payloads: Vec<&Type> = args
        .iter()
        .filter_map(|arg| match arg {
            Arg::Payload(ty) => Some(&**ty),
            _ => None,
        })
        .collect();
    for extra in payloads.iter().skip(1) {
        errors.at(
            extra,
            "a handler takes at most one payload argument; decode several values as one struct or tuple",
        );
    }
    let return_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => {
            if kind == Kind::Request {
                errors.at(
                    &sig.ident,
                    "a #[request] handler returns `Result<T, HandlerError>`; a handler that answers nothing is a #[notify] handler",
                );
            }
            sig.ident.span()
        }
    };
    Some(Handler {
        kind,
        name,
        call: Call {
            ident: sig.ident.clone(),
            has_receiver,
            args,
        },
        return_span,
    })
}

fn read_init(function: &ImplItemFn, errors: &mut Errors) -> Option<Hook> {
    let sig = &function.sig;
    check_plain_function(sig, errors);
    if let Some(receiver) = sig.receiver() {
        errors.at(
            receiver,
            "an #[init] hook builds the component, so it takes no `self`",
        );
    }
    let args: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(arg) => Some(arg),
            FnArg::Receiver(_) => None,
        })
        .collect();
    for extra in args.iter().skip(1) {
        errors.at(
            extra,
            "an #[init] hook takes at most one argument: the configuration bytes (`Vec<u8>`)",
        );
    }
    let (returns_self, return_span) = match &sig.output {
        ReturnType::Type(_, ty) => (is_self_type(ty), ty.span()),
        ReturnType::Default => {
            errors.at(
                &sig.ident,
                "an #[init] hook returns the component: `-> Result<Self, String>`",
            );
            (false, sig.ident.span())
        }
    };
    Some(Hook {
        call: Call {
            ident: sig.ident.clone(),
            has_receiver: false,
            args: args
                .first()
                .map(|arg| Arg::Payload(arg.ty.clone()))
                .into_iter()
                .collect(),
        },
        returns_self,
        return_span,
    })
}

/// Reads any hook but `#[init]`: its receiver, its arguments (each hook takes its own kinds)
/// and its return type.
fn read_hook(marker: Marker, function: &ImplItemFn, errors: &mut Errors) -> Hook {
    let sig = &function.sig;
    check_plain_function(sig, errors);
    let has_receiver = read_receiver(sig, errors);
    let hook = marker.hook();
    let takes: &str = match marker {
        Marker::SessionClosed => {
            "takes the closed session (`SessionId` or `&Session`) and nothing else"
        }
        Marker::Timer => "takes the timer's id (`TimerId`) and nothing else",
        Marker::ValidateHandshake => {
            "takes the new client's session (`&Session` or `SessionId`) and its handshake (`Handshake`, or any type that decodes from it)"
        }
        Marker::Shutdown => "takes no arguments",
        Marker::ExportState => "takes no arguments: it returns the state to hand over",
        Marker::ImportState => {
            "takes the state handed over (`Json<T>`, `Vec<u8>` or `Raw`) and nothing else"
        }
        Marker::Before => {
            "takes the calling session (`&Session` or `SessionId`) and the handler's name (`&str`)"
        }
        _ => {
            "takes the calling session (`&Session` or `SessionId`), the handler's name (`&str`) and the outcome (`&Outcome`, or `&mut Outcome` to change it)"
        }
    };
    let mut args = Vec::new();
    // The handshake, the state or the outcome: a hook takes at most one.
    let mut decoded = 0;
    for typed in typed_args(sig) {
        let arg = match (marker, classify(typed, errors)) {
            (
                Marker::SessionClosed | Marker::ValidateHandshake | Marker::Before | Marker::After,
                Class::Session(arg),
            ) => Some(arg),
            (Marker::Timer, Class::TimerId) => Some(Arg::TimerId),
            (Marker::Before | Marker::After, Class::Str) => Some(Arg::HandlerName),
            (Marker::After, Class::Ref) => {
                decoded += 1;
                Some(Arg::Outcome(typed.ty.clone()))
            }
            (Marker::ValidateHandshake, Class::Value | Class::TimerId) => {
                decoded += 1;
                Some(Arg::Handshake(typed.ty.clone()))
            }
            (Marker::ImportState, Class::Value | Class::TimerId) => {
                decoded += 1;
                Some(Arg::State(typed.ty.clone()))
            }
            _ => None,
        };
        match arg {
            Some(arg) => args.push(arg),
            None => errors.at(&typed.ty, format!("{hook} {takes}")),
        }
        if decoded > 1 {
            errors.at(&typed.ty, format!("{hook} {takes}"));
            decoded = 1;
        }
    }
    if marker == Marker::ImportState && decoded == 0 {
        errors.at(&sig.ident, format!("{hook} {takes}"));
    }
    let return_span = match &sig.output {
        ReturnType::Type(_, ty) => {
            let unit = matches!(ungroup(ty), Type::Tuple(tuple) if tuple.elems.is_empty());
            if matches!(marker, Marker::SessionClosed | Marker::After) && !unit {
                let also = if marker == Marker::After {
                    "; it may change the outcome through `&mut Outcome`"
                } else {
                    ""
                };
                errors.at(ty, format!("{hook} returns nothing{also}"));
            }
            ty.span()
        }
        ReturnType::Default => {
            let returns = match marker {
                Marker::ValidateHandshake => Some(
                    "returns `Result<(), String>`: `Ok(())` lets the client in, an error refuses it",
                ),
                Marker::ExportState => Some(
                    "returns the state to hand over: `Json<T>` for a serde value, bytes, or an `Option` of either",
                ),
                Marker::Before => Some(
                    "returns `Result<(), HandlerError>`: an error is the call's answer and the handler does not run",
                ),
                _ => None,
            };
            if let Some(returns) = returns {
                errors.at(&sig.ident, format!("{hook} {returns}"));
            }
            sig.ident.span()
        }
    };
    Hook {
        call: Call {
            ident: sig.ident.clone(),
            has_receiver,
            args,
        },
        returns_self: false,
        return_span,
    }
}

/// Rejects what the host cannot call: async, unsafe, generic and variadic functions.
fn check_plain_function(sig: &Signature, errors: &mut Errors) {
    if let Some(asyncness) = &sig.asyncness {
        errors.at(
            asyncness,
            "handlers cannot be `async`: the host calls a component one call at a time and waits for each",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety, "handlers cannot be `unsafe`");
    }
    let generic = sig
        .generics
        .params
        .iter()
        .find(|param| !matches!(param, syn::GenericParam::Lifetime(_)));
    if let Some(param) = generic {
        errors.at(
            param,
            "handlers cannot be generic: the payload and response types must be concrete",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "handlers cannot be variadic");
    }
}

/// Whether the function takes `&self` / `&mut self`; reports `self` by value and the like.
fn read_receiver(sig: &Signature, errors: &mut Errors) -> bool {
    let Some(receiver) = sig.receiver() else {
        return false;
    };
    let by_reference = match &*receiver.ty {
        Type::Reference(reference) => is_self_type(&reference.elem),
        _ => false,
    };
    if !by_reference {
        errors.at(
            receiver,
            "a handler takes `&self`, `&mut self` or no receiver: the host keeps the component between calls",
        );
    }
    true
}

/// The typed arguments of a function (not the receiver).
fn typed_args(sig: &Signature) -> impl Iterator<Item = &syn::PatType> {
    sig.inputs.iter().filter_map(|input| match input {
        FnArg::Typed(typed) => Some(typed),
        FnArg::Receiver(_) => None,
    })
}

/// What an argument's type says it is, before each kind of function decides what it accepts.
enum Class {
    /// A session, in one of its four forms.
    Session(Arg),
    /// `TimerId`.
    TimerId,
    /// `&str`.
    Str,
    /// Another reference.
    Ref,
    /// Another type, by value.
    Value,
}

/// Classifies an argument by its type; reports a session taken by `&mut`.
fn classify(typed: &syn::PatType, errors: &mut Errors) -> Class {
    let ty = ungroup(&typed.ty);
    match ty {
        Type::Reference(reference) => match session_type(&reference.elem) {
            Some(session) if reference.mutability.is_some() => {
                errors.at(
                    ty,
                    format!("take the session as `&{session}`: a session handle is not changed by its methods"),
                );
                Class::Session(Arg::SessionRef)
            }
            Some("Session") => Class::Session(Arg::SessionRef),
            Some(_) => Class::Session(Arg::SessionIdRef),
            None if is_str(&reference.elem) => Class::Str,
            None => Class::Ref,
        },
        _ => match session_type(ty) {
            Some("Session") => Class::Session(Arg::Session),
            Some(_) => Class::Session(Arg::SessionId),
            None if type_ident(ty).is_some_and(|ident| ident == "TimerId") => Class::TimerId,
            None => Class::Value,
        },
    }
}

/// Reads a handler's arguments: sessions, and payloads (anything else, by value).
fn read_args(sig: &Signature, errors: &mut Errors) -> Vec<Arg> {
    let mut args = Vec::new();
    for typed in typed_args(sig) {
        let arg = match classify(typed, errors) {
            Class::Session(arg) => arg,
            Class::Str | Class::Ref => {
                if let Type::Reference(reference) = ungroup(&typed.ty) {
                    errors.at(&typed.ty, borrowed_payload_message(&reference.elem));
                }
                Arg::Payload(typed.ty.clone())
            }
            Class::TimerId | Class::Value => Arg::Payload(typed.ty.clone()),
        };
        args.push(arg);
    }
    args
}

fn is_str(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Path(path) if path.qself.is_none() && path.path.is_ident("str"))
}

/// Payloads are decoded into owned values (the bytes are gone after the call); say what to
/// take instead of a borrowed one.
fn borrowed_payload_message(elem: &Type) -> String {
    let owned = match ungroup(elem) {
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
            "`String`".to_string()
        }
        Type::Slice(slice) if matches!(ungroup(&slice.elem), Type::Path(p) if p.path.is_ident("u8")) => {
            "`Raw` for the bytes as sent".to_string()
        }
        other => format!("`{}`", quote::quote!(#other).to_string().replace(' ', "")),
    };
    format!(
        "a payload is decoded into a value the handler owns: take {owned} rather than a reference"
    )
}

/// `Some("Session")` or `Some("SessionId")` when the type is (a path ending in) one of those.
fn session_type(ty: &Type) -> Option<&'static str> {
    let ident = type_ident(ty)?;
    if ident == "Session" {
        Some("Session")
    } else if ident == "SessionId" {
        Some("SessionId")
    } else {
        None
    }
}

/// The last identifier of a plain type path without generic arguments (`Room`, `crate::Room`).
fn type_ident(ty: &Type) -> Option<&Ident> {
    let Type::Path(path) = ungroup(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    last.arguments.is_none().then_some(&last.ident)
}

fn is_self_type(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
}

/// Looks through the invisible groups that `macro_rules!` puts around types it substitutes.
fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => ungroup(&group.elem),
        Type::Paren(paren) => ungroup(&paren.elem),
        _ => ty,
    }
}

fn path_text(path: &syn::Path) -> String {
    quote::quote!(#path).to_string().replace(' ', "")
}

fn item_attrs(item: &ImplItem) -> &[Attribute] {
    match item {
        ImplItem::Const(item) => &item.attrs,
        ImplItem::Fn(item) => &item.attrs,
        ImplItem::Type(item) => &item.attrs,
        ImplItem::Macro(item) => &item.attrs,
        _ => &[],
    }
}

fn item_attrs_mut(item: &mut ImplItem) -> Option<&mut Vec<Attribute>> {
    match item {
        ImplItem::Const(item) => Some(&mut item.attrs),
        ImplItem::Fn(item) => Some(&mut item.attrs),
        ImplItem::Type(item) => Some(&mut item.attrs),
        ImplItem::Macro(item) => Some(&mut item.attrs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn read_ok(args: TokenStream, item: TokenStream) -> (Component, ItemImpl) {
        let name = parse_args(args).unwrap();
        let mut item = syn::parse2(item).unwrap();
        match read(name, &mut item) {
            Ok(component) => (component, item),
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn read_err(args: TokenStream, item: TokenStream) -> Vec<String> {
        let name = match parse_args(args) {
            Ok(name) => name,
            Err(error) => return error.into_iter().map(|e| e.to_string()).collect(),
        };
        match read(name, &mut syn::parse2(item).unwrap()) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn reads_handlers_hooks_and_names() {
        let (component, item) = read_ok(
            quote!(),
            quote! {
                impl ChatRoom {
                    #[request]
                    fn join(&mut self, session: &Session, request: Join) -> Result<Joined, HandlerError> { todo!() }
                    #[notify(name = "say")]
                    fn r#message(&self, message: Raw, id: SessionId) {}
                    #[pitaya_guest::init]
                    fn init() -> Self { todo!() }
                    #[session_closed]
                    fn left(&mut self, session: SessionId) {}
                    fn helper(&self) {}
                }
            },
        );
        assert_eq!(component.name, "chatroom");
        let names: Vec<&str> = component.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["join", "say"]);
        assert!(component.handlers[0].kind == Kind::Request);
        assert!(matches!(
            component.handlers[0].call.args.as_slice(),
            [Arg::SessionRef, Arg::Payload(_)]
        ));
        assert!(matches!(
            component.handlers[1].call.args.as_slice(),
            [Arg::Payload(_), Arg::SessionId]
        ));
        assert!(
            component
                .init
                .as_ref()
                .is_some_and(|hook| hook.returns_self)
        );
        assert!(component.session_closed.is_some());
        // The markers are gone from the emitted block; other functions are untouched.
        let emitted = quote!(#item).to_string();
        assert!(!emitted.contains("# [request]"), "{emitted}");
        assert!(emitted.contains("helper"), "{emitted}");
    }

    #[test]
    fn unknown_component_argument_is_named() {
        let errors = read_err(quote!(nmae = "room"), quote!(impl Room {}));
        assert_eq!(
            errors,
            ["unknown argument `nmae`; #[component] takes `name = \"...\"`"]
        );
    }

    #[test]
    fn bad_names_are_rejected() {
        let errors = read_err(quote!(name = "a.b"), quote!(impl Room {}));
        assert_eq!(
            errors,
            ["invalid component name: it contains `.`, which separates the parts of a route"]
        );
        let errors = read_err(
            quote!(),
            quote! {
                impl Room {
                    #[request(name = "")]
                    fn a(&self) -> Result<(), HandlerError> { Ok(()) }
                }
            },
        );
        assert_eq!(errors, ["invalid handler name: it is empty"]);
        let long = "r".repeat(101);
        let errors = read_err(quote!(name = #long), quote!(impl Room {}));
        assert_eq!(
            errors,
            ["invalid component name: it is longer than 100 bytes, which the host refuses to load"]
        );
        let longest = &long[1..];
        let (component, _) = read_ok(quote!(name = #longest), quote!(impl Room {}));
        assert_eq!(component.name.len(), 100);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let errors = read_err(
            quote!(),
            quote! {
                impl Room {
                    #[request]
                    fn a(self) {}
                    #[notify]
                    async fn b(&self, x: u8, y: u8) {}
                    #[notify(name = "a")]
                    fn c(&self) {}
                    #[init]
                    fn d(&self) -> Self { todo!() }
                    #[session_closed]
                    fn e(&mut self, payload: String) -> bool { true }
                    #[request]
                    #[notify]
                    fn f(&self) -> Result<(), HandlerError> { Ok(()) }
                }
            },
        );
        let expected = [
            "a handler takes `&self`, `&mut self` or no receiver",
            "a #[request] handler returns `Result<T, HandlerError>`",
            "handlers cannot be `async`",
            "a handler takes at most one payload argument",
            "two handlers are named `a`",
            "an #[init] hook builds the component, so it takes no `self`",
            "a #[session_closed] hook takes the closed session",
            "a #[session_closed] hook returns nothing",
            "this function is already marked #[request]",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(start),
                "{error:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn reads_every_hook_and_keeps_before_and_after_in_order() {
        let (component, _) = read_ok(
            quote!(name = "lab"),
            quote! {
                impl Lab {
                    #[timer]
                    fn tick(&mut self, timer: TimerId) {}
                    #[validate_handshake]
                    fn check(&mut self, session: &Session, handshake: Handshake) -> Result<(), String> { Ok(()) }
                    #[shutdown]
                    fn stop(&mut self) {}
                    #[export_state]
                    fn save(&self) -> Json<u32> { Json(1) }
                    #[import_state]
                    fn load(&mut self, Json(n): Json<u32>) {}
                    #[before]
                    fn second_written_first(&mut self, handler: &str) -> Result<(), HandlerError> { Ok(()) }
                    #[pitaya_guest::before]
                    fn auth(session: SessionId) -> Result<(), HandlerError> { Ok(()) }
                    #[after]
                    fn log(&mut self, session: &Session, handler: &str, outcome: &mut Outcome) {}
                }
            },
        );
        assert!(matches!(
            component
                .timer
                .as_ref()
                .map(|hook| hook.call.args.as_slice()),
            Some([Arg::TimerId])
        ));
        assert!(matches!(
            component
                .validate_handshake
                .as_ref()
                .map(|hook| hook.call.args.as_slice()),
            Some([Arg::SessionRef, Arg::Handshake(_)])
        ));
        assert!(component.shutdown.is_some() && component.export_state.is_some());
        assert!(matches!(
            component
                .import_state
                .as_ref()
                .map(|hook| hook.call.args.as_slice()),
            Some([Arg::State(_)])
        ));
        let before: Vec<String> = component
            .before
            .iter()
            .map(|hook| hook.call.ident.to_string())
            .collect();
        assert_eq!(before, ["second_written_first", "auth"]);
        assert!(!component.before[1].call.has_receiver);
        assert!(matches!(
            component.after[0].call.args.as_slice(),
            [Arg::SessionRef, Arg::HandlerName, Arg::Outcome(_)]
        ));
    }

    #[test]
    fn hook_mistakes_are_reported_at_once() {
        let errors = read_err(
            quote!(),
            quote! {
                impl Room {
                    #[timer]
                    fn a(&mut self, session: &Session) {}
                    #[timer]
                    fn b(&mut self) {}
                    #[shutdown]
                    fn c(&mut self, now: u64) {}
                    #[export_state]
                    fn d(&self) {}
                    #[import_state]
                    fn e(&mut self, a: Vec<u8>, b: Vec<u8>) {}
                    #[validate_handshake]
                    fn f(&mut self, handshake: &Handshake) -> Result<(), String> { Ok(()) }
                    #[before]
                    fn g(&mut self, payload: Raw) -> Result<(), HandlerError> { Ok(()) }
                    #[after]
                    fn h(&mut self, a: &Outcome, b: &Outcome) {}
                    #[after(name = "x")]
                    fn i(&mut self) {}
                }
            },
        );
        let expected = [
            "a #[timer] hook takes the timer's id",
            "a component has one #[timer] hook; this is the second",
            "a #[shutdown] hook takes no arguments",
            "an #[export_state] hook returns the state to hand over",
            "an #[import_state] hook takes the state handed over",
            "a #[validate_handshake] hook takes the new client's session",
            "a #[before] hook takes the calling session",
            "an #[after] hook takes the calling session",
            "this marker takes no arguments",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(start),
                "{error:?} should start with {start:?}"
            );
        }
    }

    #[test]
    fn trait_impls_and_generic_impls_are_rejected() {
        let errors = read_err(quote!(), quote!(impl Default for Room {}));
        assert!(errors[0].starts_with("#[component] goes on an inherent `impl` block"));
        let errors = read_err(
            quote!(),
            quote!(
                impl<T> Room<T> {}
            ),
        );
        assert!(errors[0].starts_with("a component cannot be generic"));
    }
}
