//! The runtime that lives inside a forkgraph worker: values, the function registry, task
//! execution, the fork server, the worker loop and the protocol they speak. It knows nothing
//! about graphs; the `forkgraph` crate schedules on top of it.

pub mod archive;
pub mod convert;
pub mod exec;
pub mod forkserver;
pub mod logs;
pub mod proto;
pub mod registry;
pub mod shared;
#[doc(hidden)]
pub mod sys;
pub mod value;
pub mod wire;
mod worker;

pub use archive::{Archived, Rkyv};
pub use convert::{ArgValue, FromArg, IntoOutput, IntoValue, Mismatch, Serde, VecItem};
pub use exec::{run, Inputs, SpecArg, TaskFailure, TaskSpec};
pub use registry::{CallError, FnId, Function, Registry, FUNCTIONS};
pub use shared::SharedVec;
pub use value::{Array, Buffer, DType, Element, Storage, Value};

#[doc(hidden)]
pub use linkme;
pub use rkyv;
