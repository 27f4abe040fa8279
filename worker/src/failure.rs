//! What a task's returned error keeps ([`ReturnedError`]), and the adapter that turns a task
//! function's return value into a result.
//!
//! `#[forkgraph::task]` calls `(&&&&&&Output::new(f(..))).__forkgraph_output()`: method lookup
//! tries the impls below from the most references down (autoref specialization), so each return
//! type gets the most informative conversion that applies to it, in this order:
//!
//! 1. `Result<T, E>` with `E: Error + Send + Sync + 'static` (`io::Error`, thiserror enums): the
//!    `source()` chain, the type name, and the value itself;
//! 2. `E: Deref<Target = dyn Error + Send + Sync>` (`anyhow::Error`, `eyre::Report`,
//!    `Box<dyn Error + Send + Sync>`): the same, the chain read through the deref;
//! 3. `E: Deref<Target = dyn Error>` (`Box<dyn Error>`, not `Send`): chain and type name;
//! 4. `E: Error` that is not `Send` or `'static`: chain and type name;
//! 5. `E: Display + Send + Sync + 'static` (`String`): message, type name and value;
//! 6. anything else: [`IntoOutput`] (a plain value, or `Result<T, E: Display>`).

use std::any::{type_name, Any};
use std::cell::Cell;
use std::error::Error as StdError;
use std::fmt::{self, Display};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::convert::{IntoOutput, IntoValue};
use crate::registry::CallError;
use crate::value::Value;

/// An error a task function returned.
///
/// It keeps the error's Rust type name and the messages of the error and of each error in its
/// `source()` chain (an `anyhow::Error`'s contexts down to the OS error of an `io::Error`). In
/// the process that ran the task — always, on the sync and thread schedulers — it also keeps the
/// error value itself: [`downcast_ref`](Self::downcast_ref) finds it, or any error of its chain,
/// by type, as Dask re-raises a task's own exception. From a worker process of the process pool
/// the type name and the messages travel; the value does not.
///
/// ```
/// use forkgraph_worker::ReturnedError;
///
/// let io = std::io::Error::from(std::io::ErrorKind::NotFound);
/// let e = ReturnedError::from_error(io);
/// assert_eq!(e.type_name(), std::any::type_name::<std::io::Error>());
/// assert_eq!(e.downcast_ref::<std::io::Error>().unwrap().kind(), std::io::ErrorKind::NotFound);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct ReturnedError {
    type_name: String,
    chain: Vec<String>,
    std_error: bool,
    #[serde(skip)]
    value: Option<Arc<dyn Original>>,
}

/// The error value a [`ReturnedError`] keeps in the process that made it.
trait Original: Send + Sync {
    fn as_any(&self) -> &(dyn Any + Send + Sync);
    fn as_error(&self) -> Option<&(dyn StdError + 'static)>;
}

struct KeptError<E>(E);

impl<E: StdError + Send + Sync + 'static> Original for KeptError<E> {
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        &self.0
    }
    fn as_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

struct KeptDynError<E>(E);

impl<E> Original for KeptDynError<E>
where
    E: Deref<Target = dyn StdError + Send + Sync + 'static> + Send + Sync + 'static,
{
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        &self.0
    }
    fn as_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

struct KeptValue<E>(E);

impl<E: Send + Sync + 'static> Original for KeptValue<E> {
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        &self.0
    }
    fn as_error(&self) -> Option<&(dyn StdError + 'static)> {
        None
    }
}

/// The messages of `e` and of each error of its `source()` chain.
fn chain_of(e: &dyn StdError) -> Vec<String> {
    let mut chain = vec![e.to_string()];
    let mut next = e.source();
    // Bounded: an error whose `source()` leads back to itself must not hang the task.
    while let Some(s) = next.filter(|_| chain.len() < 64) {
        chain.push(s.to_string());
        next = s.source();
    }
    chain
}

