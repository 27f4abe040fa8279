//! Conversions between [`Value`]s and the ordinary Rust types of task signatures.
//!
//! Arguments arrive as [`ArgValue`]s: borrowed references to inputs (never copied), values made
//! in place by nested tasks, and lists or maps of those. [`FromArg`] turns one into a parameter
//! type; [`IntoValue`] turns a task's return value into a [`Value`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::value::{Array, Element, Value};

/// An evaluated argument as a task sees it.
#[derive(Debug)]
pub enum ArgValue<'a> {
    /// A value owned elsewhere: a literal of the graph or the result of another task.
    Ref(&'a Value),
    /// A value made while evaluating the arguments (a nested task's result).
    Owned(Value),
    /// A list of arguments (e.g. a list of keys).
    List(Vec<ArgValue<'a>>),
    /// A map of arguments.
    Map(Vec<(&'a str, ArgValue<'a>)>),
}

impl<'a> ArgValue<'a> {
    /// The value behind a scalar argument, or `None` for lists and maps of arguments.
    pub fn value(&self) -> Option<&Value> {
        match self {
            ArgValue::Ref(v) => Some(v),
            ArgValue::Owned(v) => Some(v),
            _ => None,
        }
    }

    /// What kind of argument this is, for error messages.
    pub fn kind(&self) -> String {
        match self {
            ArgValue::Ref(v) => v.kind(),
            ArgValue::Owned(v) => v.kind(),
            ArgValue::List(_) => "list".into(),
            ArgValue::Map(_) => "map".into(),
        }
    }

    /// Turns this argument into an owned value (copying lists of references).
    pub fn to_value(&self) -> Value {
        match self {
            ArgValue::Ref(v) => (*v).clone(),
            ArgValue::Owned(v) => v.clone(),
            ArgValue::List(l) => Value::List(l.iter().map(ArgValue::to_value).collect()),
            ArgValue::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// A parameter type could not be made from an argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct Mismatch {
    /// What the parameter type accepts.
    pub expected: String,
    /// What the argument was.
    pub got: String,
}

impl Mismatch {
    fn new(expected: impl Into<String>, got: &ArgValue<'_>) -> Mismatch {
        Mismatch {
            expected: expected.into(),
            got: got.kind(),
        }
    }
}

/// A parameter type of a task function.
pub trait FromArg<'a>: Sized {
    /// Makes the parameter from an argument, borrowing from it where the type allows.
    ///
    /// # Errors
    /// [`Mismatch`] when the argument is of another kind.
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch>;
}

/// A task's return type.
pub trait IntoValue {
    /// Converts into a value.
    fn into_value(self) -> Value;
}

/// What a task function may return: any [`IntoValue`], or a `Result` whose error is reported.
pub trait IntoOutput {
    /// Converts into a value or an error message.
    ///
    /// # Errors
    /// The task's own error, as text.
    fn into_output(self) -> Result<Value, String>;
}

impl<T: IntoValue> IntoOutput for T {
    fn into_output(self) -> Result<Value, String> {
        Ok(self.into_value())
    }
}

impl<T: IntoValue, E: Display> IntoOutput for Result<T, E> {
    fn into_output(self) -> Result<Value, String> {
        self.map(IntoValue::into_value).map_err(|e| e.to_string())
    }
}

impl<'a> FromArg<'a> for &'a ArgValue<'a> {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        // `ArgValue` is covariant in its lifetime, which outlives 'a.
        Ok(arg)
    }
}

impl<'a> FromArg<'a> for &'a Value {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        arg.value().ok_or_else(|| Mismatch::new("a value", arg))
    }
}

impl FromArg<'_> for Value {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        Ok(arg.to_value())
    }
}

impl<'a> FromArg<'a> for &'a Array {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(Mismatch::new("an array", arg)),
        }
    }
}

impl FromArg<'_> for Array {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        <&Array>::from_arg(arg).cloned()
    }
}

