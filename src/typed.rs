//! Typed tasks: the handle `#[forkgraph::task]` generates, and the types that let the compiler
//! check a graph built in Rust code.
//!
//! `#[forkgraph::task] fn square(x: i64) -> i64` defines, besides the function, a constant
//! `square` (a unit value of a hidden type `square_handle`) that
//!
//! - still calls the function: `square(3)` (it dereferences to the function pointer);
//! - names it in graphs: `square.task(key("a"))`, or `(square, key("a"))` in
//!   [`graph!`](crate::graph!) — the compiler checks the arity and each argument's type against
//!   the parameter ([`ArgFor`]);
//! - is a [`Callable`] for `pool.map(square, items)` and `pool.submit(square, item)`, whose
//!   results are the function's return type ([`TaskReturn`]).
//!
//! A typed call yields a [`TypedTask<R>`]; [`Graph::add`] puts it under a key and returns a
//! [`TypedKey`] of its result type, which later calls take as an argument (checked against the
//! parameter) and [`Scheduler::get_typed`](crate::Scheduler::get_typed) fetches as that type.
//!
//! The registry stays the run-time source of truth: a handle carries only the registered name,
//! and a graph built from handles is validated before anything runs like any other.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use forkgraph_worker::{
    ArgValue, Array, Element, FromArg, IntoValue, Mismatch, Serde, SharedVec, Value, VecItem,
};

use crate::call::Callable;
use crate::graph::{Arg, Graph, IntoArg, IntoNode, KeyRef, Node, Task};
use crate::key::Key;

/// The handle of a `#[forkgraph::task]` function: its registered name and its signature as
/// types. Implemented by the attribute; not meant to be implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a task function",
    label = "not a `#[forkgraph::task]` function",
    note = "mark the function `#[forkgraph::task]`, or name a registered function by a string \
            literal: `(\"name\", args...)`"
)]
pub trait TaskHandle: Copy {
    /// The parameter types as a tuple, with every lifetime made `'static` (`&[f64]` becomes
    /// `&'static [f64]`).
    type Params;
    /// The return type as written, with every lifetime made `'static`.
    type Return;
    /// The name the function is registered under (`#[forkgraph::task(name = "...")]`, or the
    /// function's name).
    fn name(&self) -> &'static str;
}

/// A return type whose task results can be fetched typed: the owned type a result converts
/// back into (`Output`).
///
/// `T` for an owned value type (integers, floats, `bool`, `String`, `Vec<T>`, `Option<T>`,
/// maps, [`Serde<T>`], [`Array`], [`Value`], `()`), `String` for `&str`, `Vec<T>` for
/// [`SharedVec<T>`], tuples of two or three of those, and for `Result<T, E>` that of `T` (an
/// error fails the task). Not [`Rkyv<T>`](crate::Rkyv), whose archived form borrows: fetch it
/// untyped.
#[diagnostic::on_unimplemented(
    message = "the results of a task returning `{Self}` cannot be fetched typed",
    label = "no typed form for `{Self}`",
    note = "return an owned value type (integers, floats, bool, String, Vec<T>, Option<T>, maps, \
            `Serde<T>` for any serde type, Array, Value), or fetch the result untyped with `get`"
)]
pub trait TaskReturn {
    /// What a result of this type converts back into.
    type Output: for<'x> FromArg<'x>;
}

macro_rules! returns_itself {
    ($($t:ty),*) => {$(
        impl TaskReturn for $t {
            type Output = $t;
        }
    )*};
}
returns_itself!(
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
    f32,
    f64,
    bool,
    String,
    Value,
    Array,
    ()
);

impl TaskReturn for &str {
    type Output = String;
}

impl<T: VecItem> TaskReturn for Vec<T> {
    type Output = Vec<T>;
}

impl<T: TaskReturn> TaskReturn for Option<T> {
    type Output = Option<T::Output>;
}

impl<T> TaskReturn for Serde<T>
where
    Serde<T>: for<'x> FromArg<'x>,
{
    type Output = Serde<T>;
}

impl<T: TaskReturn> TaskReturn for BTreeMap<String, T> {
    type Output = BTreeMap<String, T::Output>;
}

impl<T: TaskReturn> TaskReturn for HashMap<String, T> {
    type Output = HashMap<String, T::Output>;
}

impl<T: Element + VecItem> TaskReturn for SharedVec<T> {
    type Output = Vec<T>;
}

impl<A: TaskReturn, B: TaskReturn> TaskReturn for (A, B) {
    type Output = (A::Output, B::Output);
}

