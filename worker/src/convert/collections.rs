//! Vectors, maps and lists as parameters and results.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::value::DType;

/// Element types of `Vec<T>` parameters and return values.
///
/// Vectors of plain-old-data numbers are arrays (one buffer, viewable as `&[T]`); vectors of
/// anything else are lists.
pub trait VecItem: Sized {
    /// Converts a vector of items into a value.
    fn vec_into_value(v: Vec<Self>) -> Value;
    /// Converts a vector of items into a value, or says why one cannot be encoded.
    ///
    /// # Errors
    /// [`EncodeError`] for the first item that cannot be encoded.
    fn vec_try_into_value(v: Vec<Self>) -> Result<Value, EncodeError> {
        Ok(Self::vec_into_value(v))
    }
    /// Makes a vector of items from an argument.
    ///
    /// # Errors
    /// [`Mismatch`] when the argument is not a list (or array) of such items.
    fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch>;
}

pub(super) fn list_items<T, F: FnMut(&ArgValue<'_>) -> Result<T, Mismatch>>(
    arg: &ArgValue<'_>,
    mut f: F,
) -> Result<Vec<T>, Mismatch> {
    match arg {
        ArgValue::List(items) => items.iter().map(f).collect(),
        _ => match arg.value() {
            Some(Value::List(items)) => items.iter().map(|v| f(&ArgValue::Ref(v))).collect(),
            // An array of another element type (`vec![1, 2, 3]` is an array of i32): each
            // element converts as a number of its own would, so widening works and an element
            // that does not fit is refused, naming it.
            Some(Value::Array(a)) => array_elements(a, |v| f(&ArgValue::Owned(v))),
            _ => Err(Mismatch::new("a list", arg)),
        },
    }
}

/// Calls `f` on each element of an array as a scalar value, collecting the results.
fn array_elements<T, F: FnMut(Value) -> Result<T, Mismatch>>(
    a: &Array,
    mut f: F,
) -> Result<Vec<T>, Mismatch> {
    fn each<E: Element, T, F: FnMut(Value) -> Result<T, Mismatch>>(
        a: &Array,
        to: impl Fn(E) -> Value,
        f: &mut F,
    ) -> Result<Vec<T>, Mismatch> {
        let items = a.as_slice::<E>().expect("the array's own element type");
        items.iter().map(|&x| f(to(x))).collect()
    }
    match a.dtype() {
        DType::U8 => each(a, |x: u8| Value::UInt(u64::from(x)), &mut f),
        DType::I32 => each(a, |x: i32| Value::Int(i64::from(x)), &mut f),
        DType::I64 => each(a, Value::Int, &mut f),
        DType::U32 => each(a, |x: u32| Value::UInt(u64::from(x)), &mut f),
        DType::U64 => each(a, Value::UInt, &mut f),
        DType::F32 => each(a, |x: f32| Value::Float(f64::from(x)), &mut f),
        DType::F64 => each(a, Value::Float, &mut f),
    }
}

macro_rules! array_items {
    ($($t:ty),*) => {$(
        impl VecItem for $t {
            fn vec_into_value(v: Vec<Self>) -> Value {
                Value::Array(Array::from_vec(v))
            }
            fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch> {
                if let Some(Value::Array(a)) = arg.value() {
                    if let Some(items) = a.as_slice::<$t>() {
                        return Ok(items.to_vec());
                    }
                }
                // A list, or an array of another element type, element by element.
                list_items(arg, |a| <$t>::from_arg(a))
            }
        }
    )*};
}
array_items!(u8, i32, i64, u32, u64, f32, f64);

macro_rules! list_items {
    ($($t:ty),*) => {$(
        impl VecItem for $t {
            fn vec_into_value(v: Vec<Self>) -> Value {
                Value::List(v.into_iter().map(IntoValue::into_value).collect())
            }
            fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch> {
                list_items(arg, |a| <$t>::from_arg(a))
            }
        }
    )*};
}
list_items!(String, bool, Value, Array, usize, isize, i8, i16, u16, i128, u128);