impl<'a, T: Element> FromArg<'a> for &'a [T] {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Array(a)) => a
                .as_slice::<T>()
                .ok_or_else(|| Mismatch::new(format!("an array of {}", T::DTYPE.name()), arg)),
            _ => Err(Mismatch::new(
                format!("an array of {}", T::DTYPE.name()),
                arg,
            )),
        }
    }
}

impl<'a> FromArg<'a> for &'a str {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Str(s)) => Ok(s),
            _ => Err(Mismatch::new("a string", arg)),
        }
    }
}

impl FromArg<'_> for String {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        <&str>::from_arg(arg).map(str::to_owned)
    }
}

impl FromArg<'_> for bool {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Bool(b)) => Ok(*b),
            _ => Err(Mismatch::new("a bool", arg)),
        }
    }
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl FromArg<'_> for $t {
            fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
                match arg.value() {
                    Some(Value::Int(i)) => <$t>::try_from(*i).map_err(|_| Mismatch {
                        expected: concat!("an integer that fits ", stringify!($t)).into(),
                        got: i.to_string(),
                    }),
                    _ => Err(Mismatch::new(concat!("an integer (", stringify!($t), ")"), arg)),
                }
            }
        }
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                // Integers wider than i64 saturate rather than wrap.
                Value::Int(i64::try_from(self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_args!(i64, i32, u32, u64, usize, u8, i8, u16, i16, isize);

impl FromArg<'_> for f64 {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            _ => Err(Mismatch::new("a number (f64)", arg)),
        }
    }
}

impl FromArg<'_> for f32 {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        f64::from_arg(arg).map(|f| f as f32)
    }
}

impl<'a, T: FromArg<'a>> FromArg<'a> for Option<T> {
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Null) => Ok(None),
            _ => T::from_arg(arg).map(Some),
        }
    }
}

/// Element types of `Vec<T>` parameters and return values.
///
/// Vectors of plain-old-data numbers are arrays (one buffer, viewable as `&[T]`); vectors of
/// anything else are lists.
pub trait VecItem: Sized {
    /// Converts a vector of items into a value.
    fn vec_into_value(v: Vec<Self>) -> Value;
    /// Makes a vector of items from an argument.
    ///
    /// # Errors
    /// [`Mismatch`] when the argument is not a list (or array) of such items.
    fn vec_from_arg(arg: &ArgValue<'_>) -> Result<Vec<Self>, Mismatch>;
}

fn list_items<T, F: FnMut(&ArgValue<'_>) -> Result<T, Mismatch>>(
    arg: &ArgValue<'_>,
    mut f: F,
) -> Result<Vec<T>, Mismatch> {
    match arg {
        ArgValue::List(items) => items.iter().map(f).collect(),
        _ => match arg.value() {
            Some(Value::List(items)) => items.iter().map(|v| f(&ArgValue::Ref(v))).collect(),
            _ => Err(Mismatch::new("a list", arg)),
        },
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
                    return a.as_slice::<$t>().map(<[$t]>::to_vec).ok_or_else(|| {
                        Mismatch::new(concat!("an array of ", stringify!($t)), arg)
                    });
                }
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
list_items!(String, bool, Value, Array, usize);

impl<T: VecItem> VecItem for Vec<T> {
    fn vec_into_value(v: Vec<Self>) -> Value {
        Value::List(v.into_iter().map(T::vec_into_value).collect())
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

impl<T: IntoValue> IntoValue for BTreeMap<String, T> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
}

impl<T: IntoValue> IntoValue for HashMap<String, T> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl IntoValue for Array {
    fn into_value(self) -> Value {
        Value::Array(self)
    }
}

impl IntoValue for () {
    fn into_value(self) -> Value {
        Value::Null
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::Float(self)
    }
}

impl IntoValue for f32 {
    fn into_value(self) -> Value {
        Value::Float(self.into())
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::Str(self)
    }
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::Str(self.to_owned())
    }
}

impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Null, IntoValue::into_value)
    }
}

impl<A: IntoValue, B: IntoValue> IntoValue for (A, B) {
    fn into_value(self) -> Value {
        Value::List(vec![self.0.into_value(), self.1.into_value()])
    }
}

