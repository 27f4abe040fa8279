//! The table of task functions, filled at link time.
//!
//! `#[forkgraph::task]` puts one [`Function`] per annotated function into the [`FUNCTIONS`]
//! distributed slice (linkme). The table is therefore complete before `main` runs, in the parent
//! and in every worker started from the same executable, and a function's index in the sorted
//! table ([`FnId`]) means the same function in all of them ([`Registry::digest`] checks it).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use crate::convert::{ArgValue, EncodeError, FromArg, IntoOutput, Mismatch};
use crate::failure::ReturnedError;
use crate::value::Value;

/// The signature every registered function is adapted to.
pub type CallFn = fn(&[ArgValue<'_>]) -> Result<Value, CallError>;

/// One registered task function.
#[derive(Debug)]
pub struct Function {
    /// The name graphs use to refer to it.
    pub name: &'static str,
    /// The Rust module that defines it.
    pub module: &'static str,
    /// Parameter types as written, for error messages.
    pub params: &'static [&'static str],
    /// The adapter that converts arguments, calls the function and converts its result.
    pub call: CallFn,
}

/// Every registered task function of this executable.
#[linkme::distributed_slice]
pub static FUNCTIONS: [Function];

/// Index of a function in the sorted [`Registry`]; the same in every process of one executable.
pub type FnId = u32;

/// Why a call of a task function did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// The graph gave the wrong number of arguments.
    #[error("takes {expected} argument(s) but the task gives {got}")]
    Arity {
        /// Parameters of the function.
        expected: usize,
        /// Arguments in the task.
        got: usize,
    },
    /// An argument could not be converted to the parameter type.
    #[error("argument {position} ({param}): expected {expected}, got {got}")]
    Mismatch {
        /// Zero-based position of the argument.
        position: usize,
        /// The parameter type as written.
        param: String,
        /// What the parameter accepts.
        expected: String,
        /// What the argument was.
        got: String,
    },
    /// The function returned an error: its type name, its `source()` chain, and (on the sync and
    /// thread schedulers) the error value itself; see [`ReturnedError`].
    #[error("{0}")]
    Returned(ReturnedError),
    /// The function's result could not be encoded (a `Serde<T>` whose `Serialize` failed).
    #[error("cannot encode its result: {0}")]
    Unencodable(EncodeError),
    /// The task produced no value, for a reason given as text (for example, it was not run
    /// because an earlier task of its chain failed).
    #[error("{0}")]
    Failed(String),
    /// The function panicked.
    #[error("panicked: {0}")]
    Panicked(String),
    /// No function of this id or name is registered.
    #[error("no task function `{0}` is registered in this executable")]
    Unknown(String),
}

/// The registered functions, sorted by name.
#[derive(Debug)]
pub struct Registry {
    list: Vec<&'static Function>,
    by_name: HashMap<&'static str, FnId>,
    duplicates: Vec<(&'static str, Vec<&'static str>)>,
    digest: u64,
}