impl<A: TaskReturn, B: TaskReturn, C: TaskReturn> TaskReturn for (A, B, C) {
    type Output = (A::Output, B::Output, C::Output);
}

impl<T: TaskReturn, E> TaskReturn for Result<T, E> {
    type Output = T::Output;
}

/// A task built from a handle: `square.task(key("a"))`; `R` is the function's return type.
///
/// Put it in a graph with [`Graph::add`] (which returns a [`TypedKey`] of its result type) or
/// [`Graph::insert`], or pass it to another typed call (it runs nested, in place).
pub struct TypedTask<R> {
    task: Task,
    ret: PhantomData<fn() -> R>,
}

impl<R> TypedTask<R> {
    /// A typed task: used by the code `#[forkgraph::task]` generates.
    #[doc(hidden)]
    pub fn __new(function: &'static str, args: Vec<Arg>) -> TypedTask<R> {
        TypedTask {
            task: Task::new(function, args),
            ret: PhantomData,
        }
    }

    /// The untyped task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The untyped task, without the type.
    pub fn into_task(self) -> Task {
        self.task
    }
}

impl<R> Clone for TypedTask<R> {
    fn clone(&self) -> Self {
        TypedTask {
            task: self.task.clone(),
            ret: PhantomData,
        }
    }
}

impl<R> PartialEq for TypedTask<R> {
    fn eq(&self, other: &Self) -> bool {
        self.task == other.task
    }
}

impl<R> fmt::Debug for TypedTask<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedTask")
            .field("task", &self.task)
            .field("returns", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R> From<TypedTask<R>> for Task {
    fn from(t: TypedTask<R>) -> Task {
        t.task
    }
}

impl<R> IntoNode for TypedTask<R> {
    fn into_node(self) -> Node {
        Node::Task(self.task)
    }
}

impl<R> IntoArg for TypedTask<R> {
    fn into_arg(self) -> Arg {
        Arg::Task(self.task)
    }
}

/// A reference to a key whose value is of type `T`: an argument the compiler checks against
/// the parameter it is passed to, and a key [`Scheduler::get_typed`](crate::Scheduler::get_typed)
/// fetches as a `T`.
///
/// Made by [`typed_key`] or returned by [`Graph::add`] and [`Graph::add_value`]. The type is a
/// promise checked when the graph runs: a key whose value is of another type fails there (its
/// task with a mismatch naming the parameter, `get_typed` with [`Error::TypeMismatch`](crate::Error::TypeMismatch)).
pub struct TypedKey<T> {
    key: Key,
    ty: PhantomData<fn() -> T>,
}

/// Refers to a key whose value is a `T`: `typed_key::<i64>("a")` (see [`TypedKey`]).
pub fn typed_key<T>(k: impl Into<Key>) -> TypedKey<T> {
    TypedKey {
        key: k.into(),
        ty: PhantomData,
    }
}

impl<T> TypedKey<T> {
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// An untyped reference to the same key.
    pub fn untyped(&self) -> KeyRef {
        KeyRef(self.key.clone())
    }
}

impl<T> Clone for TypedKey<T> {
    fn clone(&self) -> Self {
        TypedKey {
            key: self.key.clone(),
            ty: PhantomData,
        }
    }
}

impl<T> PartialEq for TypedKey<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<T> Eq for TypedKey<T> {}

impl<T> Hash for TypedKey<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl<T> fmt::Debug for TypedKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypedKey<{}>({:?})",
            std::any::type_name::<T>(),
            self.key
        )
    }
}

impl<T> From<TypedKey<T>> for Key {
    fn from(k: TypedKey<T>) -> Key {
        k.key
    }
}

impl<T> From<&TypedKey<T>> for Key {
    fn from(k: &TypedKey<T>) -> Key {
        k.key.clone()
    }
}

impl<T> IntoArg for TypedKey<T> {
    fn into_arg(self) -> Arg {
        Arg::Key(self.key)
    }
}

impl<T> IntoNode for TypedKey<T> {
    fn into_node(self) -> Node {
        Node::Alias(self.key)
    }
}