impl<T: VecItem> VecItem for Vec<T> {
    fn vec_into_value(v: Vec<Self>) -> Value {
        Value::List(v.into_iter().map(T::vec_into_value).collect())
    }
    fn vec_try_into_value(v: Vec<Self>) -> Result<Value, EncodeError> {
        v.into_iter()
            .map(T::vec_try_into_value)
            .collect::<Result<_, _>>()
            .map(Value::List)
    }
    fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch> {
        list_items(arg, |a| T::vec_from_arg(a))
    }
}

impl<T: VecItem> FromArg<'_> for Vec<T> {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        T::vec_from_arg(arg)
    }
}

impl<T: VecItem> IntoValue for Vec<T> {
    fn into_value(self) -> Value {
        T::vec_into_value(self)
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        T::vec_try_into_value(self)
    }
}

impl<'a, T: Element> FromArg<'a> for Vec<&'a [T]> {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg {
            ArgValue::List(items) => items.iter().map(<&[T]>::from_arg).collect(),
            _ => match arg.value() {
                Some(Value::List(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::Array(a) => a.as_slice::<T>().ok_or_else(|| Mismatch {
                            expected: format!("arrays of {}", T::DTYPE.name()),
                            got: v.kind(),
                        }),
                        _ => Err(Mismatch {
                            expected: format!("arrays of {}", T::DTYPE.name()),
                            got: v.kind(),
                        }),
                    })
                    .collect(),
                _ => Err(Mismatch::new("a list", arg)),
            },
        }
    }
}

fn map_items<T, F: FnMut(&ArgValue<'_>) -> Result<T, Mismatch>>(
    arg: &ArgValue<'_>,
    mut f: F,
) -> Result<Vec<(String, T)>, Mismatch> {
    match arg {
        ArgValue::Map(items) => items
            .iter()
            .map(|(k, v)| Ok((k.to_string(), f(v)?)))
            .collect(),
        _ => match arg.value() {
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| Ok((k.clone(), f(&ArgValue::Ref(v))?)))
                .collect(),
            _ => Err(Mismatch::new("a map", arg)),
        },
    }
}

impl<T: for<'x> FromArg<'x>> FromArg<'_> for BTreeMap<String, T> {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        Ok(map_items(arg, |a| T::from_arg(a))?.into_iter().collect())
    }
}

impl<T: for<'x> FromArg<'x>> FromArg<'_> for HashMap<String, T> {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        Ok(map_items(arg, |a| T::from_arg(a))?.into_iter().collect())
    }
}

/// A tuple from a list of as many arguments (what a task returning a tuple produces).
macro_rules! tuple_args {
    ($n:literal: $($t:ident $v:ident),+) => {
        impl<$($t: for<'x> FromArg<'x>),+> FromArg<'_> for ($($t,)+) {
            fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
                let items = list_items(arg, |a| Ok(a.to_value()))?;
                let [$($v),+] = <[Value; $n]>::try_from(items)
                    .map_err(|_| Mismatch::new(concat!("a list of ", $n, " items"), arg))?;
                Ok(($($t::from_arg(&ArgValue::Ref(&$v))?,)+))
            }
        }
    };
}
tuple_args!(2: A a, B b);
tuple_args!(3: A a, B b, C c);

impl<T: IntoValue> IntoValue for BTreeMap<String, T> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        try_map(self)
    }
}

impl<T: IntoValue> IntoValue for HashMap<String, T> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        try_map(self)
    }
}

fn try_map<T: IntoValue>(m: impl IntoIterator<Item = (String, T)>) -> Result<Value, EncodeError> {
    m.into_iter()
        .map(|(k, v)| Ok((k, v.try_into_value()?)))
        .collect::<Result<_, _>>()
        .map(Value::Map)
}
