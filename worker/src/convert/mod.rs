//! Conversions between [`Value`]s and the ordinary Rust types of task signatures.
//!
//! Arguments arrive as [`ArgValue`]s: borrowed references to inputs (never copied), values made
//! in place by nested tasks, and lists or maps of those. [`FromArg`] turns one into a parameter
//! type; [`IntoValue`] turns a task's return value into a [`Value`].

use std::fmt::Display;

use crate::failure::ReturnedError;
use crate::registry::CallError;
use crate::value::{Array, Buffer, Element, Integer, Value};

mod collections;
mod serde_values;

pub use collections::VecItem;
pub use serde_values::Serde;

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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task function's parameter type",
    label = "not a task parameter type",
    note = "task parameters are numbers, bool, String/&str, Vec<T>, &[T] of numbers, Option<T>, \
            maps from String, Value, Array, `Serde<T>` or `Archived<T>`: use `Serde<{Self}>` \
            for a serde type (`#[derive(Serialize, Deserialize)]`)"
)]
pub trait FromArg<'a>: Sized {
    /// Makes the parameter from an argument, borrowing from it where the type allows.
    ///
    /// # Errors
    /// [`Mismatch`] when the argument is of another kind.
    fn from_arg(arg: &'a ArgValue<'_>) -> Result<Self, Mismatch>;
}

/// A task's return type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task function's return type",
    label = "not a task result type",
    note = "task results are numbers, bool, String/&str, Vec<T>, Option<T>, maps from String, \
            tuples of two or three, Value, Array, SharedVec<T>, `Serde<T>` or `Rkyv<T>` (or a \
            `Result` of one): use `Serde<{Self}>` for a serde type"
)]
pub trait IntoValue: Sized {
    /// Converts into a value.
    ///
    /// # Panics
    /// When the value cannot be encoded (only [`Serde`] and [`Rkyv`](crate::Rkyv) values, and
    /// containers of them, can fail); [`try_into_value`](Self::try_into_value) reports it
    /// instead, and task results go through it.
    fn into_value(self) -> Value;

    /// Converts into a value, or says why the value cannot be encoded.
    ///
    /// # Errors
    /// [`EncodeError`] with the encoder's message.
    fn try_into_value(self) -> Result<Value, EncodeError> {
        Ok(self.into_value())
    }
}

/// A value could not be encoded (its `Serialize` implementation failed, or it uses a serde
/// feature the encoding does not support).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{type_name}: {message}")]
pub struct EncodeError {
    /// The Rust type that failed.
    pub type_name: String,
    /// The encoder's message.
    pub message: String,
}

/// What a task function may return: any [`IntoValue`], or a `Result` whose error is reported.
///
/// `#[forkgraph::task]` does more than this trait for errors: an error that implements
/// `std::error::Error` (or dereferences to one, like `anyhow::Error`) is reported with its type
/// name and whole `source()` chain and, in the process that ran it, kept as a value (see
/// [`ReturnedError`]). Through this trait alone, an error is `Display`ed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task function's return type",
    label = "not a task result type",
    note = "task results are numbers, bool, String/&str, Vec<T>, Option<T>, maps from String, \
            tuples of two or three, Value, Array, SharedVec<T>, `Serde<T>` or `Rkyv<T>`, or a \
            `Result` of one whose error is `Display`: use `Serde<{Self}>` for a serde type"
)]
pub trait IntoOutput {
    /// Converts into a value or an error.
    ///
    /// # Errors
    /// [`CallError::Returned`] with the task's own error, [`CallError::Unencodable`] when the
    /// value cannot be encoded.
    fn into_output(self) -> Result<Value, CallError>;
}

impl<T: IntoValue> IntoOutput for T {
    fn into_output(self) -> Result<Value, CallError> {
        self.try_into_value().map_err(CallError::Unencodable)
    }
}