impl Graph {
    /// Sets `key` to a typed task and returns a typed reference to it, for later calls and
    /// for [`Scheduler::get_typed`](crate::Scheduler::get_typed).
    ///
    /// ```
    /// use forkgraph::{Graph, Scheduler, SyncScheduler};
    ///
    /// #[forkgraph::task]
    /// fn square(x: i64) -> i64 {
    ///     x * x
    /// }
    ///
    /// let mut g = Graph::new();
    /// let a = g.add_value("a", 3_i64);
    /// let b = g.add("b", square.task(a));
    /// let c = g.add("c", square.task(b));
    /// assert_eq!(SyncScheduler.get_typed(&g, &c).unwrap(), 81);
    /// ```
    pub fn add<R: TaskReturn>(
        &mut self,
        key: impl Into<Key>,
        task: TypedTask<R>,
    ) -> TypedKey<R::Output> {
        let key = key.into();
        self.insert(key.clone(), Node::Task(task.task));
        typed_key(key)
    }

    /// Sets `key` to a literal value and returns a typed reference to it.
    pub fn add_value<T: TaskReturn + IntoValue>(
        &mut self,
        key: impl Into<Key>,
        value: T,
    ) -> TypedKey<T::Output> {
        let key = key.into();
        self.insert(key.clone(), Node::Value(value.into_value()));
        typed_key(key)
    }
}

/// An argument a typed call accepts for a parameter of type `P` (with its lifetimes made
/// `'static`: `&'static [f64]` stands for `&[f64]`).
///
/// - a literal of the parameter's type, or of a type that converts into it without loss:
///   `String`/`&str` for `&str`, `Vec<T>`/`&[T]`/`[T; N]` for `&[T]`, `Vec<T>` of arguments for
///   `Vec<P>`, `Option`s and maps of arguments, [`Serde<T>`] for `Serde<T>`, any value for
///   [`Value`];
/// - a [`TypedKey<T>`] or a nested [`TypedTask`] whose result type would be accepted as a
///   literal;
/// - an untyped [`key`](crate::key), [`Value`], [`Arg`] or [`Task`]: checked when the graph
///   runs, as for graphs built from data.
///
/// A value `T` is also accepted for an `Option<T>` parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed where the task function takes `{P}`",
    label = "expected an argument for a `{P}` parameter",
    note = "a typed call takes a value of the parameter's type (or one converting to it \
            losslessly, such as `&str` for `String`, `Vec<T>` for `&[T]`), a `typed_key::<T>(..)` \
            or a task whose result has such a type, or an untyped `key(..)` (checked when the \
            graph runs); a user type travels as `Serde<T>`. (`&'static T` here stands for a \
            `&T` parameter.)"
)]
pub trait ArgFor<P> {
    /// The argument.
    fn into_task_arg(self) -> Arg;

    /// A `Vec` of such arguments, as one argument (literal vectors of numbers become arrays).
    #[doc(hidden)]
    fn vec_into_task_arg(v: Vec<Self>) -> Arg
    where
        Self: Sized,
    {
        Arg::List(v.into_iter().map(Self::into_task_arg).collect())
    }
}

/// Argument types that are not tuples: a one-parameter function's `map` items may be given bare.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` as an item of a one-parameter task function is ambiguous",
    label = "write the item as a one-element tuple: `(item,)`",
    note = "a tuple item lists the arguments; a tuple passed as the one argument is written \
            `((a, b),)`"
)]
pub trait Bare {}

/// An item of `map`/`submit` for a function whose parameters are `Ps` (a tuple): a tuple of
/// [`ArgFor`] arguments, or for one parameter the argument itself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an item for a task function taking `{Ps}`",
    label = "expected a tuple of arguments for `{Ps}`",
    note = "each item is a tuple with one argument per parameter (for one parameter, the \
            argument itself also works)"
)]
pub trait ItemFor<Ps> {
    /// The arguments of one call.
    fn into_args(self) -> Vec<Arg>;
}

fn value_arg(v: impl IntoValue) -> Arg {
    Arg::Value(v.into_value())
}

/// Value types `T` accepted for parameters `T` (their vectors as arrays or encoded lists),
/// [`Value`] and `&Value`.
macro_rules! value_args {
    ($($t:ty),*) => {$(
        impl ArgFor<$t> for $t {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
            fn vec_into_task_arg(v: Vec<Self>) -> Arg {
                value_arg(v)
            }
        }
        impl ArgFor<Value> for $t {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
        }
        impl ArgFor<&'static Value> for $t {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
        }
        impl ArgFor<Option<$t>> for $t {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
        }
        impl Bare for $t {}
    )*};
}
value_args!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, bool, String);

