//! The runtime that lives inside a forkgraph worker: values, the function registry and task
//! execution. It knows nothing about graphs; the `forkgraph` crate schedules on top of it.

pub mod convert;
pub mod exec;
pub mod registry;
pub mod value;

pub use convert::{ArgValue, FromArg, IntoOutput, IntoValue, Mismatch, Serde, VecItem};
pub use exec::{run, Inputs, SpecArg, TaskFailure, TaskSpec};
pub use registry::{CallError, FnId, Function, Registry, FUNCTIONS};
pub use value::{Array, Buffer, DType, Element, Storage, Value};

#[doc(hidden)]
pub use linkme;
