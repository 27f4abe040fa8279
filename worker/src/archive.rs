//! Structured values read in place: rkyv archives.
//!
//! A task returns `Rkyv(value)`; the value is archived once (into 16-byte aligned memory) and,
//! when large, travels to dependents as a shared segment like any array. A dependent takes
//! `Archived<'_, T>` and reads the archived fields directly in the mapped bytes, without
//! deserializing or copying (the archive is validated first, so a corrupt or foreign buffer is
//! a type-mismatch error, never undefined behaviour).

use std::any::type_name;
use std::ops::Deref;
use std::sync::Arc;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable};

use crate::convert::{ArgValue, EncodeError, FromArg, IntoValue, Mismatch};
use crate::value::{Buffer, Storage, Value};

impl Storage for AlignedVec {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

fn tag<T>() -> String {
    format!("rkyv:{}", type_name::<T>())
}

/// A task result carried as an rkyv archive (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Rkyv<T>(pub T);

impl<T> IntoValue for Rkyv<T>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, Error>>,
{
    /// # Panics
    /// When `T` cannot be archived; task results report it instead (see
    /// [`IntoValue::try_into_value`]).
    fn into_value(self) -> Value {
        self.try_into_value()
            .unwrap_or_else(|e| panic!("cannot archive {e}"))
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        // Archiving plain data into memory only fails for types rkyv cannot represent.
        let bytes = rkyv::to_bytes::<Error>(&self.0).map_err(|e| EncodeError {
            type_name: type_name::<T>().to_owned(),
            message: e.to_string(),
        })?;
        Ok(Value::Encoded(
            tag::<T>(),
            Buffer::from_storage(Arc::new(bytes)),
        ))
    }
}

/// A parameter that reads an archived `T` in place: dereferences to `T::Archived`.
#[derive(Debug)]
pub struct Archived<'a, T: Archive>(pub &'a T::Archived);

impl<T: Archive> Deref for Archived<'_, T> {
    type Target = T::Archived;
    fn deref(&self) -> &T::Archived {
        self.0
    }
}

impl<'a, T> FromArg<'a> for Archived<'a, T>
where
    T: Archive,
    T::Archived: Portable + for<'b> CheckBytes<HighValidator<'b, Error>>,
{
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        let want = tag::<T>();
        match arg.value() {
            Some(Value::Encoded(name, buf)) if *name == want => {
                rkyv::access::<T::Archived, Error>(buf.as_bytes())
                    .map(Archived)
                    .map_err(|e| Mismatch {
                        expected: want.clone(),
                        got: format!("an invalid archive: {e}"),
                    })
            }
            _ => Err(Mismatch {
                expected: want,
                got: arg.kind(),
            }),
        }
    }
}