impl ArgFor<&'static str> for String {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<String> for &str {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<&'static str> for &str {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<Value> for &str {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<&'static Value> for &str {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl Bare for &str {}

/// Arrays accepted for [`Value`], `&Value` and `&ArgValue` parameters.
macro_rules! any_value_params {
    ($([$($gen:tt)*] $t:ty => $conv:expr;)*) => {$(
        impl<$($gen)*> ArgFor<Value> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value($conv(self))
            }
        }
        impl<$($gen)*> ArgFor<&'static Value> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value($conv(self))
            }
        }
        impl<$($gen)*> ArgFor<&'static ArgValue<'static>> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value($conv(self))
            }
        }
        impl<$($gen)*> Bare for $t {}
    )*};
}
any_value_params! {
    [] Array => Value::Array;
    ['a] &'a Array => |a: &Array| Value::Array(a.clone());
}

impl ArgFor<Array> for Array {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<&'static Array> for Array {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl ArgFor<Array> for &Array {
    fn into_task_arg(self) -> Arg {
        value_arg(self.clone())
    }
}

impl ArgFor<&'static Array> for &Array {
    fn into_task_arg(self) -> Arg {
        value_arg(self.clone())
    }
}

impl<P, T: ArgFor<P>> ArgFor<Vec<P>> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        T::vec_into_task_arg(self)
    }
}

impl<P, T: ArgFor<P>> ArgFor<Option<Vec<P>>> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        T::vec_into_task_arg(self)
    }
}

impl<T: VecItem> ArgFor<Value> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T: VecItem> ArgFor<&'static Value> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T: Element> ArgFor<&'static [T]> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        Arg::Value(Value::Array(Array::from_vec(self)))
    }
}

impl<T: Element> ArgFor<Array> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        Arg::Value(Value::Array(Array::from_vec(self)))
    }
}

impl<T: Element> ArgFor<&'static Array> for Vec<T> {
    fn into_task_arg(self) -> Arg {
        Arg::Value(Value::Array(Array::from_vec(self)))
    }
}

impl<T> Bare for Vec<T> {}

