//! Values that flow between tasks.
//!
//! A [`Value`] is either small (numbers, strings, lists, maps, serde-encoded user types) or a
//! large typed [`Array`]. An array's bytes live in a [`Buffer`]: reference-counted, immutable,
//! and either on the heap or in a mapped shared segment. Tasks see arrays through borrowed views
//! (`&[f64]`, `&[u8]`, ...), so a task's signature does not depend on where its input lives.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::segments::Segment;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// Element type of an [`Array`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// `u8`
    U8,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// The Rust name of the element type.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

/// A plain-old-data element type that arrays can hold.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The tag stored with arrays of this type.
    const DTYPE: DType;
}

macro_rules! elements {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    )*};
}
elements!(u8 => U8, i32 => I32, i64 => I64, u32 => U32, u64 => U64, f32 => F32, f64 => F64);

/// Backing store of a [`Buffer`]: heap memory or a mapped segment.
///
/// Implementations must return the same bytes every time, aligned to at least 8 bytes.
pub trait Storage: Send + Sync + 'static {
    /// The bytes.
    fn bytes(&self) -> &[u8];
    /// The shared segment behind the bytes, if they live in one.
    #[doc(hidden)]
    fn segment(&self) -> Option<&Segment> {
        None
    }
}

impl Storage for Segment {
    fn bytes(&self) -> &[u8] {
        Segment::bytes(self)
    }
    fn segment(&self) -> Option<&Segment> {
        Some(self)
    }
}

impl<T: Element> Storage for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

/// Heap bytes with 8-byte alignment, so that any [`Element`] view of them is aligned.
struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl Storage for AlignedBytes {
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// Immutable, reference-counted bytes (cloning is cheap).
#[derive(Clone)]
pub struct Buffer(Arc<dyn Storage>);

impl Buffer {
    /// Wraps a vector without copying it.
    pub fn from_vec<T: Element>(v: Vec<T>) -> Buffer {
        Buffer(Arc::new(v))
    }

    /// Copies bytes into a new, 8-byte aligned heap buffer.
    pub fn copy_from_bytes(bytes: &[u8]) -> Buffer {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Buffer(Arc::new(AlignedBytes {
            words,
            len: bytes.len(),
        }))
    }

    /// Wraps any storage (used for mapped shared segments).
    #[doc(hidden)]
    pub fn from_storage(s: Arc<dyn Storage>) -> Buffer {
        Buffer(s)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    /// The shared segment holding the bytes, if any.
    pub(crate) fn segment(&self) -> Option<&Segment> {
        self.0.segment()
    }

    /// Whether the bytes live in a shared segment (rather than on this process's heap).
    pub fn is_shared(&self) -> bool {
        self.segment().is_some()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} bytes)", self.len())
    }
}

/// A typed one-dimensional array of plain-old-data elements.
#[derive(Clone)]
pub struct Array {
    dtype: DType,
    buf: Buffer,
}

impl Array {
    /// Wraps a vector without copying it.
    pub fn from_vec<T: Element>(v: Vec<T>) -> Array {
        Array {
            dtype: T::DTYPE,
            buf: Buffer::from_vec(v),
        }
    }

    /// An array over existing bytes.
    ///
    /// # Errors
    /// When the byte length is not a multiple of the element size, or the bytes are not aligned
    /// for the element type.
    pub fn from_buffer(dtype: DType, buf: Buffer) -> Result<Array, String> {
        let b = buf.as_bytes();
        if b.len() % dtype.size() != 0 || (b.as_ptr() as usize) % dtype.size() != 0 {
            return Err(format!(
                "{} bytes at {:p} are not a whole, aligned array of {}",
                b.len(),
                b.as_ptr(),
                dtype.name()
            ));
        }
        Ok(Array { dtype, buf })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.buf.len() / self.dtype.size()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes of the elements.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &Buffer {
        &self.buf
    }

    /// A typed view, or `None` when `T` is not the element type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype {
            return None;
        }
        Some(bytemuck::cast_slice(self.buf.as_bytes()))
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array<{}>[{}]", self.dtype.name(), self.len())
    }
}

impl PartialEq for Array {
    fn eq(&self, other: &Array) -> bool {
        self.dtype == other.dtype && self.as_bytes() == other.as_bytes()
    }
}

impl Serialize for Array {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.dtype)?;
        t.serialize_element(&self.buf)?;
        t.end()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct BufferVisitor;