impl Registry {
    /// The registry of this executable.
    pub fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| Registry::build(FUNCTIONS.iter()))
    }

    fn build(fns: impl Iterator<Item = &'static Function>) -> Registry {
        let mut list: Vec<&'static Function> = fns.collect();
        list.sort_by(|a, b| (a.name, a.module).cmp(&(b.name, b.module)));
        let mut by_name = HashMap::with_capacity(list.len());
        let mut duplicates: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        let mut h = DefaultHasher::new();
        for (i, f) in list.iter().enumerate() {
            (f.name, f.module, f.params).hash(&mut h);
            if let Some(&first) = by_name.get(f.name) {
                let first: &Function = list[first as usize];
                match duplicates.iter_mut().find(|(n, _)| *n == f.name) {
                    Some((_, mods)) => mods.push(f.module),
                    None => duplicates.push((f.name, vec![first.module, f.module])),
                }
            } else {
                by_name.insert(f.name, i as FnId);
            }
        }
        Registry {
            list,
            by_name,
            duplicates,
            digest: h.finish(),
        }
    }

    /// Finds a function by name, or by a path that ends with its module's path
    /// (`tasks::clean`, `mycrate::tasks::clean`).
    ///
    /// # Errors
    /// A message naming the function when it is not registered, or registered more than once.
    pub fn lookup(&self, name: &str) -> Result<FnId, String> {
        if let Some((_, modules)) = self.duplicates.iter().find(|(n, _)| *n == name) {
            return Err(format!(
                "task function `{name}` is registered more than once (in {}); give one a \
                 distinct name with #[forkgraph::task(name = \"...\")]",
                modules.join(", ")
            ));
        }
        if let Some(id) = self.by_name.get(name) {
            return Ok(*id);
        }
        // A path: `module::func`, matched against the defining module's path from its end.
        if let Some((path, func)) = name.rsplit_once("::") {
            let found: Vec<FnId> = (0..self.list.len() as FnId)
                .filter(|&i| {
                    let f = self.list[i as usize];
                    f.name == func && (f.module == path || f.module.ends_with(&format!("::{path}")))
                })
                .collect();
            match found[..] {
                [id] => return Ok(id),
                [] => {}
                _ => {
                    let modules: Vec<&str> = found
                        .iter()
                        .map(|&i| self.list[i as usize].module)
                        .collect();
                    return Err(format!(
                        "task function path `{name}` is ambiguous: it matches `{func}` in {}; \
                         give a longer path",
                        modules.join(", ")
                    ));
                }
            }
        }
        let fix = match name.split_once("::") {
            Some((krate, _)) => format!(
                "if it is marked #[forkgraph::task] in a library crate `{krate}`, that crate is \
                 not linked into this binary (Rust leaves out a library the binary never names): add \
                 `forkgraph::link!({krate});` to the binary"
            ),
            None => "mark a function #[forkgraph::task]; if it is marked in a library crate, \
                     that crate is not linked into this binary (Rust leaves out a library the \
                     binary never names): add `forkgraph::link!(that_crate);` to the binary"
                .to_owned(),
        };
        match self.suggest(name) {
            Some(near) => Err(format!(
                "no task function `{name}` is registered in this executable; did you mean \
                 `{near}`? Otherwise: {fix}"
            )),
            None => Err(format!(
                "no task function `{name}` is registered in this executable: {fix}"
            )),
        }
    }

    /// The registered name closest to a name that is not registered (a typo, a different
    /// case, the right function under a wrong module path), if one is close enough.
    fn suggest(&self, name: &str) -> Option<String> {
        let (path, func) = match name.rsplit_once("::") {
            Some((p, f)) => (Some(p), f),
            None => (None, name),
        };
        let in_path = |f: &Function| {
            path.is_some_and(|p| f.module == p || f.module.ends_with(&format!("::{p}")))
        };
        let limit = (func.chars().count() / 3).max(1);
        let mut best: Option<(usize, bool, &Function)> = None;
        for &f in &self.list {
            let d = if f.name.eq_ignore_ascii_case(func) {
                0
            } else {
                strsim::damerau_levenshtein(f.name, func)
            };
            if d > limit {
                continue;
            }
            // Prefer a function in the given module, then the nearest name.
            let better = match best {
                None => true,
                Some((bd, bin, _)) => (!in_path(f), d) < (!bin, bd),
            };
            if better {
                best = Some((d, in_path(f), f));
            }
        }
        let (_, in_module, f) = best?;
        Some(match path {
            Some(p) if in_module => format!("{p}::{}", f.name),
            _ if self
                .by_name
                .get(f.name)
                .is_some_and(|_| !self.duplicates.iter().any(|(n, _)| *n == f.name)) =>
            {
                f.name.to_owned()
            }
            _ => format!("{}::{}", f.module, f.name),
        })
    }

    /// The function with this id.
    pub fn get(&self, id: FnId) -> Option<&'static Function> {
        self.list.get(id as usize).copied()
    }

    /// A fingerprint of the whole table, equal in processes of the same executable.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Number of registered functions.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no function is registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Converts argument `position` for a generated adapter.
///
/// # Errors
/// [`CallError::Mismatch`] naming the position and parameter type.
#[doc(hidden)]
pub fn arg<'a, T: FromArg<'a>>(
    args: &'a [ArgValue<'_>],
    position: usize,
    param: &'static str,
) -> Result<T, CallError> {
    T::from_arg(&args[position]).map_err(|Mismatch { expected, got }| CallError::Mismatch {
        position,
        param: param.to_owned(),
        expected,
        got,
    })
}

/// Converts a function's result through [`IntoOutput`] (the attribute itself uses the richer
/// conversions of [`crate::failure`]).
///
/// # Errors
/// [`CallError::Returned`] with the function's own error, [`CallError::Unencodable`].
#[doc(hidden)]
pub fn output<R: IntoOutput>(r: R) -> Result<Value, CallError> {
    r.into_output()
}
