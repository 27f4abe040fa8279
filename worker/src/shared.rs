//! [`SharedVec`]: a task's output written straight into a shared segment.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::convert::IntoValue;
use crate::sys::SegmentWriter;
use crate::value::{Array, Buffer, Element, Value};

/// A vector allocated in a shared memory segment, for large task outputs: it is written once, in
/// place, and reaches dependents in other worker processes (and the caller of `get`) without
/// ever being copied. Returning it from a task seals it: from then on no process can change it.
///
/// A task returns it like any vector (`fn ramp(n: usize) -> std::io::Result<SharedVec<f64>>`):
///
/// ```
/// use forkgraph_worker::{IntoValue, SharedVec, Value};
///
/// let mut v = SharedVec::<f64>::zeroed(1000).unwrap();
/// for (i, x) in v.iter_mut().enumerate() {
///     *x = i as f64;
/// }
/// let Value::Array(a) = v.into_value() else { unreachable!() }; // sealed from here on
/// assert!(a.buffer().is_shared());
/// assert_eq!(a.as_slice::<f64>().unwrap()[999], 999.0);
/// ```
#[derive(Debug)]
pub struct SharedVec<T: Element> {
    seg: SegmentWriter,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Element> SharedVec<T> {
    /// A zero-filled vector of `len` elements.
    ///
    /// # Errors
    /// When the segment cannot be created (fd or memory limits).
    pub fn zeroed(len: usize) -> std::io::Result<SharedVec<T>> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("SharedVec of {len} elements overflows usize"),
            )
        })?;
        Ok(SharedVec {
            seg: SegmentWriter::new(bytes)?,
            len,
            _t: PhantomData,
        })
    }

    /// A shared copy of `items`.
    ///
    /// # Errors
    /// As [`SharedVec::zeroed`].
    pub fn from_slice(items: &[T]) -> std::io::Result<SharedVec<T>> {
        let mut v = SharedVec::zeroed(items.len())?;
        v.copy_from_slice(items);
        Ok(v)
    }

    fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T: Element> Deref for SharedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(&self.seg.bytes()[..self.byte_len()])
    }
}

impl<T: Element> DerefMut for SharedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let n = self.byte_len();
        bytemuck::cast_slice_mut(&mut self.seg.bytes_mut()[..n])
    }
}

impl<T: Element> SharedVec<T> {
    /// The vector as an array value, sealed: what returning it from a task does, with the
    /// failure to seal as an error instead of a panic.
    ///
    /// # Errors
    /// When the segment cannot be sealed: a kernel without memfd seals, or one that still
    /// counts a writer after a few tries (EBUSY).
    pub fn try_into_value(self) -> std::io::Result<Value> {
        if self.len == 0 {
            return Ok(Value::Array(Array::from_vec(Vec::<T>::new())));
        }
        let seg = self.seg.seal()?;
        Ok(Value::Array(
            Array::from_buffer(T::DTYPE, Buffer::from_storage(Arc::new(seg)))
                .expect("a page-aligned segment of whole elements"),
        ))
    }
}

impl<T: Element> IntoValue for SharedVec<T> {
    fn into_value(self) -> Value {
        // Sealing fails only on kernels without memfd seals (or a kernel that keeps counting a
        // writer); the task then fails with this message (a panic in a task is reported as
        // its error). Code that is not a task uses `try_into_value`.
        self.try_into_value()
            .unwrap_or_else(|e| panic!("cannot seal a shared segment: {e}"))
    }
}
