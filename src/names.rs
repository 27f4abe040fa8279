//! Registered names as [`Callable`]s: `pool.map("square", [1, 2, 3])` calls the function
//! registered as `square` with one argument per item, `pool.map("add", [Args(..), ..])` with
//! several; the results are [`Value`]s.

use forkgraph_worker::{Mismatch, Value};

use crate::call::Callable;
use crate::graph::{Arg, IntoArg};

/// Several arguments of one call of a registered name: `pool.submit("add", Args::new([1, 2]))`.
/// (A single argument needs no wrapper: any [`IntoArg`] is one.)
#[derive(Debug, Clone, PartialEq)]
pub struct Args(pub Vec<Arg>);

impl Args {
    /// The arguments, each converted with [`IntoArg`].
    pub fn new<A: IntoArg>(args: impl IntoIterator<Item = A>) -> Args {
        Args(args.into_iter().map(IntoArg::into_arg).collect())
    }

    /// These arguments and one more: `Args::new(["a", "b"]).with(3)`.
    #[must_use]
    pub fn with(mut self, arg: impl IntoArg) -> Args {
        self.0.push(arg.into_arg());
        self
    }
}

impl From<Vec<Arg>> for Args {
    fn from(args: Vec<Arg>) -> Args {
        Args(args)
    }
}

macro_rules! name_callable {
    ($($t:ty),*) => {$(
        impl<A: IntoArg> Callable<A> for $t {
            type Output = Value;

            fn function(&self) -> &str {
                self
            }

            fn call_args(&self, item: A) -> Vec<Arg> {
                vec![item.into_arg()]
            }

            fn output(&self, value: Value) -> Result<Value, Mismatch> {
                Ok(value)
            }
        }

        impl Callable<Args> for $t {
            type Output = Value;

            fn function(&self) -> &str {
                self
            }

            fn call_args(&self, item: Args) -> Vec<Arg> {
                item.0
            }

            fn output(&self, value: Value) -> Result<Value, Mismatch> {
                Ok(value)
            }
        }

    )*};
}

name_callable!(&str, String, &String);