impl<'de> Visitor<'de> for BufferVisitor {
    type Value = Buffer;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Buffer, E> {
        Ok(Buffer::copy_from_bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buffer, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Buffer::copy_from_bytes(&v))
    }
}

impl<'de> Deserialize<'de> for Array {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Array, D::Error> {
        struct ArrayVisitor;
        impl<'de> Visitor<'de> for ArrayVisitor {
            type Value = Array;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array (dtype, buffer)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Array, A::Error> {
                let dtype: DType = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let buf: Buffer = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                Array::from_buffer(dtype, buf).map_err(de::Error::custom)
            }
        }
        d.deserialize_tuple(2, ArrayVisitor)
    }
}

struct BufferSeed;

impl<'de> de::DeserializeSeed<'de> for BufferSeed {
    type Value = Buffer;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Buffer, D::Error> {
        d.deserialize_bytes(BufferVisitor)
    }
}

/// A value produced by a task or written literally in a graph.
///
/// Integers of every Rust type are exact: an integer is held by the first of [`Value::Int`],
/// [`Value::UInt`], [`Value::I128`], [`Value::U128`] that can hold it (`Value::from`, and every
/// task result, choose it), and a parameter of any integer type accepts any of the four when
/// the number fits it, and refuses it with a [`Mismatch`](crate::Mismatch) otherwise. Equality
/// compares integers by their number, so `Value::UInt(5) == Value::Int(5)`.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub enum Value {
    /// No value (`()` or `None`).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer in `i64`'s range.
    Int(i64),
    /// An integer above `i64::MAX` that fits `u64`.
    UInt(u64),
    /// An integer outside `i64` and `u64`'s ranges that fits `i128`.
    I128(i128),
    /// An integer above `i128::MAX` (fits only `u128`).
    U128(u128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A typed array of plain-old-data elements (large data lives here).
    Array(Array),
    /// A list of values.
    List(Vec<Value>),
    /// A map from string keys to values.
    Map(BTreeMap<String, Value>),
    /// A user type encoded with serde (see [`crate::Serde`]); the string names its Rust type.
    Encoded(String, Buffer),
}

impl Value {
    /// A short name of this value's kind, used in type-mismatch errors.
    pub fn kind(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::UInt(_) | Value::I128(_) | Value::U128(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "string".into(),
            Value::Array(a) => format!("array of {}", a.dtype().name()),
            Value::List(_) => "list".into(),
            Value::Map(_) => "map".into(),
            Value::Encoded(t, _) => format!("encoded {t}"),
        }
    }

    /// An integer of any width, held exactly (see [`Value`]).
    pub fn from_i128(i: i128) -> Value {
        if let Ok(i) = i64::try_from(i) {
            Value::Int(i)
        } else if let Ok(u) = u64::try_from(i) {
            Value::UInt(u)
        } else {
            Value::I128(i)
        }
    }

    /// An unsigned integer of any width, held exactly (see [`Value`]).
    pub fn from_u128(u: u128) -> Value {
        match i128::try_from(u) {
            Ok(i) => Value::from_i128(i),
            Err(_) => Value::U128(u),
        }
    }

    /// The integer this value holds, whichever integer variant holds it.
    pub fn as_integer(&self) -> Option<Integer> {
        match *self {
            Value::Int(i) => Some(Integer::Signed(i.into())),
            Value::UInt(u) => Some(Integer::Signed(u.into())),
            Value::I128(i) => Some(Integer::Signed(i)),
            Value::U128(u) => Some(i128::try_from(u).map_or(Integer::Unsigned(u), Integer::Signed)),
            _ => None,
        }
    }

    /// Bytes of array data held by this value (nested lists and maps included).
    pub fn array_bytes(&self) -> usize {
        match self {
            Value::Array(a) => a.as_bytes().len(),
            Value::Encoded(_, b) => b.len(),
            Value::List(l) => l.iter().map(Value::array_bytes).sum(),
            Value::Map(m) => m.values().map(Value::array_bytes).sum(),
            _ => 0,
        }
    }
}

/// An integer of a [`Value`], widened to 128 bits: `Signed` whenever it fits `i128`, so equal
/// numbers are equal `Integer`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integer {
    /// A number that fits `i128`.
    Signed(i128),
    /// A number above `i128::MAX`.
    Unsigned(u128),
}