/// Borrowed slices and arrays of elements: copied into an array.
macro_rules! slice_args {
    ($([$($gen:tt)*] $t:ty;)*) => {$(
        impl<$($gen)*> ArgFor<&'static [T]> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> ArgFor<Vec<T>> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> ArgFor<Array> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> ArgFor<&'static Array> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> ArgFor<Value> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> ArgFor<&'static Value> for $t {
            fn into_task_arg(self) -> Arg {
                Arg::Value(Value::Array(Array::from_vec(self.to_vec())))
            }
        }
        impl<$($gen)*> Bare for $t {}
    )*};
}
slice_args! {
    ['a, T: Element] &'a [T];
    ['a, T: Element] &'a Vec<T>;
    [T: Element, const N: usize] [T; N];
}

impl<T: Element> ArgFor<&'static [T]> for SharedVec<T> {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T: Element> ArgFor<Array> for SharedVec<T> {
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T: Element> Bare for SharedVec<T> {}

impl<P, T: ArgFor<P>> ArgFor<Option<P>> for Option<T> {
    fn into_task_arg(self) -> Arg {
        match self {
            Some(t) => t.into_task_arg(),
            None => Arg::Value(Value::Null),
        }
    }
}

impl<T> Bare for Option<T> {}

/// Tuples: a list of their arguments, for tuple parameters and for [`Value`].
macro_rules! tuple_args {
    ($(($($p:ident $a:ident $v:ident),+);)*) => {$(
        impl<$($p, $a: ArgFor<$p>),+> ArgFor<($($p,)+)> for ($($a,)+) {
            fn into_task_arg(self) -> Arg {
                let ($($v,)+) = self;
                Arg::List(vec![$($v.into_task_arg()),+])
            }
        }
        impl<$($a: IntoValue),+> ArgFor<Value> for ($($a,)+) {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
        }
        impl<$($a: IntoValue),+> ArgFor<&'static Value> for ($($a,)+) {
            fn into_task_arg(self) -> Arg {
                value_arg(self)
            }
        }
    )*};
}
tuple_args! {
    (PA A a, PB B b);
    (PA A a, PB B b, PC C c);
}

/// # Panics
/// When `T`'s `Serialize` fails (as [`IntoValue::into_value`] for [`Serde`]).
impl<T> ArgFor<Serde<T>> for Serde<T>
where
    Serde<T>: IntoValue + VecItem,
{
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
    fn vec_into_task_arg(v: Vec<Self>) -> Arg {
        value_arg(v)
    }
}

impl<T> ArgFor<Value> for Serde<T>
where
    Serde<T>: IntoValue,
{
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T> ArgFor<Option<Serde<T>>> for Serde<T>
where
    Serde<T>: IntoValue,
{
    fn into_task_arg(self) -> Arg {
        value_arg(self)
    }
}

impl<T> Bare for Serde<T> {}

macro_rules! map_args {
    ($($map:ident),*) => {$(
        impl<P, T: ArgFor<P>> ArgFor<$map<String, P>> for $map<String, T> {
            fn into_task_arg(self) -> Arg {
                let mut entries: Vec<(String, Arg)> =
                    self.into_iter().map(|(k, v)| (k, v.into_task_arg())).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Arg::Map(entries)
            }
        }
        impl<T> Bare for $map<String, T> {}
    )*};
}
map_args!(BTreeMap, HashMap);

// Either map feeds the other: both are a map at run time, whose order a task cannot rely on.
macro_rules! cross_map_args {
    ($($from:ident => $to:ident),*) => {$(
        impl<P, T: ArgFor<P>> ArgFor<$to<String, P>> for $from<String, T> {
            fn into_task_arg(self) -> Arg {
                let mut entries: Vec<(String, Arg)> =
                    self.into_iter().map(|(k, v)| (k, v.into_task_arg())).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Arg::Map(entries)
            }
        }
    )*};
}
cross_map_args!(BTreeMap => HashMap, HashMap => BTreeMap);

impl<P, T: ArgFor<P>> ArgFor<P> for TypedKey<T> {
    fn into_task_arg(self) -> Arg {
        Arg::Key(self.key)
    }
}

impl<T> Bare for TypedKey<T> {}

impl<P, T: ArgFor<P>> ArgFor<P> for &TypedKey<T> {
    fn into_task_arg(self) -> Arg {
        Arg::Key(self.key.clone())
    }
}

impl<T> Bare for &TypedKey<T> {}

impl<P, R> ArgFor<P> for TypedTask<R>
where
    R: TaskReturn,
    R::Output: ArgFor<P>,
{
    fn into_task_arg(self) -> Arg {
        Arg::Task(self.task)
    }
}

impl<R> Bare for TypedTask<R> {}

/// Untyped arguments, accepted for any parameter and checked when the graph runs.
macro_rules! untyped_args {
    ($($t:ty => $conv:expr;)*) => {$(
        impl<P> ArgFor<P> for $t {
            fn into_task_arg(self) -> Arg {
                $conv(self)
            }
        }
        impl Bare for $t {}
    )*};
}
untyped_args! {
    KeyRef => |k: KeyRef| Arg::Key(k.0);
    Value => Arg::Value;
    &Value => |v: &Value| Arg::Value(v.clone());
    Arg => |a: Arg| a;
    Task => Arg::Task;
}

impl ItemFor<()> for () {
    fn into_args(self) -> Vec<Arg> {
        Vec::new()
    }
}

impl<P0, A0: ArgFor<P0> + Bare> ItemFor<(P0,)> for A0 {
    fn into_args(self) -> Vec<Arg> {
        vec![self.into_task_arg()]
    }
}

macro_rules! tuple_items {
    ($(($($p:ident $a:ident $v:ident),+);)*) => {$(
        impl<$($p, $a: ArgFor<$p>),+> ItemFor<($($p,)+)> for ($($a,)+) {
            fn into_args(self) -> Vec<Arg> {
                let ($($v,)+) = self;
                vec![$($v.into_task_arg()),+]
            }
        }
    )*};
}
tuple_items! {
    (P0 A0 a0);
    (P0 A0 a0, P1 A1 a1);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6, P7 A7 a7);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6, P7 A7 a7, P8 A8 a8);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6, P7 A7 a7, P8 A8 a8,
     P9 A9 a9);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6, P7 A7 a7, P8 A8 a8,
     P9 A9 a9, P10 A10 a10);
    (P0 A0 a0, P1 A1 a1, P2 A2 a2, P3 A3 a3, P4 A4 a4, P5 A5 a5, P6 A6 a6, P7 A7 a7, P8 A8 a8,
     P9 A9 a9, P10 A10 a10, P11 A11 a11);
}

impl<H, A> Callable<A> for H
where
    H: TaskHandle,
    A: ItemFor<H::Params>,
    H::Return: TaskReturn,
{
    type Output = <H::Return as TaskReturn>::Output;

    fn function(&self) -> &str {
        self.name()
    }

    fn call_args(&self, item: A) -> Vec<Arg> {
        item.into_args()
    }

    fn output(&self, value: Value) -> Result<Self::Output, Mismatch> {
        value.to()
    }
}

/// Used by `graph!`: checks that `h` is a task handle.
#[doc(hidden)]
pub fn __handle<H: TaskHandle>(h: &H) -> &H {
    h
}