impl<A: IntoValue, B: IntoValue, C: IntoValue> IntoValue for (A, B, C) {
    fn into_value(self) -> Value {
        Value::List(vec![
            self.0.into_value(),
            self.1.into_value(),
            self.2.into_value(),
        ])
    }
}

/// A user type carried through the graph with serde (encoded with postcard).
///
/// Use it as a parameter (`Serde<Stats>`) or a return type (`Serde(stats)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Serde<T>(pub T);

impl<T: Serialize> IntoValue for Serde<T> {
    fn into_value(self) -> Value {
        match postcard::to_stdvec(&self.0) {
            Ok(bytes) => Value::Encoded(
                std::any::type_name::<T>().to_owned(),
                crate::value::Buffer::copy_from_bytes(&bytes),
            ),
            // Serialization of an in-memory value only fails for unsupported serde features
            // (e.g. unknown-length sequences); report it as a value the consumer will refuse.
            Err(e) => Value::Str(format!("<unencodable {}: {e}>", std::any::type_name::<T>())),
        }
    }
}

impl<T: DeserializeOwned> FromArg<'_> for Serde<T> {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        let want = std::any::type_name::<T>();
        match arg.value() {
            Some(Value::Encoded(name, bytes)) if name == want => {
                postcard::from_bytes(bytes.as_bytes())
                    .map(Serde)
                    .map_err(|e| Mismatch {
                        expected: want.into(),
                        got: format!("undecodable {name}: {e}"),
                    })
            }
            _ => Err(Mismatch::new(want, arg)),
        }
    }
}

macro_rules! value_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                v.into_value()
            }
        }
    )*};
}
value_from!(
    i64,
    i32,
    u32,
    u64,
    usize,
    f64,
    f32,
    bool,
    String,
    &str,
    Array,
    ()
);

impl<T: VecItem> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        v.into_value()
    }
}

impl Value {
    /// Converts this value into a Rust type, as a task parameter would be.
    ///
    /// # Errors
    /// [`Mismatch`] when the value is of another kind.
    pub fn to<T: for<'x> FromArg<'x>>(&self) -> Result<T, Mismatch> {
        T::from_arg(&ArgValue::Ref(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_views_do_not_copy() {
        let v = Value::Array(Array::from_vec(vec![1.0f64, 2.0]));
        let arg = ArgValue::Ref(&v);
        let s = <&[f64]>::from_arg(&arg).unwrap();
        let Value::Array(a) = &v else { unreachable!() };
        assert_eq!(s.as_ptr() as usize, a.as_bytes().as_ptr() as usize);
    }

    #[test]
    fn mismatches_name_both_sides() {
        let v = Value::Str("x".into());
        let e = i64::from_arg(&ArgValue::Ref(&v)).unwrap_err();
        assert_eq!(e.to_string(), "expected an integer (i64), got string");
        let e = <&[f64]>::from_arg(&ArgValue::Ref(&Value::Array(Array::from_vec(vec![1u8]))))
            .unwrap_err();
        assert_eq!(e.to_string(), "expected an array of f64, got array of u8");
    }

    #[test]
    fn vectors_of_numbers_are_arrays_and_others_are_lists() {
        assert!(matches!(vec![1.0f64].into_value(), Value::Array(_)));
        assert!(matches!(vec!["a".to_string()].into_value(), Value::List(_)));
        let list = ArgValue::List(vec![
            ArgValue::Owned(Value::Int(1)),
            ArgValue::Owned(Value::Int(2)),
        ]);
        assert_eq!(Vec::<i64>::from_arg(&list).unwrap(), vec![1, 2]);
    }

    #[test]
    fn serde_values_round_trip() {
        #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Stats {
            n: u32,
            mean: f64,
        }
        let v = Serde(Stats { n: 3, mean: 1.5 }).into_value();
        let back: Serde<Stats> = v.to().unwrap();
        assert_eq!(back.0, Stats { n: 3, mean: 1.5 });
        assert!(v.to::<Serde<String>>().is_err());
    }
}