impl ReturnedError {
    /// Keeps an error, its `source()` chain and its type name.
    pub fn from_error<E: StdError + Send + Sync + 'static>(e: E) -> ReturnedError {
        ReturnedError {
            type_name: type_name::<E>().to_owned(),
            chain: chain_of(&e),
            std_error: true,
            value: Some(Arc::new(KeptError(e))),
        }
    }

    /// Keeps an error that dereferences to `dyn Error` (`anyhow::Error`, `eyre::Report`,
    /// `Box<dyn Error + Send + Sync>`): its chain, its type name, and the value itself.
    pub fn from_dyn_error<E>(e: E) -> ReturnedError
    where
        E: Deref<Target = dyn StdError + Send + Sync + 'static> + Send + Sync + 'static,
    {
        ReturnedError {
            type_name: type_name::<E>().to_owned(),
            chain: chain_of(&*e),
            std_error: true,
            value: Some(Arc::new(KeptDynError(e))),
        }
    }

    /// The chain and type name of an error whose value cannot be kept (it is not `Send`, `Sync`
    /// or `'static`).
    pub fn from_error_ref<E: StdError + ?Sized>(e: &E) -> ReturnedError {
        ReturnedError {
            type_name: type_name::<E>().to_owned(),
            chain: chain_of(&e),
            std_error: true,
            value: None,
        }
    }

    /// An error that is only `Display` (a `String`, a `&str`): its message and type name, and
    /// the value itself.
    pub fn from_display<E: Display + Send + Sync + 'static>(e: E) -> ReturnedError {
        let report = ReturnedError::from_display_ref(&e);
        ReturnedError {
            value: Some(Arc::new(KeptValue(e))),
            ..report
        }
    }

    /// The message and type name of an error that is only `Display` and cannot be kept.
    pub fn from_display_ref<E: Display + ?Sized>(e: &E) -> ReturnedError {
        ReturnedError {
            type_name: type_name::<E>().to_owned(),
            chain: vec![e.to_string()],
            std_error: false,
            value: None,
        }
    }

    /// The Rust type of the error, as `std::any::type_name` writes it (`anyhow::Error`,
    /// `std::io::error::Error`, `alloc::string::String`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The error's own message.
    pub fn message(&self) -> &str {
        self.chain.first().map_or("", String::as_str)
    }

    /// The message of the error, then of each error of its `source()` chain.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// Whether the error implements `std::error::Error` (or dereferences to one).
    pub fn is_std_error(&self) -> bool {
        self.std_error
    }

    /// The error value itself, when this process made the report and the value is an error.
    pub fn error(&self) -> Option<&(dyn StdError + 'static)> {
        self.value.as_ref().and_then(|v| v.as_error())
    }

    /// The error value if it is a `T`, else the first error of its `source()` chain that is a
    /// `T` (so the `io::Error` under an `anyhow::Error`'s contexts is found too). `None` when
    /// the report came from another process.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        let value = self.value.as_ref()?;
        if let Some(t) = value.as_any().downcast_ref::<T>() {
            return Some(t);
        }
        let mut next = value.as_error();
        while let Some(e) = next {
            if let Some(t) = e.downcast_ref::<T>() {
                return Some(t);
            }
            next = e.source();
        }
        None
    }

    /// The returned value itself if it is a `T`, whatever `T` is (`anyhow::Error`, `String`).
    /// `None` when the report came from another process.
    pub fn value_ref<T: Any>(&self) -> Option<&T> {
        self.value.as_ref()?.as_any().downcast_ref::<T>()
    }
}

/// The chain joined by `": "`, after the type name for `std::error::Error` types:
/// `anyhow::Error: reading config.toml: No such file or directory (os error 2)`.
impl ReturnedError {
    /// Adds a last message to the chain (what the runtime knows about the failure, such as a
    /// system call the sandbox denied).
    pub(crate) fn add_note(&mut self, note: String) {
        self.chain.push(note);
    }
}

impl Display for ReturnedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.std_error {
            write!(f, "{}: ", self.type_name)?;
        }
        for (i, m) in self.chain.iter().enumerate() {
            if i > 0 {
                f.write_str(": ")?;
            }
            f.write_str(m)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ReturnedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnedError")
            .field("type_name", &self.type_name)
            .field("chain", &self.chain)
            .field("value_kept", &self.value.is_some())
            .finish()
    }
}

/// Equal when type name and messages are (the kept value is not compared).
impl PartialEq for ReturnedError {
    fn eq(&self, other: &ReturnedError) -> bool {
        self.type_name == other.type_name
            && self.chain == other.chain
            && self.std_error == other.std_error
    }
}

impl Eq for ReturnedError {}

/// A task function's return value, taken once by the `__forkgraph_output` method that applies
/// to its type (see the module docs).
#[doc(hidden)]
pub struct Output<R>(Cell<Option<R>>);

impl<R> Output<R> {
    /// Wraps a return value.
    pub fn new(r: R) -> Output<R> {
        Output(Cell::new(Some(r)))
    }

    fn take(&self) -> R {
        self.0
            .take()
            .expect("a task's return value is converted once")
    }
}

fn value_of<T: IntoValue>(v: T) -> Result<Value, CallError> {
    v.try_into_value().map_err(CallError::Unencodable)
}