impl<T: IntoValue, E: Display> IntoOutput for Result<T, E> {
    fn into_output(self) -> Result<Value, CallError> {
        match self {
            Ok(v) => v.into_output(),
            Err(e) => Err(CallError::Returned(ReturnedError::from_display_ref(&e))),
        }
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
    ($($t:ty => $from:ident as $wide:ty),*) => {$(
        impl FromArg<'_> for $t {
            fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
                let Some(i) = arg.value().and_then(Value::as_integer) else {
                    return Err(Mismatch::new(concat!("an integer (", stringify!($t), ")"), arg));
                };
                i.to::<$t>().ok_or_else(|| Mismatch {
                    expected: format!(
                        "an integer that fits {} ({}..={})",
                        stringify!($t),
                        <$t>::MIN,
                        <$t>::MAX
                    ),
                    got: i.to_string(),
                })
            }
        }
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                // Widening to 128 bits is lossless for every integer type.
                Value::$from(self as $wide)
            }
        }
    )*};
}
int_args!(
    i8 => from_i128 as i128,
    i16 => from_i128 as i128,
    i32 => from_i128 as i128,
    i64 => from_i128 as i128,
    i128 => from_i128 as i128,
    isize => from_i128 as i128,
    u8 => from_u128 as u128,
    u16 => from_u128 as u128,
    u32 => from_u128 as u128,
    u64 => from_u128 as u128,
    u128 => from_u128 as u128,
    usize => from_u128 as u128
);

/// The integer as an `f64`, when `f64` holds it exactly.
fn exact_f64(i: Integer) -> Option<f64> {
    /// 2^127, exactly.
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    // `as` rounds to the nearest float and saturates back, so a round trip that gives the same
    // number (below the saturation point) is exact.
    match i {
        Integer::Signed(i) => {
            let f = i as f64;
            (f < TWO_127 && f as i128 == i).then_some(f)
        }
        Integer::Unsigned(u) => {
            let f = u as f64;
            (f < 2.0 * TWO_127 && f as u128 == u).then_some(f)
        }
    }
}

fn float_arg(arg: &ArgValue<'_>, ty: &str, exact: impl Fn(f64) -> bool) -> Result<f64, Mismatch> {
    match arg.value() {
        Some(Value::Float(f)) => Ok(*f),
        Some(v) => match v.as_integer() {
            Some(i) => exact_f64(i).filter(|f| exact(*f)).ok_or_else(|| Mismatch {
                expected: format!("a number that {ty} holds exactly"),
                got: format!("the integer {i}"),
            }),
            None => Err(Mismatch::new(format!("a number ({ty})"), arg)),
        },
        None => Err(Mismatch::new(format!("a number ({ty})"), arg)),
    }
}

impl FromArg<'_> for f64 {
    /// A float, or an integer that `f64` holds exactly (integers above 2^53 that would round are
    /// refused).
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        float_arg(arg, "f64", |_| true)
    }
}

impl FromArg<'_> for f32 {
    /// A float (rounded to `f32`), or an integer that `f32` holds exactly.
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        float_arg(arg, "f32", |f| f64::from(f as f32) == f).map(|f| f as f32)
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

impl FromArg<'_> for () {
    fn from_arg(arg: &ArgValue<'_>) -> Result<Self, Mismatch> {
        match arg.value() {
            Some(Value::Null) => Ok(()),
            _ => Err(Mismatch::new("no value (())", arg)),
        }
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
    fn try_into_value(self) -> Result<Value, EncodeError> {
        self.map_or(Ok(Value::Null), IntoValue::try_into_value)
    }
}

impl<A: IntoValue, B: IntoValue> IntoValue for (A, B) {
    fn into_value(self) -> Value {
        Value::List(vec![self.0.into_value(), self.1.into_value()])
    }
    fn try_into_value(self) -> Result<Value, EncodeError> {
        Ok(Value::List(vec![
            self.0.try_into_value()?,
            self.1.try_into_value()?,
        ]))
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
    fn try_into_value(self) -> Result<Value, EncodeError> {
        Ok(Value::List(vec![
            self.0.try_into_value()?,
            self.1.try_into_value()?,
            self.2.try_into_value()?,
        ]))
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
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
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

/// `[1, 2, 3]` as `vec![1, 2, 3]`: a literal list or array (Dask's `"a": [1, 2, 3]`).
impl<T: VecItem, const N: usize> From<[T; N]> for Value {
    fn from(v: [T; N]) -> Value {
        Vec::from(v).into_value()
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
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
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
