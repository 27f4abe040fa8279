//! The runtime that lives inside a forkgraph worker: values, the function registry, task
//! execution, the fork server, the worker loop and the protocol they speak. It knows nothing
//! about graphs; the `forkgraph` crate schedules on top of it.

pub mod archive;
pub mod convert;
pub mod exec;
pub mod failure;
pub mod forkserver;
mod frame;
pub mod host;
pub mod logs;
pub mod proto;
pub mod registry;
pub mod sandbox;
pub mod segments;
mod serve;
pub mod shared;
mod sys;
pub mod value;

pub use archive::{Archived, Rkyv};
pub use convert::{
    ArgValue, EncodeError, FromArg, IntoOutput, IntoValue, Mismatch, Serde, VecItem,
};
pub use exec::{run, Inputs, SpecArg, SpecRef, SpecStore, TaskFailure, TaskSpec, TaskView};
pub use failure::ReturnedError;
pub use registry::{CallError, FnId, Function, Registry, FUNCTIONS};
pub use shared::SharedVec;
pub use value::{Array, Buffer, DType, Element, Integer, Storage, Value};

#[doc(hidden)]
pub use linkme;
pub use rkyv;