impl Integer {
    /// Converts into any integer type, or `None` when the number does not fit it.
    pub fn to<T: TryFrom<i128> + TryFrom<u128>>(self) -> Option<T> {
        match self {
            Integer::Signed(i) => T::try_from(i).ok(),
            Integer::Unsigned(u) => T::try_from(u).ok(),
        }
    }
}

impl fmt::Display for Integer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Integer::Signed(i) => write!(f, "{i}"),
            Integer::Unsigned(u) => write!(f, "{u}"),
        }
    }
}

/// Structural equality, except that integers compare by their number whichever variant holds
/// them (floats compare as `f64` do: `NaN` differs from itself).
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Encoded(ta, a), Value::Encoded(tb, b)) => ta == tb && a == b,
            (a, b) => match (a.as_integer(), b.as_integer()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Buffer) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// A buffer is written as (0, bytes) inline, as (1, fd index) for a sealed shared segment, or as
/// (2, (fd index, length)) for a recyclable one, inside a framed message (see [`crate::segments`]):
/// arrays and serde-encoded values alike.
impl Serialize for Buffer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        match crate::segments::codec::export(self.segment(), self.as_bytes()) {
            crate::segments::codec::Exported::Sealed(index) => {
                t.serialize_element(&1u8)?;
                t.serialize_element(&index)?;
            }
            crate::segments::codec::Exported::Recyclable(index, len) => {
                t.serialize_element(&2u8)?;
                t.serialize_element(&(index, len))?;
            }
            crate::segments::codec::Exported::Inline => {
                t.serialize_element(&0u8)?;
                t.serialize_element(&Bytes(self.as_bytes()))?;
            }
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Buffer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Buffer, D::Error> {
        struct TaggedVisitor;
        impl<'de> Visitor<'de> for TaggedVisitor {
            type Value = Buffer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a buffer (kind, bytes or segment index)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buffer, A::Error> {
                let kind: u8 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                if kind == 1 {
                    let index: u32 = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    crate::segments::codec::import(index, None)
                        .map(|s| Buffer::from_storage(Arc::new(s)))
                        .map_err(de::Error::custom)
                } else if kind == 2 {
                    let (index, len): (u32, u64) = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    crate::segments::codec::import(index, Some(len))
                        .map(|s| Buffer::from_storage(Arc::new(s)))
                        .map_err(de::Error::custom)
                } else {
                    seq.next_element_seed(BufferSeed)?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))
                }
            }
        }
        d.deserialize_tuple(2, TaggedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_through_postcard_aligned() {
        let v = Value::List(vec![
            Value::Array(Array::from_vec(vec![1.5f64, 2.5, -3.0])),
            Value::Str("x".into()),
            Value::Array(Array::from_vec(vec![7u8, 8, 9])),
        ]);
        let bytes = postcard::to_stdvec(&v).unwrap();
        let back: Value = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, v);
        let Value::List(items) = back else { panic!() };
        let Value::Array(a) = &items[0] else { panic!() };
        assert_eq!(a.as_slice::<f64>().unwrap(), &[1.5, 2.5, -3.0]);
        assert!(a.as_slice::<f32>().is_none());
    }

    #[test]
    fn integers_take_the_narrowest_variant_and_compare_by_number() {
        assert_eq!(Value::from_u128(5), Value::Int(5));
        assert!(matches!(
            Value::from_u128(u64::MAX.into()),
            Value::UInt(u64::MAX)
        ));
        assert!(matches!(
            Value::from_i128(i128::MIN),
            Value::I128(i128::MIN)
        ));
        assert!(matches!(
            Value::from_u128(u128::MAX),
            Value::U128(u128::MAX)
        ));
        assert!(matches!(
            Value::from_u128(i128::MAX as u128),
            Value::I128(i128::MAX)
        ));
        // Variants built by hand compare by number.
        assert_eq!(Value::UInt(5), Value::Int(5));
        assert_eq!(Value::U128(7), Value::I128(7));
        assert_ne!(Value::Int(-1), Value::U128(u128::MAX));
        assert_ne!(Value::Int(1), Value::Float(1.0));
        for v in [
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::I128(i128::MIN),
            Value::U128(u128::MAX),
        ] {
            let back: Value = postcard::from_bytes(&postcard::to_stdvec(&v).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
    }

    #[test]
    fn misaligned_or_ragged_buffers_are_refused() {
        let b = Buffer::copy_from_bytes(&[0u8; 12]);
        assert!(Array::from_buffer(DType::F64, b.clone()).is_err());
        assert!(Array::from_buffer(DType::F32, b).is_ok());
    }
}