macro_rules! levels {
    ($($(#[$doc:meta])* $tr:ident for $ty:ty where [$($bounds:tt)*] => |$e:ident| $report:expr;)*) => {$(
        $(#[$doc])*
        #[doc(hidden)]
        pub trait $tr {
            /// Converts the return value.
            ///
            /// # Errors
            /// The task's error, or a result that cannot be encoded.
            fn __forkgraph_output(&self) -> Result<Value, CallError>;
        }
        impl<T: IntoValue, E> $tr for $ty
        where
            $($bounds)*
        {
            fn __forkgraph_output(&self) -> Result<Value, CallError> {
                match self.take() {
                    Ok(v) => value_of(v),
                    Err($e) => Err(CallError::Returned($report)),
                }
            }
        }
    )*};
}

levels! {
    /// Level 1: errors that are `std::error::Error` and can be kept.
    ViaError for &&&&&Output<Result<T, E>> where [E: StdError + Send + Sync + 'static]
        => |e| ReturnedError::from_error(e);
    /// Level 2: `anyhow::Error` and other handles that dereference to `dyn Error`.
    ViaDynError for &&&&Output<Result<T, E>>
        where [E: Deref<Target = dyn StdError + Send + Sync + 'static> + Send + Sync + 'static]
        => |e| ReturnedError::from_dyn_error(e);
    /// Level 3: `Box<dyn Error>`.
    ViaLocalDynError for &&&Output<Result<T, E>> where [E: Deref<Target = dyn StdError + 'static>]
        => |e| ReturnedError {
            type_name: type_name::<E>().to_owned(),
            ..ReturnedError::from_error_ref(&*e)
        };
    /// Level 4: errors that cannot be kept.
    ViaErrorRef for &&Output<Result<T, E>> where [E: StdError]
        => |e| ReturnedError::from_error_ref(&e);
    /// Level 5: `Display` values that can be kept (`String`).
    ViaDisplay for &Output<Result<T, E>> where [E: Display + Send + Sync + 'static]
        => |e| ReturnedError::from_display(e);
}

/// Level 6: any [`IntoOutput`].
#[doc(hidden)]
pub trait ViaIntoOutput {
    /// Converts the return value.
    ///
    /// # Errors
    /// The task's error, or a result that cannot be encoded.
    fn __forkgraph_output(&self) -> Result<Value, CallError>;
}

impl<R: IntoOutput> ViaIntoOutput for Output<R> {
    fn __forkgraph_output(&self) -> Result<Value, CallError> {
        self.take().into_output()
    }
}

#[cfg(test)]
// The references are the point: they are how `#[forkgraph::task]` picks a conversion.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading the table")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such table")
    }

    #[test]
    fn a_std_error_keeps_its_chain_type_and_value() {
        let r: Result<i64, Outer> = Err(Outer(not_found()));
        let Err(CallError::Returned(e)) = (&&&&&&Output::new(r)).__forkgraph_output() else {
            panic!()
        };
        assert_eq!(e.chain(), ["loading the table", "no such table"]);
        assert!(e.type_name().ends_with("Outer"), "{}", e.type_name());
        assert!(e.downcast_ref::<Outer>().is_some());
        assert_eq!(
            e.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(e
            .to_string()
            .ends_with("Outer: loading the table: no such table"));
    }

    #[test]
    fn boxed_errors_keep_their_chain() {
        let r: Result<i64, Box<dyn StdError + Send + Sync>> = Err(Box::new(Outer(not_found())));
        let Err(CallError::Returned(e)) = (&&&&&&Output::new(r)).__forkgraph_output() else {
            panic!()
        };
        assert_eq!(e.chain().len(), 2);
        assert!(e.downcast_ref::<Outer>().is_some());
        let r: Result<i64, Box<dyn StdError>> = Err(Box::new(Outer(not_found())));
        let Err(CallError::Returned(e)) = (&&&&&&Output::new(r)).__forkgraph_output() else {
            panic!()
        };
        assert_eq!(e.chain().len(), 2);
        assert!(e.downcast_ref::<Outer>().is_none(), "not Send: not kept");
    }

    #[test]
    fn strings_keep_their_message_and_value() {
        let r: Result<i64, String> = Err("bad".into());
        let Err(CallError::Returned(e)) = (&&&&&&Output::new(r)).__forkgraph_output() else {
            panic!()
        };
        assert_eq!(e.to_string(), "bad");
        assert_eq!(e.value_ref::<String>().map(String::as_str), Some("bad"));
        let ok = (&&&&&&Output::new(5u64)).__forkgraph_output();
        assert_eq!(ok, Ok(Value::Int(5)));
    }

    #[test]
    fn reports_travel_without_their_value() {
        let e = ReturnedError::from_error(Outer(not_found()));
        let back: ReturnedError = postcard::from_bytes(&postcard::to_stdvec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(back.downcast_ref::<Outer>().is_none());
        assert_eq!(back.to_string(), e.to_string());
    }
}
